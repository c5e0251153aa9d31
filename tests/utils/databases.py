"""Real test databases: a SQLite file, or a fresh PostgreSQL database dropped afterwards.

Every fixture that needs a database (function- or module-scoped) goes through
:func:`database_url` and :func:`make_settings`, so all tests share one way of making them.
"""

from __future__ import annotations

import itertools
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest

from controlplane.config import Settings
from controlplane.core import ControlPlane
from tests.utils.server import LiveServer, live_server

PG_ADMIN_DSN = os.environ.get(
    "CONTROLPLANE_TEST_PG_DSN", "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
)
PG_URL_TEMPLATE = os.environ.get(
    "CONTROLPLANE_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
)
KINDS = ("sqlite", "postgresql")
_counter = itertools.count()


def pg_admin(sql: str) -> None:
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(sql)


@contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh PostgreSQL database, dropped at the end (skipped when disabled by env)."""
    if os.environ.get("CONTROLPLANE_TEST_SKIP_POSTGRES") == "1":
        pytest.skip("PostgreSQL disabled by CONTROLPLANE_TEST_SKIP_POSTGRES")
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    name = f"cp_test_{worker}_{next(_counter)}_{uuid.uuid4().hex[:6]}"
    pg_admin(f'CREATE DATABASE "{name}"')
    try:
        yield PG_URL_TEMPLATE.format(name=name)
    finally:
        pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def database_url(kind: str, directory: Path) -> Iterator[str]:
    """A URL of a new, empty database of ``kind`` (``sqlite`` or ``postgresql``)."""
    if kind == "sqlite":
        yield f"sqlite:///{directory / 'controlplane.db'}"
        return
    with postgres_database() as url:
        yield url


def make_settings(url: str, directory: Path, **overrides: Any) -> Settings:
    """Settings every test uses: the data directory under ``directory``, fixed secrets."""
    values: dict[str, Any] = {
        "data_dir": directory / "data",
        "database_url": url,
        "pseudonym_secret": "test-pseudonym-secret",
        "origin": "test.controlplane/ledger",
        # the MLflow mirror creates an MLflow database (~6 s) per data dir: only the tests of
        # tests/integrations/ turn it on
        "mlflow_enabled": False,
        **overrides,
    }
    return Settings(**values)


@contextmanager
def served(kind: str, directory: Path, **overrides: Any) -> Iterator[LiveServer]:
    """An initialised control plane on a new database of ``kind``, served over HTTP."""
    with database_url(kind, directory) as url:
        plane = ControlPlane(make_settings(url, directory, **overrides))
        try:
            plane.init()
            with live_server(plane) as running:
                yield running
        finally:
            plane.close()
