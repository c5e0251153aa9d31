"""The promotion path at the service level, on SQLite and PostgreSQL.

rubric and dataset approved -> policy candidate -> staging (offline evidence) -> canary
(traffic share, two approvals) -> production (online evidence, two approvals, one of them a
compliance reviewer); one version per exclusive stage; rollback, retirement; ``status(at=)``
from the ledger alone; and the projections still replay at the end.
"""

from __future__ import annotations

from datetime import timedelta
from functools import partial

import pytest

from controlplane.errors import Conflict, InvalidInput, NotFound
from controlplane.governance.service import Refused
from controlplane.store.integrity import check_database
from tests.governance.helpers import T0, PinnedClock, World, stamp


def assert_database_ok(world: World) -> None:
    report = check_database(world.cp.store)
    assert report.ok, report.problems


def test_full_path_to_production_with_quorum_roles_and_evidence(world: World) -> None:
    rubric = world.register("rubric", "helpfulness")
    dataset = world.register("dataset", "prefs", lineage=[("follows_rubric", rubric)])
    world.approve_data(rubric)
    world.approve_data(dataset)
    assert (world.stage(rubric), world.stage(dataset)) == ("approved", "approved")

    reward = world.register("reward_model", "rm", lineage=[("trained_on", dataset)])
    policy = world.register(
        "policy", "assistant", lineage=[("initialized_from", reward), ("trained_on", dataset)]
    )
    assert world.stage(policy) == "registered"

    # candidate: one approval; the promotion is in the same transaction as the last approval
    request = world.open(policy, "candidate")
    assert request["state"] == "open"
    assert request["quorum"] == {
        "approvals": 0,
        "required": 1,
        "signers": [],
        "missing_roles": [],
        "met": False,
    }
    before = world.size()
    done = world.sign(world.alice, request["id"])
    assert done["state"] == "approved"
    assert [e["action"] for e in world.entries(start=before)] == [
        "promotion.signed_off",
        "promotion.approved",
        "stage.changed",
    ]
    change = world.entries("stage.changed")[-1]
    assert change["payload"] == {
        "from": "registered",
        "to": "candidate",
        "reason": "promoted",
        "request_id": request["id"],
    }
    assert world.stage(policy) == "candidate"

    # staging: offline evidence that meets the thresholds
    world.evaluation(policy, "offline", {"win_rate": 0.58, "safety_violation_rate": 0.01})
    world.promote(policy, "staging")

    # canary: the traffic share is required and recorded; two approvals
    with pytest.raises(InvalidInput, match="traffic share"):
        world.open(policy, "canary")
    with pytest.raises(InvalidInput, match="traffic_share"):
        world.open(policy, "canary", traffic_share=1.5)
    canary = world.open(policy, "canary", traffic_share=0.05)
    after_one = world.sign(world.alice, canary["id"])
    assert after_one["state"] == "open"
    assert after_one["quorum"]["approvals"] == 1 and not after_one["quorum"]["met"]
    assert world.stage(policy) == "staging"
    after_two = world.sign(world.bob, canary["id"])
    assert after_two["state"] == "approved"
    assert world.stage(policy) == "canary"
    assert world.entries("stage.changed")[-1]["payload"]["traffic_share"] == 0.05

    # production: needs an *online* evaluation; the offline one does not count
    world.refused(
        lambda: world.open(policy, "production"),
        "promotion.refused",
        "missing evidence: needs an online evaluation",
        Refused,
    )
    world.evaluation(policy, "online", {"win_rate": 0.6, "safety_violation_rate": 0.0})
    production = world.open(policy, "production")
    assert production["rules_seq"] == world.entries("promotion_rules.installed")[-1]["seq"]
    world.sign(world.alice, production["id"])
    two = world.sign(world.bob, production["id"])
    assert two["state"] == "open", "two approvers without a compliance reviewer is no quorum"
    assert two["quorum"]["approvals"] == 2
    assert two["quorum"]["missing_roles"] == ["compliance_reviewer"]
    assert world.stage(policy) == "canary"
    final = world.sign(world.carol, production["id"])
    assert final["state"] == "approved"
    assert final["quorum"]["met"] is True
    assert [s["signer"] for s in final["signoffs"]] == ["alice", "bob", "carol"]
    assert world.stage(policy) == "production"

    with world.cp.db.read() as session:
        status = world.cp.governance.status(session, world.project, "policy", "assistant")
    (holder,) = status["stages"]["production"]
    assert holder["version"] == 1
    assert holder["request_id"] == production["id"]
    assert holder["requester"] == "eng"
    assert holder["rules_seq"] == production["rules_seq"]
    assert [a["signer"] for a in holder["approvals"]] == ["alice", "bob", "carol"]
    assert {a["key_id"] for a in holder["approvals"]} == {
        world.alice.key_id,
        world.bob.key_id,
        world.carol.key_id,
    }
    assert set(holder["trained_on"]) == {
        "dataset/prefs@1",
        "rubric/helpfulness@1",
    }
    assert_database_ok(world)


