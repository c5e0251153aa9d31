"""The runner fetches every input, checks its digest before training, and refuses (reports
the job failed) when the bytes do not match, whichever way they arrived."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from controlplane.registry.digests import digest_path
from controlplane.runners.runner import Runner, RunnerConfig
from controlplane.store.models import ContentBlobRow
from tests.runners.helpers import Lab, rows, write


class FakeTrainer:
    """Stands in for the built-in trainers: records what it was given, writes an output."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def __call__(self, trainer: str, inputs: Any, hyper: Any, out_dir: Path, **kw: Any) -> Any:
        self.calls.append(
            {
                "trainer": trainer,
                "datasets": [digest_path(path) for path in inputs.datasets],
                "base_model": digest_path(inputs.base_model),
            }
        )
        kw["progress"](0.5, "halfway")
        output = write(Path(out_dir) / "model" / "weights.bin", b"trained on " + trainer.encode())

        class Result:
            output_path = output.parent
            metrics = {"train_loss": 0.5}
            mlflow_run_id = None
            parameters = dict(hyper)

        return Result()


def test_inputs_are_verified_before_training_and_bad_bytes_fail_the_job(
    lab: Lab, tmp_path: Path
) -> None:
    rubric, stored = lab.approved_data("s")  # dataset bytes kept by the content store
    local_file = write(tmp_path / "shared" / "prefs.jsonl", rows("local"))
    local = lab.register_content("dataset", "prefs-local", rows("local"), uri=local_file.as_uri())
    lab.approve(local)
    base_dir = write(tmp_path / "laptop" / "base" / "weights.bin", b"base weights").parent
    base = lab.register_model("policy", "base", digest_path(base_dir), "s3://nowhere/base")
    runner_who = lab.runner("runner-t")
    sdk = lab.sdk(runner_who)
    sdk.upload(lab.project, base_dir)  # what `controlplane job upload` does
    contract = lab.contract("dpo", [stored, local, rubric], [runner_who.id])
    trainer = FakeTrainer()
    runner = Runner(
        sdk,
        RunnerConfig([lab.project], [contract], tmp_path / "work", poll_interval=0.05),
        train=trainer,
    )

    # good bytes: a dataset from the content store, a model directory by its manifest
    good = lab.queue("dpo", datasets=[stored["ref"]], base_model=base["ref"])
    [outcome] = runner.run(once=True)
    assert (outcome.job_id, outcome.state) == (good["id"], "succeeded"), outcome
    assert trainer.calls == [
        {"trainer": "dpo", "datasets": [stored["digest"]], "base_model": base["digest"]}
    ]
    assert lab.job(good["id"])["state"] == "succeeded"
    output_digest = lab.job(good["id"])["result"]["output"]["digest"]
    assert sdk.content(lab.project, output_digest) is not None  # outputs are uploaded

    # Ctrl-C while training: the lease is released (recorded) and the job is queued again
    def interrupted(*_args: Any, **kwargs: Any) -> Any:
        kwargs["progress"](0.3, "training")
        raise KeyboardInterrupt

    stopped = lab.queue("dpo", datasets=[stored["ref"]], base_model=base["ref"])
    stopping = Runner(sdk, runner.config, train=interrupted)
    with pytest.raises(KeyboardInterrupt):
        stopping.run(once=True)
    released = lab.entries(action="job.released")[-1]
    assert released["subject"]["name"] == str(stopped["id"])
    assert "interrupted" in released["payload"]["reason"]
    assert lab.job(stopped["id"])["state"] == "queued"
    lab.cp.jobs.cancel(lab.eng.principal, stopped["id"], "not needed", is_admin=False)

    # a file at its URI changed after registration: the runner refuses to train on it
    local_file.write_bytes(rows("tampered"))
    tampered = lab.queue("dpo", datasets=[local["ref"]], base_model=base["ref"])
    [outcome] = runner.run(once=True)
    assert (outcome.job_id, outcome.state) == (tampered["id"], "failed")
    job = lab.job(tampered["id"])
    assert job["state"] == "failed"
    assert "refusing to train" in job["reason"] and local["digest"] in job["reason"]

    # bytes damaged in the content store: refused just the same
    with lab.cp.db.writer.begin() as conn:
        conn.execute(
            update(ContentBlobRow)
            .where(ContentBlobRow.digest == stored["digest"])
            .values(data=rows("damaged"))
        )
    damaged = lab.queue("dpo", datasets=[stored["ref"]], base_model=base["ref"])
    [outcome] = runner.run(once=True)
    assert outcome.state == "failed" and "content store sent bytes" in outcome.detail
    assert lab.job(damaged["id"])["reason"] == outcome.detail

    assert len(trainer.calls) == 1  # only the good job was ever trained
    assert [e["payload"]["reason"] for e in lab.entries(action="job.failed")] == [
        lab.job(tampered["id"])["reason"],
        outcome.detail,
    ]
