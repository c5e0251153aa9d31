"""Many concurrent requests on one API process all succeed, on SQLite and PostgreSQL.

Each request holds a read session from authentication to its response and a write needs a
second connection; unbounded, 40 concurrent writes took every pooled connection and then each
waited for a second one until the pool timed out (most answered 503 after 30 s). Requests now
wait their turn before holding anything (``api_concurrency``) and the pools are sized for it.
"""

from __future__ import annotations

import base64
import sqlite3
import threading
from collections import Counter

import httpx
import psycopg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from sqlalchemy import text
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from controlplane.api.problems import transient
from controlplane.store.database import Database
from tests.utils.server import LiveServer

CLIENTS = 40


def test_forty_concurrent_writes_all_succeed(server: LiveServer) -> None:
    barrier = threading.Barrier(CLIENTS)
    outcomes: list[int | str] = []
    lock = threading.Lock()

    def register_key(i: int) -> None:
        raw = Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        headers = {"Authorization": f"Bearer {server.admin_token}"}
        with httpx.Client(base_url=server.url, headers=headers, timeout=60) as client:
            barrier.wait()
            try:
                response = client.post(
                    "/v1/keys", json={"public_key": base64.b64encode(raw).decode(), "name": f"k{i}"}
                )
                outcome: int | str = response.status_code
            except httpx.HTTPError as exc:
                outcome = type(exc).__name__
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=register_key, args=(i,)) for i in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert Counter(outcomes) == {201: CLIENTS}
    with server.cp.db.read() as session:
        assert (
            len(server.cp.store.entries(session, 0, 10_000, action="signing_key.registered"))
            == CLIENTS
        )


def test_a_broken_schema_is_a_500_not_a_retry(server: LiveServer) -> None:
    """SQLite reports a missing table with the same exception class as a locked database:
    only the passing states are 503 with Retry-After; a fault is a 500 with a logged trace."""
    with server.cp.db.writer.begin() as conn:
        conn.exec_driver_sql("DROP TABLE job_leases")
        conn.exec_driver_sql("DROP TABLE jobs")
    headers = {"Authorization": f"Bearer {server.admin_token}"}
    response = httpx.get(f"{server.url}/v1/projects/default/jobs", headers=headers, timeout=30)
    assert response.status_code == 500, response.text
    assert "Retry-After" not in response.headers
    assert response.json()["type"].endswith("/internal-error")


def test_memory_databases_still_open() -> None:
    for url in ("sqlite://", "sqlite:///:memory:"):
        database = Database(url)
        with database.read() as session:
            assert session.execute(text("SELECT 1")).scalar_one() == 1
        database.dispose()


def test_only_passing_database_states_count_as_transient() -> None:
    """What the 503-with-Retry-After handler accepts: the states a retry can outlive."""

    def wrapped(error: Exception) -> OperationalError:
        return OperationalError("SELECT 1", {}, error)

    assert transient(PoolTimeout("QueuePool limit reached"))
    assert transient(wrapped(sqlite3.OperationalError("database is locked")))
    assert transient(wrapped(sqlite3.OperationalError("database table is busy")))
    assert not transient(wrapped(sqlite3.OperationalError("no such table: jobs")))
    assert not transient(wrapped(sqlite3.OperationalError("attempt to write a readonly database")))
    assert transient(wrapped(psycopg.OperationalError("connection refused")))
    assert transient(wrapped(psycopg.errors.DeadlockDetected("deadlock detected")))
    assert not transient(ValueError("not a database error"))
