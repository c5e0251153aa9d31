"""Every way a promotion or a sign-off is refused: a clear error for the caller AND a ledger
entry (``promotion.refused`` / ``signoff.refused``) carrying the same reason, on SQLite and
PostgreSQL. After each refusal nothing moved.
"""

from __future__ import annotations

import base64
import json
from datetime import timedelta
from functools import partial
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from controlplane import clock
from controlplane.crypto.dsse import sign_envelope
from controlplane.errors import Conflict, InvalidInput, NotFound
from controlplane.governance import statements
from controlplane.governance.audit import SignoffAuditor
from controlplane.governance.service import Refused
from controlplane.ledger.canonical import canonical_json
from controlplane.store.integrity import check_database
from tests.governance.helpers import T0, PinnedClock, World


def staged_policy(world: World, name: str = "p") -> dict[str, Any]:
    """A policy in staging with offline evidence, ready for a canary request (2 approvals)."""
    policy = world.register("policy", name)
    world.promote(policy, "candidate")
    world.evaluation(policy, "offline")
    world.promote(policy, "staging")
    return policy


def canary_request(world: World, name: str = "p") -> dict[str, Any]:
    return world.open(staged_policy(world, name), "canary", traffic_share=0.1)


def signoff_refused(world: World, who: Any, request_id: int, envelope: Any, reason: str) -> None:
    """A sign-off refused with ``reason``; the request keeps its sign-offs and stays open."""
    before = world.request(request_id)
    entry = world.refused(
        lambda: world.cp.governance.sign_off(who.principal, request_id, envelope),
        "signoff.refused",
        reason,
        Refused,
    )
    assert entry["actor"] == who.id
    assert entry["payload"]["request_id"] == request_id
    assert entry["payload"]["signer"] == who.id
    after = world.request(request_id)
    assert after["state"] == "open"
    assert after["signoffs"] == before["signoffs"]


# -- who may sign ---------------------------------------------------------------------------------


def test_the_requester_may_not_approve_their_own_request(world: World) -> None:
    hybrid = world.person("hank", "engineer", "approver")
    policy = world.register("policy", "p")
    request = world.open(policy, "candidate", by=hybrid)
    envelope = world.envelope(hybrid, request)
    signoff_refused(
        world, hybrid, request["id"], envelope, "the requester may not approve their own request"
    )
    # someone else may, and the requester may still *reject* their own request
    assert world.sign(world.alice, request["id"])["state"] == "approved"
    other = world.open(world.register("policy", "q"), "candidate", by=hybrid)
    assert world.sign(hybrid, other["id"], "reject")["state"] == "rejected"


def test_the_versions_creator_may_not_approve_its_promotion(world: World) -> None:
    maker = world.person("mona", "approver")
    policy = world.register("policy", "p", by=maker)
    request = world.open(policy, "candidate")
    assert request["creator"] == "mona"
    signoff_refused(
        world,
        maker,
        request["id"],
        world.envelope(maker, request),
        "the version's creator may not approve its promotion",
    )
    assert world.stage(policy) == "registered"


def test_a_principal_without_a_signer_role_may_not_sign(world: World) -> None:
    request = world.open(world.register("policy", "p"), "candidate")
    for person in (world.eng, world.admin):
        signoff_refused(
            world,
            person,
            request["id"],
            world.envelope(person, request),
            f"{person.id} may not sign off: it needs one of the roles approver, "
            "compliance_reviewer in project gov",
        )


def test_a_role_in_another_project_does_not_count(world: World) -> None:
    outsider = world.person("olga")  # no role in project gov
    world.cp.identity.grant_role("admin", "olga", "approver", "elsewhere")
    request = world.open(world.register("policy", "p"), "candidate")
    signoff_refused(
        world, outsider, request["id"], world.envelope(outsider, request), "olga may not sign off"
    )


# -- signatures -----------------------------------------------------------------------------------


