"""The version page and the MLflow mirror: a mirrored version links to its MLflow model
version, only an unmirrored one says it is not mirrored (a real MLflow SQLite registry, the
API over real HTTP, the page through Streamlit's AppTest)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from streamlit.testing.v1 import AppTest

from controlplane.core import ControlPlane
from controlplane.integrations.mlflow.state import ArtifactKey
from dashboard import state
from tests.dashboard.helpers import open_page, signed_in, texts
from tests.governance.helpers import World
from tests.utils.databases import database_url, make_settings
from tests.utils.server import LiveServer, live_server

UI = "http://mlflow.example:5000"


@pytest.fixture(scope="module")
def mirrored(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, World]]:
    """A served control plane whose mirror writes to its own MLflow registry (SQLite)."""
    directory = tmp_path_factory.mktemp("dashboard-mlflow")
    registry = f"sqlite:///{directory / 'mlflow.db'}"
    with database_url("sqlite", directory) as url:
        plane = ControlPlane(
            make_settings(
                url,
                directory,
                mlflow_enabled=True,
                mlflow_tracking_uri=registry,
                mlflow_sync_interval_seconds=0,
            )
        )
        try:
            plane.init()
            with live_server(plane) as server:
                yield server, World(plane)
        finally:
            plane.close()


@pytest.fixture
def ui_address(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The dashboard's own settings name the MLflow UI (where a browser reaches MLflow)."""
    monkeypatch.setenv("CONTROLPLANE_MLFLOW_TRACKING_URI", UI)
    state.settings.clear()
    yield
    state.settings.clear()


def _mirror(server: LiveServer, world: World, kind: str, name: str) -> dict[str, Any]:
    version = world.version(world.register(kind, name))
    assert server.cp.mirror.wait_idle(60)
    return version


def _page(server: LiveServer, project: str, ref: str) -> AppTest:
    at = signed_in(server.url, server.admin_token)
    return open_page(at, "version", project=project, ref=ref)


def _links(at: AppTest) -> list[str]:
    return [element.proto.url for element in at.get("link_button")]


def test_a_mirrored_version_links_to_its_mlflow_model_version(
    mirrored: tuple[LiveServer, World], ui_address: None
) -> None:
    server, world = mirrored
    policy = _mirror(server, world, "policy", "linked")
    name = ArtifactKey(world.project, "policy", "linked").model_name
    with server.admin() as http:
        answer = http.get(
            f"/v1/integrations/mlflow/projects/{world.project}/artifacts/policy/linked/versions/1"
        )
    assert answer.status_code == 200, answer.text
    found = answer.json()
    assert found["enabled"] is True and found["model_name"] == name
    number = found["mlflow_version"]
    assert isinstance(number, int)

    at = _page(server, world.project, policy["ref"])
    assert _links(at) == [f"{UI}/#/models/{name}/versions/{number}"]
    page = texts(at)
    assert f"MLflow model `{name}` version {number}" in page
    assert "Not mirrored to MLflow." not in page


def test_without_a_ui_address_the_mirrored_version_is_named(
    mirrored: tuple[LiveServer, World], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, world = mirrored
    monkeypatch.delenv("CONTROLPLANE_MLFLOW_TRACKING_URI", raising=False)
    state.settings.clear()
    policy = _mirror(server, world, "policy", "unlinked")
    at = _page(server, world.project, policy["ref"])
    assert _links(at) == []
    page = texts(at)
    assert "MLflow model `" in page and "(no MLflow server address to link to)" in page
    assert "Not mirrored to MLflow." not in page


def test_only_an_unmirrored_version_says_so(
    mirrored: tuple[LiveServer, World], ui_address: None
) -> None:
    server, world = mirrored
    # a version that MLflow lost (deleted there, not reconciled yet) is not mirrored
    policy = _mirror(server, world, "policy", "lost")
    name = ArtifactKey(world.project, "policy", "lost").model_name
    client = server.cp.mirror.client()
    for held in client.search_model_versions(f"name = '{name}'"):
        client.delete_model_version(name, held.version)
    at = _page(server, world.project, policy["ref"])
    assert _links(at) == []
    assert "Not mirrored to MLflow." in texts(at)

    # datasets are never mirrored
    dataset = _mirror(server, world, "dataset", "prefs")
    at = _page(server, world.project, dataset["ref"])
    assert _links(at) == []
    assert "Not mirrored to MLflow." in texts(at)


def test_an_unknown_version_is_a_problem(mirrored: tuple[LiveServer, World]) -> None:
    server, world = mirrored
    path = f"/v1/integrations/mlflow/projects/{world.project}/artifacts/policy/nope/versions/1"
    with server.admin() as http:
        answer = http.get(path)
    assert answer.status_code == 404
    assert answer.headers["content-type"].startswith("application/problem+json")
