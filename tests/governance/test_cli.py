"""Promotion governance from the command line, end to end, against a real server on SQLite and
PostgreSQL: each person has their own token, key directory and state directory; private keys
are generated and kept on "their machine" (``controlplane keys generate``), and every
sign-off is signed there. Every command runs with ``--json``.
"""

from __future__ import annotations

import stat
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from controlplane.client.verify import verify_bundle
from tests.api.helpers import make_principal
from tests.cli.helpers import cli_env, fails, one_line_error, run_json
from tests.governance.helpers import GOOD, digest
from tests.utils.server import LiveServer

PROJECT = "gov"


class Cli:
    """The people of the project at their own terminals."""

    def __init__(self, server: LiveServer, tmp_path: Path) -> None:
        self.server = server
        grants = {
            "eng": "engineer",
            "trainer": "engineer",
            "alice": "approver",
            "bob": "approver",
            "carol": "compliance_reviewer",
        }
        self.env: dict[str, dict[str, str | None]] = {}
        for user, role in grants.items():
            token = make_principal(server, user, [(role, PROJECT)])
            home = tmp_path / user
            self.env[user] = cli_env(
                server,
                home,
                CONTROLPLANE_TOKEN=token,
                CONTROLPLANE_KEYS_DIR=str(home / "keys"),
                CONTROLPLANE_PROJECT=PROJECT,
            )

    def run(self, user: str, *args: Any) -> Any:
        return run_json([str(a) for a in args], self.env[user])

    def fails(self, user: str, code: int, *args: Any) -> str:
        return one_line_error(fails([str(a) for a in args], self.env[user], code))

    def register(self, kind: str, name: str, **extra: Any) -> dict[str, Any]:
        seed = f"{kind}/{name}/{time.monotonic_ns()}"
        version, _ = self.server.cp.registry.register_version(
            "trainer", PROJECT, kind, name, digest=digest(seed), uri=f"s3://m/{seed}", **extra
        )
        return version

    def evaluation(self, target: dict[str, Any], mode: str) -> None:
        edge = {k: target[k] for k in ("kind", "name", "version")}
        self.register(
            "evaluation",
            f"eval-{mode}",
            metadata={"mode": mode, "metrics": GOOD},
            lineage=[{"relation": "evaluated_on", **edge}],
        )

    def request(self, ref: str, to: str, share: float | None = None) -> dict[str, Any]:
        extra = ["--traffic-share", share] if share is not None else []
        data = self.run("eng", "request", ref, "--to", to, "-j", f"{ref} to {to}", *extra)
        assert data["state"] == "open" and data["ref"] == ref and data["target_stage"] == to
        assert data["requester"] == "eng"
        return data  # type: ignore[no-any-return]

    def approve(self, user: str, request_id: int) -> dict[str, Any]:
        data = self.run(user, "approve", request_id, "-m", f"ok from {user}")
        assert data["signoffs"][-1]["signer"] == user
        assert data["signoffs"][-1]["decision"] == "approve"
        return data  # type: ignore[no-any-return]

    def promote(
        self, version: dict[str, Any], to: str, approvers: tuple[str, ...], **kw: Any
    ) -> int:
        request = self.request(version["ref"], to, **kw)
        for user in approvers:
            data = self.approve(user, request["id"])
        assert data["state"] == "approved", data
        return int(request["id"])

    def to_production(self, version: dict[str, Any]) -> None:
        self.promote(version, "candidate", ("alice",))
        self.evaluation(version, "offline")
        self.promote(version, "staging", ("bob",))
        self.promote(version, "canary", ("alice", "bob"), share=0.1)
        self.evaluation(version, "online")
        self.promote(version, "production", ("alice", "carol"))

    def status(self, at: str | None = None) -> dict[str, list[int]]:
        args = ["status", "policy/assistant"] + (["--at", at] if at else [])
        data = self.run("carol", *args)
        return {stage: [h["version"] for h in hs] for stage, hs in data["stages"].items()}


def moment() -> str:
    """Now, between two commands (entries carry microseconds)."""
    time.sleep(0.002)
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    time.sleep(0.002)
    return stamp


