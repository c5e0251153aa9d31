"""Real server processes, real client processes, and the checks that hold the ledger to what
the clients were told.

Servers run as ``uvicorn controlplane.api.asgi:app`` (as a process manager starts replicas)
with the minimum environment: the database URL, a data directory of their own, the shared
checkpoint signing key file, the shared pseudonym secret and the origin. Clients run as
``python -m tests.reliability.client`` (see that module). Every process is started here and
stopped by :class:`Processes` in a ``finally``, killed if it does not stop.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from controlplane import clock
from controlplane.client.api import ApiClient
from controlplane.client.verify import StateFile, verify_server
from controlplane.config import REPO_ROOT, Settings
from controlplane.contracts import statement as st
from controlplane.core import ControlPlane
from controlplane.crypto.keys import public_key_b64
from controlplane.governance import statements
from controlplane.ledger.verify import VerificationReport
from controlplane.registry.refs import VersionRef
from controlplane.runners.spec import JobRequest
from controlplane.store.integrity import check_database
from tests.runners.helpers import RUBRIC, Actor, rows
from tests.utils.databases import make_settings
from tests.utils.server import free_port

PROJECT = "storm"
PSEUDONYM_SECRET = "test-pseudonym-secret"
ORIGIN = "test.controlplane/ledger"


# -- processes -----------------------------------------------------------------------------------


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def ready(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"server exited {self.process.returncode}:\n{self.tail()}")
        try:
            return httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""


@dataclass
class Processes:
    """Every process a test starts; :meth:`stop_all` ends each by its own pid."""

    started: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def popen(self, command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
        with log.open("ab") as handle:
            process = subprocess.Popen(
                command,
                env=env,
                cwd=REPO_ROOT,
                stdin=subprocess.DEVNULL,
                stdout=handle,
                stderr=subprocess.STDOUT,
            )
        self.started.append(process)
        return process

    def stop_all(self) -> None:
        for process in self.started:
            if process.poll() is None:
                process.terminate()
        for process in self.started:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@contextmanager
def processes() -> Iterator[Processes]:
    running = Processes()
    try:
        yield running
    finally:
        running.stop_all()


def base_env(home: Path) -> dict[str, str]:
    """What any child process needs: the interpreter's PATH and a private HOME, nothing else
    of the test runner's environment (so no stray CONTROLPLANE_* setting leaks in)."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "LANG": "C.UTF-8"}


def server_env(settings: Settings, data_dir: Path) -> dict[str, str]:
    """One replica's environment: the shared database, key file and secret; its own data dir."""
    return {
        **base_env(data_dir),
        "CONTROLPLANE_DATABASE_URL": settings.resolved_database_url,
        "CONTROLPLANE_DATA_DIR": str(data_dir),
        "CONTROLPLANE_SIGNING_KEY_FILE": str(settings.resolved_signing_key_file.resolve()),
        "CONTROLPLANE_PSEUDONYM_SECRET": PSEUDONYM_SECRET,
        "CONTROLPLANE_ORIGIN": ORIGIN,
        "CONTROLPLANE_MLFLOW_ENABLED": "false",
        "CONTROLPLANE_LOG_LEVEL": "WARNING",
    }


