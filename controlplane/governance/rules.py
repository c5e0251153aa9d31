"""Promotion rules (``policies/promotion.yaml``): parsed strictly, failing closed.

A rule set that does not parse, names an unknown stage or role, asks for zero approvals, has a
key this parser does not know (at any level) or a value of the wrong type is refused at start,
so a typo can never open a path to production: nothing falls back to a default because a key
was misspelled, and nothing is coerced (``bool("false")`` is True).
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from controlplane.authz.enforcer import ROLES
from controlplane.registry.refs import KINDS, MODEL_KINDS

_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    ">": operator.gt,
    "<": operator.lt,
    "==": operator.eq,
}
_THRESHOLD = re.compile(r"\s*(>=|<=|==|>|<)\s*(-?[0-9]+(?:\.[0-9]+)?(?:[eE]-?[0-9]+)?)\s*")
EVALUATION_MODES = ("offline", "online")
# The kinds the lineage gate inspects among a model's ancestors (see GovernanceService).
GATED_LINEAGE_KINDS = ("dataset", "rubric")
# Longer expiries are refused: ``now + timedelta(hours=...)`` must stay representable.
MAX_EXPIRY_HOURS = 24 * 366 * 10


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
        _known(
            raw,
            {
                "stages",
                "kinds",
                "exclusive",
                "signers",
                "lineage_gate",
                "rules",
                "rollback",
                "retire",
            },
            "promotion rules",
        )
        families = _mapping(raw, "stages")
        stages: dict[str, tuple[str, ...]] = {}
        for kind, family in _mapping(raw, "kinds").items():
            if kind not in KINDS:
                raise RulesError(f"unknown artifact kind {kind!r}")
            if not isinstance(family, str):
                raise RulesError(f"kinds: {kind} must name a stage family")
            order = families.get(family)
            if not isinstance(order, list) or not order or order[0] != "registered":
                raise RulesError(f"stage family {family!r} must be a list starting at registered")
            if not all(isinstance(s, str) and s for s in order) or len(set(order)) != len(order):
                raise RulesError(f"stage family {family!r} must list distinct stage names")
            stages[kind] = tuple(order)
        every_stage = {s for order in stages.values() for s in order}
        exclusive = _mapping(raw, "exclusive")
        for stage, fallback in exclusive.items():
            if not isinstance(fallback, str) or not {stage, fallback} <= every_stage:
                raise RulesError(f"exclusive {stage} -> {fallback} names an unknown stage")
        signers = _roles(raw.get("signers", ["approver"]), "signers")
        gate_after, gate_required = _lineage_gate(raw, stages)
        items = raw.get("rules") or []
        if not isinstance(items, list):
            raise RulesError("rules must be a list of rules")
        rules = tuple(_rule(item, stages, signers) for item in items)
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
            lineage_gate_after=gate_after,
            lineage_required_stage=gate_required,
            rules=rules,
            rollback_roles=_emergency_roles(raw, "rollback"),
            retire_roles=_emergency_roles(raw, "retire"),
        )


def _known(raw: dict[str, Any], allowed: set[str], where: str) -> None:
    """Refuse keys this parser does not know: a misspelled key must not mean its default."""
    unknown = set(map(str, raw)) - allowed
    if unknown:
        raise RulesError(f"unknown keys in {where}: {', '.join(sorted(unknown))}")


def _lineage_gate(
    raw: dict[str, Any], stages: Mapping[str, tuple[str, ...]]
) -> tuple[str | None, str]:
    """``(after, required_stage)``; no gate only when the section is absent altogether.

    ``after`` must be a stage of every model kind (an unknown stage would switch the gate off
    for that kind); ``required_stage`` a stage of every gated data kind (a typo there would
    block every model for a reason nobody could fix by approving data).
    """
    if "lineage_gate" not in raw:
        return None, "approved"
    gate = raw["lineage_gate"]
    if not isinstance(gate, dict):
        raise RulesError("lineage_gate must be a mapping with after and required_stage")
    _known(gate, {"after", "required_stage"}, "lineage_gate")
    after = gate.get("after")
    if not isinstance(after, str) or not after:
        raise RulesError("lineage_gate.after must name a stage")
    models = [k for k in MODEL_KINDS if k in stages]
    families = [set(stages[k]) for k in models] or [{s for o in stages.values() for s in o}]
    if any(after not in family for family in families):
        raise RulesError(
            f"lineage_gate.after: {after!r} is not a stage of " + ", ".join(models or ["any kind"])
        )
    required = gate.get("required_stage", "approved")
    if not isinstance(required, str) or not required:
        raise RulesError("lineage_gate.required_stage must name a stage")
    data = [k for k in GATED_LINEAGE_KINDS if k in stages]
    if not data or any(required not in stages[k] for k in data):
        raise RulesError(
            f"lineage_gate.required_stage: {required!r} is not a stage of "
            + ", ".join(GATED_LINEAGE_KINDS)
        )
    return after, required


def _emergency_roles(raw: dict[str, Any], key: str) -> tuple[str, ...]:
    section = _mapping(raw, key)
    _known(section, {"roles"}, key)
    return _roles(section.get("roles", ["approver"]), key)


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


def _rule(item: Any, stages: Mapping[str, tuple[str, ...]], signers: tuple[str, ...]) -> Rule:
    if not isinstance(item, dict):
        raise RulesError("every rule must be a mapping")
    _known(
        item,
        {
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
        },
        "a rule",
    )
    target = item.get("to", "")
    if not isinstance(target, str):
        raise RulesError(f"rule: to must name a stage, not {target!r}")
    kinds = _names(item.get("kinds") or [], f"rule to {target!r}: kinds")
    if not kinds:
        raise RulesError(f"rule to {target!r} names no kinds")
    for kind in kinds:
        if kind not in stages:
            raise RulesError(f"rule to {target!r}: kind {kind!r} has no stages")
        if target not in stages[kind] or target == "registered":
            raise RulesError(f"rule: {target!r} is not a stage {kind} can be promoted to")
    order = stages[kinds[0]]
    default_from = (order[order.index(target) - 1],)
    from_stages = _names(item.get("from") or default_from, f"rule to {target!r}: from")
    for kind in kinds:
        bad = [s for s in from_stages if s not in stages[kind]]
        if bad:
            raise RulesError(f"rule to {target!r}: unknown from stages {bad}")
    approvals = item.get("approvals", 1)
    if not isinstance(approvals, int) or isinstance(approvals, bool) or approvals < 1:
        raise RulesError(f"rule to {target!r}: approvals must be a positive integer")
    required_roles = _roles(item.get("required_roles", []), f"rule to {target}")
    not_signers = [r for r in required_roles if r not in signers]
    if not_signers:
        raise RulesError(
            f"rule to {target!r}: required roles {', '.join(not_signers)} are not signers"
        )
    evidence = []
    specs = item.get("evidence") or []
    if not isinstance(specs, list):
        raise RulesError(f"rule to {target!r}: evidence must be a list")
    for spec in specs:
        if not isinstance(spec, dict) or not isinstance(spec.get("metrics"), dict):
            raise RulesError(f"rule to {target!r}: evidence needs metrics")
        _known(spec, {"mode", "metrics"}, f"evidence of the rule to {target!r}")
        mode = spec.get("mode")
        if mode is not None and mode not in EVALUATION_MODES:
            raise RulesError(f"evidence mode must be one of {', '.join(EVALUATION_MODES)}")
        thresholds = []
        for metric, expression in spec["metrics"].items():
            match = _THRESHOLD.fullmatch(expression) if isinstance(expression, str) else None
            if not match or not math.isfinite(float(match[2])):
                raise RulesError(f"threshold {metric}: {expression!r} is not like '>= 0.55'")
            if not isinstance(metric, str) or not metric:
                raise RulesError(f"threshold {metric!r}: a metric is named by a string")
            thresholds.append(Threshold(metric, match[1], float(match[2])))
        if not thresholds:
            raise RulesError(f"rule to {target!r}: evidence without thresholds")
        evidence.append(Evidence(mode, tuple(thresholds)))
    share = item.get("traffic_share", "forbidden")
    if share not in ("required", "optional", "forbidden"):
        raise RulesError("traffic_share must be required, optional or forbidden")
    hours = item.get("expires_after_hours", 168)
    if (
        isinstance(hours, bool)
        or not isinstance(hours, int | float)
        or not 0 < hours <= MAX_EXPIRY_HOURS  # also refuses NaN
    ):
        raise RulesError(
            f"rule to {target!r}: expires_after_hours must be positive (at most {MAX_EXPIRY_HOURS})"
        )
    return Rule(
        kinds=kinds,
        to=target,
        from_stages=from_stages,
        approvals=approvals,
        required_roles=required_roles,
        requester_may_approve=_flag(item, "requester_may_approve", target),
        creator_may_approve=_flag(item, "creator_may_approve", target),
        evidence=tuple(evidence),
        expires_after_hours=float(hours),
        traffic_share=share,
    )


def _names(value: Any, where: str) -> tuple[str, ...]:
    """A list of names (a bare string is refused: ``tuple("policy")`` is six letters)."""
    if isinstance(value, tuple):
        value = list(value)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise RulesError(f"{where} must be a list of names")
    return tuple(value)


def _flag(item: dict[str, Any], key: str, target: str) -> bool:
    """A YAML boolean, defaulting to False; anything else (``"false"``, ``0``) is refused."""
    value = item.get(key, False)
    if not isinstance(value, bool):
        raise RulesError(f"rule to {target!r}: {key} must be true or false, not {value!r}")
    return value