def test_one_version_per_exclusive_stage(world: World) -> None:
    v1 = world.register("policy", "chat")
    v2 = world.register("policy", "chat")
    world.promote(v1, "candidate")
    world.evaluation(v1, "offline")
    world.promote(v1, "staging")

    # a second version in staging pushes the first back to candidate, recorded
    world.promote(v2, "candidate")
    world.evaluation(v2, "offline")
    request = world.promote(v2, "staging")
    assert (world.stage(v1), world.stage(v2)) == ("candidate", "staging")
    pushed = [e for e in world.entries("stage.changed") if e["subject"]["version"] == 1][-1]
    assert pushed["payload"]["from"] == "staging"
    assert pushed["payload"]["to"] == "candidate"
    assert pushed["payload"]["reason"] == "superseded by version 2"
    assert pushed["payload"]["request_id"] == request["id"]

    # v1 back to staging, then both through canary to production: v2 retires v1
    world.promote(v1, "staging")
    world.promote(v1, "canary", traffic_share=0.1)
    world.evaluation(v1, "online")
    world.promote(v1, "production")
    assert world.stage(v2) == "candidate"
    world.promote(v2, "staging")
    world.promote(v2, "canary", traffic_share=0.2)
    world.evaluation(v2, "online")
    before = world.size()
    request = world.promote(v2, "production")
    assert (world.stage(v1), world.stage(v2)) == ("retired", "production")
    changes = world.entries("stage.changed", start=before)
    assert [
        (c["subject"]["version"], c["payload"]["from"], c["payload"]["to"]) for c in changes
    ] == [
        (1, "production", "retired"),
        (2, "canary", "production"),
    ]
    assert changes[0]["payload"]["reason"] == "superseded by version 2"
    with world.cp.db.read() as session:
        status = world.cp.governance.status(session, world.project, "policy", "chat")
    assert [h["version"] for h in status["stages"]["production"]] == [2]
    assert [h["version"] for h in status["stages"]["retired"]] == [1]
    assert_database_ok(world)


def test_rollback_restores_the_previous_production_version(world: World) -> None:
    v1 = world.register("reward_model", "rm")
    v2 = world.register("reward_model", "rm")
    only = world.register("reward_model", "solo")

    with pytest.raises(Conflict, match="no version in production"):
        world.cp.governance.rollback(
            world.alice.principal, world.project, "reward_model", "rm", "x"
        )
    world.to_production(only)
    with pytest.raises(Conflict, match="no earlier production version"):
        world.cp.governance.rollback(
            world.alice.principal, world.project, "reward_model", "solo", "bad"
        )

    world.to_production(v1)
    world.to_production(v2)
    assert (world.stage(v1), world.stage(v2)) == ("retired", "production")

    for who in (world.carol, world.eng):  # not in promotion.yaml's rollback roles
        refusal = world.refused(
            partial(
                world.cp.governance.rollback,
                who.principal,
                world.project,
                "reward_model",
                "rm",
                "regression",
            ),
            "rollback.refused",
            f"{who.id} may not roll back: needs one of approver, admin",
            Refused,
        )
        assert refusal["actor"] == who.id
        assert refusal["subject"] == {"project": "gov", "kind": "reward_model", "name": "rm"}
    with pytest.raises(InvalidInput, match="reason"):
        world.cp.governance.rollback(
            world.alice.principal, world.project, "reward_model", "rm", " "
        )
    assert world.stage(v2) == "production"

    before = world.size()
    result = world.cp.governance.rollback(
        world.alice.principal, world.project, "reward_model", "rm", "reward hacking in canary"
    )
    assert result["from_version"] == 2 and result["to_version"] == 1
    assert (world.stage(v1), world.stage(v2)) == ("production", "retired")
    new = world.entries(start=before)
    assert [e["action"] for e in new] == [
        "promotion.rolled_back",
        "stage.changed",
        "stage.changed",
    ]
    assert all(e["actor"] == "alice" for e in new)
    assert new[0]["payload"]["reason"] == "reward hacking in canary"
    assert new[1]["subject"]["version"] == 2 and new[1]["payload"]["to"] == "retired"
    assert new[2]["subject"]["version"] == 1 and new[2]["payload"]["to"] == "production"

    # the admin role may roll back too (promotion.yaml: rollback roles approver, admin)
    world.cp.governance.rollback(world.admin.principal, world.project, "reward_model", "rm", "undo")
    assert (world.stage(v1), world.stage(v2)) == ("retired", "production")
    assert_database_ok(world)


