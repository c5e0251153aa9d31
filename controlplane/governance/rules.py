"""Promotion rules (``policies/promotion.yaml``): parsed strictly, failing closed.

A rule set that does not parse, names an unknown stage or role, or asks for zero approvals is
refused at start, so a typo can never open a path to production.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from controlplane.authz.enforcer import ROLES
from controlplane.registry.refs import KINDS

_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    ">": operator.gt,
    "<": operator.lt,
    "==": operator.eq,
}
_THRESHOLD = re.compile(r"\s*(>=|<=|==|>|<)\s*(-?[0-9]+(?:\.[0-9]+)?(?:[eE]-?[0-9]+)?)\s*")
EVALUATION_MODES = ("offline", "online")


class RulesError(ValueError):
    """The promotion rules are invalid."""


@dataclass(frozen=True)
class Threshold:
    metric: str
    op: str
    value: float

    def holds(self, actual: Any) -> bool:
        if isinstance(actual, bool) or not isinstance(actual, int | float):
            return False
        return _OPS[self.op](float(actual), self.value)

    def __str__(self) -> str:
        return f"{self.metric} {self.op} {self.value:g}"


@dataclass(frozen=True)
class Evidence:
    """An evaluation linked ``evaluated_on`` the candidate must meet every threshold."""

    mode: str | None
    thresholds: tuple[Threshold, ...]

    def describe(self) -> str:
        where = f"{self.mode} " if self.mode else ""
        return f"an {where}evaluation with " + ", ".join(map(str, self.thresholds))


@dataclass(frozen=True)
class Rule:
    kinds: tuple[str, ...]
    to: str
    from_stages: tuple[str, ...]
    approvals: int
    required_roles: tuple[str, ...]
    requester_may_approve: bool
    creator_may_approve: bool
    evidence: tuple[Evidence, ...]
    expires_after_hours: float
    traffic_share: str  # required | optional | forbidden


@dataclass(frozen=True)
class RuleSet:
    stages: Mapping[str, tuple[str, ...]]  # kind -> ordered stages
    exclusive: Mapping[str, str]  # stage -> where a superseded holder goes
    signers: tuple[str, ...]
    lineage_gate_after: str | None
    lineage_required_stage: str
    rules: tuple[Rule, ...]
    rollback_roles: tuple[str, ...]
    retire_roles: tuple[str, ...]

    def stages_for(self, kind: str) -> tuple[str, ...]:
        return self.stages.get(kind, ("registered",))

    def rule_for(self, kind: str, target: str) -> Rule | None:
        for rule in self.rules:
            if kind in rule.kinds and rule.to == target:
                return rule
        return None

    @classmethod
    def load(cls, path: Path) -> tuple[RuleSet, dict[str, Any]]:
        try:
            raw = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise RulesError(f"cannot read promotion rules {path}: {exc}") from None
        return cls.from_mapping(raw), raw

    @classmethod
    def from_mapping(cls, raw: Any) -> RuleSet:
        if not isinstance(raw, dict):
            raise RulesError("promotion rules must be a mapping")
        known = {
            "stages",
            "kinds",
            "exclusive",
            "signers",
            "lineage_gate",
            "rules",
            "rollback",
            "retire",
        }
        unknown = set(raw) - known
        if unknown:
            raise RulesError(f"unknown keys in promotion rules: {', '.join(sorted(unknown))}")
        families = _mapping(raw, "stages")
        stages: dict[str, tuple[str, ...]] = {}
        for kind, family in _mapping(raw, "kinds").items():
            if kind not in KINDS:
                raise RulesError(f"unknown artifact kind {kind!r}")
            order = families.get(family)
            if not isinstance(order, list) or not order or order[0] != "registered":
                raise RulesError(f"stage family {family!r} must be a list starting at registered")
            stages[kind] = tuple(str(s) for s in order)
        every_stage = {s for order in stages.values() for s in order}
        exclusive = {str(k): str(v) for k, v in _mapping(raw, "exclusive").items()}
        for stage, fallback in exclusive.items():
            if stage not in every_stage or fallback not in every_stage:
                raise RulesError(f"exclusive {stage} -> {fallback} names an unknown stage")
        signers = _roles(raw.get("signers", ["approver"]), "signers")
        gate = raw.get("lineage_gate") or {}
        rules = tuple(_rule(item, stages) for item in raw.get("rules") or [])
        if not rules:
            raise RulesError("there are no promotion rules")
        seen = set()
        for rule in rules:
            for kind in rule.kinds:
                if (kind, rule.to) in seen:
                    raise RulesError(f"two rules for {kind} -> {rule.to}")
                seen.add((kind, rule.to))
        return cls(
            stages=stages,
            exclusive=exclusive,
            signers=signers,
            lineage_gate_after=gate.get("after"),
            lineage_required_stage=str(gate.get("required_stage", "approved")),
            rules=rules,
            rollback_roles=_roles(_mapping(raw, "rollback").get("roles", ["approver"]), "rollback"),
            retire_roles=_roles(_mapping(raw, "retire").get("roles", ["approver"]), "retire"),
        )


def _mapping(raw: dict[str, Any], key: str) -> dict[str, Any]:
    value = raw.get(key) or {}
    if not isinstance(value, dict):
        raise RulesError(f"{key} must be a mapping")
    return value


def _roles(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise RulesError(f"{where} must be a list of roles")
    unknown = [v for v in value if v not in ROLES]
    if unknown:
        raise RulesError(f"{where} names unknown roles: {', '.join(unknown)}")
    return tuple(value)


def _rule(item: Any, stages: Mapping[str, tuple[str, ...]]) -> Rule:
    if not isinstance(item, dict):
        raise RulesError("every rule must be a mapping")
    allowed = {
        "kinds",
        "to",
        "from",
        "approvals",
        "required_roles",
        "requester_may_approve",
        "creator_may_approve",
        "evidence",
        "expires_after_hours",
        "traffic_share",
    }
    unknown = set(item) - allowed
    if unknown:
        raise RulesError(f"unknown keys in a rule: {', '.join(sorted(unknown))}")
    kinds = tuple(item.get("kinds") or [])
    target = str(item.get("to", ""))
    if not kinds:
        raise RulesError(f"rule to {target!r} names no kinds")
    for kind in kinds:
        if kind not in stages:
            raise RulesError(f"rule to {target!r}: kind {kind!r} has no stages")
        if target not in stages[kind] or target == "registered":
            raise RulesError(f"rule: {target!r} is not a stage {kind} can be promoted to")
    order = stages[kinds[0]]
    default_from = (order[order.index(target) - 1],)
    from_stages = tuple(str(s) for s in item.get("from") or default_from)
    for kind in kinds:
        bad = [s for s in from_stages if s not in stages[kind]]
        if bad:
            raise RulesError(f"rule to {target!r}: unknown from stages {bad}")
    approvals = item.get("approvals", 1)
    if not isinstance(approvals, int) or isinstance(approvals, bool) or approvals < 1:
        raise RulesError(f"rule to {target!r}: approvals must be a positive integer")
    evidence = []
    for spec in item.get("evidence") or []:
        if not isinstance(spec, dict) or not isinstance(spec.get("metrics"), dict):
            raise RulesError(f"rule to {target!r}: evidence needs metrics")
        mode = spec.get("mode")
        if mode is not None and mode not in EVALUATION_MODES:
            raise RulesError(f"evidence mode must be one of {', '.join(EVALUATION_MODES)}")
        thresholds = []
        for metric, expression in spec["metrics"].items():
            match = _THRESHOLD.fullmatch(str(expression))
            if not match:
                raise RulesError(f"threshold {metric}: {expression!r} is not like '>= 0.55'")
            thresholds.append(Threshold(str(metric), match[1], float(match[2])))
        if not thresholds:
            raise RulesError(f"rule to {target!r}: evidence without thresholds")
        evidence.append(Evidence(mode, tuple(thresholds)))
    share = str(item.get("traffic_share", "forbidden"))
    if share not in ("required", "optional", "forbidden"):
        raise RulesError("traffic_share must be required, optional or forbidden")
    hours = item.get("expires_after_hours", 168)
    if not isinstance(hours, int | float) or hours <= 0:
        raise RulesError(f"rule to {target!r}: expires_after_hours must be positive")
    return Rule(
        kinds=kinds,
        to=target,
        from_stages=from_stages,
        approvals=approvals,
        required_roles=_roles(item.get("required_roles", []), f"rule to {target}"),
        requester_may_approve=bool(item.get("requester_may_approve", False)),
        creator_may_approve=bool(item.get("creator_may_approve", False)),
        evidence=tuple(evidence),
        expires_after_hours=float(hours),
        traffic_share=share,
    )
