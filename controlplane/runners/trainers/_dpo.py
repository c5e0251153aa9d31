"""DPO: TRL ``DPOTrainer`` on a policy started from the base model.

The reference model is an explicit deep copy of the starting policy: with ``ref_model=None``
TRL 1.16 tries to reload the reference by the model's name, which for a model built from a
config is no name at all (see the library notes).
"""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path
from typing import Any

import datasets
from trl import DPOConfig, DPOTrainer

from controlplane.runners.trainers import _backend as backend
from controlplane.runners.trainers._data import format_prompt, read_preferences

REPORTED = (
    "loss",
    "rewards/chosen",
    "rewards/rejected",
    "rewards/accuracies",
    "rewards/margins",
    "logps/chosen",
    "logps/rejected",
)


def train(
    datasets_: list[Path],
    base_model: Path | None,
    hyper: dict[str, Any],
    out_dir: Path,
    progress: backend.Progress | None,
) -> tuple[Path, dict[str, float]]:
    rows = read_preferences(datasets_)
    backend.prepare(hyper["seed"])
    backend.report(progress, 0.02, "dpo: loading the base model")
    policy, tokenizer = backend.load_causal_lm(base_model, "base_model")
    reference = copy.deepcopy(policy)
    train_set = datasets.Dataset.from_list(
        [
            {"prompt": format_prompt(r.prompt), "chosen": r.chosen, "rejected": r.rejected}
            for r in rows
        ]
    )
    with tempfile.TemporaryDirectory(prefix="cp-dpo-") as scratch, backend.quiet():
        config = DPOConfig(
            **backend.common_training_args(Path(scratch), hyper),
            beta=hyper["beta"],
            **_loss(hyper["sft_weight"]),
            disable_dropout=True,
        )
        trainer = DPOTrainer(
            model=policy,
            ref_model=reference,
            args=config,
            train_dataset=train_set,
            processing_class=tokenizer,
            callbacks=[backend.ProgressCallback(progress, 0.05, 0.9, "dpo")],
        )
        backend.detach_printer(trainer)
        outcome = trainer.train()
    metrics: dict[str, float] = {"train_loss": float(outcome.training_loss)}
    metrics.update(_window_means(trainer.state.log_history, REPORTED))
    metrics["train_pairs"] = float(len(rows))
    metrics["train_steps"] = float(trainer.state.global_step)
    path = backend.save(trainer.model, tokenizer, out_dir / "policy")
    return path, metrics


def _loss(sft_weight: float) -> dict[str, Any]:
    """DPO's sigmoid loss, plus (RPO-style) the chosen responses' likelihood when weighted.

    Pure DPO on a tiny model drives the chosen responses' likelihood down along with the
    rejected ones' while the margin grows; its greedy answers then degrade into text that no
    annotator wrote and that the reward model was never taught to judge. The negative
    log-likelihood term keeps the policy writing chosen-style answers.
    """
    if sft_weight <= 0:
        return {"loss_type": ["sigmoid"]}
    return {"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, sft_weight]}


def _window_means(history: list[dict[str, Any]], keys: tuple[str, ...]) -> dict[str, float]:
    """The last logged value of each key (TRL averages each over its logging window)."""
    found: dict[str, float] = {}
    for entry in reversed(history):
        for key in keys:
            if key in entry and key not in found:
                found[key] = float(entry[key])
    return found