def test_forged_signatures_are_refused(world: World) -> None:
    request = canary_request(world)
    rid = request["id"]
    # signed with a key nobody registered
    stranger = Ed25519PrivateKey.generate()
    signoff_refused(
        world,
        world.alice,
        rid,
        world.envelope(world.alice, request, key=stranger),
        "not a valid sign-off by alice: no signature by a registered key",
    )
    # signed with bob's registered key, submitted as alice
    signoff_refused(
        world,
        world.alice,
        rid,
        world.envelope(world.alice, request, key=world.bob.key),
        "no signature by a registered key",
    )
    # bob's genuine envelope submitted by alice: the key is not hers
    signoff_refused(
        world, world.alice, rid, world.envelope(world.bob, request), "no signature by a registered"
    )
    # payload altered after signing (a rejection turned into an approval)
    genuine = world.envelope(world.alice, request, "reject", comment="no")
    altered = json.loads(base64.b64decode(genuine["payload"]))
    altered["decision"] = "approve"
    forged = {**genuine, "payload": base64.b64encode(canonical_json(altered)).decode()}
    signoff_refused(world, world.alice, rid, forged, "does not verify")
    # a signature over a statement of another payload type
    statement = statements.statement(request, "alice", "approve", "", clock.now())
    wrong_type = sign_envelope("application/json", canonical_json(statement), world.alice.key)
    signoff_refused(world, world.alice, rid, wrong_type, "payloadType")
    # garbage
    signoff_refused(world, world.alice, rid, {"payload": "!!"}, "not a valid sign-off by alice")
    assert world.request(rid)["signoffs"] == []
    # the genuine article still works
    assert world.sign(world.alice, rid)["quorum"]["approvals"] == 1


def test_replayed_envelopes_are_refused(world: World) -> None:
    first = canary_request(world, "a")
    second = canary_request(world, "b")
    envelope = world.envelope(world.alice, first)
    world.cp.governance.sign_off(world.alice.principal, first["id"], envelope)
    # the same envelope again, on the same request
    signoff_refused(
        world,
        world.alice,
        first["id"],
        envelope,
        f"alice has already signed off request {first['id']}",
    )
    # the envelope for request A presented for request B
    signoff_refused(
        world,
        world.alice,
        second["id"],
        envelope,
        "the signed statement does not match this request: request_id, artifact",
    )
    assert world.request(first["id"])["quorum"]["approvals"] == 1
    assert world.request(second["id"])["quorum"]["approvals"] == 0


def test_a_revoked_key_is_refused_and_a_new_key_works(world: World) -> None:
    request = world.open(world.register("policy", "p"), "candidate")
    old = world.alice.key
    revoked = world.cp.governance.revoke_key(
        world.alice.principal, world.alice.key_id, "laptop stolen", is_admin=False
    )
    assert revoked["active"] is False
    (entry,) = world.entries("signing_key.revoked")
    assert entry["payload"]["reason"] == "laptop stolen"
    signoff_refused(
        world,
        world.alice,
        request["id"],
        world.envelope(world.alice, request, key=old),
        f"key {world.alice.key_id[:16]} was revoked",
    )
    # another principal cannot revoke alice's key
    world.add_key(world.alice)
    bob = world.bob
    refusal = world.refused(
        lambda: world.cp.governance.revoke_key(
            bob.principal, world.alice.key_id, "x", is_admin=False
        ),
        "key_revocation.refused",
        "only the key's owner or an admin may revoke it",
        Refused,
    )
    assert refusal["actor"] == "bob"
    assert refusal["subject"] == {"kind": "principal", "name": "alice"}
    assert refusal["payload"]["key_id"] == world.alice.key_id
    assert world.sign(world.alice, request["id"])["state"] == "approved"


def test_statements_signed_too_long_ago_or_in_the_future_are_refused(
    clk: PinnedClock, world: World
) -> None:
    request = world.open(world.register("policy", "p"), "candidate")
    for skew in (timedelta(minutes=-11), timedelta(minutes=11), timedelta(days=-400)):
        envelope = world.envelope(world.alice, request, signed_at=clk.now + skew)
        signoff_refused(
            world,
            world.alice,
            request["id"],
            envelope,
            "the statement was signed too long ago or in the future",
        )
    # within the allowed skew, it counts
    fresh = world.envelope(world.alice, request, signed_at=clk.now - timedelta(minutes=5))
    assert world.cp.governance.sign_off(world.alice.principal, request["id"], fresh)["state"] == (
        "approved"
    )


