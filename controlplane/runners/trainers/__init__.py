"""Built-in trainers of the reference runner: real training with Hugging Face TRL on CPU.

``reward_model`` trains a reward model with TRL's ``RewardTrainer``, ``dpo`` a policy with
``DPOTrainer``, and ``evaluation`` scores a policy against its reference with a reward model
(``win_rate``, ``reward_margin``, ``safety_violation_rate``). The models are tiny GPT-2s built
from a config with a tokenizer trained locally, so nothing is downloaded and each trainer runs
in seconds on two CPU cores.

The training libraries (torch, transformers, trl) live in the ``controlplane[train]`` extra and
are imported only when a trainer runs, so importing this package, and running the API server,
works without them; training without them raises :class:`TrainingError`.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from controlplane.errors import ControlPlaneError
from controlplane.runners.trainers._data import TrainingError, read_preferences, texts_of

__all__ = [
    "DEFAULT_HYPERPARAMETERS",
    "OUTPUT_KIND",
    "TRAINERS",
    "TrainingError",
    "TrainingInputs",
    "TrainingResult",
    "base_model_texts",
    "build_base_model",
    "effective_hyperparameters",
    "run_trainer",
]

TRAINERS = ("reward_model", "dpo", "evaluation")
OUTPUT_KIND = {"reward_model": "reward_model", "dpo": "policy", "evaluation": "evaluation"}
DEFAULT_PRETRAIN_STEPS = 30
INSTALL_HINT = "install controlplane[train] (see the README) to run the built-in trainers"

_COMMON: dict[str, Any] = {"seed": 0, "max_length": 128}
DEFAULT_HYPERPARAMETERS: dict[str, dict[str, Any]] = {
    "reward_model": {
        **_COMMON,
        "max_steps": 80,
        "batch_size": 16,
        "learning_rate": 3e-3,
        "center_rewards_coefficient": 0.0,
    },
    "dpo": {
        **_COMMON,
        "max_steps": 40,
        "batch_size": 16,
        "learning_rate": 3e-3,
        "beta": 0.1,
        "sft_weight": 0.0,
    },
    "evaluation": {
        **_COMMON,
        "mode": "offline",
        "score": "mean_logprob",
        "max_new_tokens": 24,
        "match_threshold": 0.5,
    },
}


@dataclass(frozen=True)
class TrainingInputs:
    """Local paths of a job's inputs, already fetched and verified by the runner."""

    datasets: list[Path]
    """Preference JSONL files (``prompt``, ``chosen``, ``rejected``, ...)."""
    base_model: Path | None = None
    """Directory of a Hugging Face causal LM and tokenizer (a ``policy`` artifact)."""
    reward_model: Path | None = None
    """Evaluation: directory of the reward model."""
    policy: Path | None = None
    """Evaluation: the policy to score."""
    reference: Path | None = None
    """Evaluation: the policy's reference (default: ``base_model``)."""


@dataclass(frozen=True)
class TrainingResult:
    kind: str
    """Artifact kind of the output (``OUTPUT_KIND[trainer]``)."""
    output_path: Path
    """Model directory (reward_model, dpo) or report JSON file (evaluation)."""
    metrics: dict[str, float]
    mlflow_run_id: str | None
    parameters: dict[str, Any] = field(default_factory=dict)
    """Effective hyperparameters: the defaults overridden by the job's."""


def effective_hyperparameters(trainer: str, given: Mapping[str, Any]) -> dict[str, Any]:
    """The trainer's defaults overridden by ``given``; unknown names and bad types refused.

    Refusing unknown names matters: a misspelt ``max_step`` silently ignored would train with
    the default and still be recorded as the job's parameters.
    """
    if trainer not in DEFAULT_HYPERPARAMETERS:
        raise TrainingError(f"unknown trainer {trainer!r}; built-in: {', '.join(TRAINERS)}")
    defaults = DEFAULT_HYPERPARAMETERS[trainer]
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise TrainingError(
            f"unknown hyperparameter(s) for {trainer}: {', '.join(unknown)}; "
            f"accepted: {', '.join(sorted(defaults))}"
        )
    merged = dict(defaults)
    for name, value in given.items():
        merged[name] = _coerce(name, value, defaults[name])
    for name in ("max_steps", "batch_size", "max_length", "max_new_tokens"):
        if name in merged and merged[name] < 1:
            raise TrainingError(f"{name} must be at least 1")
    for name in ("learning_rate", "beta"):
        if name in merged and not merged[name] > 0:
            raise TrainingError(f"{name} must be positive")
    return merged


def _coerce(name: str, value: Any, default: Any) -> Any:
    try:
        if isinstance(default, bool) or isinstance(value, bool):
            if not isinstance(value, bool):
                raise TypeError
            return value
        if isinstance(default, int):
            if isinstance(value, float) and not value.is_integer():
                raise TypeError
            return int(value)
        if isinstance(default, float):
            return float(value)
        if isinstance(default, str):
            if not isinstance(value, str):
                raise TypeError
            return value
    except (TypeError, ValueError):
        pass
    else:
        return value
    kind = type(default).__name__
    raise TrainingError(f"hyperparameter {name} must be a {kind}, not {value!r}")


def _import(module: str) -> ModuleType:
    """Import a module that needs the training libraries, or say how to get them."""
    try:
        return importlib.import_module(f"controlplane.runners.trainers.{module}")
    except ImportError as exc:
        missing = getattr(exc, "name", None) or str(exc)
        raise TrainingError(f"training libraries missing ({missing}): {INSTALL_HINT}") from exc


