"""Fixtures of the promotion-governance tests (``cp`` and ``server`` come from tests/)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from controlplane.core import ControlPlane
from tests.governance.helpers import PinnedClock, World, pinned_clock


@pytest.fixture
def world(cp: ControlPlane) -> World:
    """The standard cast in project ``gov`` on a fresh database (SQLite and PostgreSQL)."""
    return World(cp)


@pytest.fixture
def clk() -> Iterator[PinnedClock]:
    """``controlplane.clock`` pinned (restored afterwards)."""
    with pinned_clock() as pinned:
        yield pinned
