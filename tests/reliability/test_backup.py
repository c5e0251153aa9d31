"""PostgreSQL backup and restore, the way the README tells an operator to do it: ``pg_dump -Fc``
while the server runs and clients append, ``pg_restore`` into a fresh database, a server on
it, then ``verify``. The restored ledger is whole (chain, checkpoints, Merkle nodes,
projections) and still append-only (its triggers came back with it); a client that pinned a
checkpoint after the backup refuses it, whether it is shorter or has grown past the pin."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import psycopg
import pytest
from psycopg import errors

from controlplane.core import ControlPlane
from controlplane.store.integrity import check_database
from tests.reliability import helpers as h
from tests.utils.databases import postgres_database

pytestmark = pytest.mark.slow  # real server and client processes

APPENDERS = 2


def _libpq(url: str) -> list[str]:
    """``-h -p -U -d`` for pg_dump / pg_restore from our SQLAlchemy URL."""
    parts = urlsplit(url)
    return [
        *("-h", parts.hostname or "127.0.0.1", "-p", str(parts.port or 5432)),
        *("-U", parts.username or "postgres", "-d", parts.path.lstrip("/")),
    ]


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """The ``controlplane`` command, as an operator runs it."""
    command = [str(Path(sys.executable).with_name("controlplane")), *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)


def _register(http: httpx.Client, name: str, n: int) -> int:
    response = http.post(
        f"/v1/projects/{h.PROJECT}/artifacts/policy/{name}/versions",
        json={"digest": "sha256:" + f"{n:064x}", "uri": f"s3://backup/{name}/{n}"},
    )
    assert response.status_code == 201, response.text
    return int(response.json()["ledger_seq"])


@pytest.mark.skipif(shutil.which("pg_dump") is None, reason="pg_dump is not installed")
def test_pg_dump_and_restore_then_verify_and_pinned_clients_refuse_the_rollback(
    tmp_path: Path,
) -> None:
    dump = tmp_path / "controlplane.dump"
    pinned = tmp_path / "pinned-state.json"
    with postgres_database() as url, h.processes() as running:
        settings = h.settings_for(url, tmp_path)
        cp = ControlPlane(settings)
        try:
            cp.init()
            eng = [h.person(cp, f"eng{i}", "engineer") for i in range(APPENDERS + 1)]
            token = settings.admin_token_file.read_text().strip()
            server = h.start_server(running, settings, tmp_path / "server")
            h.wait_ready(server)
            headers = {"Authorization": f"Bearer {eng[0].token}"}
            http = httpx.Client(base_url=server.url, headers=headers, timeout=30)
            for n in range(5):
                _register(http, "before", n)
            # the backup is taken while the server runs and clients append
            stop = tmp_path / "stop"
            clients = h.appenders(running, tmp_path / "clients", server.url, eng[1:], stop)
            start = h.size(cp)
            h.wait_for(lambda: h.size(cp) >= start + 10, 60, "the appenders to start")
            subprocess.run(
                ["pg_dump", "--format=custom", f"--file={dump}", *_libpq(url)],
                check=True,
                capture_output=True,
                timeout=60,
            )
            stop.touch()
            h.wait_clients(clients, timeout=60)
            for n in range(5, 10):
                _register(http, "after", n)
            http.close()
            # a client verifies (and pins) the ledger after the backup
            report = h.verify_over_http(server.url, token, pinned)
            assert report.ok, report.problems
            pinned_size = report.size
            cp.close()
            server.process.terminate()
            server.process.wait(timeout=15)

            with postgres_database() as restored_url:
                subprocess.run(
                    ["pg_restore", "--exit-on-error", "--no-owner", *_libpq(restored_url), dump],
                    check=True,
                    capture_output=True,
                    timeout=60,
                )
                _check_restored(running, tmp_path, restored_url, token, pinned, pinned_size)
        finally:
            cp.close()


def _check_restored(
    running: h.Processes, tmp_path: Path, url: str, token: str, pinned: Path, pinned_size: int
) -> None:
    settings = h.settings_for(url, tmp_path)  # same data dir, same checkpoint signing key
    cp = ControlPlane(settings)
    try:
        # the append-only triggers survived the restore
        with psycopg.connect(url.replace("postgresql+psycopg", "postgresql")) as conn:
            for statement in (
                "UPDATE ledger_entries SET actor = 'mallory' WHERE seq = 0",
                "DELETE FROM checkpoints",
                "TRUNCATE merkle_nodes",
            ):
                with pytest.raises(errors.InsufficientPrivilege):
                    conn.execute(statement)
                conn.rollback()

        server = h.start_server(running, settings, tmp_path / "restored")
        h.wait_ready(server)
        # the operator's check after a restore, as the README gives it: the database itself,
        # then a client verifying what the restored server serves
        database = check_database(cp.store)
        assert database.ok, database.problems
        env = h.server_env(settings, tmp_path / "restored")
        checked = _cli(env, "verify", "--database", "--json")
        assert checked.returncode == 0, checked.stdout + checked.stderr
        client = _cli(
            env,
            *("verify", "--json", "--url", server.url, "--token", token),
            *("--state", str(tmp_path / "fresh-state.json")),
        )
        assert client.returncode == 0, client.stdout + client.stderr
        backup_size = int(json.loads(client.stdout)["size"])
        assert 5 < backup_size < pinned_size

        # the client pinned after the backup refuses the shorter ledger, and keeps its pin
        before = pinned.read_text()
        refused = _cli(
            env, *("verify", "--url", server.url, "--token", token, "--state", str(pinned))
        )
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert "rolled back" in refused.stdout + refused.stderr
        rolled_back = h.verify_over_http(server.url, token, pinned)
        assert not rolled_back.ok
        assert any("truncated or rolled back" in p for p in rolled_back.problems), (
            rolled_back.problems
        )
        assert pinned.read_text() == before

        # the restored server appends on; once it has grown past the pin it is a fork
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=server.url, headers=headers, timeout=30) as http:
            seq = backup_size
            while seq < pinned_size + 2:
                seq = _register(http, "restored", seq) + 1
        grown = h.verify_over_http(server.url, token, tmp_path / "fresh-state.json")
        assert grown.ok, grown.problems
        forked = h.verify_over_http(server.url, token, pinned)
        assert not forked.ok
        assert any("history was rewritten" in p for p in forked.problems), forked.problems
    finally:
        cp.close()
