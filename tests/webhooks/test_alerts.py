"""Alert rules on evaluations of production versions: a breach is ledgered as alert.raised,
delivered by webhook, listed for approvers; bad rules refuse to start (fail closed)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest

from controlplane.config import REPO_ROOT
from controlplane.core import ControlPlane
from controlplane.governance.alerts import load_rules, parse_rules
from controlplane.governance.rules import RulesError
from controlplane.store.integrity import check_database
from controlplane.webhooks.outbox import SIGNATURE_HEADER, verify_signature
from tests.cli.helpers import cli_env, ok, run_json
from tests.governance.helpers import World
from tests.utils.databases import make_settings
from tests.utils.server import live_server
from tests.webhooks.conftest import SECRET
from tests.webhooks.receiver import Receiver


def test_a_breach_on_production_raises_an_alert_and_a_webhook(
    cp: ControlPlane, receiver: Receiver
) -> None:
    cp.webhooks.sweep()
    world = World(cp)
    model = world.register("policy", "pi")
    world.to_production(model)
    assert world.entries("alert.raised") == []  # the evaluations before production: no alert

    world.register(  # within thresholds: no alert
        "evaluation",
        "online-week-2",
        lineage=[("evaluated_on", model)],
        metadata={"mode": "online", "metrics": {"win_rate": 0.58}},
    )
    assert world.entries("alert.raised") == []

    world.register(
        "evaluation",
        "online-week-3",
        lineage=[("evaluated_on", model)],
        metadata={"mode": "online", "metrics": {"win_rate": 0.41}},
    )
    (alert,) = world.entries("alert.raised")
    assert alert["subject"] == {
        "project": world.project,
        "kind": "policy",
        "name": "pi",
        "version": model["version"],
    }
    payload = alert["payload"]
    assert payload["rule"]["name"] == "win-rate-drift"
    assert payload["metric"] == "win_rate" and payload["value"] == 0.41
    assert payload["rollback_suggested"] is True
    assert payload["evaluation"]["name"] == "online-week-3"
    assert world.stage(model) == "production"  # an alert never moves a stage by itself

    cp.webhooks.run_once()
    (got,) = [r for r in receiver.received if r.json["action"] == "alert.raised"]
    assert verify_signature(SECRET, got.body, got.headers[SIGNATURE_HEADER])
    assert got.json["seq"] == alert["seq"]

    (listed,) = cp.alert_monitor.alerts(world.project)
    assert listed["ref"] == f"policy/pi@{model['version']}" and listed["rollback_suggested"]
    assert cp.alert_monitor.process() == []  # judged once
    assert check_database(cp.store).ok  # projections still replay (alerts add no table)


def test_an_evaluation_of_a_version_not_in_production_raises_nothing(cp: ControlPlane) -> None:
    world = World(cp)
    model = world.register("policy", "pi")
    world.promote(model, "candidate")
    world.evaluation(model, "online", {"win_rate": 0.1, "safety_violation_rate": 0.5})
    assert world.entries("alert.raised") == []


def test_approvers_see_the_alert_over_http(tmp_path: Path, sqlite_url: str) -> None:
    plane = ControlPlane(make_settings(sqlite_url, tmp_path))
    try:
        plane.init()
        world = World(plane)
        model = world.register("policy", "pi")
        world.to_production(model)
        world.evaluation(model, "offline", {"win_rate": 0.9, "safety_violation_rate": 0.2})
        token = plane.identity.issue_token("admin", world.alice.id, "t").token
        with live_server(plane) as server:
            response = httpx.get(
                f"{server.url}/v1/projects/{world.project}/alerts",
                headers={"Authorization": f"Bearer {token}"},
            )
            env = cli_env(server, tmp_path, CONTROLPLANE_TOKEN=token)
            listed = run_json(["alerts", "--project", world.project, "--rollback", "--json"], env)
            text = ok(["alerts", "--project", world.project], env).stdout
            outsider = plane.identity.issue_token("admin", world.eng.id, "t").token
            other = httpx.get(
                f"{server.url}/v1/projects/elsewhere/alerts",
                headers={"Authorization": f"Bearer {outsider}"},
            )
        assert listed["count"] == 1
        assert "safety-regression" in text and "rollback suggested" in text
        assert other.status_code == 403  # no role in that project
        assert response.status_code == 200, response.text
        (alert,) = response.json()["data"]
        assert alert["rule"]["name"] == "safety-regression" and alert["rollback_suggested"]
    finally:
        plane.close()


def test_an_evaluation_committed_before_a_crash_is_judged_at_start(
    tmp_path: Path, sqlite_url: str
) -> None:
    """The listener is a fast path; the cursor makes it lossless (here: no listener ran)."""
    plane = ControlPlane(make_settings(sqlite_url, tmp_path))
    try:
        plane.init()
        world = World(plane)
        model = world.register("policy", "pi")
        world.to_production(model)
        plane.store.listeners.remove(plane.alert_monitor.on_commit)  # the process "dies"
        world.evaluation(model, "online", {"win_rate": 0.3, "safety_violation_rate": 0.0})
        assert world.entries("alert.raised") == []
        with live_server(plane):  # the lifespan's catch-up judges it
            pass
        (alert,) = world.entries("alert.raised")
        assert alert["payload"]["rule"]["name"] == "win-rate-drift"
    finally:
        plane.close()


GOOD_RULE: dict[str, Any] = {
    "name": "r",
    "kinds": ["policy"],
    "metric": "win_rate",
    "breach": "< 0.5",
    "action": "notify",
}


@pytest.mark.parametrize(
    "change",
    [
        {"action": "rollback"},  # unknown action (rollback is a human act)
        {"breach": "0.5"},  # no operator
        {"breach": "< nan"},
        {"breach": 0.5},
        {"kinds": ["dataset"]},
        {"kinds": "policy"},
        {"mode": "live"},
        {"metric": ""},
        {"thresold": "< 0.5"},  # a typo is an unknown key, not a silently ignored one
    ],
)
def test_bad_alert_rules_fail_closed(change: dict[str, Any]) -> None:
    with pytest.raises(RulesError):
        parse_rules({"alerts": [{**GOOD_RULE, **change}]})


def test_bad_alert_rules_refuse_to_start(tmp_path: Path, sqlite_url: str) -> None:
    assert parse_rules({"alerts": [GOOD_RULE]})[0].name == "r"
    with pytest.raises(RulesError):
        parse_rules({"alerts": [GOOD_RULE, GOOD_RULE]})  # duplicate names
    with pytest.raises(RulesError):
        parse_rules({"alert": []})
    policies = tmp_path / "policies"
    shutil.copytree(REPO_ROOT / "policies", policies)
    (policies / "alerts.yaml").write_text("alerts:\n  - name: x\n    metric: m\n    breach: '<'\n")
    with pytest.raises(RulesError):
        ControlPlane(make_settings(sqlite_url, tmp_path, policies_dir=policies))
    # the shipped file is valid
    assert len(load_rules(REPO_ROOT / "policies" / "alerts.yaml")) == 3