def test_an_envelope_signed_then_held_back_is_refused_once_stale(
    clk: PinnedClock, world: World
) -> None:
    request = world.open(world.register("policy", "p"), "candidate")
    envelope = world.envelope(world.alice, request)
    clk.advance(minutes=30)
    signoff_refused(world, world.alice, request["id"], envelope, "signed too long ago")


def test_a_statement_time_without_a_timezone_is_refused(world: World) -> None:
    request = world.open(world.register("policy", "p"), "candidate")
    statement = statements.statement(request, "alice", "approve", "", clock.now())
    statement["signed_at"] = statement["signed_at"].removesuffix("Z")
    envelope = statements.sign(statement, world.alice.key)
    signoff_refused(world, world.alice, request["id"], envelope, "signed_at")


@pytest.mark.parametrize(
    "signed_at",
    [
        pytest.param(lambda now: now.replace("Z", "0" * 40 + "Z"), id="too-long"),
        pytest.param(lambda now: 1_900_000_000, id="a-number"),
        pytest.param(lambda now: "yesterday", id="not-a-time"),
        pytest.param(None, id="missing"),
    ],
)
def test_a_statement_time_that_is_not_rfc3339_text_is_refused(world: World, signed_at: Any) -> None:
    """A long fraction parses but overflows signoffs.signed_at (a 500 on PostgreSQL)."""
    request = world.open(world.register("policy", "p"), "candidate")
    statement = statements.statement(request, "alice", "approve", "", clock.now())
    if signed_at is None:
        del statement["signed_at"]
    else:
        statement["signed_at"] = signed_at(statement["signed_at"])
    envelope = statements.sign(statement, world.alice.key)
    signoff_refused(world, world.alice, request["id"], envelope, "no valid signed_at time")


@pytest.mark.parametrize(
    ("comment", "reason"),
    [
        ({"text": "fine"}, "comment must be text"),
        ("x" * 10_001, "comment must be text of at most 10000"),
    ],
    ids=["not-text", "too-long"],
)
def test_a_comment_that_cannot_be_recorded_as_signed_is_refused(
    world: World, comment: Any, reason: str
) -> None:
    """The comment is recorded exactly as signed (the audit compares them), never cut."""
    request = world.open(world.register("policy", "p"), "candidate")
    statement = statements.statement(request, "alice", "approve", "", clock.now())
    statement["comment"] = comment
    signoff_refused(
        world, world.alice, request["id"], statements.sign(statement, world.alice.key), reason
    )


def test_a_statement_canonical_json_cannot_carry_is_refused(world: World) -> None:
    request = world.open(world.register("policy", "p"), "candidate")
    statement = statements.statement(request, "alice", "approve", "", clock.now())
    statement["nonce"] = 2**60  # beyond what RFC 8785 represents exactly
    payload = json.dumps(statement, sort_keys=True, separators=(",", ":")).encode()
    envelope = sign_envelope(statements.PAYLOAD_TYPE, payload, world.alice.key)
    signoff_refused(world, world.alice, request["id"], envelope, "canonical JSON cannot carry")


def test_only_the_dsse_fields_of_an_envelope_are_recorded(world: World) -> None:
    """Unsigned extras in the envelope (here a NaN, which canonical JSON refuses) neither
    break the append nor enter the ledger; the recorded envelope still verifies offline."""
    request = world.open(world.register("policy", "p"), "candidate")
    envelope = world.envelope(world.alice, request)
    stranger = world.envelope(world.alice, request, key=Ed25519PrivateKey.generate())
    padded = {
        **envelope,
        "signatures": [*envelope["signatures"], *stranger["signatures"]],
        "note": float("nan"),
    }
    assert world.cp.governance.sign_off(world.alice.principal, request["id"], padded)["state"] == (
        "approved"
    )
    (entry,) = world.entries("promotion.signed_off")
    assert entry["payload"]["envelope"] == envelope
    report = check_database(world.cp.store)
    assert report.ok, report.problems
    auditor = SignoffAuditor()
    for each in world.entries():
        auditor(each, report)
    assert report.ok and auditor.checked == 1, report.problems


