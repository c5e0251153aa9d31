"""Fixtures of the runner tests (``server`` comes from tests/conftest.py: both databases)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.runners.helpers import Lab
from tests.utils.server import LiveServer


@pytest.fixture
def lab(server: LiveServer) -> Iterator[Lab]:
    world = Lab(server)
    try:
        yield world
    finally:
        world.close()
