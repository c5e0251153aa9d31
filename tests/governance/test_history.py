"""Production history as an approver and an auditor read it: who approved which version.

Found by checking the project from outside: ``status`` credited a version pushed out of
production with the sign-offs of the request that replaced it (a promotion's stage changes
all carry its request id, also the one that moves the previous holder out).
"""

from __future__ import annotations

from datetime import timedelta

from tests.governance.helpers import T0, PinnedClock, World


def _status(world: World, name: str, **kwargs: object) -> dict:
    with world.cp.db.read() as session:
        return world.cp.governance.status(session, world.project, "policy", name, **kwargs)


def test_a_superseded_version_is_not_credited_with_its_successors_sign_offs(
    clk: PinnedClock, world: World
) -> None:
    clk.set(T0 + timedelta(hours=1))
    v1 = world.register("policy", "succ")
    world.to_production(v1)
    first = world.entries("promotion.requested")[-1]
    clk.set(T0 + timedelta(hours=2))
    v2 = world.register("policy", "succ")
    world.promote(v2, "candidate")
    world.evaluation(v2, "offline")
    world.promote(v2, "staging")
    world.promote(v2, "canary", traffic_share=0.2)
    world.evaluation(v2, "online")
    world.promote(v2, "production", (world.bob, world.carol))
    second = world.entries("promotion.requested")[-1]

    stages = _status(world, "succ")["stages"]
    (old,) = stages["retired"]
    assert old["version"] == 1
    assert old["reason"] == "superseded by version 2"
    # bob signed only version 2's request: version 1 must not look approved by him
    assert "bob" not in {a["signer"] for a in old.get("approvals", [])}
    assert old.get("request_id") != second["seq"]
    (new,) = stages["production"]
    assert new["request_id"] == second["seq"]
    assert [a["signer"] for a in new["approvals"]] == ["bob", "carol"]
    assert new["restored"] is False

    # a rollback brings version 1 back on its own, first approvals
    clk.set(T0 + timedelta(hours=3))
    world.cp.governance.rollback(world.alice.principal, world.project, "policy", "succ", "bad")
    stages = _status(world, "succ")["stages"]
    (back,) = stages["production"]
    assert back["version"] == 1 and back["restored"] is True
    assert back["request_id"] == first["seq"]
    assert [a["signer"] for a in back["approvals"]] == ["alice", "carol"]
    (out,) = stages["retired"]
    assert out["version"] == 2 and out["reason"] == "rollback: bad"
    assert "approvals" not in out
