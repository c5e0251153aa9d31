"""Auditing sign-offs years later, without trusting the server: an audit bundle exported over
HTTP re-verifies every stored sign-off envelope offline; a tampered envelope is named by seq.
Also over HTTP: listing the queue closes due requests, and refusals are problem+json.
"""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from controlplane.client.verify import verify_bundle
from controlplane.governance import statements
from controlplane.governance.audit import SignoffAuditor
from controlplane.governance.service import Refused
from controlplane.ledger.verify import VerificationReport
from tests.api.helpers import assert_problem, make_principal
from tests.governance.helpers import World, pinned_clock
from tests.utils.databases import KINDS, served
from tests.utils.server import LiveServer


def export(server: LiveServer) -> dict[str, Any]:
    with server.admin() as admin:
        response = admin.get("/v1/ledger/export")
    assert response.status_code == 200, response.text[:500]
    return response.json()  # type: ignore[no-any-return]


def signoff_entries(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    return [e for e in bundle["entries"] if e["action"] == "promotion.signed_off"]


@pytest.fixture(scope="module", params=KINDS)
def audited(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[World, dict[str, Any]]]:
    """A ledger with approvals, a rejection, a sign-off by a key revoked afterwards and one by
    its successor, and refusals in between; exported over HTTP. Built once per database."""
    with served(request.param, tmp_path_factory.mktemp("audit")) as server:
        yield _audited(server)


def _audited(server: LiveServer) -> tuple[World, dict[str, Any]]:
    world = World(server.cp)
    v1 = world.register("policy", "audited")
    world.to_production(v1)
    v2 = world.register("policy", "audited")
    world.promote(v2, "candidate")
    with pytest.raises(Refused):
        world.open(v2, "staging")  # no evidence yet
    world.evaluation(v2, "offline")
    request = world.open(v2, "staging")
    world.sign(world.bob, request["id"], "reject", comment="not yet")
    request = world.open(v2, "staging")
    world.sign(world.alice, request["id"])
    world.cp.governance.revoke_key(
        world.alice.principal, world.alice.key_id, "rotated", is_admin=False
    )
    world.add_key(world.alice)
    world.promote(v2, "canary", (world.alice, world.dave), traffic_share=0.3)
    return world, export(server)


def test_an_exported_bundle_reverifies_every_signoff_offline(
    audited: tuple[World, dict[str, Any]],
) -> None:
    world, bundle = audited
    signoffs = signoff_entries(bundle)
    assert len(signoffs) == len(world.entries("promotion.signed_off")) == 11
    assert {e["payload"]["decision"] for e in signoffs} == {"approve", "reject"}
    report = verify_bundle(bundle)
    assert report.ok, report.problems
    assert report.signoffs_verified == len(signoffs)
    assert report.size == len(bundle["entries"])


def _reencode(envelope: dict[str, Any], change: Any) -> dict[str, Any]:
    statement = json.loads(base64.b64decode(envelope["payload"]))
    change(statement)
    payload = json.dumps(statement, sort_keys=True, separators=(",", ":")).encode()
    return {**envelope, "payload": base64.b64encode(payload).decode()}


TAMPERINGS = {
    "decision-flipped": lambda env, other: _reencode(
        env, lambda s: s.update(decision="reject" if s["decision"] == "approve" else "approve")
    ),
    "signature-replaced": lambda env, other: {
        **env,
        "signatures": [{**env["signatures"][0], "sig": other["signatures"][0]["sig"]}],
    },
    "someone-elses-envelope": lambda env, other: other,
    "signature-removed": lambda env, other: {**env, "signatures": []},
}


@pytest.mark.parametrize("tampering", sorted(TAMPERINGS))
def test_a_tampered_envelope_fails_offline_verification_at_its_seq(
    audited: tuple[World, dict[str, Any]], tampering: str
) -> None:
    _, bundle = audited
    victim = next(e for e in signoff_entries(bundle) if e["actor"] == "carol")
    other = next(e for e in signoff_entries(bundle) if e["actor"] == "bob")
    tampered = copy.deepcopy(bundle)
    entry = next(e for e in tampered["entries"] if e["seq"] == victim["seq"])
    entry["payload"]["envelope"] = TAMPERINGS[tampering](
        victim["payload"]["envelope"], other["payload"]["envelope"]
    )
    report = verify_bundle(tampered)
    assert not report.ok
    assert report.first_bad_seq == victim["seq"]
    # the sign-off auditor names it too, not only the hash chain
    assert any(
        p.startswith(f"seq {victim['seq']}: sign-off by {victim['actor']}") for p in report.problems
    ), report.problems
    assert report.signoffs_verified == len(signoff_entries(bundle)) - 1


def test_the_auditor_alone_catches_an_envelope_moved_between_entries(
    audited: tuple[World, dict[str, Any]],
) -> None:
    """Without the hash chain (e.g. a bundle re-hashed by a forger): the envelope of a sign-off
    on one request does not vouch for a sign-off entry of the same signer on another."""
    _, bundle = audited
    by_alice = [e for e in signoff_entries(bundle) if e["actor"] == "alice"]
    assert len(by_alice) >= 2
    first, second = by_alice[0], by_alice[-1]
    auditor = SignoffAuditor()
    report = VerificationReport()
    for entry in bundle["entries"]:
        if entry["seq"] == second["seq"]:
            entry = copy.deepcopy(entry)
            entry["payload"]["envelope"] = first["payload"]["envelope"]
            entry["payload"]["key_id"] = first["payload"]["key_id"]
        auditor(entry, report)
    assert report.first_bad_seq == second["seq"], report.problems
    assert "sign-off by alice" in report.problems[0]
    assert auditor.checked == len(signoff_entries(bundle)) - 1


def test_listing_the_queue_over_http_closes_due_requests(server: LiveServer) -> None:
    world = World(server.cp)
    with pinned_clock(datetime.now(UTC)) as clk:
        due = world.open(world.register("policy", "late"), "candidate")
        clk.advance(hours=167)
        fresh = world.open(world.register("policy", "fresh"), "candidate")
        clk.advance(hours=2)
        with server.admin() as admin:
            listed = admin.get("/v1/projects/gov/requests", params={"state": "open"})
            assert listed.status_code == 200, listed.text
            assert [r["id"] for r in listed.json()["data"]] == [fresh["id"]]
            expired = admin.get("/v1/projects/gov/requests", params={"state": "expired"}).json()
    assert [r["id"] for r in expired["data"]] == [due["id"]]
    assert expired["data"][0]["closed_reason"] == "expired without quorum"
    (entry,) = world.entries("promotion.expired")
    assert entry["payload"]["request_id"] == due["id"]


def test_refusals_over_http_are_problems_and_ledgered(server: LiveServer) -> None:
    world = World(server.cp)
    token = make_principal(server, "paula", [("approver", "gov")])
    policy = world.register("policy", "web")
    request = world.open(policy, "candidate")
    with server.client(token) as client:
        served = client.get(f"/v1/requests/{request['id']}")
        assert served.status_code == 200
        template = served.json()["statement_template"]
        assert template["request_id"] == request["id"]
        assert template["artifact"]["digest"] == policy["digest"]
        assert template["signer"] == "paula"
        # paula has no registered key: whatever she signs with is refused, and recorded
        envelope = statements.sign(template, Ed25519PrivateKey.generate())
        response = client.post(
            f"/v1/requests/{request['id']}/signoffs", json={"envelope": envelope}
        )
        body = assert_problem(response, 403)
        assert "no signature by a registered key" in body["detail"]
        missing = client.post("/v1/requests/999999/signoffs", json={"envelope": envelope})
        assert_problem(missing, 404)
    (entry,) = world.entries("signoff.refused")
    assert entry["actor"] == "paula"
    assert entry["payload"]["reason"] == body["detail"]


def resigned_by_alice(
    world: World, bundle: dict[str, Any], change: dict[str, Any], comment: str | None = None
) -> tuple[int, VerificationReport, SignoffAuditor]:
    """Replace alice's last sign-off envelope by a genuine one of hers (current key, same
    request, same decision) over the request as ``change`` rewrites it; audit offline."""
    target = [e for e in signoff_entries(bundle) if e["actor"] == "alice"][-1]
    requested = next(e for e in bundle["entries"] if e["seq"] == target["payload"]["request_id"])
    request = {
        "id": requested["seq"],
        **{k: requested["subject"][k] for k in ("project", "kind", "name", "version")},
        "digest": requested["payload"]["digest"],
        "target_stage": requested["payload"]["target_stage"],
        **change,
    }
    signed_at = datetime.fromisoformat(target["payload"]["signed_at"])
    said = target["payload"]["comment"] if comment is None else comment
    signed = statements.statement(request, "alice", "approve", said, signed_at)
    envelope = statements.sign(signed, world.alice.key)
    auditor = SignoffAuditor()
    report = VerificationReport()
    for entry in bundle["entries"]:
        if entry["seq"] == target["seq"]:
            entry = copy.deepcopy(entry)
            entry["payload"]["envelope"] = envelope
        auditor(entry, report)
    return target["seq"], report, auditor


def test_the_auditor_accepts_an_equivalent_genuine_envelope(
    audited: tuple[World, dict[str, Any]],
) -> None:
    world, bundle = audited
    _, report, auditor = resigned_by_alice(world, bundle, {})
    assert report.ok, report.problems
    assert auditor.checked == len(signoff_entries(bundle))


@pytest.mark.parametrize(
    ("change", "comment"),
    [
        ({"target_stage": "production"}, None),
        ({"digest": "sha256:" + "0" * 64}, None),
        ({}, "actually, do not ship this"),
    ],
    ids=["target_stage", "digest", "comment"],
)
def test_the_auditor_checks_the_signed_stage_digest_and_comment(
    audited: tuple[World, dict[str, Any]], change: dict[str, Any], comment: str | None
) -> None:
    world, bundle = audited
    seq, report, _ = resigned_by_alice(world, bundle, change, comment)
    assert report.first_bad_seq == seq, "a statement for another move was certified"


@pytest.mark.parametrize(
    ("field", "value", "named"),
    [
        ("signed_at", "2031-01-01T00:00:00.000000Z", "signed_at"),
        ("comment", "LGTM, ship it", "comment"),
        ("request_id", 1, "which no earlier promotion.requested entry opened"),
    ],
    ids=["signed_at", "comment", "request_id"],
)
def test_the_auditor_holds_the_recorded_signoff_against_the_signed_statement(
    audited: tuple[World, dict[str, Any]], field: str, value: Any, named: str
) -> None:
    """What the sign-off entry records (and the signoffs table projects) must be what was
    signed: a recorded comment, time or request that differs is named, even with a genuine
    envelope and without the hash chain."""
    _, bundle = audited
    target = signoff_entries(bundle)[-1]
    auditor = SignoffAuditor()
    report = VerificationReport()
    for entry in bundle["entries"]:
        if entry["seq"] == target["seq"]:
            entry = copy.deepcopy(entry)
            entry["payload"][field] = value
        auditor(entry, report)
    assert report.first_bad_seq == target["seq"], report.problems
    assert named in report.problems[0]
    assert auditor.checked == len(signoff_entries(bundle)) - 1
