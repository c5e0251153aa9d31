"""``controlplane demo`` end to end: the real command on a fresh data directory (SQLite).

The demo trains a reward model and two DPO policies for real (TRL on CPU), so this is the
slowest test of the suite; it is one test on purpose, checking what a newcomer is promised:
exit 0, a summary, and a ledger that holds the whole governance loop (two signed promotions
to production with MLflow's alias following, a tampered contract refused and recorded, a
rollback) and verifies; then that a second run on the same directory reuses the finished
demo instead of redoing or breaking it, and that a directory holding other data is refused.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from sqlalchemy import select

from controlplane.core import ControlPlane
from controlplane.demo import DemoDir
from controlplane.integrations.mlflow.client import make_client
from controlplane.store.integrity import check_database
from controlplane.store.models import LedgerEntryRow
from tests.cli.helpers import cli_env, fails, json_of, ok


class Row(NamedTuple):
    seq: int
    actor: str
    action: str
    subject: dict[str, Any]
    payload: dict[str, Any]


pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def test_demo_runs_the_governance_loop_and_is_reused_afterwards(tmp_path: Path) -> None:
    target = tmp_path / "demo-dir"
    # A production instance configured in the same shell must not be touched by the demo.
    env = cli_env(
        None,
        tmp_path,
        CONTROLPLANE_DATABASE_URL=f"sqlite:///{tmp_path / 'production.db'}",
        MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'production-mlflow.db'}",
        CONTROLPLANE_WITNESS_DIR=str(tmp_path / "production-witness"),
        CONTROLPLANE_OPENLINEAGE_DIR=str(tmp_path / "production-lineage"),
    )

    result = ok(["demo", "--data-dir", target, "--json", "--no-progress"], env)
    summary = json_of(result)
    narration = result.stderr
    assert " 1. admin: " in narration and "contract.rejected" in narration, narration
    assert summary["ok"] is True and summary["verify"]["ok"] is True, summary["verify"]
    assert summary["policy"]["production"] == ["policy/helpful-dpo@1"]
    assert (summary["rollback"]["from_version"], summary["rollback"]["to_version"]) == (2, 1)
    mlflow = summary["mlflow"]
    assert mlflow["after_first_promotion"]["version"] == 1
    assert mlflow["after_second_promotion"]["version"] == 2
    assert mlflow["after_rollback"]["version"] == 1
    forged = summary["forged_contract"]
    assert (forged["runner"], forged["code"]) == ("rogue-runner", "forged_signature")
    numbers = [step["number"] for step in summary["steps"]]
    assert numbers == list(range(1, len(numbers) + 1)) and len(numbers) >= 15
    for name in ("production.db", "production-mlflow.db", "production-witness"):
        assert not (tmp_path / name).exists(), name
    assert not (tmp_path / "production-lineage").exists()
    tokens = json.loads((target / "demo" / "tokens.json").read_text())
    assert {"erin", "dora", "alice", "bob", "carol", "gpu-runner-1"} <= set(tokens)
    assert (target / "demo" / "tokens.json").stat().st_mode & 0o077 == 0

    workspace = DemoDir.at(target)
    settings = workspace.settings()
    cp = ControlPlane(settings)
    try:
        with cp.db.read() as session:
            rows = [
                Row(seq, actor, action, json.loads(subject), json.loads(payload))
                for seq, actor, action, subject, payload in session.execute(
                    select(
                        LedgerEntryRow.seq,
                        LedgerEntryRow.actor,
                        LedgerEntryRow.action,
                        LedgerEntryRow.subject,
                        LedgerEntryRow.payload,
                    ).order_by(LedgerEntryRow.seq)
                )
            ]
        assert len(rows) == summary["ledger_size"] == summary["verify"]["size"]
        assert [r.seq for r in rows] == list(range(len(rows)))

        rejected = [r for r in rows if r.action == "contract.rejected"]
        assert [(r.actor, r.payload["code"]) for r in rejected] == [
            ("rogue-runner", "forged_signature")
        ]
        to_production = [
            r for r in rows if r.action == "stage.changed" and r.payload["to"] == "production"
        ]
        assert [(r.subject["name"], r.subject["version"], r.actor) for r in to_production] == [
            ("helpful-dpo", 1, "system"),  # quorum met: promoted in the same transaction
            ("helpful-dpo", 2, "system"),
            ("helpful-dpo", 1, "alice"),  # the rollback, by one approver with a reason
        ]
        for change in to_production[:2]:
            request = change.payload["request_id"]  # a request's id is its entry's seq
            signers = [
                r.actor
                for r in rows
                if r.action == "promotion.signed_off" and request < r.seq < change.seq
            ]
            assert rows[request].actor == "erin" and sorted(signers) == ["alice", "carol"]
        [rollback] = [r for r in rows if r.action == "promotion.rolled_back"]
        assert rollback.payload["reason"].startswith("rollback drill")
        finished_jobs = [r for r in rows if r.action == "job.finished"]
        assert len(finished_jobs) == 7 and {r.actor for r in finished_jobs} == {"gpu-runner-1"}
        verdict = check_database(cp.store)  # hashes, Merkle nodes, projections replayed
        assert verdict.ok, verdict.problems
    finally:
        cp.close()
    alias = make_client(settings).get_model_version_by_alias(
        "default.policy.helpful-dpo", "production"
    )
    assert alias.tags["controlplane.version"] == "1"

    again = ok(["demo", "--data-dir", target], env)
    assert "already holds the demo" in again.stderr
    assert "policy/helpful-dpo@1" in again.stdout and "controlplane verify" in again.stdout
    assert json.loads((target / "demo" / "summary.json").read_text()) == summary
    cp = ControlPlane(settings)
    try:
        with cp.db.read() as session:
            size = len(session.execute(select(LedgerEntryRow.seq)).all())
        assert size == summary["ledger_size"]  # reused, not replayed
    finally:
        cp.close()

    foreign = tmp_path / "someone-elses-data"
    foreign.mkdir()
    (foreign / "controlplane.db").write_text("not ours")
    refused = fails(["demo", "--data-dir", foreign, "--force"], env, 5)
    assert "not a demo directory" in refused.stderr
    assert (foreign / "controlplane.db").read_text() == "not ours"
