"""Fixtures of the MLflow mirror tests: a real MLflow SQLite registry per test, our side on
SQLite and PostgreSQL.

Creating an MLflow database runs MLflow's ~100 Alembic migrations (about 6 s), so one is made
per session and each test gets a copy of it (milliseconds). The mirror is on here only
(``make_settings`` turns it off for the rest of the suite).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from controlplane.core import ControlPlane
from tests.governance.helpers import World
from tests.utils.databases import make_settings
from tests.utils.server import LiveServer, live_server

SECRET = "whsec-test-secret"


@pytest.fixture(scope="session")
def mlflow_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mlflow import MlflowClient

    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}", registry_uri=f"sqlite:///{path}")
    return path


def install_mlflow_db(template: Path, target: Path) -> str:
    """A copy of the migrated template at ``target``; its URI."""
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(template, target)
    return f"sqlite:///{target}"


@pytest.fixture
def mlflow_uri(mlflow_template: Path, tmp_path: Path) -> str:
    return install_mlflow_db(mlflow_template, tmp_path / "mlflow" / "mlflow.db")


def mirrored_plane(db_url: str, tmp_path: Path, uri: str, **overrides: Any) -> ControlPlane:
    values: dict[str, Any] = {
        "mlflow_enabled": True,
        "mlflow_tracking_uri": uri,
        "mlflow_webhook_secret": SECRET,
        "mlflow_sync_interval_seconds": 0,
        **overrides,
    }
    plane = ControlPlane(make_settings(db_url, tmp_path, **values))
    plane.init()
    return plane


@pytest.fixture
def mcp(db_url: str, tmp_path: Path, mlflow_uri: str) -> Iterator[ControlPlane]:
    """An initialised control plane mirroring into the test's MLflow registry."""
    plane = mirrored_plane(db_url, tmp_path, mlflow_uri)
    try:
        yield plane
    finally:
        plane.close()


@pytest.fixture
def mworld(mcp: ControlPlane) -> World:
    return World(mcp)


@pytest.fixture
def mserver(mcp: ControlPlane) -> Iterator[LiveServer]:
    with live_server(mcp) as running:
        yield running


@pytest.fixture
def mlflow(mlflow_uri: str) -> Any:
    """A separate MLflow client: someone working in MLflow behind the control plane's back."""
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=mlflow_uri, registry_uri=mlflow_uri)
