"""An approver's sign-off key revoked, end to end on both databases.

Before the revocation, alice's sign-off counts; it stays valid in the offline audit (server and
bundle) and every view of it shows when its key was revoked. After the revocation her key is
refused, and so is a statement back-dated to before the revocation: the server's time of
receipt counts, not the ``signed_at`` the statement claims. Each refusal is a ledger entry.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from controlplane.governance.audit import SignoffAuditor
from controlplane.governance.service import Refused
from controlplane.ledger.verify import VerificationReport
from tests.cli.helpers import cli_env, ok, operator_env, run_json
from tests.governance.helpers import World, pinned_clock, stamp
from tests.utils.server import LiveServer


def test_revoked_key_history_and_refusals(server: LiveServer, tmp_path: Path) -> None:
    with pinned_clock(datetime.now(UTC)) as clk:
        world = World(server.cp)
        data = world.register("dataset", "prefs")
        request = world.open(data, "approved")
        signed = world.sign(world.alice, request["id"])
        assert signed["state"] == "approved"
        assert signed["signoffs"][0]["key_revoked_at"] is None  # not revoked (yet)

        revoked_at = clk.advance(minutes=2)
        world.cp.governance.revoke_key(
            world.alice.principal, world.alice.key_id, "laptop lost", is_admin=False
        )
        old_key = world.alice.key

        # the earlier sign-off keeps counting and now shows when its key was revoked
        shown = world.request(request["id"])["signoffs"][0]
        assert shown["key_revoked_at"] == stamp(revoked_at)
        with server.admin() as http:
            served = http.get(f"/v1/requests/{request['id']}").json()
        assert served["state"] == "approved"
        assert served["signoffs"][0]["key_revoked_at"] == stamp(revoked_at)

        # a later signature by the revoked key is refused and recorded
        later = world.register("dataset", "prefs")
        second = world.open(later, "approved")
        clk.advance(minutes=1)
        refusal = world.refused(
            lambda: world.sign(world.alice, second["id"], key=old_key),
            "signoff.refused",
            f"key {world.alice.key_id[:16]} was revoked at {stamp(revoked_at)}",
            Refused,
        )
        assert refusal["actor"] == "alice"
        # back-dated to before the revocation (within the allowed skew): refused just the same
        world.refused(
            lambda: world.sign(
                world.alice, second["id"], key=old_key, signed_at=revoked_at - timedelta(seconds=30)
            ),
            "signoff.refused",
            "was revoked at",
            Refused,
        )
        assert world.request(second["id"])["signoffs"] == []

        # CLI views show the revocation time beside the valid sign-off
        env = cli_env(server, tmp_path)
        listed = run_json(["requests", "-p", world.project, "--state", "approved"], env)
        (row,) = [r for r in listed["data"] if r["id"] == request["id"]]
        assert row["signoffs"][0]["key_revoked_at"] == stamp(revoked_at)
        text = ok(["requests", "-p", world.project, "--state", "approved"], env).stdout
        assert f"key revoked {stamp(revoked_at)}" in text
        status = run_json(["status", "dataset/prefs", "-p", world.project], env)
        (holder,) = status["stages"]["approved"]
        assert holder["approvals"][0]["key_revoked_at"] == stamp(revoked_at)
        assert (
            f"revoked {stamp(revoked_at)}"
            in ok(["status", "dataset/prefs", "-p", world.project], env).stdout
        )

        # the offline audit: against the server, and an exported bundle
        verified = run_json(["verify"], env)
        assert verified["ok"] is True and verified["signoffs_verified"] == 1, verified
        bundle_path = tmp_path / "bundle.json"
        ok(["export", "--output", str(bundle_path)], env)
        offline = run_json(["verify", "--bundle", str(bundle_path)], env)
        assert offline["ok"] is True and offline["signoffs_verified"] == 1, offline
        # and the operator's check of the database itself runs the same audit
        database = run_json(["verify", "--database"], operator_env(server, tmp_path / "op"))
        assert database["ok"] is True and database["signoffs_verified"] == 1, database

    # the same valid signature, recorded after the revocation, does not pass the audit
    entries = json.loads(bundle_path.read_text())["entries"]
    (original,) = [e for e in entries if e["action"] == "promotion.signed_off"]
    replayed = {**original, "seq": len(entries)}
    auditor, report = SignoffAuditor(), VerificationReport()
    for entry in [*entries, replayed]:
        auditor(entry, report)
    assert auditor.checked == 1
    assert report.first_bad_seq == len(entries), report.problems
    assert "does not verify" in report.problems[0]
