"""``controlplane runner start --once`` end to end with the real trainers (TRL on CPU).

An engineer builds a tiny base model on a "laptop" (its URI points nowhere a runner can read)
and uploads it; the runner fetches it through the content store, checks every digest, trains
a reward model, then a DPO policy, then evaluates the policy, each under a contract of the
matching purpose, and every output comes back registered with its lineage and MLflow run.
One database is enough here: the claim mechanics are covered on both elsewhere.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from controlplane.runners.trainers import build_base_model
from controlplane.store.integrity import check_database
from tests.cli.helpers import cli_env, ok, run_json
from tests.runners.helpers import Lab, rows
from tests.utils.databases import served

pytestmark = pytest.mark.slow


@pytest.fixture
def sqlite_lab(tmp_path: Path) -> Any:
    with served("sqlite", tmp_path) as server:
        lab = Lab(server)
        try:
            yield lab
        finally:
            lab.close()


def test_runner_once_trains_reward_model_dpo_and_evaluation(
    sqlite_lab: Lab, tmp_path: Path
) -> None:
    lab = sqlite_lab
    project = ["-p", lab.project]
    rubric, dataset = lab.approved_data("e2e")
    runner = lab.runner("gpu-box-1")
    engineer = cli_env(lab.server, tmp_path / "eng", CONTROLPLANE_TOKEN=lab.eng.token)
    on_runner = cli_env(lab.server, tmp_path / "runner", CONTROLPLANE_TOKEN=runner.token)

    texts = [json.loads(line)["prompt"] for line in rows("e2e").decode().splitlines()]
    base_dir = build_base_model(tmp_path / "laptop" / "base", texts * 4, seed=0)
    ok(
        ["register", "policy", "base", base_dir, "--uri", "s3://laptop-only/base", *project],
        engineer,
    )
    ok(["job", "upload", "policy/base@1", base_dir, *project], engineer)

    contracts = []
    for purpose in ("reward_model", "dpo", "evaluation"):
        path = tmp_path / f"contract-{purpose}.json"
        path.write_text(json.dumps(lab.contract(purpose, [dataset, rubric], [runner.id])))
        contracts += ["--contract", str(path)]
    start = [
        "runner",
        "start",
        "--once",
        *contracts,
        *project,
        "--poll-interval",
        "0.1",
        "--max-idle",
        "30",
        "--work-dir",
        tmp_path / "runner" / "work",
        "--mlflow-tracking-uri",
        f"sqlite:///{tmp_path / 'mlflow.db'}",
    ]

    def train(*queue: str) -> dict[str, Any]:
        job = run_json(["job", "queue", *queue, "-d", dataset["ref"], *project], engineer)
        [outcome] = run_json(start, on_runner)
        assert (outcome["job_id"], outcome["state"]) == (job["id"], "succeeded"), outcome
        shown = run_json(["job", "show", str(job["id"])], engineer)
        assert shown["state"] == "succeeded" and shown["result"]["mlflow_run_id"]
        ref = shown["result"]["output"]["ref"]
        assert f"produced    {ref}" in ok(["job", "show", str(job["id"])], engineer).stdout
        return run_json(["show", ref, *project], engineer)  # type: ignore[no-any-return]

    small = ["--param", "max_steps=2", "--param", "batch_size=4"]
    rm = train(
        "reward_model",
        "--rubric",
        rubric["ref"],
        "--base-model",
        "policy/base@1",
        *small,
        "--output",
        "rm",
    )
    policy = train(
        "dpo", "--rubric", rubric["ref"], "--base-model", "policy/base@1", *small, "--output", "pol"
    )
    report = train(
        "evaluation",
        "--policy",
        policy["ref"],
        "--reward-model",
        rm["ref"],
        "--base-model",
        "policy/base@1",
        "--output",
        "pol-offline",
    )

    def edges(version: dict[str, Any]) -> set[tuple[str, str]]:
        return {(e["relation"], e["ref"]) for e in version["lineage"]}

    assert edges(rm) == {
        ("trained_on", dataset["ref"]),
        ("follows_rubric", rubric["ref"]),
        ("initialized_from", "policy/base@1"),
    }
    assert edges(policy) == {
        ("trained_on", dataset["ref"]),
        ("follows_rubric", rubric["ref"]),
        ("initialized_from", "policy/base@1"),
    }
    assert {("evaluated_on", policy["ref"]), ("derived_from", rm["ref"])} <= edges(report)
    assert report["metadata"]["mode"] == "offline"
    assert {"win_rate", "safety_violation_rate"} <= set(report["metadata"]["metrics"])
    assert report["metadata"]["contract"]["id"] and report["metadata"]["produced_by"]["runner"] == (
        runner.id
    )
    listed = run_json(["job", "list", *project, "--state", "succeeded"], engineer)
    assert len(listed["data"]) == listed["count"] == 3
    assert "3 job(s)" in ok(["job", "list", *project], engineer).stdout
    verdict = check_database(lab.cp.store)
    assert verdict.ok, verdict.problems