# -- evidence -------------------------------------------------------------------------------------


def candidate_policy(world: World, name: str = "p") -> dict[str, Any]:
    policy = world.register("policy", name)
    world.promote(policy, "candidate")
    return policy


def refused_request(world: World, version: dict[str, Any], to: str, reason: str, **kw: Any) -> None:
    entry = world.refused(
        lambda: world.open(version, to, **kw), "promotion.refused", reason, Refused
    )
    assert entry["actor"] == "eng"
    assert entry["payload"]["target_stage"] == to
    assert entry["payload"]["requester"] == "eng"
    assert entry["subject"]["version"] == version["version"]
    assert not [
        r
        for r in world.requests("open")
        if (r["name"], r["version"], r["target_stage"]) == (version["name"], version["version"], to)
    ]


def test_missing_evaluation_evidence_is_refused(world: World) -> None:
    policy = candidate_policy(world)
    refused_request(
        world,
        policy,
        "staging",
        "missing evidence: needs an offline evaluation with safety_violation_rate <= 0.01, "
        "win_rate >= 0.55 linked evaluated_on policy/p@1",
    )
    # an evaluation of another version does not count
    other = world.register("policy", "p")
    world.evaluation(other, "offline")
    refused_request(world, policy, "staging", "missing evidence")
    # a version linked by another relation than evaluated_on does not count
    world.register(
        "evaluation",
        "side",
        lineage=[("derived_from", policy)],
        metadata={"mode": "offline", "metrics": {"win_rate": 0.9, "safety_violation_rate": 0}},
    )
    refused_request(world, policy, "staging", "missing evidence")


FAILING_METRICS = {
    "low-win-rate": {"win_rate": 0.54, "safety_violation_rate": 0.0},
    "unsafe": {"win_rate": 0.9, "safety_violation_rate": 0.011},
    "metric-missing": {"win_rate": 0.9},
    "string": {"win_rate": "0.9", "safety_violation_rate": 0.0},
    "bool": {"win_rate": True, "safety_violation_rate": 0.0},
    "no-metrics": {},
}


def test_failing_metric_thresholds_are_refused(world: World) -> None:
    for case, metrics in FAILING_METRICS.items():
        policy = candidate_policy(world, case)
        world.evaluation(policy, "offline", metrics)
        refused_request(world, policy, "staging", "missing evidence: needs an offline evaluation")
        assert world.stage(policy) == "candidate"


def test_thresholds_are_inclusive_and_any_one_passing_evaluation_suffices(world: World) -> None:
    policy = candidate_policy(world)
    world.evaluation(policy, "offline", {"win_rate": 0.3, "safety_violation_rate": 0.0})
    world.evaluation(policy, "offline", {"win_rate": 0.55, "safety_violation_rate": 0.01})
    world.promote(policy, "staging")


def test_the_wrong_evaluation_mode_is_refused(world: World) -> None:
    policy = candidate_policy(world)
    world.evaluation(policy, "online")
    refused_request(world, policy, "staging", "needs an offline evaluation")
    missing_mode = world.register(
        "evaluation", "nomode", lineage=[("evaluated_on", policy)], metadata={"metrics": {}}
    )
    assert missing_mode
    refused_request(world, policy, "staging", "needs an offline evaluation")
    world.evaluation(policy, "offline")
    world.promote(policy, "staging")
    # production wants online (shadow or canary traffic): offline alone is not enough
    other = staged_policy(world, "q")
    world.promote(other, "canary", traffic_share=0.5)
    refused_request(world, other, "production", "needs an online evaluation")