def test_governance_from_the_command_line(server: LiveServer, tmp_path: Path) -> None:
    cli = Cli(server, tmp_path)

    # keys: generated here, private half kept locally (0600), public half registered
    keys = {}
    for user in ("alice", "bob", "carol"):
        key = cli.run(user, "keys", "generate", "--name", f"{user}-laptop")
        assert key["principal_id"] == user
        path = Path(key["private_key_file"])
        assert path.parent == Path(str(cli.env[user]["CONTROLPLANE_KEYS_DIR"]))
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        keys[user] = key["key_id"]
    listed = cli.run("alice", "keys", "list", "--principal", "alice")
    assert listed["count"] == 1
    assert [(k["key_id"], k["active"], k["local"]) for k in listed["data"]] == [
        (keys["alice"], True, True)
    ]
    assert cli.run("bob", "keys", "list", "--principal", "alice")["data"][0]["local"] is False

    v1 = cli.register("policy", "assistant")
    v2 = cli.register("policy", "assistant")
    v3 = cli.register("policy", "assistant")
    before_any = moment()

    cli.to_production(v1)
    after_v1 = moment()

    # v2: a rejection closes a request; the requester withdraws another; then the whole path
    rejected = cli.request(v2["ref"], "candidate")
    queue = cli.run("bob", "requests")
    assert [r["id"] for r in queue["data"]] == [rejected["id"]]
    assert queue["data"][0]["quorum"]["required"] == 1
    closed = cli.run("bob", "reject", rejected["id"], "-m", "model card missing")
    assert closed["state"] == "rejected"
    assert closed["signoffs"][0]["comment"] == "model card missing"
    assert closed["signoffs"][0]["key_id"] == keys["bob"]
    withdrawn = cli.request(v2["ref"], "candidate")
    cli.fails("alice", 3, "withdraw", withdrawn["id"])  # not the requester
    out = cli.run("eng", "withdraw", withdrawn["id"], "-r", "wrong base model")
    assert out["state"] == "withdrawn" and out["closed_reason"] == "wrong base model"
    assert cli.run("carol", "requests")["data"] == []
    every = cli.run("carol", "requests", "--all")["data"]
    assert {r["id"]: r["state"] for r in every}[rejected["id"]] == "rejected"
    assert {r["id"]: r["state"] for r in every}[withdrawn["id"]] == "withdrawn"
    assert cli.run("carol", "requests", "--state", "rejected")["count"] == 1

    cli.to_production(v2)
    after_v2 = moment()
    assert cli.status() == {"production": [2], "retired": [1], "registered": [3]}

    # rollback: carol (compliance reviewer) may not; alice may, alone, with a reason
    assert "stages" in cli.fails("carol", 3, "rollback", "policy/assistant", "-r", "panic")
    rolled = cli.run("alice", "rollback", "policy/assistant", "-r", "toxicity regression")
    assert (rolled["from_version"], rolled["to_version"]) == (2, 1)
    assert rolled["reason"] == "toxicity regression"
    after_rollback = moment()

    assert cli.status(before_any) == {"registered": [1, 2, 3]}
    assert cli.status(after_v1) == {"production": [1], "registered": [2, 3]}
    assert cli.status(after_v2) == {"production": [2], "retired": [1], "registered": [3]}
    assert cli.status(after_rollback) == {"production": [1], "retired": [2], "registered": [3]}
    now = cli.run("carol", "status", "policy/assistant", "--at", after_v1)
    (holder,) = now["stages"]["production"]
    assert [a["signer"] for a in holder["approvals"]] == ["alice", "carol"]
    assert {a["key_id"] for a in holder["approvals"]} == {keys["alice"], keys["carol"]}
    assert holder["requester"] == "eng"

    # errors and their exit codes
    skip = cli.fails("eng", 3, "request", v3["ref"], "--to", "staging", "-j", "skip ahead")
    assert "starts from candidate" in skip
    assert "request 999999 does not exist" in cli.fails("alice", 4, "approve", 999_999)
    assert "is rejected" in cli.fails("alice", 5, "approve", rejected["id"])
    assert "is withdrawn" in cli.fails("eng", 5, "withdraw", withdrawn["id"])
    # an engineer with a key of their own is still no signer: the server says so
    cli.run("eng", "keys", "generate")
    open_one = cli.request(v3["ref"], "candidate")
    assert "may not signoff requests" in cli.fails("eng", 3, "approve", open_one["id"])
    cli.run("eng", "withdraw", open_one["id"])

    # retire
    cli.promote(v3, "candidate", ("bob",))
    retired = cli.run("bob", "retire", v3["ref"], "-r", "superseded")
    assert retired["stage"] == "retired"
    assert "already retired" in cli.fails("bob", 5, "retire", v3["ref"], "-r", "again")
    assert cli.status() == {"production": [1], "retired": [2, 3]}

    # the policy refusal is on the record, and every CLI-signed envelope re-verifies offline
    with server.cp.db.read() as session:
        entries = list(server.cp.store.iter_entries(session))
    (refusal,) = [e for e in entries if e["action"] == "promotion.refused"]
    assert refusal["actor"] == "eng" and "starts from candidate" in refusal["payload"]["reason"]
    with server.admin() as admin:
        bundle = admin.get("/v1/ledger/export").json()
    report = verify_bundle(bundle)
    assert report.ok, report.problems
    signed = [e for e in entries if e["action"] == "promotion.signed_off"]
    assert report.signoffs_verified == len(signed) == 14
