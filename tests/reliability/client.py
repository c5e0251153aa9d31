"""One client process of the reliability tests: ``python -m tests.reliability.client CONFIG OUT``.

It plays one role against the API replicas for a fixed time and writes down every action the
server acknowledged (a 2xx with the ledger seq it reported), so that the test can hold the
ledger to exactly what clients were told. It imports nothing from the server side beyond the
sign-off statement builder an approver's machine uses, and talks HTTP only.

Roles:
- ``registrar``: registers policy versions and opens a ``candidate`` request for each on two
  replicas at once (a deliberate duplicate: exactly one may be opened); and registers one
  version of a ``shared`` artifact (all registrars share it) on two replicas at once;
- ``approver``: signs off every open request it sees, racing the other approvers;
- ``runner``: claims the next job with its data contract until the queue is empty;
- ``appender``: registers versions as fast as it can (the crash test's storm); it survives
  the server going away and keeps trying until the deadline.

The config is a JSON object: ``role``, ``urls``, ``token``, ``project``, ``seconds``, ``name``
and, by role, ``key_pem`` (approver), ``contract`` (runner) or ``stop_file`` (appender: stop
early once that file exists, so a test can end the storm when it has seen enough).
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
import threading
import time
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from controlplane.governance import statements


class Recorder:
    """What this client saw: acknowledged actions and every other answer, by status."""

    def __init__(self) -> None:
        self.acks: list[dict[str, Any]] = []
        self.statuses: dict[str, int] = {}
        self.errors: list[str] = []
        self.lock = threading.Lock()

    def ack(self, op: str, seq: int, **extra: Any) -> None:
        with self.lock:
            self.acks.append({"op": op, "seq": seq, **extra})

    def saw(self, op: str, response: httpx.Response) -> None:
        key = f"{op}:{response.status_code}"
        with self.lock:
            self.statuses[key] = self.statuses.get(key, 0) + 1
            if response.status_code >= 500:
                self.errors.append(f"{op} {response.status_code}: {response.text[:500]}")

    def failed(self, op: str, exc: Exception) -> None:
        key = f"{op}:{type(exc).__name__}"
        with self.lock:
            self.statuses[key] = self.statuses.get(key, 0) + 1

    def dump(self) -> dict[str, Any]:
        return {"acks": self.acks, "statuses": self.statuses, "errors": self.errors}


def _clients(config: dict[str, Any]) -> list[httpx.Client]:
    headers = {"Authorization": f"Bearer {config['token']}"}
    return [httpx.Client(base_url=url, headers=headers, timeout=30) for url in config["urls"]]


def _body(name: str, n: int) -> dict[str, str]:
    seed = f"{name}/{n}/{time.time_ns()}"
    return {"digest": "sha256:" + hashlib.sha256(seed.encode()).hexdigest(), "uri": f"s3://{seed}"}


def _register(
    http: httpx.Client,
    config: dict[str, Any],
    n: int,
    rec: Recorder,
    name: str | None = None,
    body: dict[str, str] | None = None,
) -> Any:
    name = name or config["name"]
    body = body or _body(name, n)
    response = http.post(
        f"/v1/projects/{config['project']}/artifacts/policy/{name}/versions", json=body
    )
    rec.saw("register", response)
    if response.status_code == 201:
        version = response.json()
        rec.ack(
            "register",
            version["ledger_seq"],
            ref=version["ref"],
            digest=version["digest"],
            version=version["version"],
        )
        return version
    if response.status_code == 200:  # the identical latest version, registered before
        version = response.json()
        rec.ack("same", version["ledger_seq"], ref=version["ref"], digest=version["digest"])
    return None


def _at_once(*calls: Any) -> None:
    threads = [threading.Thread(target=call) for call in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def registrar(config: dict[str, Any], rec: Recorder, deadline: float) -> None:
    clients = _clients(config)
    pair = [clients[0], clients[-1]]  # two replicas when there are two
    n = 0
    while time.monotonic() < deadline:
        n += 1
        # the very same registration of a shared artifact on two replicas at once: one
        # creates a version, the other gets it back (unless another registrar came between)
        same = _body("shared", n)
        _at_once(*(partial(_register, http, config, n, rec, "shared", same) for http in pair))
        version = _register(clients[n % len(clients)], config, n, rec)
        if version is None:
            continue
        body = {
            "kind": "policy",
            "name": version["name"],
            "version": version["version"],
            "target_stage": "candidate",
            "justification": "storm",
        }

        def open_on(http: httpx.Client, body: dict[str, Any] = body) -> None:
            response = http.post(f"/v1/projects/{config['project']}/requests", json=body)
            rec.saw("request", response)
            if response.status_code == 201:
                opened = response.json()
                rec.ack("request", opened["id"], ref=opened["ref"])

        _at_once(*(partial(open_on, http) for http in pair))


def approver(config: dict[str, Any], rec: Recorder, deadline: float) -> None:
    clients = _clients(config)
    key = load_pem_private_key(config["key_pem"].encode(), None)
    me = config["principal"]
    rng = random.Random(me)
    while time.monotonic() < deadline:
        http = rng.choice(clients)
        listed = http.get(f"/v1/projects/{config['project']}/requests", params={"state": "open"})
        rec.saw("list", listed)
        if listed.status_code != 200:
            continue
        requests = listed.json()["data"]
        if not requests:
            time.sleep(0.05)
            continue
        rng.shuffle(requests)
        for request in requests[:5]:
            statement = statements.statement(request, me, "approve", "ok", datetime.now(UTC))
            envelope = statements.sign(statement, key)  # type: ignore[arg-type]
            response = rng.choice(clients).post(
                f"/v1/requests/{request['id']}/signoffs", json={"envelope": envelope}
            )
            rec.saw("signoff", response)
            if response.status_code == 200:
                mine = [s for s in response.json()["signoffs"] if s["signer"] == me]
                for signoff in mine:
                    rec.ack("signoff", signoff["seq"], request_id=request["id"])


def runner(config: dict[str, Any], rec: Recorder, deadline: float) -> None:
    clients = _clients(config)
    n = 0
    while time.monotonic() < deadline:
        n += 1
        response = clients[n % len(clients)].post(
            f"/v1/projects/{config['project']}/jobs/claim", json={"contract": config["contract"]}
        )
        rec.saw("claim", response)
        if response.status_code != 200:
            continue
        job = response.json()["job"]
        if job is None:
            time.sleep(0.1)
            continue
        rec.ack("claim", job["claim_seq"], job_id=job["id"])


def appender(config: dict[str, Any], rec: Recorder, deadline: float) -> None:
    clients = _clients(config)
    stop = Path(config["stop_file"]) if config.get("stop_file") else None
    n = 0
    while time.monotonic() < deadline and not (stop is not None and stop.exists()):
        n += 1
        try:
            _register(clients[n % len(clients)], config, n, rec)
        except httpx.HTTPError as exc:  # the server is down: keep trying, as a client would
            rec.failed("register", exc)
            time.sleep(0.05)


ROLES = {"registrar": registrar, "approver": approver, "runner": runner, "appender": appender}


def main(config_path: str, out_path: str) -> None:
    config = json.loads(Path(config_path).read_text())
    rec = Recorder()
    deadline = time.monotonic() + float(config["seconds"])
    try:
        ROLES[config["role"]](config, rec, deadline)
    finally:
        tmp = Path(out_path + ".tmp")
        tmp.write_text(json.dumps(rec.dump()))
        tmp.replace(out_path)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
