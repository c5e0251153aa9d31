"""One served control plane per module and database, like ``tests/api``.

The security tests send hundreds of requests each; a fresh server per test would cost more
than the requests. Tests here must not depend on the ledger's size or on what other tests of
the module created.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.utils.databases import KINDS, served
from tests.utils.server import LiveServer


@pytest.fixture(scope="module", params=KINDS)
def live(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    """An initialised control plane served over HTTP for the whole module."""
    with served(request.param, tmp_path_factory.mktemp("security")) as running:
        yield running
