"""Artifact kinds, lineage relations and version references (``kind/name@version``)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from controlplane import names
from controlplane.errors import InvalidInput

KINDS = ("dataset", "rubric", "reward_model", "policy", "evaluation")
MODEL_KINDS = ("reward_model", "policy")

RELATIONS: dict[str, tuple[str, ...]] = {
    "trained_on": ("dataset",),
    "follows_rubric": ("rubric",),
    "initialized_from": ("reward_model", "policy"),
    "evaluated_on": KINDS,
    "derived_from": KINDS,
}
"""Relation -> kinds its target (the parent) may have."""

_REF = re.compile(r"(?P<kind>[a-z_]+)/(?P<name>[^/@]+)@(?P<version>[0-9]{1,9})")


def kind(value: str) -> str:
    if value not in KINDS:
        raise InvalidInput(f"unknown artifact kind {value!r}; kinds are {', '.join(KINDS)}")
    return value


@dataclass(frozen=True, order=True)
class VersionRef:
    kind: str
    name: str
    version: int

    def __str__(self) -> str:
        return f"{self.kind}/{self.name}@{self.version}"

    @classmethod
    def parse(cls, text: str) -> VersionRef:
        match = _REF.fullmatch(text.strip())
        if not match:
            raise InvalidInput(f"invalid version reference {text!r}: expected KIND/NAME@VERSION")
        return cls.build(match["kind"], match["name"], int(match["version"]))

    @classmethod
    def build(cls, kind_: str, name: str, version: int) -> VersionRef:
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise InvalidInput(f"version must be a positive integer, got {version!r}")
        return cls(kind(kind_), names.artifact_name(name), version)


def check_relation(relation: str, parent: VersionRef) -> None:
    allowed = RELATIONS.get(relation)
    if allowed is None:
        raise InvalidInput(
            f"unknown lineage relation {relation!r}; relations are {', '.join(RELATIONS)}"
        )
    if parent.kind not in allowed:
        raise InvalidInput(
            f"{relation} must point to a {' or '.join(allowed)} version, not {parent}"
        )
