"""``runner start`` stopped by SIGTERM (``kill``, ``docker stop``, systemd) releases its job at
once, as Ctrl-C does; before, the default SIGTERM action ended the process and the job stayed
claimed until its lease expired.

The runner is a real process (the console entry point) training for real against a served
control plane; it is terminated while training.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.runners.helpers import Lab
from tests.utils.databases import served

pytestmark = pytest.mark.slow


@pytest.fixture
def sqlite_lab(tmp_path: Path) -> Iterator[Lab]:
    with served("sqlite", tmp_path) as server:
        lab = Lab(server)
        try:
            yield lab
        finally:
            lab.close()


def test_sigterm_releases_the_job_in_progress(sqlite_lab: Lab, tmp_path: Path) -> None:
    lab = sqlite_lab
    rubric, dataset = lab.approved_data("sigterm")
    runner = lab.runner("box-1")
    contract = lab.contract("reward_model", [dataset, rubric], [runner.id])
    job = lab.queue(
        "reward_model",
        datasets=[dataset["ref"]],
        rubric=rubric["ref"],
        hyperparameters={"max_steps": 100_000},  # far longer than the test waits
    )
    env = {
        **os.environ,
        "CONTROLPLANE_URL": lab.server.url,
        "CONTROLPLANE_TOKEN": runner.token,
        "CONTROLPLANE_DATA_DIR": str(tmp_path / "runner"),
        "CONTROLPLANE_PROJECT": lab.project,
        "HF_HUB_OFFLINE": "1",
    }
    command = [sys.executable, "-m", "controlplane.cli.main", "runner", "start", "--once"]
    command += ["--contract", Lab.contract_id(contract), "--no-progress", "--poll-interval", "0.2"]
    process = subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while lab.job(job["id"])["state"] != "claimed":
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "the runner never claimed the job"
            time.sleep(0.2)
        time.sleep(1.0)  # into fetching and training
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=90)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 143, stderr
    assert "released" in stderr, stderr
    assert lab.job(job["id"])["state"] == "queued"
    (released,) = lab.entries(action="job.released")
    assert released["actor"] == runner.id
    assert released["subject"]["name"] == str(job["id"])
