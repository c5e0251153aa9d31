"""What a job is: its trainer, its inputs by role, and the lineage its output gets.

A job names registered versions, each in a role: ``datasets`` (one or more), and optionally
``rubric``, ``base_model``, ``reward_model``, ``policy`` and ``reference``. At queue time each
is resolved to its digest and URI, so the job (a ledger entry) pins the exact bytes a runner
must train on; the runner checks those digests before training.

The data contract of a claim must cover the *data* inputs (datasets and the rubric), which
are what data contracts govern (their subjects are dataset and rubric versions); model
inputs are pinned by digest but not by contract.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from controlplane import names
from controlplane.errors import InvalidInput
from controlplane.ledger.canonical import canonical_json
from controlplane.ledger.entry import nesting_depth
from controlplane.ledger.errors import MalformedError
from controlplane.registry.refs import VersionRef

TRAINERS = ("reward_model", "dpo", "evaluation")
"""Trainer names; also the contract purpose a claim must match."""

OUTPUT_KIND = {"reward_model": "reward_model", "dpo": "policy", "evaluation": "evaluation"}

MODEL_ROLES: dict[str, tuple[str, ...]] = {
    "base_model": ("policy", "reward_model"),
    "reward_model": ("reward_model",),
    "policy": ("policy",),
    "reference": ("policy",),
}
"""Model input role -> kinds its version may have."""

ROLES = ("datasets", "rubric", *MODEL_ROLES)

REQUIRED: dict[str, tuple[tuple[str, ...], ...]] = {
    "reward_model": (),
    "dpo": (("base_model",),),
    "evaluation": (("policy",), ("reward_model",), ("reference", "base_model")),
}
"""Trainer -> groups of roles of which at least one must be given (datasets always are);
what the built-in trainers need (a reward model without a base starts from scratch)."""

EVALUATION_MODES = ("offline", "online")
MAX_DATASETS = 50
MAX_HYPERPARAMETER_BYTES = 64 * 1024
MAX_METRICS = 200

HYPERPARAMETER_BOUNDS: dict[str, tuple[float, float]] = {
    "seed": (0, 2**32 - 1),  # numpy's range; transformers.set_seed refuses anything else
    "max_steps": (1, 1_000_000),
    "batch_size": (1, 65_536),
    "max_length": (1, 1_000_000),
    "max_new_tokens": (1, 100_000),
    "learning_rate": (0, 1),
    "beta": (0, 1000),
    "sft_weight": (0, 1000),
    "center_rewards_coefficient": (0, 1000),
    "match_threshold": (0, 1),
}
"""Inclusive ranges of the built-in trainers' numeric hyperparameters, checked at queue time:
outside them a job cannot train (a negative seed) or would hold a runner for ever
(``max_steps=1e30``), so it is refused before it is queued rather than failing later."""


def check_trainer(trainer: object) -> str:
    if not isinstance(trainer, str) or trainer not in TRAINERS:
        raise InvalidInput(f"unknown trainer {trainer!r}; trainers are {', '.join(TRAINERS)}")
    return trainer


def check_hyperparameters(values: Any, trainer: str | None = None) -> dict[str, Any]:
    """A JSON object; with ``trainer``, also names and types the built-in trainer accepts
    (a misspelt name is refused at queue time rather than failing the job later)."""
    if values is None:
        return {}
    if not isinstance(values, Mapping):
        raise InvalidInput("hyperparameters must be a JSON object")
    out = dict(values)
    if nesting_depth(out) > 8:
        raise InvalidInput("hyperparameters are nested deeper than 8 levels")
    try:
        encoded = canonical_json(out)
    except MalformedError as exc:
        raise InvalidInput(f"hyperparameters: {exc}") from None
    if len(encoded) > MAX_HYPERPARAMETER_BYTES:
        raise InvalidInput(f"hyperparameters exceed {MAX_HYPERPARAMETER_BYTES} bytes")
    mode = out.get("mode")
    if mode is not None and mode not in EVALUATION_MODES:
        raise InvalidInput(f"hyperparameter mode must be one of {', '.join(EVALUATION_MODES)}")
    if trainer is not None:
        from controlplane.runners.trainers import TrainingError, effective_hyperparameters

        try:
            effective = effective_hyperparameters(trainer, out)
        except TrainingError as exc:
            raise InvalidInput(exc.detail) from None
        for name, value in effective.items():
            bounds = HYPERPARAMETER_BOUNDS.get(name)
            if bounds is not None and not bounds[0] <= value <= bounds[1]:
                raise InvalidInput(
                    f"hyperparameter {name} must be from {bounds[0]} to {bounds[1]}, "
                    f"not {out.get(name, value)!r}"
                )
    return out


def check_metrics(values: Any) -> dict[str, float]:
    """Finite numbers by name (what evidence gates compare with thresholds)."""
    if values is None:
        return {}
    if not isinstance(values, Mapping) or len(values) > MAX_METRICS:
        raise InvalidInput(f"metrics must be an object of at most {MAX_METRICS} numbers")
    out: dict[str, float] = {}
    for key, value in values.items():
        if not isinstance(key, str) or not 0 < len(key) <= 200:
            raise InvalidInput("metric names must be strings of 1-200 characters")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidInput(f"metric {key!r} must be a number")
        if not math.isfinite(value):
            raise InvalidInput(f"metric {key!r} must be finite")
        out[key] = float(value)
    return out


@dataclass(frozen=True)
class JobRequest:
    """What an engineer asks for, before the references are resolved."""

    trainer: str
    datasets: tuple[VersionRef, ...]
    models: dict[str, VersionRef] = field(default_factory=dict)
    rubric: VersionRef | None = None
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    output_name: str | None = None

    @classmethod
    def build(
        cls,
        trainer: str,
        datasets: list[str],
        *,
        rubric: str | None = None,
        base_model: str | None = None,
        reward_model: str | None = None,
        policy: str | None = None,
        reference: str | None = None,
        hyperparameters: Mapping[str, Any] | None = None,
        output_name: str | None = None,
    ) -> JobRequest:
        check_trainer(trainer)
        if not datasets:
            raise InvalidInput("a job needs at least one dataset")
        if len(datasets) > MAX_DATASETS:
            raise InvalidInput(f"a job takes at most {MAX_DATASETS} datasets")
        refs = tuple(_ref(text, "datasets", ("dataset",)) for text in datasets)
        if len(set(refs)) != len(refs):
            raise InvalidInput("a dataset is listed twice")
        models: dict[str, VersionRef] = {}
        for role, text in (
            ("base_model", base_model),
            ("reward_model", reward_model),
            ("policy", policy),
            ("reference", reference),
        ):
            if text is not None:
                models[role] = _ref(text, role, MODEL_ROLES[role])
        for group in REQUIRED[trainer]:
            if not any(role in models for role in group):
                raise InvalidInput(
                    f"a {trainer} job needs {' or '.join(r.replace('_', '-') for r in group)}"
                )
        if output_name is not None:
            names.artifact_name(output_name)
        return cls(
            trainer=trainer,
            datasets=refs,
            models=models,
            rubric=_ref(rubric, "rubric", ("rubric",)) if rubric is not None else None,
            hyperparameters=check_hyperparameters(hyperparameters, trainer),
            output_name=output_name,
        )

    def refs(self) -> list[tuple[str, VersionRef]]:
        """Every input as ``(role, ref)``."""
        out = [("datasets", ref) for ref in self.datasets]
        if self.rubric is not None:
            out.append(("rubric", self.rubric))
        out.extend(self.models.items())
        return out


def _ref(text: object, role: str, kinds: tuple[str, ...]) -> VersionRef:
    if not isinstance(text, str):
        raise InvalidInput(f"{role} must be a KIND/NAME@VERSION reference")
    ref = VersionRef.parse(text)
    if ref.kind not in kinds:
        raise InvalidInput(f"{role} must be a {' or '.join(kinds)} version, not {ref}")
    return ref


def data_digests(spec: Mapping[str, Any]) -> list[str]:
    """Digests a claim's contract must cover: every dataset and the rubric, in order."""
    out = [item["digest"] for item in spec["datasets"]]
    if spec.get("rubric"):
        out.append(spec["rubric"]["digest"])
    return out