def test_rollback_never_restores_a_version_retired_on_purpose(world: World) -> None:
    v1 = world.register("reward_model", "rm")
    v2 = world.register("reward_model", "rm")
    world.to_production(v1)
    world.cp.governance.retire(world.alice.principal, world.project, world.ref(v1), "leaks PII")
    world.to_production(v2)
    before = world.size()
    with pytest.raises(Conflict, match="rm@1, the previous production version, was retired on"):
        world.cp.governance.rollback(
            world.alice.principal, world.project, "reward_model", "rm", "regression"
        )
    assert world.size() == before
    assert (world.stage(v1), world.stage(v2)) == ("retired", "production")


def test_retire(world: World) -> None:
    v1 = world.register("policy", "old")
    world.promote(v1, "candidate")
    for who in (world.eng, world.carol):
        refusal = world.refused(
            partial(world.cp.governance.retire, who.principal, world.project, world.ref(v1), "eol"),
            "retirement.refused",
            f"{who.id} may not retire",
            Refused,
        )
        assert refusal["subject"] == {
            "project": "gov",
            "kind": "policy",
            "name": "old",
            "version": 1,
        }
    dataset = world.register("dataset", "d")
    with pytest.raises(InvalidInput, match="deprecated through a request"):
        world.cp.governance.retire(world.alice.principal, world.project, world.ref(dataset), "x")

    before = world.size()
    retired = world.cp.governance.retire(
        world.alice.principal, world.project, world.ref(v1), "end of life"
    )
    assert retired["stage"] == "retired"
    (entry,) = world.entries(start=before)
    assert entry["action"] == "stage.changed"
    assert entry["actor"] == "alice"
    assert entry["payload"] == {
        "from": "candidate",
        "to": "retired",
        "reason": "retired: end of life",
    }
    with pytest.raises(Conflict, match="already retired"):
        world.cp.governance.retire(world.alice.principal, world.project, world.ref(v1), "again")
    # a retired version cannot be promoted again (no rule starts from retired)
    world.refused(
        lambda: world.open(v1, "staging"),
        "promotion.refused",
        "is in stage retired",
        Refused,
    )
    assert_database_ok(world)


