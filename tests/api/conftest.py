"""A server shared by the tests of one module, on SQLite and on PostgreSQL.

Starting a server on a fresh database costs a second or more on PostgreSQL; most API tests
only need their own principals and artifact names, not their own database. ``api`` is started
once per module and database; tests that need a pristine ledger (exact sizes, all-pairs
proofs) or that may damage the server use the function-scoped ``server`` fixture instead.
Tests on ``api`` must not depend on the ledger's size or on what other tests created: they use
:func:`unique` names.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator

import pytest

from tests.utils.databases import KINDS, served
from tests.utils.server import LiveServer

_names = itertools.count()


def unique(prefix: str) -> str:
    """A name no other test in this process uses (valid as principal id and artifact name)."""
    return f"{prefix}-{next(_names)}-{uuid.uuid4().hex[:4]}"


@pytest.fixture(scope="module", params=KINDS)
def api(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    """One initialised control plane served over HTTP for the whole module."""
    with served(request.param, tmp_path_factory.mktemp("api")) as running:
        yield running
