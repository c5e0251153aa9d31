"""Evaluation: a policy against its reference, judged by a reward model.

For every distinct prompt of the evaluation data, each of the two models produces a response
and the reward model scores both:

- ``offline`` (default): the response a model produces is the candidate it finds most likely
  among every response the annotators saw for that prompt (highest mean token log-probability
  after the prompt, ties to the first candidate). This measures what the model would say
  without sampling, so it is exact and deterministic, and a safety label on a candidate
  applies directly to the model that picks it.
- ``online``: each model writes its own answer by greedy decoding (``max_new_tokens``). A
  generated answer is a safety violation when the labelled candidate it most resembles
  (``difflib`` ratio, at least ``match_threshold``) is labelled unsafe: with tiny models this
  is a coarse check, and an honest one only on data whose unsafe answers are labelled.

Metrics: ``win_rate`` is the share of prompts on which the policy's response scores higher
than the reference's (a tie, typically both picking the same response, counts one half);
``reward_margin`` the mean score difference; ``safety_violation_rate`` the share of prompts on
which the policy's response is unsafe; the same rate for the reference for comparison.
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Any

from controlplane.registry.digests import digest_path
from controlplane.runners.trainers import _backend as backend
from controlplane.runners.trainers._data import (
    PromptCandidates,
    TrainingError,
    candidates_by_prompt,
    read_preferences,
)

MODES = ("offline", "online")
SCORES = ("mean_logprob", "sum_logprob")


def evaluate(
    datasets_: list[Path],
    policy_dir: Path,
    reference_dir: Path,
    reward_dir: Path,
    hyper: dict[str, Any],
    out_dir: Path,
    progress: backend.Progress | None,
) -> tuple[Path, dict[str, float], dict[str, Any]]:
    mode = hyper["mode"]
    if mode not in MODES:
        raise TrainingError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    if hyper["score"] not in SCORES:
        raise TrainingError(f"score must be one of {', '.join(SCORES)}, not {hyper['score']!r}")
    rows = read_preferences(datasets_)
    groups = candidates_by_prompt(rows)
    backend.prepare(hyper["seed"])
    backend.report(progress, 0.02, "evaluation: loading the models")
    policy, policy_tok = backend.load_causal_lm(policy_dir, "policy")
    reference, reference_tok = backend.load_causal_lm(reference_dir, "reference")
    judge, judge_tok = backend.load_reward_model(reward_dir, "reward_model")

    per_prompt: list[dict[str, Any]] = []
    for index, group in enumerate(groups):
        if mode == "offline":
            policy_answer = _pick(policy, policy_tok, group, hyper)
            reference_answer = _pick(reference, reference_tok, group, hyper)
        else:
            policy_answer = backend.greedy_completion(
                policy, policy_tok, group.prompt, hyper["max_new_tokens"]
            )
            reference_answer = backend.greedy_completion(
                reference, reference_tok, group.prompt, hyper["max_new_tokens"]
            )
        # Each distinct answer is scored once, so the same answer always gets the same reward.
        answers = list(dict.fromkeys([policy_answer, reference_answer]))
        scores = backend.reward_scores(
            judge, judge_tok, [(group.prompt, a) for a in answers], hyper["max_length"]
        )
        reward = dict(zip(answers, scores, strict=True))
        policy_reward, reference_reward = reward[policy_answer], reward[reference_answer]
        per_prompt.append(
            {
                "prompt": group.prompt,
                "policy_response": policy_answer,
                "reference_response": reference_answer,
                "policy_reward": policy_reward,
                "reference_reward": reference_reward,
                "policy_unsafe": _unsafe(policy_answer, group, mode, hyper),
                "reference_unsafe": _unsafe(reference_answer, group, mode, hyper),
            }
        )
        backend.report(
            progress, 0.05 + 0.9 * (index + 1) / len(groups), f"evaluation: prompt {index + 1}"
        )

    metrics = _metrics(per_prompt)
    metrics["reward_model_accuracy"] = _judge_accuracy(judge, judge_tok, rows, hyper)
    metrics["prompts"] = float(len(groups))
    metrics["candidates"] = float(sum(len(g.responses) for g in groups))
    metrics["unsafe_candidates"] = float(sum(len(g.unsafe) for g in groups))
    report = {
        "mode": mode,
        "metrics": metrics,
        "prompts": len(groups),
        "method": {
            "offline": "each model picks the most likely labelled candidate; reward model judges",
            "online": "each model answers by greedy decoding; reward model judges",
        }[mode],
        "parameters": dict(hyper),
        "inputs": {
            "policy": digest_path(Path(policy_dir)),
            "reference": digest_path(Path(reference_dir)),
            "reward_model": digest_path(Path(reward_dir)),
            "datasets": [digest_path(Path(p)) for p in datasets_],
        },
        "per_prompt": per_prompt,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "evaluation.json"
    path.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    backend.report(progress, 0.97, "evaluation: report written")
    return path, metrics, report


def _pick(model: Any, tokenizer: Any, group: PromptCandidates, hyper: dict[str, Any]) -> str:
    scored = backend.completion_logprobs(
        model, tokenizer, group.prompt, group.responses, hyper["max_length"]
    )
    if hyper["score"] == "mean_logprob":
        values = [total / max(count, 1) for total, count in scored]
    else:
        values = [total for total, _ in scored]
    best = max(range(len(values)), key=lambda i: (values[i], -i))
    return group.responses[best]


def _unsafe(answer: str, group: PromptCandidates, mode: str, hyper: dict[str, Any]) -> bool:
    if mode == "offline":
        return answer in group.unsafe
    if not group.unsafe:
        return False

    def resemblance(candidate: str) -> float:
        return difflib.SequenceMatcher(None, answer.lower(), candidate.lower()).ratio()

    best = max(group.responses, key=lambda c: (resemblance(c), c in group.unsafe))
    return best in group.unsafe and resemblance(best) >= hyper["match_threshold"]


def _judge_accuracy(judge: Any, tokenizer: Any, rows: list[Any], hyper: dict[str, Any]) -> float:
    """How often the reward model agrees with the annotators on these pairs: a win rate judged
    by a reward model that cannot tell chosen from rejected here would mean little."""
    pairs = [(r.prompt, r.chosen) for r in rows] + [(r.prompt, r.rejected) for r in rows]
    scores = backend.reward_scores(judge, tokenizer, pairs, hyper["max_length"])
    n = len(rows)
    return sum(scores[i] > scores[n + i] for i in range(n)) / n


def _metrics(per_prompt: list[dict[str, Any]]) -> dict[str, float]:
    n = len(per_prompt)
    wins = ties = 0.0
    margin = 0.0
    for item in per_prompt:
        difference = item["policy_reward"] - item["reference_reward"]
        margin += difference
        if item["policy_response"] == item["reference_response"] or difference == 0:
            ties += 1
        elif difference > 0:
            wins += 1
    return {
        "win_rate": (wins + 0.5 * ties) / n,
        "tie_rate": ties / n,
        "reward_margin": margin / n,
        "policy_reward": sum(i["policy_reward"] for i in per_prompt) / n,
        "reference_reward": sum(i["reference_reward"] for i in per_prompt) / n,
        "safety_violation_rate": sum(i["policy_unsafe"] for i in per_prompt) / n,
        "reference_safety_violation_rate": sum(i["reference_unsafe"] for i in per_prompt) / n,
    }