# -- lineage --------------------------------------------------------------------------------------


def test_unapproved_lineage_blocks_staging_but_not_candidate(world: World) -> None:
    rubric = world.register("rubric", "r")
    dataset = world.register("dataset", "d", lineage=[("follows_rubric", rubric)])
    reward = world.register("reward_model", "rm", lineage=[("trained_on", dataset)])
    policy = world.register("policy", "p", lineage=[("initialized_from", reward)])
    world.promote(policy, "candidate")  # allowed: the gate is *after* candidate
    world.evaluation(policy, "offline")
    refused_request(
        world,
        policy,
        "staging",
        "lineage not approved for staging: dataset/d@1 is registered, rubric/r@1 is registered",
    )
    world.approve_data(dataset)
    refused_request(world, policy, "staging", "rubric/r@1 is registered")
    world.approve_data(rubric)
    world.promote(policy, "staging")


def test_deprecated_lineage_blocks_promotion(world: World) -> None:
    dataset = world.register("dataset", "d")
    world.approve_data(dataset)
    policy = world.register("policy", "p", lineage=[("trained_on", dataset)])
    world.promote(policy, "candidate")
    world.evaluation(policy, "offline")
    world.promote(dataset, "deprecated")
    refused_request(world, policy, "staging", "dataset/d@1 is deprecated")


def test_lineage_deprecated_while_a_request_is_open_blocks_the_promotion(world: World) -> None:
    dataset = world.register("dataset", "d")
    world.approve_data(dataset)
    policy = world.register("policy", "p", lineage=[("trained_on", dataset)])
    world.promote(policy, "candidate")
    world.evaluation(policy, "offline")
    request = world.open(policy, "staging")
    world.promote(dataset, "deprecated")
    before = world.size()
    world.sign(world.alice, request["id"])
    actions = [e["action"] for e in world.entries(start=before)]
    assert actions == ["promotion.signed_off", "promotion.refused"]
    refusal = world.entries("promotion.refused")[-1]
    assert "quorum met but gates fail: dataset/d@1 is deprecated" in refusal["payload"]["reason"]
    assert world.stage(policy) == "candidate"


def test_skipping_stages_is_refused(world: World) -> None:
    policy = world.register("policy", "p")
    world.evaluation(policy, "offline")
    refused_request(
        world,
        policy,
        "staging",
        "policy/p@1 is in stage registered; promotion to staging starts from candidate",
    )
    refused_request(world, policy, "production", "starts from canary")
    dataset = world.register("dataset", "d")
    with pytest.raises(InvalidInput, match="has no stage 'production'"):
        world.open(dataset, "production")
    assert world.stage(policy) == "registered"


# -- life of a request ----------------------------------------------------------------------------


def test_an_expired_request_refuses_sign_offs_and_closes_itself(
    clk: PinnedClock, world: World
) -> None:
    request = world.open(world.register("policy", "p"), "candidate")
    assert request["expires_at"] == T0 + timedelta(hours=168)
    clk.set(T0 + timedelta(hours=168, seconds=1))
    envelope = world.envelope(world.alice, request)
    before = world.size()
    with pytest.raises(Conflict, match=f"request {request['id']} has expired"):
        world.cp.governance.sign_off(world.alice.principal, request["id"], envelope)
    new = world.entries(start=before)
    assert [e["action"] for e in new] == ["promotion.expired", "signoff.refused"]
    assert new[0]["actor"] == "system"
    assert new[0]["payload"] == {"request_id": request["id"], "reason": "expired without quorum"}
    assert new[1]["payload"]["reason"] == "expired"
    closed = world.request(request["id"])
    assert closed["state"] == "expired"
    assert closed["closed_reason"] == "expired without quorum"
    # closed for good
    with pytest.raises(Conflict, match="is expired"):
        world.sign(world.bob, request["id"])
    with pytest.raises(Conflict, match="is expired"):
        world.cp.governance.withdraw(world.eng.principal, request["id"], "late")


