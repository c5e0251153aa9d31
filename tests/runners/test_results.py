"""A job from queue to registered output, through the runner SDK over HTTP (no trainer).

The output is registered in the same transaction as ``job.finished``, with lineage edges
taken from the queued job (not from the runner) and the job and contract recorded in its
metadata; an evaluation carries the ``{mode, metrics}`` the promotion evidence gate reads.
Each claim is an OpenLineage run (file transport into the data directory), and the jobs
projection replays from the ledger.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from controlplane.store.integrity import check_database
from tests.api.helpers import fake_digest
from tests.runners.helpers import Lab


def _lineage(version: dict[str, Any]) -> set[tuple[str, str]]:
    return {(edge["relation"], edge["ref"]) for edge in version["lineage"]}


def _events(lab: Lab) -> list[dict[str, Any]]:
    directory = Path(lab.cp.settings.data_dir) / "lineage"
    return [json.loads(path.read_text()) for path in sorted(directory.glob("*.json"))]


def test_a_job_runs_to_a_registered_output_with_full_lineage(lab: Lab) -> None:
    rubric, dataset = lab.approved_data("a")
    base = lab.register_model("policy", "base", fake_digest("base"), "s3://models/base")
    runner = lab.runner("runner-a")
    envelope = lab.contract("reward_model", [dataset, rubric], [runner.id])
    contract_id = lab.contract_id(envelope)

    job = lab.queue(
        "reward_model",
        datasets=[dataset["ref"]],
        rubric=rubric["ref"],
        base_model=base["ref"],
        hyperparameters={"max_steps": 3},
        output_name="rm",
    )
    assert job["state"] == "queued"
    assert job["spec"]["datasets"] == [
        {"ref": dataset["ref"], "digest": dataset["digest"], "uri": dataset["uri"]}
    ]
    assert job["output"] == {"kind": "reward_model", "name": "rm"}

    sdk = lab.sdk(runner)
    claimed = sdk.claim_next(lab.project, contract_id)  # a registered contract, by id
    assert claimed is not None and claimed["id"] == job["id"]
    assert (claimed["state"], claimed["runner"], claimed["contract_id"]) == (
        "claimed",
        runner.id,
        contract_id,
    )
    assert sdk.claim_next(lab.project, contract_id) is None  # nothing else is queued
    sdk.heartbeat(claimed, {"fraction": 0.5, "message": "training"})
    assert lab.job(job["id"])["lease"]["progress"] == {"fraction": 0.5, "message": "training"}

    before = lab.size()
    finished = sdk.finish(
        claimed,
        digest=fake_digest("rm-weights"),
        uri="file:///models/rm",
        metrics={"pairwise_accuracy": 0.75},
        mlflow_run_id="0123abcd",
        parameters={"max_steps": 3},
    )
    assert finished["state"] == "succeeded"
    assert finished["result"]["output"]["ref"] == "reward_model/rm@1"
    new = lab.entries(before)
    assert [e["action"] for e in new] == ["artifact.version_registered", "job.finished"]
    with lab.cp.db.read() as session:  # one transaction: one checkpoint, after both entries
        sizes = {c.tree_size for c in lab.cp.store.checkpoints(session, before)}
    assert before + 1 not in sizes and before + 2 in sizes

    with lab.http(lab.eng) as http:
        rm = http.get(f"/v1/projects/{lab.project}/artifacts/reward_model/rm/versions/1").json()
    assert _lineage(rm) == {
        ("trained_on", dataset["ref"]),
        ("follows_rubric", rubric["ref"]),
        ("initialized_from", base["ref"]),
    }
    assert rm["created_by"] == runner.id
    assert rm["metadata"]["produced_by"]["job"] == job["id"]
    assert rm["metadata"]["produced_by"]["mlflow_run_id"] == "0123abcd"
    assert rm["metadata"]["contract"] == {
        "id": contract_id,
        "envelope_digest": claimed["contract_digest"],
    }
    assert rm["metadata"]["metrics"] == {"pairwise_accuracy": 0.75}

    # an evaluation: {mode, metrics} linked evaluated_on the policy, as the evidence gate reads
    policy = lab.register_model("policy", "pol", fake_digest("pol"), "s3://models/pol")
    evaluation_contract = lab.contract("evaluation", [dataset, rubric], [runner.id])
    evaluation = lab.queue(
        "evaluation",
        datasets=[dataset["ref"]],
        policy=policy["ref"],
        reward_model="reward_model/rm@1",
        base_model=base["ref"],
    )
    claimed = sdk.claim_next(lab.project, evaluation_contract)  # presented as an envelope
    assert claimed is not None and claimed["id"] == evaluation["id"]
    metrics = {"win_rate": 0.61, "safety_violation_rate": 0.0}
    done = sdk.finish(claimed, digest=fake_digest("report"), uri="file:///r.json", metrics=metrics)
    ref = done["result"]["output"]["ref"]
    with lab.http(lab.eng) as http:
        name = ref.split("/")[1].split("@")[0]
        report = http.get(f"/v1/projects/{lab.project}/artifacts/evaluation/{name}/versions/1")
    report_version = report.json()
    assert report_version["metadata"]["mode"] == "offline"
    assert report_version["metadata"]["metrics"] == metrics
    assert ("evaluated_on", policy["ref"]) in _lineage(report_version)
    assert ("derived_from", "reward_model/rm@1") in _lineage(report_version)

    # OpenLineage: one run per claim, START then COMPLETE with the output and its digest
    events = [
        e for e in _events(lab) if e["job"]["name"].endswith(f".job-{job['id']}.reward_model")
    ]
    assert [e["eventType"] for e in events] == ["START", "COMPLETE"]
    assert len({e["run"]["runId"] for e in events}) == 1
    assert [d["name"] for d in events[1]["outputs"]] == [f"{lab.project}/reward_model/rm@1"]
    assert events[1]["outputs"][0]["facets"]["version"]["datasetVersion"] == fake_digest(
        "rm-weights"
    )
    assert {d["name"] for d in events[0]["inputs"]} == {
        f"{lab.project}/{v['ref']}" for v in (dataset, rubric, base)
    }

    # the jobs table is a projection: a replay of the ledger rebuilds it exactly
    report_ = check_database(lab.cp.store)
    assert report_.ok, report_.problems