def base_model_texts(datasets: Iterable[Path]) -> list[str]:
    """Text for :func:`build_base_model` from preference files: each prompt with each response.

    Chosen and rejected alike, so the base model learns the language of the data and no
    preference: beating it is the reward model's and DPO's work.
    """
    return texts_of(read_preferences([Path(p) for p in datasets]))


def build_base_model(
    out_dir: Path,
    texts: Iterable[str],
    *,
    seed: int = 0,
    pretrain_steps: int = DEFAULT_PRETRAIN_STEPS,
    progress: Callable[[float, str], None] | None = None,
) -> Path:
    """A tiny GPT-2 causal LM from config with a BPE tokenizer trained on ``texts``.

    The model is then trained for ``pretrain_steps`` steps of plain next-token prediction on
    the same texts (0 keeps the random initialisation), so that it writes text of the kind the
    data holds. Model and tokenizer are saved with ``save_pretrained`` into ``out_dir``, from
    which the other trainers load them with no network: this is the starting point of a DPO
    run and the reference an evaluation compares against. Same texts and seed, same bytes.
    """
    corpus = [text for text in texts if text and text.strip()]
    if not corpus:
        raise TrainingError("build_base_model needs some text to train the tokenizer on")
    if pretrain_steps < 0:
        raise TrainingError("pretrain_steps must not be negative")
    backend = _import("_backend")
    backend.prepare(seed)
    tokenizer = backend.train_tokenizer(corpus)
    model = backend.new_causal_lm(tokenizer, seed)
    if pretrain_steps:
        backend.pretrain(
            model, tokenizer, corpus, steps=pretrain_steps, seed=seed, progress=progress
        )
    return backend.save(model, tokenizer, Path(out_dir))


class _ProgressGuard:
    """Remembers an exception raised by the caller's progress callback, to re-raise it as is."""

    def __init__(self, progress: Callable[[float, str], None]) -> None:
        self.progress = progress
        self.raised: BaseException | None = None

    def __call__(self, fraction: float, message: str) -> None:
        try:
            self.progress(fraction, message)
        except BaseException as exc:
            self.raised = exc
            raise


def _train(
    trainer: str,
    inputs: TrainingInputs,
    datasets_: list[Path],
    hyper: dict[str, Any],
    out_dir: Path,
    progress: Callable[[float, str], None] | None,
) -> tuple[Path, dict[str, float]]:
    if trainer == "reward_model":
        module = _import("_reward")
        return module.train(datasets_, inputs.base_model, hyper, out_dir, progress)
    if trainer == "dpo":
        if inputs.base_model is None:
            raise TrainingError("the dpo trainer needs a base_model to start the policy from")
        module = _import("_dpo")
        return module.train(datasets_, inputs.base_model, hyper, out_dir, progress)
    reference = inputs.reference or inputs.base_model
    for what, value in (
        ("policy", inputs.policy),
        ("reward_model", inputs.reward_model),
        ("reference (or base_model)", reference),
    ):
        if value is None:
            raise TrainingError(f"the evaluation trainer needs a {what}")
    module = _import("_evaluation")
    output, metrics, _ = module.evaluate(
        datasets_, inputs.policy, reference, inputs.reward_model, hyper, out_dir, progress
    )
    return output, metrics


def run_trainer(
    trainer: str,
    inputs: TrainingInputs,
    hyperparameters: Mapping[str, Any],
    out_dir: Path,
    *,
    mlflow_tracking_uri: str | None = None,
    experiment: str = "controlplane",
    run_name: str | None = None,
    tags: Mapping[str, str] | None = None,
    progress: Callable[[float, str], None] | None = None,
) -> TrainingResult:
    """Run one built-in trainer and, given a tracking URI, record it as an MLflow run.

    ``progress(fraction, message)`` is called as work advances (fraction in [0, 1]); an
    exception it raises stops the training and propagates, which lets a runner abandon a job
    whose lease it lost. Any other failure inside the training libraries becomes a
    :class:`TrainingError` naming it, so a runner can report the job failed with a reason.
    """
    hyper = effective_hyperparameters(trainer, hyperparameters)
    out_dir = Path(out_dir)
    datasets_ = [Path(p) for p in inputs.datasets]
    guard = _ProgressGuard(progress) if progress is not None else None
    started = time.perf_counter()
    try:
        output, metrics = _train(trainer, inputs, datasets_, hyper, out_dir, guard)
    except ControlPlaneError:
        raise
    except Exception as exc:
        if guard is not None and exc is guard.raised:
            raise  # the caller's own signal (a lost lease, say): give it back untouched
        raise TrainingError(f"{trainer} failed: {type(exc).__name__}: {exc}") from exc
    parameters = dict(hyper)
    metrics = {name: float(value) for name, value in metrics.items()}
    metrics["duration_seconds"] = round(time.perf_counter() - started, 3)
    run_id = None
    if mlflow_tracking_uri:
        if progress is not None:
            progress(0.98, "recording the run in MLflow")
        tracking = _import("_tracking")
        run_id = tracking.log_run(
            mlflow_tracking_uri,
            experiment=experiment,
            run_name=run_name or f"{trainer}",
            tags={"controlplane.trainer": trainer, **dict(tags or {})},
            parameters=parameters,
            metrics=metrics,
            artifact=output,
            artifact_path=OUTPUT_KIND[trainer],
        )
    if progress is not None:
        progress(1.0, f"{trainer}: done")
    return TrainingResult(OUTPUT_KIND[trainer], output, metrics, run_id, parameters)
