"""The MLflow mirror end to end: real governance, a real MLflow SQLite registry, our ledger on
SQLite and PostgreSQL, the API over real HTTP and the CLI.

MLflow is changed "behind our back" with its own :class:`MlflowClient`, and webhooks are sent
with MLflow's own delivery code, so what is tested is what MLflow really does.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from controlplane.core import BOOTSTRAP_ADMIN, ControlPlane
from controlplane.integrations.mlflow import state
from controlplane.integrations.mlflow.client import MlflowUnavailable, ensure_experiment
from tests.cli.helpers import cli_env, fails, json_of, ok, run_json
from tests.governance.helpers import World
from tests.integrations.conftest import SECRET, install_mlflow_db, mirrored_plane
from tests.utils.server import LiveServer, live_server

MODEL = "gov.policy.helper"


def settle(cp: ControlPlane) -> None:
    assert cp.mirror.wait_idle(60), "the mirror did not finish"


def ours(mlflow: Any, name: str = MODEL) -> dict[int, Any]:
    """Our version number -> its MLflow model version."""
    found = mlflow.search_model_versions(f"name = '{name}'")
    return {int(v.tags[state.VERSION]): v for v in found if state.VERSION in v.tags}


def aliases(mlflow: Any, name: str = MODEL) -> dict[str, int | None]:
    """Managed alias -> the version of ours it points at (None: a version not of ours)."""
    by_mlflow = {int(v.version): k for k, v in ours(mlflow, name).items()}
    model = mlflow.get_registered_model(name)
    return {
        a: by_mlflow.get(int(v)) for a, v in model.aliases.items() if a in state.MANAGED_ALIASES
    }


def to_staging(world: World, version: dict[str, Any]) -> None:
    world.promote(version, "candidate")
    world.evaluation(version, "offline")
    world.promote(version, "staging")


def test_promotions_move_aliases_rollback_and_retire(
    mworld: World, mcp: ControlPlane, mlflow: Any
) -> None:
    v1 = mworld.register("policy", "helper")
    rm = mworld.register("reward_model", "judge")
    mworld.to_production(v1)
    settle(mcp)

    model = mlflow.get_registered_model(MODEL)
    assert model.tags[state.PROJECT] == "gov" and model.tags[state.KIND] == "policy"
    assert model.tags[state.SYNCED_SEQ] == str(mworld.entries("stage.changed")[-1]["seq"])
    mirrored = ours(mlflow)
    assert list(mirrored) == [1]
    assert mirrored[1].source == v1["uri"]
    expected_tags = {
        state.PROJECT: "gov",
        state.KIND: "policy",
        state.NAME: "helper",
        state.VERSION: "1",
        state.DIGEST: v1["digest"],
        state.SEQ: str(v1["ledger_seq"]),
    }
    assert expected_tags.items() <= mirrored[1].tags.items()
    assert aliases(mlflow) == {"production": 1}
    assert list(ours(mlflow, "gov.reward_model.judge")) == [rm["version"]]

    v2 = mworld.register("policy", "helper")
    to_staging(mworld, v2)
    settle(mcp)
    assert aliases(mlflow) == {"production": 1, "staging": 2}
    mworld.promote(v2, "canary", traffic_share=0.1)
    mworld.evaluation(v2, "online")
    mworld.promote(v2, "production")
    settle(mcp)
    assert aliases(mlflow) == {"production": 2}

    mcp.governance.rollback(mworld.alice.principal, "gov", "policy", "helper", "regression")
    settle(mcp)
    assert aliases(mlflow) == {"production": 1}

    mcp.governance.retire(mworld.alice.principal, "gov", mworld.ref(v1), "end of life")
    settle(mcp)
    assert aliases(mlflow) == {}
    assert sorted(ours(mlflow)) == [1, 2]  # versions stay: MLflow keeps the history too
    assert not mworld.entries("mlflow.drift_detected")  # our own moves are never drift

    # the periodic catch-up: nothing to do costs one listing; an alias set behind our back
    # is noticed by the bookkeeping tags, recorded as drift and removed
    assert mcp.mirror.catch_up().changes == []
    mlflow.set_registered_model_alias(MODEL, "production", ours(mlflow)[2].version)
    caught = mcp.mirror.catch_up()
    assert [c["action"] for c in caught.changes] == ["delete_alias"]
    assert aliases(mlflow) == {}
    (drift,) = mworld.entries("mlflow.drift_detected")
    assert drift["payload"]["source"] == "sync"
    assert [i["type"] for i in drift["payload"]["items"]] == ["alias_added"]

    # experiments made by controlplane keep their artifacts in the data directory
    runs = ensure_experiment(mcp.mirror.client(), mcp.settings, "runs")
    location = mlflow.get_experiment(runs).artifact_location
    assert location == (mcp.settings.resolved_mlflow_artifacts_dir / "runs").as_uri()
    assert ensure_experiment(mcp.mirror.client(), mcp.settings, "runs") == runs


def test_mlflow_down_never_blocks_a_promotion_and_the_server_catches_up(
    db_url: str, tmp_path: Path, mlflow_template: Path
) -> None:
    blocked = tmp_path / "mlflow-down"
    blocked.write_text("a file where MLflow's directory should be: MLflow cannot open it")
    target = blocked / "mlflow.db"
    plane = mirrored_plane(db_url, tmp_path, f"sqlite:///{target}", mlflow_sync_interval_seconds=1)
    try:
        world = World(plane)
        v1 = world.register("policy", "helper")
        to_staging(world, v1)  # the promotion succeeds while MLflow is unreachable
        settle(plane)
        assert world.stage(v1) == "staging"
        status = plane.mirror.status()
        assert status["reachable"] is False and status["pending_versions"] is None
        assert status["last_sync"]["ok"] is False and status["failed"] == 1
        with pytest.raises(MlflowUnavailable):  # an operator's reconcile says so (HTTP 503)
            plane.mirror.reconcile(BOOTSTRAP_ADMIN, fix=True)

        blocked.unlink()
        install_mlflow_db(mlflow_template, target)  # MLflow is back
        from mlflow import MlflowClient

        mlflow = MlflowClient(tracking_uri=f"sqlite:///{target}")
        with live_server(plane) as server:  # the server catches up at start ...
            settle(plane)
            assert aliases(mlflow) == {"staging": 1}
            with server.admin() as http:
                data = http.get("/v1/integrations/mlflow/status").raise_for_status().json()
            assert data["reachable"] is True and data["pending_versions"] == 0
            assert data["last_sync"]["ok"] is True and data["background"] is True
            assert not world.entries("mlflow.drift_detected")

            # ... and then every second (here): an alias removed in MLflow comes back
            mlflow.delete_registered_model_alias(MODEL, "staging")
            deadline = time.monotonic() + 20
            while not world.entries("mlflow.reconciled") and time.monotonic() < deadline:
                time.sleep(0.1)
            settle(plane)
            assert aliases(mlflow) == {"staging": 1}
        (drift,) = world.entries("mlflow.drift_detected")
        assert drift["payload"]["source"] == "sync"
        assert [i["type"] for i in drift["payload"]["items"]] == ["alias_removed"]
    finally:
        plane.close()


def test_reconcile_finds_records_and_fixes_drift(
    mworld: World, mserver: LiveServer, mlflow: Any, tmp_path: Path
) -> None:
    v1 = mworld.register("policy", "helper")
    v2 = mworld.register("policy", "helper")
    to_staging(mworld, v1)
    settle(mserver.cp)
    env = cli_env(mserver, tmp_path)
    clean = run_json(["mlflow", "reconcile"], env)
    assert clean["in_sync"] and clean["items"] == [] and clean["artifacts"] == 1
    assert not mworld.entries("mlflow.drift_detected")  # nothing found, nothing recorded

    # behind our back, in MLflow
    mine = ours(mlflow)
    mlflow.set_registered_model_alias(MODEL, "staging", mine[2].version)
    mlflow.set_registered_model_alias(MODEL, "production", mine[1].version)
    mlflow.set_model_version_tag(MODEL, mine[1].version, state.DIGEST, "sha256:" + "0" * 64)
    foreign = mlflow.create_model_version(MODEL, source="s3://elsewhere/model")

    found = json_of(fails(["mlflow", "reconcile", "--json"], env, 1))
    kinds = {(i["type"], i.get("alias") or i.get("key_name")) for i in found["items"]}
    assert kinds == {
        ("alias_moved", "staging"),
        ("alias_added", "production"),
        ("tag_changed", state.DIGEST),
        ("foreign_version", None),
    }
    assert all(i["cause"] == "drift" for i in found["items"]) and found["changes"] == []
    (drift,) = mworld.entries("mlflow.drift_detected")
    assert drift["actor"] == BOOTSTRAP_ADMIN and drift["subject"]["project"] == "gov"
    assert drift["payload"]["items"] == found["items"] and drift["payload"]["fix"] is False
    assert found["ledger_seqs"] == [drift["seq"]]
    assert aliases(mlflow)["staging"] == 2  # nothing changed without --fix

    fixed = run_json(["mlflow", "reconcile", "--fix"], env)
    assert fixed["in_sync"] and fixed["drift"] == 4
    (_, second) = mworld.entries("mlflow.drift_detected")
    (reconciled,) = mworld.entries("mlflow.reconciled")
    assert reconciled["payload"]["drift_seq"] == second["seq"]
    assert reconciled["payload"]["changes"] == fixed["changes"]
    assert {c["action"] for c in fixed["changes"]} == {
        "set_alias",
        "delete_alias",
        "set_tag",
        "tag_version",
    }
    assert aliases(mlflow) == {"staging": 1}
    assert ours(mlflow)[1].tags[state.DIGEST] == v1["digest"]
    kept = mlflow.get_model_version(MODEL, foreign.version)  # reported and tagged, not deleted
    assert kept.tags[state.FOREIGN] == "true"
    assert v2["version"] in ours(mlflow)

    human = ok(["mlflow", "reconcile"], env)
    assert "in sync" in human.stdout and "NOT" not in human.stdout
    assert len(mworld.entries("mlflow.drift_detected")) == 2
    status = run_json(["mlflow", "status"], env)
    assert status["reachable"] is True and status["pending_versions"] == 0

    # reconcile is for admins; reading the status is for everyone who reads artifacts
    token = mserver.cp.identity.issue_token(BOOTSTRAP_ADMIN, "eng", "cli").token
    as_engineer = cli_env(mserver, tmp_path, CONTROLPLANE_TOKEN=token)
    fails(["mlflow", "reconcile", "--fix"], as_engineer, 3)
    assert run_json(["mlflow", "status"], as_engineer)["enabled"] is True


@pytest.fixture
def deliveries(monkeypatch: pytest.MonkeyPatch) -> Any:
    """MLflow's own webhook sender, allowed to reach a loopback test server, no retries."""
    monkeypatch.setenv("MLFLOW_WEBHOOK_ALLOWED_SCHEMES", "http,https")
    monkeypatch.setenv("MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS", "true")
    monkeypatch.setenv("MLFLOW_WEBHOOK_REQUEST_MAX_RETRIES", "0")
    from mlflow.entities.webhook import Webhook, WebhookEvent
    from mlflow.webhooks import delivery

    session = delivery._create_webhook_session()

    def send(url: str, secret: str, entity: str, action: str, payload: dict) -> httpx.Response:
        hook = Webhook(
            "wh-1", "controlplane", url, [WebhookEvent(entity, action)], 0, 0, secret=secret
        )
        response = delivery._send_webhook_request(
            hook, payload, WebhookEvent(entity, action), session
        )
        return httpx.Response(
            response.status_code, headers=dict(response.headers), content=response.content
        )

    yield send
    session.close()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # about HTTP and HMAC
