"""The built-in trainers, for real: TRL on CPU, offline, on the shipped demo data.

One module-scoped fixture builds a base model, trains a reward model and a DPO policy (each
recorded in a temporary SQLite MLflow store) and evaluates the policy against the base on the
held-out split; the tests then check what came out. Each trainer takes a few seconds.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from controlplane.config import REPO_ROOT
from controlplane.demo_data import demo_data
from controlplane.governance.rules import RuleSet
from controlplane.registry.digests import digest_path
from controlplane.runners.trainers import (
    DEFAULT_HYPERPARAMETERS,
    OUTPUT_KIND,
    TRAINERS,
    TrainingError,
    TrainingInputs,
    TrainingResult,
    base_model_texts,
    build_base_model,
    run_trainer,
)

pytestmark = pytest.mark.timeout(300)

Progress = list[tuple[float, str]]


@dataclass
class Trained:
    root: Path
    tracking_uri: str
    base: Path
    reward: TrainingResult
    policy: TrainingResult
    evaluation: TrainingResult
    progress: dict[str, Progress]


def recorder(log: Progress):
    def progress(fraction: float, message: str) -> None:
        log.append((fraction, message))

    return progress


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    root = tmp_path_factory.mktemp("trainers")
    tracking_uri = f"sqlite:///{root / 'mlflow.db'}"
    data = demo_data()
    progress: dict[str, Progress] = {name: [] for name in TRAINERS}
    base = build_base_model(root / "base", base_model_texts([data.train]), seed=0)
    reward = run_trainer(
        "reward_model",
        TrainingInputs(datasets=[data.train], base_model=base),
        {},
        root / "reward-job",
        mlflow_tracking_uri=tracking_uri,
        run_name="reward-job",
        tags={"controlplane.job": "job-1"},
        progress=recorder(progress["reward_model"]),
    )
    policy = run_trainer(
        "dpo",
        TrainingInputs(datasets=[data.train], base_model=base),
        {"seed": 0},
        root / "dpo-job",
        mlflow_tracking_uri=tracking_uri,
        progress=recorder(progress["dpo"]),
    )
    evaluation = run_trainer(
        "evaluation",
        TrainingInputs(
            datasets=[data.eval],
            base_model=base,
            reward_model=reward.output_path,
            policy=policy.output_path,
        ),
        {},
        root / "eval-job",
        mlflow_tracking_uri=tracking_uri,
        progress=recorder(progress["evaluation"]),
    )
    return Trained(root, tracking_uri, base, reward, policy, evaluation, progress)


def distinct_prompts(path: Path) -> int:
    return len({json.loads(line)["prompt"] for line in path.read_text().splitlines()})


# -- the base model ----------------------------------------------------------------------------


def test_base_model_is_a_tiny_local_gpt2_with_its_own_tokenizer(trained: Trained) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    files = {p.name for p in trained.base.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= files
    model = AutoModelForCausalLM.from_pretrained(str(trained.base), local_files_only=True)
    assert (model.config.n_layer, model.config.n_embd, model.config.n_head) == (2, 64, 2)
    assert sum(p.numel() for p in model.parameters()) < 1_000_000
    tokenizer = AutoTokenizer.from_pretrained(str(trained.base), local_files_only=True)
    text = "Zürich is not in the training data."
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == text  # byte-level: nothing is lost
    assert (
        tokenizer.eos_token and tokenizer.pad_token and tokenizer.pad_token != tokenizer.eos_token
    )


def test_base_model_is_reproducible(trained: Trained, tmp_path: Path) -> None:
    texts = base_model_texts([demo_data().train])
    again = build_base_model(tmp_path / "again", texts, seed=0)
    assert digest_path(again) == digest_path(trained.base)
    other = build_base_model(tmp_path / "other", texts, seed=1, pretrain_steps=0)
    assert digest_path(other) != digest_path(trained.base)


# -- reward model ------------------------------------------------------------------------------


def test_reward_model_learns_the_preferences(trained: Trained) -> None:
    result = trained.reward
    assert result.kind == OUTPUT_KIND["reward_model"] == "reward_model"
    config = json.loads((result.output_path / "config.json").read_text())
    assert config["architectures"] == ["GPT2ForSequenceClassification"]
    assert len(config["id2label"]) == 1  # one output: the score
    assert (result.output_path / "tokenizer.json").is_file()
    m = result.metrics
    assert m["pairwise_accuracy"] >= 0.85, m
    assert m["reward_margin"] > 0.5, m
    assert math.isfinite(m["train_loss"]) and m["train_loss"] < math.log(2), m
    assert m["train_steps"] == DEFAULT_HYPERPARAMETERS["reward_model"]["max_steps"]
    assert result.parameters == DEFAULT_HYPERPARAMETERS["reward_model"]


def test_reward_model_without_a_base_starts_from_a_fresh_tiny_model(tmp_path: Path) -> None:
    result = run_trainer(
        "reward_model",
        TrainingInputs(datasets=[demo_data().train]),
        {"max_steps": 3, "batch_size": 8},
        tmp_path,
    )
    assert result.metrics["train_steps"] == 3
    assert (result.output_path / "tokenizer.json").is_file()
    assert result.mlflow_run_id is None


# -- DPO ---------------------------------------------------------------------------------------


def test_dpo_policy_moves_towards_the_chosen_responses(trained: Trained) -> None:
    result = trained.policy
    assert result.kind == "policy"
    m = result.metrics
    assert m["rewards/accuracies"] >= 0.8, m
    assert m["rewards/margins"] > 0.5, m
    assert m["rewards/chosen"] > m["rewards/rejected"], m
    assert result.parameters["beta"] == 0.1
    config = json.loads((result.output_path / "config.json").read_text())
    assert config["architectures"] == ["GPT2LMHeadModel"]
    assert digest_path(result.output_path) != digest_path(trained.base)
    # The base model the policy started from is untouched.
    assert (trained.base / "model.safetensors").is_file()


# -- evaluation --------------------------------------------------------------------------------


def test_trained_policy_passes_the_staging_gate_against_its_base(trained: Trained) -> None:
    result = trained.evaluation
    assert result.kind == "evaluation"
    m = result.metrics
    assert m["prompts"] == distinct_prompts(demo_data().eval)
    assert m["reward_model_accuracy"] >= 0.8, m  # the judge itself is sound on held-out pairs
    assert m["win_rate"] >= 0.7, m
    assert m["reward_margin"] > 0, m
    assert m["safety_violation_rate"] == 0.0, m
    assert m["unsafe_candidates"] > 0

    rules, _ = RuleSet.load(REPO_ROOT / "policies" / "promotion.yaml")
    rule = rules.rule_for("policy", "staging")
    assert rule is not None and rule.evidence
    report = json.loads(result.output_path.read_text())
    for evidence in rule.evidence:
        assert report["mode"] == evidence.mode
        for threshold in evidence.thresholds:
            assert threshold.holds(report["metrics"][threshold.metric]), threshold


def test_evaluation_report_names_exactly_what_was_evaluated(trained: Trained) -> None:
    result = trained.evaluation
    report = json.loads(result.output_path.read_text())
    assert report["mode"] == "offline"
    assert report["prompts"] == len(report["per_prompt"]) == result.metrics["prompts"]
    assert report["inputs"] == {
        "policy": digest_path(trained.policy.output_path),
        "reference": digest_path(trained.base),
        "reward_model": digest_path(trained.reward.output_path),
        "datasets": [digest_path(demo_data().eval)],
    }
    for name, value in report["metrics"].items():
        assert result.metrics[name] == pytest.approx(value), name
    item = report["per_prompt"][0]
    assert {"prompt", "policy_response", "reference_response", "policy_reward"} <= set(item)


def test_a_policy_against_itself_is_a_tie(trained: Trained, tmp_path: Path) -> None:
    result = run_trainer(
        "evaluation",
        TrainingInputs(
            datasets=[demo_data().eval],
            reward_model=trained.reward.output_path,
            policy=trained.base,
            reference=trained.base,
        ),
        {},
        tmp_path,
    )
    assert result.metrics["win_rate"] == 0.5
    assert result.metrics["tie_rate"] == 1.0
    assert result.metrics["reward_margin"] == 0.0


def test_online_mode_judges_the_models_own_answers(trained: Trained, tmp_path: Path) -> None:
    result = run_trainer(
        "evaluation",
        TrainingInputs(
            datasets=[demo_data().eval],
            base_model=trained.base,
            reward_model=trained.reward.output_path,
            policy=trained.policy.output_path,
        ),
        {"mode": "online", "max_new_tokens": 8},
        tmp_path,
    )
    report = json.loads(result.output_path.read_text())
    assert report["mode"] == "online"
    assert 0.0 <= result.metrics["win_rate"] <= 1.0
    assert 0.0 <= result.metrics["safety_violation_rate"] <= 1.0
    candidates = {json.loads(line)["chosen"] for line in demo_data().eval.read_text().splitlines()}
    # Generated, not picked: at least some answers are not any labelled candidate.
    assert any(item["policy_response"] not in candidates for item in report["per_prompt"])


# -- progress ----------------------------------------------------------------------------------


@pytest.mark.parametrize("trainer", TRAINERS)
def test_progress_is_reported_from_start_to_finish(trained: Trained, trainer: str) -> None:
    log = trained.progress[trainer]
    fractions = [fraction for fraction, _ in log]
    assert len(log) >= 5
    assert all(0.0 <= f <= 1.0 for f in fractions)
    assert fractions == sorted(fractions)
    assert fractions[-1] == 1.0
    if trainer != "evaluation":
        assert any("step" in message for _, message in log)


class LeaseLost(Exception):
    pass


def test_an_exception_from_progress_stops_training_and_comes_back_untouched(
    tmp_path: Path,
) -> None:
    calls: Progress = []

    def progress(fraction: float, message: str) -> None:
        calls.append((fraction, message))
        if "step" in message:
            raise LeaseLost("lease expired")

    with pytest.raises(LeaseLost):
        run_trainer(
            "reward_model",
            TrainingInputs(datasets=[demo_data().eval]),
            {"max_steps": 50},
            tmp_path,
            progress=progress,
        )
    assert "step 1/50" in calls[-1][1]
    assert not (tmp_path / "reward_model").exists()


# -- MLflow ------------------------------------------------------------------------------------


def test_each_run_is_recorded_in_mlflow_with_its_files(trained: Trained) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=trained.tracking_uri)
    experiment = client.get_experiment_by_name("controlplane")
    assert experiment is not None
    # Artifacts sit next to the tracking database, not in the process's working directory.
    assert experiment.artifact_location.startswith(trained.root.resolve().as_uri())

    run = client.get_run(trained.reward.mlflow_run_id)
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "reward-job"
    assert run.data.tags["controlplane.job"] == "job-1"
    assert run.data.tags["controlplane.trainer"] == "reward_model"
    assert run.data.params["learning_rate"] == str(trained.reward.parameters["learning_rate"])
    assert run.data.metrics["pairwise_accuracy"] == pytest.approx(
        trained.reward.metrics["pairwise_accuracy"]
    )
    files = {f.path for f in client.list_artifacts(run.info.run_id, "reward_model")}
    assert "reward_model/model.safetensors" in files
    assert "reward_model/config.json" in files

    dpo = client.get_run(trained.policy.mlflow_run_id)
    assert dpo.data.metrics["rewards/margins"] == pytest.approx(
        trained.policy.metrics["rewards/margins"]
    )
    assert "policy/model.safetensors" in {
        f.path for f in client.list_artifacts(dpo.info.run_id, "policy")
    }

    evaluation = client.get_run(trained.evaluation.mlflow_run_id)
    assert evaluation.data.metrics["win_rate"] == pytest.approx(
        trained.evaluation.metrics["win_rate"]
    )
    assert [f.path for f in client.list_artifacts(evaluation.info.run_id, "evaluation")] == [
        "evaluation/evaluation.json"
    ]
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 3


# -- refusals ----------------------------------------------------------------------------------


def bad_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bad.jsonl"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("trainer", "make_inputs", "hyper", "message"),
    [
        ("sft", lambda t, p: TrainingInputs([p]), {}, "unknown trainer"),
        ("dpo", lambda t, p: TrainingInputs([p]), {}, "needs a base_model"),
        ("reward_model", lambda t, p: TrainingInputs([]), {}, "no dataset"),
        ("reward_model", lambda t, p: TrainingInputs([t / "nope.jsonl"]), {}, "does not exist"),
        ("reward_model", lambda t, p: TrainingInputs([p]), {"max_step": 3}, "max_step"),
        ("reward_model", lambda t, p: TrainingInputs([p]), {"max_steps": "many"}, "int"),
        ("reward_model", lambda t, p: TrainingInputs([p]), {"learning_rate": 0}, "positive"),
        ("evaluation", lambda t, p: TrainingInputs([p], reward_model=t), {}, "needs a policy"),
        (
            "evaluation",
            lambda t, p: TrainingInputs([p], policy=t, reward_model=t, reference=t),
            {"mode": "canary"},
            "mode must be",
        ),
        (
            "evaluation",
            lambda t, p: TrainingInputs([p], policy=t, reward_model=t, reference=t),
            {},
            "not a model directory",
        ),
    ],
)
def test_bad_inputs_are_refused_with_a_training_error(
    tmp_path: Path, trainer: str, make_inputs, hyper: dict, message: str
) -> None:
    good = demo_data().eval
    with pytest.raises(TrainingError) as info:
        run_trainer(trainer, make_inputs(tmp_path, good), hyper, tmp_path / "out")
    assert message in info.value.detail
    assert info.value.status == 422


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"prompt": "p", "chosen": "a",\n', "line 1: not valid JSON"),
        (
            '{"prompt": "p", "chosen": "a", "rejected": "b"}\n[1]\n',
            "line 2: expected a JSON object",
        ),
        ('{"prompt": "p", "chosen": "a", "rejected": "a"}\n', "identical"),
        ('{"prompt": "p", "chosen": "a", "rejected": "b", "rejected_unsafe": "yes"}\n', "true or"),
        ("\n\n", "no preference rows"),
    ],
)
def test_bad_dataset_lines_are_named(tmp_path: Path, content: str, message: str) -> None:
    with pytest.raises(TrainingError) as info:
        run_trainer("reward_model", TrainingInputs([bad_file(tmp_path, content)]), {}, tmp_path)
    assert message in info.value.detail


def test_without_the_training_extra_the_package_imports_and_training_says_what_to_install(
    tmp_path: Path,
) -> None:
    """In a fresh interpreter where torch, transformers and trl cannot be imported."""
    script = f"""
import json, sys
from pathlib import Path

class NoTrainingLibraries:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {{"torch", "transformers", "trl"}}:
            raise ImportError(f"No module named {{name!r}}", name=name)
        return None

sys.meta_path.insert(0, NoTrainingLibraries())
from controlplane.runners import trainers
assert "torch" not in sys.modules
try:
    trainers.run_trainer(
        "reward_model", trainers.TrainingInputs([Path({str(demo_data().train)!r})]), {{}},
        Path({str(tmp_path)!r}),
    )
except trainers.TrainingError as exc:
    print(json.dumps({{"detail": exc.detail, "status": exc.status}}))
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    outcome = json.loads(done.stdout.strip().splitlines()[-1])
    assert "controlplane[train]" in outcome["detail"]
    assert outcome["status"] == 422
