"""Crash safety: ``kill -9`` the server in the middle of an append storm, look at the database
while it is down, restart it on the same database and port while the clients keep appending.

Nothing acknowledged may be lost or changed, nothing partial may be visible (the chain, the
Merkle nodes, the projections and the latest signed checkpoint all agree on one size), and the
restarted server appends on from where the chain ends."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from controlplane.core import ControlPlane
from controlplane.store.integrity import check_database
from tests.reliability import helpers as h
from tests.utils.databases import KINDS, database_url

pytestmark = pytest.mark.slow  # real server and client processes

APPENDERS = 4
KILL_AT = 40  # entries appended by the storm before the kill
AFTER = 20  # and after the restart


def _snapshot(cp: ControlPlane) -> tuple[list[dict[str, Any]], int | None]:
    """The entries and the size of the latest signed checkpoint, as the database holds them."""
    with cp.db.read() as session:
        latest = cp.store.latest_checkpoint(session)
        size = None if latest is None else latest.tree_size
    return h.entries(cp), size


@pytest.mark.parametrize("kind", KINDS)
def test_kill_9_mid_storm_loses_nothing_acknowledged(kind: str, tmp_path: Path) -> None:
    with database_url(kind, tmp_path) as url, h.processes() as running:
        settings = h.settings_for(url, tmp_path)
        cp = ControlPlane(settings)
        try:
            cp.init()
            engineers = [h.person(cp, f"eng{i}", "engineer") for i in range(APPENDERS)]
            token = settings.admin_token_file.read_text().strip()
            server = h.start_server(running, settings, tmp_path / "server")
            h.wait_ready(server)
            port = int(server.url.rsplit(":", 1)[1])
            stop = tmp_path / "stop"
            clients = h.appenders(running, tmp_path / "clients", server.url, engineers, stop)
            start = h.size(cp)
            h.wait_for(lambda: h.size(cp) >= start + KILL_AT, 60, "the storm to start")
            h.kill9(server)

            # while it is down: whatever committed is whole, and signed for its size
            crashed, signed_size = _snapshot(cp)
            assert signed_size == len(crashed)
            report = check_database(cp.store)
            assert report.ok, report.problems

            restarted = h.start_server(running, settings, tmp_path / "server", port=port)
            h.wait_ready(restarted)
            resumed = h.size(cp)
            h.wait_for(lambda: h.size(cp) >= resumed + AFTER, 60, "appends after the restart")
            stop.touch()
            results = h.wait_clients(clients, timeout=60)

            # a last append after the storm, and an audit of it all
            with httpx.Client(base_url=restarted.url, timeout=30) as http:
                http.headers["Authorization"] = f"Bearer {engineers[0].token}"
                last = http.post(
                    f"/v1/projects/{h.PROJECT}/artifacts/policy/after-crash/versions",
                    json={"digest": "sha256:" + "ab" * 32, "uri": "s3://after/crash"},
                )
            assert last.status_code == 201, last.text
            ledger = h.assert_sound(cp, restarted.url, token, tmp_path / "verify-state.json")
            final, signed_size = _snapshot(cp)
            assert signed_size == len(final) == len(ledger)
            assert last.json()["ledger_seq"] == len(ledger) - 1
        finally:
            cp.close()

    # what the database held at the crash is still there, byte for byte
    assert ledger[: len(crashed)] == crashed
    acks = [ack for result in results for ack in result["acks"]]
    h.assert_acks_recorded(ledger, acks)
    for ack in acks:
        assert ledger[ack["seq"]]["payload"]["digest"] == ack["digest"], ack
    before = [a for a in acks if a["seq"] < len(crashed)]
    after = [a for a in acks if a["seq"] >= len(crashed)]
    assert before and after, "the clients did not append on both sides of the crash"
    # every registration entry is one a client was told about, except those in flight at the
    # kill: committed, but the answer never reached the client (at most one per client)
    registered = [e["seq"] for e in ledger if e["action"] == "artifact.version_registered"]
    unacknowledged = set(registered) - {a["seq"] for a in acks} - {len(ledger) - 1}
    assert len(unacknowledged) <= APPENDERS, sorted(unacknowledged)
    assert all(seq < len(crashed) for seq in unacknowledged), sorted(unacknowledged)
    lost = sum(n for r in results for k, n in r["statuses"].items() if not k.endswith(":201"))
    assert lost > 0, "no client noticed the crash: the kill came too late or too early"


def test_kill_9_of_one_replica_leaves_the_other_appending(tmp_path: Path) -> None:
    """Two replicas on PostgreSQL; one dies mid-append holding the ledger lock. The lock dies
    with its connection, so the survivor appends on at once, and the chain stays whole."""
    with database_url("postgresql", tmp_path) as url, h.processes() as running:
        settings = h.settings_for(url, tmp_path)
        cp = ControlPlane(settings)
        try:
            cp.init()
            engineers = [h.person(cp, f"eng{i}", "engineer") for i in range(APPENDERS)]
            token = settings.admin_token_file.read_text().strip()
            doomed, survivor = (
                h.start_server(running, settings, tmp_path / f"replica-{n}") for n in range(2)
            )
            h.wait_ready(doomed, survivor)
            stop = tmp_path / "stop"
            urls = [doomed.url, survivor.url]
            clients = h.appenders(running, tmp_path / "clients", urls, engineers, stop)
            start = h.size(cp)
            h.wait_for(lambda: h.size(cp) >= start + KILL_AT, 60, "the storm to start")
            h.kill9(doomed)
            killed_at = h.size(cp)
            h.wait_for(lambda: h.size(cp) >= killed_at + AFTER, 30, "the survivor to append")
            stop.touch()
            results = h.wait_clients(clients, timeout=60)
            ledger = h.assert_sound(cp, survivor.url, token, tmp_path / "verify-state.json")
            with cp.db.read() as session:
                latest = cp.store.latest_checkpoint(session)
                assert latest is not None and latest.tree_size == len(ledger)
        finally:
            cp.close()
    acks = [ack for result in results for ack in result["acks"]]
    h.assert_acks_recorded(ledger, acks)
    assert any(ack["seq"] >= killed_at for ack in acks)