def test_withdrawing_a_due_request_closes_it_as_expired(clk: PinnedClock, world: World) -> None:
    request = world.open(world.register("policy", "p"), "candidate")
    clk.advance(hours=169)
    with pytest.raises(Conflict, match="is expired"):
        world.cp.governance.withdraw(world.eng.principal, request["id"], "too late")
    assert world.request(request["id"])["state"] == "expired"
    assert [e["payload"]["request_id"] for e in world.entries("promotion.expired")] == [
        request["id"]
    ]


def test_expire_due_closes_every_due_request_once(clk: PinnedClock, world: World) -> None:
    due = world.open(world.register("policy", "a"), "candidate")
    staged = staged_policy(world, "b")
    short = world.open(staged, "canary", traffic_share=0.1)  # 72 hours
    clk.advance(hours=100)
    fresh = world.open(world.register("policy", "c"), "candidate")
    assert world.cp.governance.expire_due() == 1  # only the 72-hour one is due
    assert world.request(short["id"])["state"] == "expired"
    clk.advance(hours=100)
    assert world.cp.governance.expire_due() == 1
    assert world.request(due["id"])["state"] == "expired"
    assert world.request(fresh["id"])["state"] == "open"
    assert world.cp.governance.expire_due() == 0
    assert len(world.entries("promotion.expired")) == 2


def test_a_rejection_closes_the_request(world: World) -> None:
    request = canary_request(world)
    world.sign(world.alice, request["id"])
    bob = world.bob
    before = world.size()
    closed = world.sign(bob, request["id"], "reject", comment="eval set leaked")
    assert closed["state"] == "rejected"
    assert closed["closed_reason"] == "rejected by bob"
    assert [e["action"] for e in world.entries(start=before)] == [
        "promotion.signed_off",
        "promotion.rejected",
    ]
    assert closed["signoffs"][-1]["comment"] == "eval set leaked"
    with pytest.raises(Conflict, match="is rejected"):
        world.sign(world.carol, request["id"])
    assert world.stage(world.version(request)) == "staging"
    # a new request may be opened for the same move
    assert world.open(world.version(request), "canary", traffic_share=0.1)["state"] == "open"


def test_only_the_requester_may_withdraw(world: World) -> None:
    request = world.open(world.register("policy", "p"), "candidate")
    for other in (world.alice, world.trainer, world.admin):
        refusal = world.refused(
            partial(world.cp.governance.withdraw, other.principal, request["id"], "mine now"),
            "withdrawal.refused",
            "only the requester may withdraw a request",
            Refused,
        )
        assert refusal["actor"] == other.id
        assert refusal["payload"]["request_id"] == request["id"]
    assert world.request(request["id"])["state"] == "open"
    before = world.size()
    withdrawn = world.cp.governance.withdraw(world.eng.principal, request["id"], "wrong version")
    assert withdrawn["state"] == "withdrawn"
    (entry,) = world.entries(start=before)
    assert entry["action"] == "promotion.withdrawn"
    assert entry["payload"] == {"request_id": request["id"], "reason": "wrong version"}
    with pytest.raises(Conflict, match="is withdrawn"):
        world.sign(world.alice, request["id"])
    with pytest.raises(NotFound):
        world.cp.governance.withdraw(world.eng.principal, 10**9, "nope")
    with pytest.raises(NotFound):
        world.cp.governance.sign_off(
            world.alice.principal, 10**9, world.envelope(world.alice, request)
        )


def test_one_open_request_per_version_and_target(world: World) -> None:
    policy = world.register("policy", "p")
    world.open(policy, "candidate")
    with pytest.raises(Conflict, match="already open"):
        world.open(policy, "candidate")


def test_the_database_replays_after_refusals(world: World) -> None:
    request = canary_request(world)
    signoff_refused(
        world, world.eng, request["id"], world.envelope(world.eng, request), "may not sign off"
    )
    refused_request(world, world.register("policy", "z"), "staging", "starts from candidate")
    report = check_database(world.cp.store)
    assert report.ok, report.problems
