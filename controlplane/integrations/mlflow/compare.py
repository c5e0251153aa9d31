"""Compare what MLflow holds with what our projections say it should hold (pure functions).

Each difference becomes one report item, and the same comparison says what a fix does:

- ``version_missing``: a version of ours has no MLflow version; fix: create it.
- ``tag_changed``: one of our ``controlplane.*`` tags on a version of ours differs or is gone;
  fix: set it back. Other tags are the users' and are never looked at.
- ``model_tag_changed``: the same for the registered model's identity tags.
- ``foreign_version``: a version that was not created by controlplane. Fix: it is *tagged*
  ``controlplane.foreign=true`` and left alone, never deleted (it may be someone's work, MLflow
  cannot undelete, and the ledger already records it); tagged versions are not reported again.
  An alias pointing at it is alias drift and is moved back.
- ``duplicate_version``: a second MLflow version claiming to be the same version of ours (two
  replicas mirroring at once); fix: tagged ``controlplane.duplicate_of=<mlflow version>``.
- ``alias_moved`` / ``alias_removed`` / ``alias_added``: a managed alias (staging, canary,
  production) points elsewhere / is missing / exists without a holder; fix: set or delete it.
- ``name_collision``: the registered model of this name belongs to another artifact (possible
  only with dots in project names); reported, never fixed.

Each item has a ``cause``: ``pending`` when our ledger changed it after the last complete sync
(MLflow is merely behind, e.g. it was down), else ``drift`` (someone changed MLflow).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from controlplane.integrations.mlflow import state
from controlplane.integrations.mlflow.state import (
    MANAGED_ALIASES,
    ArtifactKey,
    DesiredArtifact,
    DesiredVersion,
)


@dataclass(frozen=True)
class ObservedVersion:
    mlflow_version: int
    source: str
    tags: dict[str, str]


@dataclass
class ObservedModel:
    name: str
    tags: dict[str, str]
    aliases: dict[str, int]
    versions: list[ObservedVersion]

    @property
    def synced_seq(self) -> int:
        return _int(self.tags.get(state.SYNCED_SEQ), -1)

    @property
    def max_version(self) -> int:
        return max((v.mlflow_version for v in self.versions), default=0)


def _int(value: str | None, default: int) -> int:
    try:
        return int(value) if value is not None else default
    except ValueError:
        return default


@dataclass
class Comparison:
    """The differences of one artifact and the actions that remove them."""

    desired: DesiredArtifact
    observed: ObservedModel | None
    items: list[dict[str, Any]] = field(default_factory=list)
    mapping: dict[int, int] = field(default_factory=dict)
    """Our version -> its MLflow version (for versions that exist in MLflow)."""
    missing: list[DesiredVersion] = field(default_factory=list)
    model_tags: dict[str, str] = field(default_factory=dict)
    version_tags: list[tuple[int, str, str]] = field(default_factory=list)
    acknowledge: list[tuple[int, str, str]] = field(default_factory=list)
    collision: bool = False

    @property
    def drift(self) -> list[dict[str, Any]]:
        return [i for i in self.items if i["cause"] == "drift"]

    @property
    def pending(self) -> list[dict[str, Any]]:
        return [i for i in self.items if i["cause"] == "pending"]


def _item(key: ArtifactKey, model: str, kind: str, cause: str, **fields: Any) -> dict[str, Any]:
    item = {
        "type": kind,
        "cause": cause,
        "model": model,
        "project": key.project,
        "kind": key.kind,
        "name": key.name,
    }
    item.update({k: v for k, v in fields.items() if v is not None})
    return item


def compare(desired: DesiredArtifact, observed: ObservedModel | None) -> Comparison:
    out = Comparison(desired, observed)
    key, name = desired.key, desired.model_name
    synced = observed.synced_seq if observed is not None else -1

    def cause(seq: int) -> str:
        return "pending" if seq > synced else "drift"

    first_seq = min(v.seq for v in desired.versions)
    if observed is None:
        for v in desired.versions:
            out.missing.append(v)
            out.items.append(
                _item(key, name, "version_missing", cause(v.seq), version=v.version, fix="create")
            )
        for alias, holder in sorted(desired.holders().items()):
            out.items.append(
                _item(
                    key,
                    name,
                    "alias_removed",
                    cause(holder.changed_seq),
                    alias=alias,
                    expected=_expect(holder, None),
                    fix="set",
                )
            )
        return out

    if _collides(desired, observed):
        out.collision = True
        out.items.append(
            _item(
                key,
                name,
                "name_collision",
                "drift",
                actual={k: observed.tags.get(k) for k in (state.PROJECT, state.KIND, state.NAME)},
                fix="none (rename the project or artifact)",
            )
        )
        return out

    for tag, value in desired.model_tags().items():
        if observed.tags.get(tag) != value:
            out.model_tags[tag] = value
            out.items.append(
                _item(
                    key,
                    name,
                    "model_tag_changed",
                    cause(first_seq),
                    key_name=tag,
                    expected=value,
                    actual=observed.tags.get(tag),
                    fix="set",
                )
            )

    foreign = _match_versions(desired, observed, out)
    for v in desired.versions:
        mlflow_version = out.mapping.get(v.version)
        if mlflow_version is None:
            out.missing.append(v)
            out.items.append(
                _item(key, name, "version_missing", cause(v.seq), version=v.version, fix="create")
            )
            continue
        tags = next(o.tags for o in observed.versions if o.mlflow_version == mlflow_version)
        for tag, value in desired.version_tags(v).items():
            if tags.get(tag) != value:
                out.version_tags.append((mlflow_version, tag, value))
                out.items.append(
                    _item(
                        key,
                        name,
                        "tag_changed",
                        cause(v.seq),
                        version=v.version,
                        mlflow_version=mlflow_version,
                        key_name=tag,
                        expected=value,
                        actual=tags.get(tag),
                        fix="set",
                    )
                )
    for o, duplicate_of in foreign:
        if duplicate_of is None:
            out.acknowledge.append((o.mlflow_version, state.FOREIGN, "true"))
            out.items.append(
                _item(
                    key,
                    name,
                    "foreign_version",
                    "drift",
                    mlflow_version=o.mlflow_version,
                    source=o.source,
                    fix="tag controlplane.foreign=true, keep",
                )
            )
        else:
            out.acknowledge.append((o.mlflow_version, state.DUPLICATE_OF, str(duplicate_of)))
            out.items.append(
                _item(
                    key,
                    name,
                    "duplicate_version",
                    "drift",
                    mlflow_version=o.mlflow_version,
                    duplicate_of=duplicate_of,
                    fix=f"tag controlplane.duplicate_of={duplicate_of}, keep",
                )
            )

    holders = desired.holders()
    for alias in MANAGED_ALIASES:
        holder = holders.get(alias)
        actual = observed.aliases.get(alias)
        want = out.mapping.get(holder.version) if holder is not None else None
        if holder is None:
            if actual is not None:
                out.items.append(
                    _item(
                        key,
                        name,
                        "alias_added",
                        cause(desired.last_seq),
                        alias=alias,
                        actual=_describe(actual, out.mapping),
                        fix="delete",
                    )
                )
        elif actual is None:
            out.items.append(
                _item(
                    key,
                    name,
                    "alias_removed",
                    cause(holder.changed_seq),
                    alias=alias,
                    expected=_expect(holder, want),
                    fix="set",
                )
            )
        elif want != actual:
            out.items.append(
                _item(
                    key,
                    name,
                    "alias_moved",
                    cause(holder.changed_seq),
                    alias=alias,
                    expected=_expect(holder, want),
                    actual=_describe(actual, out.mapping),
                    fix="set",
                )
            )
    return out


def _expect(holder: DesiredVersion, mlflow_version: int | None) -> dict[str, Any]:
    return {"version": holder.version, "mlflow_version": mlflow_version}


def _describe(mlflow_version: int, mapping: dict[int, int]) -> dict[str, Any]:
    ours = next((v for v, m in mapping.items() if m == mlflow_version), None)
    return {"version": ours, "mlflow_version": mlflow_version}


def _collides(desired: DesiredArtifact, observed: ObservedModel) -> bool:
    """The model's identity tags name another artifact that maps to this same model name."""
    tags = observed.tags
    if tags.get(state.MANAGED) != "true":
        return False
    try:
        other = ArtifactKey(tags[state.PROJECT], tags[state.KIND], tags[state.NAME])
    except KeyError:
        return False
    return other != desired.key and other.model_name == desired.model_name


