"""Two API replicas as separate uvicorn processes on one PostgreSQL database, started the way a
process manager starts them (``uvicorn controlplane.api.asgi:app``): each logs JSON lines on
its stderr and exposes metrics of its own process; both witness into one directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from controlplane.core import ControlPlane
from controlplane.ops.witness import read_witness
from tests.api.helpers import assert_problem, model_body, register
from tests.ops.helpers import scrape, wait_for
from tests.utils.databases import make_settings, postgres_database
from tests.utils.server import free_port

APPENDED = "controlplane_ledger_entries_appended_total"


@dataclass
class Replica:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log.read_text().splitlines() if line.strip()]


@dataclass
class Cluster:
    replicas: list[Replica]
    token: str
    witness: Path


def start(env: dict[str, str], log: Path) -> Replica:
    port = free_port()
    command = [
        sys.executable,
        *("-m", "uvicorn", "controlplane.api.asgi:app"),
        *("--host", "127.0.0.1", "--port", str(port), "--no-access-log"),
    ]
    handle = log.open("wb")
    process = subprocess.Popen(command, env=env, stdout=handle, stderr=handle)
    handle.close()
    return Replica(f"http://127.0.0.1:{port}", process, log)


def ready(replica: Replica) -> bool:
    if replica.process.poll() is not None:
        raise AssertionError(f"replica exited:\n{replica.log.read_text()}")
    try:
        return httpx.get(f"{replica.url}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    directory = tmp_path_factory.mktemp("replicas")
    witness = directory / "witness"
    with postgres_database() as url:
        settings = make_settings(url, directory, witness_dir=witness)
        plane = ControlPlane(settings)
        plane.init()  # as `controlplane init` does before the replicas start
        plane.close()
        env = {
            **os.environ,
            "CONTROLPLANE_DATABASE_URL": url,
            "CONTROLPLANE_DATA_DIR": str(settings.data_dir),
            "CONTROLPLANE_PSEUDONYM_SECRET": "test-pseudonym-secret",
            "CONTROLPLANE_MLFLOW_ENABLED": "false",
            "CONTROLPLANE_WITNESS_DIR": str(witness),
            "CONTROLPLANE_LOG_FORMAT": "json",
        }
        replicas = [start(env, directory / f"replica-{n}.log") for n in range(2)]
        try:
            for replica in replicas:
                wait_for(lambda r=replica: ready(r), timeout=60, what=f"{replica.url}")
            token = settings.admin_token_file.read_text().strip()
            yield Cluster(replicas, token, witness)
        finally:
            for replica in replicas:
                replica.process.terminate()
            for replica in replicas:
                try:
                    replica.process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    replica.process.kill()
                    replica.process.wait()


def test_each_replica_counts_its_own_work_and_logs_json(cluster: Cluster) -> None:
    a, b = cluster.replicas
    auth = {"Authorization": f"Bearer {cluster.token}"}
    before_a, before_b = scrape(a.url), scrape(b.url)
    with httpx.Client(base_url=b.url, headers=auth, timeout=30) as http:
        version = register(http, "default", "policy", "p1", model_body("replica-b"))
    with httpx.Client(base_url=a.url, headers=auth, timeout=30) as http:
        missing = http.get("/v1/ledger/entries/999999", headers={"X-Request-ID": "lost-entry-1"})
    problem = assert_problem(missing, 404)
    assert problem["request_id"] == missing.headers["x-request-id"] == "lost-entry-1"

    after_a, after_b = scrape(a.url), scrape(b.url)
    action = "artifact.version_registered"
    assert after_b.value(APPENDED, action=action) == before_b.value(APPENDED, action=action) + 1
    assert after_a.value(APPENDED, action=action) == before_a.value(APPENDED, action=action)
    route = "/v1/ledger/entries/{seq}"
    count = "controlplane_http_request_duration_seconds_count"
    assert after_a.value(count, method="GET", route=route, status="404") == 1
    assert after_b.value(count, method="GET", route=route, status="404") == 0
    # read from the shared database: the same on every replica
    for scraped in (after_a, after_b):
        assert scraped.value("controlplane_ledger_tree_size") == version["ledger_seq"] + 1
        assert scraped.value("controlplane_jobs_queued") == 0
        assert scraped.value("process_resident_memory_bytes") > 0

    # the checkpoint replica b signed is in the shared witness directory
    sizes = [w.size for w in read_witness(cluster.witness)[0]]
    assert version["ledger_seq"] + 1 in sizes

    def logged() -> list[dict[str, Any]]:
        return [line for line in a.lines() if line.get("request_id") == "lost-entry-1"]

    wait_for(lambda: bool(logged()), timeout=10, what="replica a's access line")
    (line,) = logged()
    assert (line["logger"], line["route"], line["status"]) == ("controlplane.access", route, 404)
    assert line["principal_id"] == "admin"
    time.sleep(0.2)
    for replica in (a, b):  # every line either process wrote is one JSON object
        lines = replica.lines()
        assert any(line.get("logger", "").startswith("uvicorn") for line in lines), lines
        assert all({"ts", "level", "logger", "msg"} <= line.keys() for line in lines)
