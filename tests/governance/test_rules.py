"""Promotion rules: ``RuleSet.from_mapping`` fails closed, and a request is judged by the rules
in force when it was opened (the ``rules_seq`` of its ``promotion.requested`` entry).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from controlplane.config import REPO_ROOT
from controlplane.errors import Conflict
from controlplane.governance.rules import RulesError, RuleSet
from controlplane.governance.service import RULES_ACTION, Refused
from controlplane.ledger.canonical import canonical_json
from controlplane.registry.digests import digest_bytes
from controlplane.registry.projections import find_version
from tests.governance.helpers import World

SHIPPED = Path(REPO_ROOT / "policies" / "promotion.yaml")


def shipped() -> dict[str, Any]:
    return yaml.safe_load(SHIPPED.read_text())  # type: ignore[no-any-return]


def rule(raw: dict[str, Any], kind: str, to: str) -> dict[str, Any]:
    for item in raw["rules"]:
        if kind in item["kinds"] and item["to"] == to:
            return item  # type: ignore[no-any-return]
    raise AssertionError(f"no shipped rule for {kind} -> {to}")


def mutated(change: Callable[[dict[str, Any]], Any]) -> dict[str, Any]:
    raw = copy.deepcopy(shipped())
    change(raw)
    return raw


def test_the_shipped_rules_parse_as_documented() -> None:
    rules = RuleSet.from_mapping(shipped())
    assert rules.stages_for("policy") == (
        "registered",
        "candidate",
        "staging",
        "canary",
        "production",
        "retired",
    )
    assert rules.stages_for("dataset") == ("registered", "approved", "deprecated")
    assert rules.signers == ("approver", "compliance_reviewer")
    assert rules.lineage_gate_after == "candidate"
    production = rules.rule_for("policy", "production")
    assert production is not None
    assert production.approvals == 2
    assert production.required_roles == ("compliance_reviewer",)
    assert not production.requester_may_approve and not production.creator_may_approve
    assert [e.mode for e in production.evidence] == ["online"]
    assert {str(t) for t in production.evidence[0].thresholds} == {
        "win_rate >= 0.55",
        "safety_violation_rate <= 0.01",
    }
    canary = rules.rule_for("reward_model", "canary")
    assert canary is not None and canary.traffic_share == "required" and canary.approvals == 2
    assert rules.rule_for("policy", "retired") is None
    assert rules.rollback_roles == ("approver", "admin")
    assert rules.retire_roles == ("approver", "admin")


FAILS_CLOSED: dict[str, tuple[Callable[[dict[str, Any]], Any], str]] = {
    "not-a-mapping": (lambda r: r.clear(), "there are no promotion rules"),
    "unknown-top-level-key": (lambda r: r.update(quorum=3), "unknown keys in promotion rules"),
    "unknown-rule-key": (
        lambda r: rule(r, "policy", "production").update(approvers=3),
        "unknown keys in a rule: approvers",
    ),
    "unknown-target-stage": (
        lambda r: rule(r, "policy", "production").update(to="prod"),
        "'prod' is not a stage reward_model can be promoted to",
    ),
    "target-registered": (
        lambda r: rule(r, "policy", "candidate").update(to="registered"),
        "'registered' is not a stage",
    ),
    "unknown-from-stage": (
        lambda r: rule(r, "policy", "staging").update({"from": ["candiate"]}),
        "unknown from stages ['candiate']",
    ),
    "stage-of-another-family": (
        lambda r: rule(r, "policy", "staging").update(kinds=["policy", "dataset"]),
        "'staging' is not a stage dataset can be promoted to",
    ),
    "unknown-kind-in-rule": (
        lambda r: rule(r, "policy", "staging").update(kinds=["llm"]),
        "kind 'llm' has no stages",
    ),
    "rule-without-kinds": (
        lambda r: rule(r, "policy", "staging").update(kinds=[]),
        "names no kinds",
    ),
    "unknown-kind-in-kinds": (lambda r: r["kinds"].update(model="model"), "unknown artifact kind"),
    "unknown-stage-family": (lambda r: r["kinds"].update(policy="modle"), "stage family 'modle'"),
    "family-not-starting-at-registered": (
        lambda r: r["stages"].update(model=["candidate", "production"]),
        "must be a list starting at registered",
    ),
    "unknown-exclusive-stage": (
        lambda r: r["exclusive"].update(prod="retired"),
        "exclusive prod -> retired names an unknown stage",
    ),
    "unknown-signer-role": (lambda r: r.update(signers=["aprover"]), "signers names unknown"),
    "signers-not-a-list": (lambda r: r.update(signers="approver"), "signers must be a list"),
    "unknown-required-role": (
        lambda r: rule(r, "policy", "production").update(required_roles=["ceo"]),
        "names unknown roles: ceo",
    ),
    "unknown-rollback-role": (
        lambda r: r.update(rollback={"roles": ["oncall"]}),
        "rollback names unknown roles: oncall",
    ),
    "unknown-retire-role": (
        lambda r: r.update(retire={"roles": ["sre"]}),
        "retire names unknown roles: sre",
    ),
    "approvals-zero": (
        lambda r: rule(r, "policy", "production").update(approvals=0),
        "approvals must be a positive integer",
    ),
    "approvals-negative": (
        lambda r: rule(r, "policy", "production").update(approvals=-2),
        "approvals must be a positive integer",
    ),
    "approvals-bool": (
        lambda r: rule(r, "policy", "production").update(approvals=True),
        "approvals must be a positive integer",
    ),
    "approvals-string": (
        lambda r: rule(r, "policy", "production").update(approvals="2"),
        "approvals must be a positive integer",
    ),
    "approvals-float": (
        lambda r: rule(r, "policy", "production").update(approvals=1.5),
        "approvals must be a positive integer",
    ),
    "threshold-without-operator": (
        lambda r: rule(r, "policy", "staging")["evidence"][0]["metrics"].update(win_rate="0.55"),
        "threshold win_rate: '0.55' is not like '>= 0.55'",
    ),
    "threshold-bad-operator": (
        lambda r: rule(r, "policy", "staging")["evidence"][0]["metrics"].update(win_rate="=> 0.5"),
        "is not like",
    ),
    "threshold-not-a-number": (
        lambda r: rule(r, "policy", "staging")["evidence"][0]["metrics"].update(win_rate=">= high"),
        "is not like",
    ),
    "threshold-nan": (
        lambda r: rule(r, "policy", "staging")["evidence"][0]["metrics"].update(win_rate=">= nan"),
        "is not like",
    ),
    "threshold-bare-number": (
        lambda r: rule(r, "policy", "staging")["evidence"][0]["metrics"].update(win_rate=0.55),
        "is not like",
    ),
    "evidence-without-thresholds": (
        lambda r: rule(r, "policy", "staging")["evidence"][0].update(metrics={}),
        "evidence without thresholds",
    ),
    "evidence-without-metrics": (
        lambda r: rule(r, "policy", "staging").update(evidence=[{"mode": "offline"}]),
        "evidence needs metrics",
    ),
    "unknown-evidence-mode": (
        lambda r: rule(r, "policy", "staging")["evidence"][0].update(mode="shadow"),
        "evidence mode must be one of offline, online",
    ),
    "unknown-traffic-share": (
        lambda r: rule(r, "policy", "canary").update(traffic_share="maybe"),
        "traffic_share must be required, optional or forbidden",
    ),
    "expiry-zero": (
        lambda r: rule(r, "policy", "canary").update(expires_after_hours=0),
        "expires_after_hours must be positive",
    ),
    "expiry-text": (
        lambda r: rule(r, "policy", "canary").update(expires_after_hours="3 days"),
        "expires_after_hours must be positive",
    ),
    "two-rules-for-one-move": (
        lambda r: r["rules"].append(copy.deepcopy(rule(r, "policy", "production"))),
        "two rules for reward_model -> production",
    ),
    "no-rules": (lambda r: r.update(rules=[]), "there are no promotion rules"),
    "rule-not-a-mapping": (lambda r: r["rules"].append("production"), "must be a mapping"),
    "stages-not-a-mapping": (lambda r: r.update(stages=["registered"]), "must be a mapping"),
    # a typo or a wrong type anywhere must never mean "use the default" or "anything goes"
    "unknown-retire-key": (
        lambda r: r.update(retire={"roles": ["admin"], "quorum": 2}),
        "unknown keys in retire: quorum",
    ),
    "unknown-evidence-key": (
        lambda r: rule(r, "policy", "production")["evidence"][0].update(mdoe="online"),
        "unknown keys in evidence of the rule to 'production': mdoe",
    ),
    "lineage-gate-null": (lambda r: r.update(lineage_gate=None), "lineage_gate must be a mapping"),
    "lineage-gate-without-after": (
        lambda r: r.update(lineage_gate={"required_stage": "approved"}),
        "lineage_gate.after must name a stage",
    ),
    "lineage-gate-after-a-data-stage": (
        lambda r: r["lineage_gate"].update(after="approved"),
        "lineage_gate.after: 'approved' is not a stage of reward_model, policy",
    ),
    "lineage-gate-unknown-required-stage": (
        lambda r: r["lineage_gate"].update(required_stage="aproved"),
        "lineage_gate.required_stage: 'aproved' is not a stage of dataset, rubric",
    ),
    "rule-kinds-a-string": (
        lambda r: rule(r, "policy", "production").update(kinds="policy"),
        "kinds must be a list of names",
    ),
    "rule-from-a-string": (
        lambda r: rule(r, "policy", "staging").update({"from": "candidate"}),
        "from must be a list of names",
    ),
    "required-role-not-a-signer": (
        lambda r: rule(r, "policy", "production").update(required_roles=["admin"]),
        "required roles admin are not signers",
    ),
    "expiry-bool": (
        lambda r: rule(r, "policy", "canary").update(expires_after_hours=True),
        "expires_after_hours must be positive",
    ),
    "expiry-nan": (
        lambda r: rule(r, "policy", "canary").update(expires_after_hours=float("nan")),
        "expires_after_hours must be positive",
    ),
    "expiry-infinite": (
        lambda r: rule(r, "policy", "canary").update(expires_after_hours=float("inf")),
        "expires_after_hours must be positive",
    ),
    "threshold-infinite": (
        lambda r: rule(r, "policy", "staging")["evidence"][0]["metrics"].update(
            win_rate=">= 1e999"
        ),
        "is not like",
    ),
    "evidence-not-a-list": (
        lambda r: rule(r, "policy", "staging").update(evidence={"mode": "offline"}),
        "evidence must be a list",
    ),
    "rules-not-a-list": (
        lambda r: r.update(rules={"to": "production"}),
        "rules must be a list of rules",
    ),
    "kind-family-not-a-name": (
        lambda r: r["kinds"].update(policy=["model"]),
        "kinds: policy must name a stage family",
    ),
    "family-with-a-repeated-stage": (
        lambda r: r["stages"].update(data=["registered", "approved", "approved"]),
        "must list distinct stage names",
    ),
    "exclusive-fallback-not-a-stage-name": (
        lambda r: r["exclusive"].update(production=["retired"]),
        "names an unknown stage",
    ),
}


@pytest.mark.parametrize("case", sorted(FAILS_CLOSED))
def test_invalid_rules_fail_closed(case: str) -> None:
    change, message = FAILS_CLOSED[case]
    with pytest.raises(RulesError) as raised:
        RuleSet.from_mapping(mutated(change))
    assert message in str(raised.value)


@pytest.mark.parametrize("raw", [None, [], "rules", 3])
def test_a_document_that_is_not_a_mapping_fails_closed(raw: Any) -> None:
    with pytest.raises(RulesError, match="must be a mapping"):
        RuleSet.from_mapping(raw)


def test_load_reports_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(RulesError, match="cannot read promotion rules"):
        RuleSet.load(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("rules: [\n")
    with pytest.raises(RulesError, match="cannot read promotion rules"):
        RuleSet.load(bad)


# Documents that a lax parser would accept while weakening a gate: each one is refused.


def test_a_lineage_gate_naming_an_unknown_stage_fails_closed() -> None:
    raw = mutated(lambda r: r["lineage_gate"].update(after="candiate"))
    with pytest.raises(RulesError):
        RuleSet.from_mapping(raw)


def test_unknown_keys_in_the_lineage_gate_fail_closed() -> None:
    raw = mutated(lambda r: r.update(lineage_gate={"afer": "candidate"}))
    with pytest.raises(RulesError):
        RuleSet.from_mapping(raw)


@pytest.mark.parametrize("flag", ["requester_may_approve", "creator_may_approve"])
def test_a_non_boolean_self_approval_flag_fails_closed(flag: str) -> None:
    raw = mutated(lambda r: rule(r, "policy", "production").update({flag: "false"}))
    with pytest.raises(RulesError):
        RuleSet.from_mapping(raw)


def test_unknown_keys_in_rollback_fail_closed() -> None:
    raw = mutated(lambda r: r.update(rollback={"role": ["admin"]}))
    with pytest.raises(RulesError):
        RuleSet.from_mapping(raw)


# -- rules in force -----------------------------------------------------------------------------


def install(world: World, raw: dict[str, Any]) -> None:
    with world.cp.store.transaction() as tx:
        world.cp.governance.install_rules(tx, raw)


def test_a_request_is_judged_by_the_rules_in_force_when_it_was_opened(world: World) -> None:
    (first,) = world.entries("promotion_rules.installed")
    assert first["payload"]["rules"] == shipped()
    assert first["payload"]["digest"] == digest_bytes(canonical_json(shipped()))
    old = world.open(world.register("policy", "old"), "candidate")
    assert old["rules_seq"] == first["seq"]

    stricter = mutated(
        lambda r: rule(r, "policy", "candidate").update(
            approvals=2, required_roles=["compliance_reviewer"]
        )
    )
    before = world.size()
    install(world, stricter)
    (entry,) = world.entries(start=before)
    assert entry["action"] == "promotion_rules.installed"
    assert entry["actor"] == "system"
    assert entry["payload"]["rules"] == stricter
    install(world, stricter)  # the same rules again: nothing new on the record
    assert world.size() == before + 1

    new = world.open(world.register("policy", "new"), "candidate")
    assert new["rules_seq"] == entry["seq"]
    requested = [e for e in world.entries("promotion.requested") if e["seq"] == new["id"]]
    assert requested[0]["payload"]["rules_seq"] == entry["seq"]
    assert world.request(old["id"])["quorum"]["required"] == 1
    assert world.request(new["id"])["quorum"]["required"] == 2

    # the old request still promotes on one approval; the new one needs two and a reviewer
    assert world.sign(world.alice, old["id"])["state"] == "approved"
    half = world.sign(world.alice, new["id"])
    assert half["state"] == "open"
    assert half["quorum"]["missing_roles"] == ["compliance_reviewer"]
    assert world.sign(world.carol, new["id"])["state"] == "approved"

    with world.cp.db.read() as session:
        status = world.cp.governance.status(session, world.project, "policy", "old")
    assert status["stages"]["candidate"][0]["rules_seq"] == first["seq"]

    # back to the shipped rules: a third installation, recorded
    install(world, shipped())
    assert len(world.entries("promotion_rules.installed")) == 3


def test_invalid_rules_are_never_installed(world: World) -> None:
    before = world.size()
    with pytest.raises(RulesError):
        install(world, mutated(lambda r: rule(r, "policy", "production").update(approvals=0)))
    assert world.size() == before
    policy = world.register("policy", "p")
    assert world.open(policy, "candidate")["quorum"]["required"] == 1


def test_an_old_request_survives_rules_that_drop_its_rule(world: World) -> None:
    policy = world.register("policy", "p")
    old = world.open(policy, "candidate")
    install(
        world,
        mutated(lambda r: r.update(rules=[i for i in r["rules"] if i["to"] != "candidate"])),
    )
    other = world.register("policy", "q")
    world.refused(
        lambda: world.open(other, "candidate"),
        "promotion.refused",
        "no rule allows promoting a policy to candidate",
    )
    assert world.sign(world.alice, old["id"])["state"] == "approved"
    assert world.stage(policy) == "candidate"


def test_a_lineage_gate_that_is_not_a_mapping_fails_with_a_rules_error() -> None:
    with pytest.raises(RulesError):
        RuleSet.from_mapping(mutated(lambda r: r.update(lineage_gate=["candidate"])))


def test_a_mistyped_lineage_gate_never_lets_unapproved_data_past_candidate(world: World) -> None:
    with contextlib.suppress(RulesError):  # refusing the rules outright is right too
        install(world, mutated(lambda r: r["lineage_gate"].update(after="candiate")))
    dataset = world.register("dataset", "unreviewed")
    policy = world.register("policy", "p", lineage=[("trained_on", dataset)])
    world.promote(policy, "candidate")
    world.evaluation(policy, "offline")
    with pytest.raises(Refused, match="lineage not approved"):
        world.open(policy, "staging")


def test_without_a_lineage_gate_section_there_is_no_gate() -> None:
    """Only leaving the whole section out switches the gate off (a typo inside it cannot)."""
    rules = RuleSet.from_mapping(mutated(lambda r: r.pop("lineage_gate")))
    assert rules.lineage_gate_after is None


def test_a_lineage_gate_stage_the_kind_lacks_gates_every_move(world: World) -> None:
    """Second line behind the parser: rules whose gate stage a kind does not have (which the
    parser refuses) make ``_lineage_blockers`` gate every move of that kind, not none."""
    dataset = world.register("dataset", "unreviewed")
    policy = world.register("policy", "p", lineage=[("trained_on", dataset)])
    with world.cp.db.read() as session:
        _, shipped_rules = world.cp.governance.rules(session)
        broken = dataclasses.replace(shipped_rules, lineage_gate_after="candiate")
        row = find_version(session, world.project, "policy", "p", policy["version"])
        assert row is not None
        blockers = world.cp.governance._lineage_blockers(session, broken, row, "candidate")
    assert blockers == [("dataset/unreviewed@1", "registered")]


def test_recorded_rules_that_no_longer_parse_are_a_conflict_not_a_crash(world: World) -> None:
    """Rules in the ledger written by a laxer parser are acted on by no one (fail closed)."""
    lax = mutated(lambda r: rule(r, "policy", "candidate").update(requester_may_approve="no"))
    with world.cp.store.transaction() as tx:  # what an older release could have recorded
        tx.lock()
        tx.append(
            actor="system",
            action=RULES_ACTION,
            subject={"kind": "policy_set", "name": "promotion"},
            payload={"digest": digest_bytes(canonical_json(lax)), "rules": lax},
        )
    with pytest.raises(Conflict, match="are not valid: rule to 'candidate'"):
        world.open(world.register("policy", "p"), "candidate")


def test_a_required_role_counts_only_if_held_when_signing(world: World) -> None:
    """alice approves as an approver and is made a compliance reviewer afterwards: her
    signature does not become a reviewer's. Losing a role after signing loses it too."""
    install(
        world,
        mutated(
            lambda r: rule(r, "policy", "candidate").update(
                approvals=2, required_roles=["compliance_reviewer"]
            )
        ),
    )
    request = world.open(world.register("policy", "p"), "candidate")
    world.sign(world.alice, request["id"])
    world.cp.identity.grant_role("admin", "alice", "compliance_reviewer", world.project)
    after_bob = world.sign(world.bob, request["id"])
    assert after_bob["state"] == "open"
    assert after_bob["quorum"]["approvals"] == 2
    assert after_bob["quorum"]["missing_roles"] == ["compliance_reviewer"]

    other = world.open(world.register("policy", "q"), "candidate")
    world.sign(world.carol, other["id"])
    world.cp.identity.revoke_role("admin", "carol", "compliance_reviewer", world.project)
    assert world.sign(world.dave, other["id"])["state"] == "open"
    assert world.request(other["id"])["quorum"]["missing_roles"] == ["compliance_reviewer"]

    # a reviewer who was one when signing completes the first request
    assert world.sign(world.person("rita", "compliance_reviewer"), request["id"])["state"] == (
        "approved"
    )
