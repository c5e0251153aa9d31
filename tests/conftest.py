"""Shared fixtures: real SQLite files and real PostgreSQL databases, migrated with Alembic.

``db_url`` runs a test on both databases. PostgreSQL tests create a fresh database per test
and drop it afterwards; if the server on 127.0.0.1:5432 is unreachable they fail, unless
CONTROLPLANE_TEST_SKIP_POSTGRES=1.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from controlplane.config import Settings
from controlplane.core import ControlPlane
from tests.utils.databases import KINDS, database_url, make_settings
from tests.utils.server import LiveServer, live_server


@pytest.fixture
def sqlite_url(tmp_path: Path) -> Iterator[str]:
    with database_url("sqlite", tmp_path) as url:
        yield url


@pytest.fixture
def postgres_url(tmp_path: Path) -> Iterator[str]:
    with database_url("postgresql", tmp_path) as url:
        yield url


@pytest.fixture(params=KINDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The same test on a SQLite file and on a fresh PostgreSQL database."""
    with database_url(request.param, tmp_path) as url:
        yield url


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    return make_settings(db_url, tmp_path)


@pytest.fixture
def cp(settings: Settings) -> Iterator[ControlPlane]:
    """An initialised control plane (migrated, key registered, bootstrap admin)."""
    plane = ControlPlane(settings)
    plane.init()
    try:
        yield plane
    finally:
        plane.close()


@pytest.fixture
def server(cp: ControlPlane) -> Iterator[LiveServer]:
    """The API over real HTTP (uvicorn on a free port) on the ``cp`` database."""
    with live_server(cp) as running:
        yield running