def start_server(
    running: Processes, settings: Settings, data_dir: Path, port: int | None = None
) -> Server:
    """A replica on a free port (or ``port``, to restart one where clients expect it)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    command = [
        sys.executable,
        *("-m", "uvicorn", "controlplane.api.asgi:app"),
        *("--host", "127.0.0.1", "--port", str(port), "--no-access-log"),
    ]
    log = data_dir / "server.log"
    process = running.popen(command, server_env(settings, data_dir), log)
    return Server(f"http://127.0.0.1:{port}", process, log)


def wait_ready(*servers: Server, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    for server in servers:
        while not server.ready():
            if time.monotonic() > deadline:
                raise AssertionError(f"{server.url} did not start:\n{server.tail()}")
            time.sleep(0.1)


def kill9(server: Server) -> None:
    """SIGKILL: no shutdown handler, no flush, no commit of what is in flight."""
    server.process.send_signal(signal.SIGKILL)
    server.process.wait(timeout=10)


@dataclass
class Client:
    role: str
    process: subprocess.Popen[bytes]
    out: Path
    log: Path

    def result(self) -> dict[str, Any]:
        assert self.process.returncode == 0, f"{self.role} failed:\n{self.log.read_text()}"
        data: dict[str, Any] = json.loads(self.out.read_text())
        assert not data["errors"], f"{self.role} saw server errors: {data['errors']}"
        return data


def start_client(running: Processes, directory: Path, label: str, config: dict[str, Any]) -> Client:
    directory.mkdir(parents=True, exist_ok=True)
    config_path = directory / f"{label}.json"
    config_path.write_text(json.dumps(config))
    out, log = directory / f"{label}.out.json", directory / f"{label}.log"
    command = [sys.executable, "-m", "tests.reliability.client", str(config_path), str(out)]
    env = {**base_env(directory), "PYTHONPATH": str(REPO_ROOT)}
    return Client(config["role"], running.popen(command, env, log), out, log)


def appenders(
    running: Processes, directory: Path, url: str | list[str], who: list[Actor], stop: Path
) -> list[Client]:
    """One ``appender`` client per actor, registering versions until ``stop`` exists (on each
    of the ``url`` replicas in turn)."""
    return [
        start_client(
            running,
            directory,
            f"appender-{n}",
            {
                "role": "appender",
                "urls": [url] if isinstance(url, str) else url,
                "token": actor.token,
                "project": PROJECT,
                "name": actor.id,
                "seconds": 120,
                "stop_file": str(stop),
            },
        )
        for n, actor in enumerate(who)
    ]


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def size(cp: ControlPlane) -> int:
    with cp.db.read() as session:
        return cp.store.size(session)


def wait_clients(clients: list[Client], timeout: float) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    for client in clients:
        client.process.wait(timeout=max(1.0, deadline - time.monotonic()))
    return [client.result() for client in clients]


# -- the world -----------------------------------------------------------------------------------


def settings_for(url: str, directory: Path) -> Settings:
    return make_settings(url, directory, origin=ORIGIN, pseudonym_secret=PSEUDONYM_SECRET)


def person(
    cp: ControlPlane, principal_id: str, *roles: str, kind: str = "user", key: bool = False
) -> Actor:
    principal = cp.identity.create_principal("admin", principal_id, kind)
    for role in roles:
        cp.identity.grant_role("admin", principal_id, role, PROJECT)
    actor = Actor(principal, cp.identity.issue_token("admin", principal_id, "storm").token)
    if key:
        actor.key = Ed25519PrivateKey.generate()
        cp.governance.register_key(principal, public_key_b64(actor.key.public_key()), "storm")
    return actor


def approve(cp: ControlPlane, by: Actor, signer: Actor, version: dict[str, Any]) -> None:
    ref = VersionRef(version["kind"], version["name"], version["version"])
    request = cp.governance.open_request(by.principal, PROJECT, ref, "approved", "reviewed")
    with cp.db.read() as session:
        served = cp.governance.request(session, request["id"])
    assert signer.key is not None
    envelope = statements.sign(
        statements.statement(served, signer.id, "approve", "ok", clock.now()), signer.key
    )
    assert cp.governance.sign_off(signer.principal, request["id"], envelope)["state"] == "approved"


@dataclass
class World:
    """Who takes part in a storm, and the queued jobs runners will fight over."""

    eng: list[Actor]
    approvers: list[Actor]
    runners: list[Actor]
    contract: dict[str, Any]
    jobs: list[int]


def build_world(cp: ControlPlane, engineers: int, approvers: int, runners: int, jobs: int) -> World:
    """Set up through the real services (not what the storm is about): people, an approved
    rubric and dataset, a data contract for every runner, and ``jobs`` queued jobs."""
    eng = [person(cp, f"eng{i}", "engineer") for i in range(engineers)]
    appr = [person(cp, f"appr{i}", "approver", key=True) for i in range(approvers)]
    run = [person(cp, f"runner{i}", "runner", kind="runner") for i in range(runners)]
    owner = person(cp, "owner", "data_owner", key=True)
    rubric, _ = cp.registry.register_rubric(
        eng[0].id, PROJECT, "helpfulness", RUBRIC, filename="helpfulness.md"
    )
    dataset, _ = cp.registry.register_dataset(eng[0].id, PROJECT, "prefs", rows("storm"))
    for version in (rubric, dataset):
        approve(cp, eng[0], appr[0], version)
    subjects = [
        st.Subject(PROJECT, v["kind"], v["name"], v["version"], v["digest"].split(":", 1)[1])
        for v in (dataset, rubric)
    ]
    statement = st.build(
        contract_id="dc-storm",
        project=PROJECT,
        owner=owner.id,
        purpose="reward_model",
        subjects=subjects,
        consumers=[r.id for r in run],
        rubric=subjects[1].full_name,
        expires=clock.now() + timedelta(days=30),
        created_at=clock.now(),
    )
    assert owner.key is not None
    contract = st.sign(statement, owner.key)
    cp.contracts.register(owner.principal, PROJECT, contract)
    request = JobRequest.build("reward_model", [dataset["ref"]], rubric=rubric["ref"])
    queued = [cp.jobs.queue(eng[0].principal, PROJECT, request)["id"] for _ in range(jobs)]
    return World(eng, appr, run, contract, queued)


# -- checks --------------------------------------------------------------------------------------


def entries(cp: ControlPlane) -> list[dict[str, Any]]:
    with cp.db.read() as session:
        return cp.store.entries(session, 0, limit=10**7)


def verify_over_http(url: str, token: str, state: Path) -> VerificationReport:
    """What an auditor runs (``controlplane verify``): everything served, recomputed."""
    with ApiClient(url, token) as api:
        return verify_server(api, StateFile(state))


def assert_sound(cp: ControlPlane, url: str, token: str, state: Path) -> list[dict[str, Any]]:
    """The chain and checkpoints verify client-side, the database (Merkle nodes, projections
    replayed) verifies server-side, and ``seq`` is 0..n-1 with no gap. Returns the entries."""
    report = verify_over_http(url, token, state)
    assert report.ok, report.problems
    database = check_database(cp.store)
    assert database.ok, database.problems
    ledger = entries(cp)
    assert [e["seq"] for e in ledger] == list(range(len(ledger)))
    assert report.size == len(ledger)
    return ledger


def assert_acks_recorded(ledger: list[dict[str, Any]], acks: list[dict[str, Any]]) -> None:
    """Every acknowledged action is the entry at the seq the client was told."""
    expected = {"register": "artifact.version_registered", "request": "promotion.requested"}
    expected["same"] = "artifact.version_registered"  # the identical version, returned
    expected |= {"signoff": "promotion.signed_off", "claim": "job.claimed"}
    for ack in acks:
        entry = ledger[ack["seq"]]
        assert entry["action"] == expected[ack["op"]], (ack, entry)
        subject = entry["subject"]
        if "ref" in ack:
            ref = f"{subject['kind']}/{subject['name']}@{subject.get('version')}"
            assert ref == ack["ref"], (ack, entry)
        if "digest" in ack:
            assert entry["payload"]["digest"] == ack["digest"], (ack, entry)
        if "job_id" in ack:
            assert subject == {"project": PROJECT, "kind": "job", "name": str(ack["job_id"])}
        if "request_id" in ack:
            assert entry["payload"]["request_id"] == ack["request_id"], (ack, entry)


def counted(ledger: list[dict[str, Any]], start: int, action: str) -> Counter[str]:
    """How many ``action`` entries from ``start`` on, per actor."""
    return Counter(e["actor"] for e in ledger[start:] if e["action"] == action)