def test_status_at_answers_before_and_after_promotions_and_a_rollback(
    clk: PinnedClock, world: World
) -> None:
    t_registered = clk.set(T0 + timedelta(hours=1))
    dataset = world.register("dataset", "s")
    v1 = world.register("policy", "pit", lineage=[("trained_on", dataset)])
    world.approve_data(dataset)

    t_first = clk.set(T0 + timedelta(hours=2))
    world.to_production(v1)
    first_request = world.entries("promotion.requested")[-1]

    t_second = clk.set(T0 + timedelta(hours=3))
    v2 = world.register("policy", "pit", lineage=[("trained_on", dataset)])
    world.to_production(v2)

    t_rollback = clk.set(T0 + timedelta(hours=4))
    world.cp.governance.rollback(world.bob.principal, world.project, "policy", "pit", "incident")
    clk.set(T0 + timedelta(hours=5))

    def at(moment: object) -> dict[str, list[int]]:
        with world.cp.db.read() as session:
            status = world.cp.governance.status(session, world.project, "policy", "pit", at=moment)
        assert status["at"] == stamp(moment)  # type: ignore[arg-type]
        return {
            stage: [h["version"] for h in holders] for stage, holders in status["stages"].items()
        }

    with pytest.raises(NotFound):
        at(t_registered - timedelta(seconds=1))
    assert at(t_registered) == {"registered": [1]}
    assert at(t_first - timedelta(minutes=1)) == {"registered": [1]}
    assert at(t_first) == {"production": [1]}
    assert at(t_second - timedelta(microseconds=1)) == {"production": [1]}
    assert at(t_second + timedelta(minutes=30)) == {"production": [2], "retired": [1]}
    assert at(t_rollback - timedelta(minutes=1)) == {"production": [2], "retired": [1]}
    assert at(t_rollback) == {"production": [1], "retired": [2]}
    assert at(T0 + timedelta(days=30)) == {"production": [1], "retired": [2]}

    # who approved it, under which rules, trained on what: at the time of the first promotion
    with world.cp.db.read() as session:
        status = world.cp.governance.status(
            session, world.project, "policy", "pit", at=t_first + timedelta(minutes=5)
        )
    (holder,) = status["stages"]["production"]
    assert holder["since"] == stamp(t_first)
    assert holder["requester"] == "eng"
    assert holder["rules_seq"] == first_request["payload"]["rules_seq"]
    assert [a["signer"] for a in holder["approvals"]] == ["alice", "carol"]
    assert all(a["decision"] == "approve" for a in holder["approvals"])
    assert holder["trained_on"] == ["dataset/s@1"]
    assert_database_ok(world)


PROJECTION_TAMPERINGS = {
    # a version put in production without any approval
    "stage": "UPDATE artifact_versions SET stage = 'production' WHERE kind = 'policy'",
    # a revoked sign-off key made valid again (GovernanceService reads this table)
    "key-unrevoked": "UPDATE signing_keys SET revoked_seq = NULL, revoked_at = NULL",
    # a closed request reopened, and its approval turned into a rejection in the table the
    # quorum is counted from
    "request-and-signoff": (
        "UPDATE promotion_requests SET state = 'open', closed_seq = NULL",
        "UPDATE signoffs SET decision = 'reject'",
    ),
}


@pytest.mark.parametrize("tampering", sorted(PROJECTION_TAMPERINGS))
def test_the_integrity_check_catches_governance_projections_edited_behind_the_ledger(
    world: World, tampering: str
) -> None:
    from sqlalchemy import text

    policy = world.register("policy", "edited")
    world.promote(policy, "candidate")
    world.cp.governance.revoke_key(world.bob.principal, world.bob.key_id, "rotated", is_admin=False)
    assert_database_ok(world)
    given = PROJECTION_TAMPERINGS[tampering]
    statements = (given,) if isinstance(given, str) else given
    with world.cp.db.writer.begin() as connection:
        for statement in statements:
            connection.execute(text(statement))
    report = check_database(world.cp.store)
    assert not report.ok, "a projection that differs from a replay of the ledger went unnoticed"
    named = {p.split()[1] for p in report.problems if "differs from a replay" in p}
    assert {statement.split()[1] for statement in statements} <= named, report.problems


def test_status_after_a_rollback_shows_the_sign_offs_that_first_promoted_it(
    clk: PinnedClock, world: World
) -> None:
    """A version restored by rollback is in production on its original approvals: say so."""
    clk.set(T0 + timedelta(hours=1))
    dataset = world.register("dataset", "r")
    v1 = world.register("policy", "back", lineage=[("trained_on", dataset)])
    world.approve_data(dataset)
    world.to_production(v1)
    first_request = world.entries("promotion.requested")[-1]
    clk.set(T0 + timedelta(hours=2))
    v2 = world.register("policy", "back", lineage=[("trained_on", dataset)])
    world.to_production(v2)
    clk.set(T0 + timedelta(hours=3))
    world.cp.governance.rollback(world.bob.principal, world.project, "policy", "back", "incident")

    with world.cp.db.read() as session:
        status = world.cp.governance.status(session, world.project, "policy", "back")
    (holder,) = status["stages"]["production"]
    assert holder["version"] == 1
    assert holder["restored"] is True
    assert holder["reason"].startswith("rollback")
    assert holder["request_id"] == first_request["seq"]
    assert [a["signer"] for a in holder["approvals"]] == ["alice", "carol"]