def inputs_of(spec: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Every resolved input of a queued spec as ``(role, {ref, digest, uri})``."""
    out = [("datasets", dict(item)) for item in spec["datasets"]]
    for role in ("rubric", *MODEL_ROLES):
        if spec.get(role):
            out.append((role, dict(spec[role])))
    return out


def output_lineage(trainer: str, spec: Mapping[str, Any]) -> list[dict[str, str]]:
    """Lineage edges of a job's output, from the queued spec (never from the runner).

    Trained outputs are ``trained_on`` the datasets, ``follows_rubric`` the rubric and
    ``initialized_from`` the base model (and a DPO job's starting policy); a reference or
    reward model used along the way is ``derived_from``. An evaluation is ``evaluated_on``
    what it evaluated (the policy, else the reward model) and the datasets it was measured
    on, which is the link the promotion evidence gate follows.
    """
    edges: list[dict[str, str]] = []

    def add(relation: str, role: str) -> None:
        item = spec.get(role)
        if item:
            edges.append({"relation": relation, "ref": item["ref"]})

    if trainer == "evaluation":
        add("evaluated_on", "policy")
        if spec.get("policy"):
            add("derived_from", "reward_model")
        else:
            add("evaluated_on", "reward_model")
        for item in spec["datasets"]:
            edges.append({"relation": "evaluated_on", "ref": item["ref"]})
        add("follows_rubric", "rubric")
        add("derived_from", "base_model")
        add("derived_from", "reference")
        return edges
    for item in spec["datasets"]:
        edges.append({"relation": "trained_on", "ref": item["ref"]})
    add("follows_rubric", "rubric")
    add("initialized_from", "base_model")
    add("initialized_from", "policy")
    add("derived_from", "reference")
    add("derived_from", "reward_model")
    return edges


__all__ = [
    "OUTPUT_KIND",
    "TRAINERS",
    "JobRequest",
    "check_hyperparameters",
    "check_metrics",
    "check_trainer",
    "data_digests",
    "inputs_of",
    "output_lineage",
]
