"""Reward model: TRL ``RewardTrainer`` (Bradley-Terry loss) on chosen/rejected pairs."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import datasets
from trl import RewardConfig, RewardTrainer

from controlplane.runners.trainers import _backend as backend
from controlplane.runners.trainers._data import format_prompt, read_preferences, texts_of


def train(
    datasets_: list[Path],
    base_model: Path | None,
    hyper: dict[str, Any],
    out_dir: Path,
    progress: backend.Progress | None,
) -> tuple[Path, dict[str, float]]:
    rows = read_preferences(datasets_)
    backend.prepare(hyper["seed"])
    backend.report(progress, 0.02, "reward model: loading")
    model, tokenizer = backend.reward_model_from_base(base_model, texts_of(rows), hyper["seed"])
    train_set = datasets.Dataset.from_list(
        [
            {"prompt": format_prompt(r.prompt), "chosen": r.chosen, "rejected": r.rejected}
            for r in rows
        ]
    )
    with tempfile.TemporaryDirectory(prefix="cp-reward-") as scratch, backend.quiet():
        config = RewardConfig(
            **backend.common_training_args(Path(scratch), hyper),
            disable_dropout=True,
            center_rewards_coefficient=hyper["center_rewards_coefficient"] or None,
        )
        trainer = RewardTrainer(
            model=model,
            args=config,
            train_dataset=train_set,
            processing_class=tokenizer,
            callbacks=[backend.ProgressCallback(progress, 0.05, 0.85, "reward model")],
        )
        backend.detach_printer(trainer)
        outcome = trainer.train()
    backend.report(progress, 0.88, "reward model: scoring the training pairs")
    model = trainer.model
    pairs = [(r.prompt, r.chosen) for r in rows] + [(r.prompt, r.rejected) for r in rows]
    scores = backend.reward_scores(model, tokenizer, pairs, hyper["max_length"])
    chosen, rejected = scores[: len(rows)], scores[len(rows) :]
    margins = [c - r for c, r in zip(chosen, rejected, strict=True)]
    final = _last_logged(trainer.state.log_history, "loss")
    metrics = {
        "train_loss": float(outcome.training_loss),
        "final_loss": final if final is not None else float(outcome.training_loss),
        "pairwise_accuracy": sum(m > 0 for m in margins) / len(margins),
        "reward_margin": sum(margins) / len(margins),
        "train_pairs": float(len(rows)),
        "train_steps": float(trainer.state.global_step),
    }
    path = backend.save(model, tokenizer, out_dir / "reward_model")
    return path, metrics


def _last_logged(history: list[dict[str, Any]], key: str) -> float | None:
    for entry in reversed(history):
        if key in entry:
            return float(entry[key])
    return None