def test_webhook_verifies_mlflow_signatures_and_reconciles_at_once(
    mworld: World, mserver: LiveServer, mlflow: Any, deliveries: Any
) -> None:
    from mlflow.webhooks.delivery import _generate_hmac_signature

    v1 = mworld.register("policy", "helper")
    to_staging(mworld, v1)
    settle(mserver.cp)
    url = f"{mserver.url}/v1/integrations/mlflow/webhook"
    foreign = mlflow.create_model_version(MODEL, source="s3://elsewhere/model")
    mlflow.set_registered_model_alias(MODEL, "staging", foreign.version)
    alias_set = {"name": MODEL, "alias": "staging", "version": str(foreign.version)}

    size = mworld.size()
    refused = deliveries(url, "not-the-secret", "model_version_alias", "created", alias_set)
    assert refused.status_code == 401, refused.text
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["status"] == 401
    assert mworld.size() == size  # a refused delivery ledgers nothing

    answered = deliveries(url, SECRET, "model_version_alias", "created", alias_set)
    assert answered.status_code == 200, answered.text
    result = answered.json()
    assert result["reconciled"] is True and result["report"]["in_sync"] is True
    assert aliases(mlflow) == {"staging": 1}  # moved back before the answer
    (drift,) = mworld.entries("mlflow.drift_detected")
    (reconciled,) = mworld.entries("mlflow.reconciled")
    assert drift["payload"]["source"] == "webhook" and drift["actor"] == "system"
    assert {i["type"] for i in drift["payload"]["items"]} == {"alias_moved", "foreign_version"}
    assert drift["payload"]["event"] == "model_version_alias.created"
    assert reconciled["payload"]["delivery_id"] == drift["payload"]["delivery_id"]

    # built by hand with MLflow's signing function: stale, tampered, unsigned, replayed
    body = json.dumps({"entity": "model_version", "action": "created", "data": alias_set})
    delivery_id = str(uuid.uuid4())

    def post(stamp: int, content: str, signed: str | None = None, sign: bool = True):
        """POST ``content`` with headers as MLflow sets them, signed over ``signed``."""
        headers = {
            "Content-Type": "application/json",
            "X-MLflow-Delivery-Id": delivery_id,
            "X-MLflow-Timestamp": str(stamp),
        }
        if sign:
            headers["X-MLflow-Signature"] = _generate_hmac_signature(
                SECRET, delivery_id, str(stamp), content if signed is None else signed
            )
        return httpx.post(url, content=content.encode(), headers=headers, timeout=30)

    size = mworld.size()
    now = int(time.time())
    assert post(now - 3600, body).status_code == 401  # stale
    assert post(now + 3600, body).status_code == 401  # from the future
    assert post(now, body.replace("created", "deleted"), signed=body).status_code == 401
    assert post(now, body, sign=False).status_code == 401  # no signature at all
    assert mworld.size() == size
    first = post(now, body)
    assert first.status_code == 200 and first.json()["reconciled"] is True
    again = post(now, body)
    assert again.status_code == 200 and again.json()["reason"] == "delivery already handled"
    assert mworld.size() == size  # in sync: nothing to record