def _match_versions(
    desired: DesiredArtifact, observed: ObservedModel, out: Comparison
) -> list[tuple[ObservedVersion, int | None]]:
    """Fill ``out.mapping``; return the unexplained versions (with what they duplicate).

    A version is ours by its ``controlplane.seq`` tag; failing that (someone edited it) by its
    ``controlplane.version`` tag or, last, by its source URI, so one edited tag is reported as
    a changed tag rather than as a foreign version plus a missing one.
    """
    by_seq = {str(v.seq): v for v in desired.versions}
    by_number = {str(v.version): v for v in desired.versions}
    unmatched: list[ObservedVersion] = []
    duplicates: list[tuple[ObservedVersion, int | None]] = []
    for o in sorted(observed.versions, key=lambda o: o.mlflow_version):
        if o.tags.get(state.FOREIGN) == "true" or state.DUPLICATE_OF in o.tags:
            continue  # acknowledged earlier
        ours = by_seq.get(o.tags.get(state.SEQ, ""))
        if ours is None:
            unmatched.append(o)
        elif ours.version in out.mapping:
            duplicates.append((o, out.mapping[ours.version]))
        else:
            out.mapping[ours.version] = o.mlflow_version
    foreign: list[tuple[ObservedVersion, int | None]] = []
    for o in unmatched:
        ours = None
        if _looks_ours(o):
            ours = by_number.get(o.tags.get(state.VERSION, ""))
            if ours is None or ours.version in out.mapping:
                candidates = [
                    v
                    for v in desired.versions
                    if v.uri == o.source and v.version not in out.mapping
                ]
                ours = candidates[0] if len(candidates) == 1 else None
        if ours is None:
            foreign.append((o, None))
        else:
            out.mapping[ours.version] = o.mlflow_version
    return duplicates + foreign


def _looks_ours(o: ObservedVersion) -> bool:
    """An unmatched version that still carries some of our tags: one of them was edited.

    A version with none of them is foreign even if its source equals one of our URIs: the
    mirror never adopts a version it did not create.
    """
    return any(k.startswith(state.PREFIX) for k in o.tags)


def aliases_tag(aliases: dict[str, int]) -> str:
    return json.dumps({a: aliases[a] for a in sorted(aliases)}, separators=(",", ":"))


def managed_aliases(aliases: dict[str, int]) -> dict[str, int]:
    return {a: int(v) for a, v in aliases.items() if a in MANAGED_ALIASES}
