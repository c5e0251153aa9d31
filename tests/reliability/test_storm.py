"""Concurrency storm: eight client processes against real API server processes on one database
(two replicas on PostgreSQL; one on SQLite, which is single-host), registering, opening and
racing to approve requests, and fighting over queued jobs. Afterwards the ledger must be
exactly what the clients were told: it verifies, ``seq`` has no gap, every acknowledged action
is the entry at its seq and nothing else was written, no version reached a stage twice and no
job was claimed twice."""

from __future__ import annotations

from collections import Counter
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest

from controlplane.core import ControlPlane
from controlplane.governance.projections import CLOSING
from tests.reliability import helpers as h
from tests.utils.databases import database_url

pytestmark = pytest.mark.slow  # real server and client processes

STORM_SECONDS = 8.0


@pytest.mark.parametrize(("kind", "replicas"), [("postgresql", 2), ("sqlite", 1)])
def test_storm_leaves_exactly_what_clients_were_told(
    kind: str, replicas: int, tmp_path: Path
) -> None:
    with database_url(kind, tmp_path) as url, h.processes() as running:
        settings = h.settings_for(url, tmp_path)
        cp = ControlPlane(settings)
        try:
            cp.init()
            world = h.build_world(cp, engineers=3, approvers=2, runners=3, jobs=30)
            token = settings.admin_token_file.read_text().strip()
            start = len(h.entries(cp))
            servers = [
                h.start_server(running, settings, tmp_path / f"replica-{n}")
                for n in range(replicas)
            ]
            h.wait_ready(*servers)
            urls = [s.url for s in servers]
            common = {"urls": urls, "project": h.PROJECT, "seconds": STORM_SECONDS}
            configs: list[dict[str, Any]] = []
            for who in world.eng:
                configs.append({**common, "role": "registrar", "token": who.token, "name": who.id})
            for who in world.approvers:
                configs.append(
                    {
                        **common,
                        "role": "approver",
                        "token": who.token,
                        "principal": who.id,
                        "key_pem": who.key_pem(),
                    }
                )
            for who in world.runners:
                configs.append(
                    {**common, "role": "runner", "token": who.token, "contract": world.contract}
                )
            assert len(configs) >= 8
            clients = [
                h.start_client(running, tmp_path / "clients", f"{c['role']}-{n}", c)
                for n, c in enumerate(configs)
            ]
            results = h.wait_clients(clients, timeout=STORM_SECONDS + 60)
            # the approvers stop at the deadline too: let nothing be in flight when we look
            ledger = h.assert_sound(cp, urls[-1], token, tmp_path / "verify-state.json")
            acks = [ack for result in results for ack in result["acks"]]
            _check(world, ledger, start, acks, results)
        finally:
            cp.close()


def _check(
    world: h.World,
    ledger: list[dict[str, Any]],
    start: int,
    acks: list[dict[str, Any]],
    results: list[dict[str, Any]],
) -> None:
    h.assert_acks_recorded(ledger, acks)
    by_op = Counter(ack["op"] for ack in acks)
    assert by_op["register"] >= 6 and by_op["request"] >= 3 and by_op["signoff"] >= 3, by_op
    told = [ack for ack in acks if ack["op"] != "same"]
    assert len({ack["seq"] for ack in told}) == len(told), "two acks share a seq"

    new = ledger[start:]
    actions = Counter(e["action"] for e in new)
    # nothing was written that no client was told about (refusals aside, which are 4xx)
    assert actions["artifact.version_registered"] == by_op["register"], actions
    assert actions["promotion.requested"] == by_op["request"], actions
    assert actions["promotion.signed_off"] == by_op["signoff"], actions
    assert actions["job.claimed"] == by_op["claim"], actions

    # the same registration on two replicas at once: versions of the shared artifact are
    # 1..n, never the same digest twice in a row, and a 200 returns a version someone created
    shared = [
        e
        for e in new
        if e["action"] == "artifact.version_registered" and e["subject"]["name"] == "shared"
    ]
    assert [e["subject"]["version"] for e in shared] == list(range(1, len(shared) + 1))
    digests = [e["payload"]["digest"] for e in shared]
    assert all(a != b for a, b in pairwise(digests)), digests
    created = {ack["seq"] for ack in acks if ack["op"] == "register"}
    same = [ack for ack in acks if ack["op"] == "same"]
    assert same and all(ack["seq"] in created for ack in same), same[:3]

    # the duplicate opening on two replicas at once: never two open requests for one move
    # (a version may be asked for again later, once its first request closed and the version
    # fell back to `registered`: a client that timed out can leave its open waiting that long)
    open_for: dict[tuple[str, int, str], int] = {}
    move_of: dict[int, tuple[str, int, str]] = {}
    for e in new:
        if e["action"] == "promotion.requested":
            move = (e["subject"]["name"], e["subject"]["version"], e["payload"]["target_stage"])
            assert move not in open_for, f"{move} requested while request {open_for[move]} is open"
            open_for[move] = e["seq"]
            move_of[e["seq"]] = move
        elif e["action"] in CLOSING and e["payload"]["request_id"] in move_of:
            open_for.pop(move_of[e["payload"]["request_id"]], None)

    # racing approvers: a quorum of one is met once; each version reaches candidate once
    signed = Counter(
        e["payload"]["request_id"] for e in new if e["action"] == "promotion.signed_off"
    )
    assert max(signed.values()) == 1, signed.most_common(3)
    approved = Counter(
        e["payload"]["request_id"] for e in new if e["action"] == "promotion.approved"
    )
    assert approved == signed
    promoted = Counter(
        (e["subject"]["name"], e["subject"]["version"], e["payload"]["to"])
        for e in new
        if e["action"] == "stage.changed" and e["payload"]["reason"] == "promoted"
    )
    assert promoted and max(promoted.values()) == 1, promoted.most_common(3)
    stage: dict[tuple[str, int], str] = {}
    for e in new:
        if e["action"] == "stage.changed":
            stage[(e["subject"]["name"], e["subject"]["version"])] = e["payload"]["to"]
    holders = Counter(name for (name, _), held in stage.items() if held == "candidate")
    assert max(holders.values()) == 1, holders  # candidate is exclusive per artifact
    conflicts = sum(r["statuses"].get("signoff:409", 0) for r in results)
    assert conflicts > 0, "the approvers never raced: the storm did not test the quorum"

    # runners: every job claimed exactly once, by one runner
    claimed = [ack["job_id"] for ack in acks if ack["op"] == "claim"]
    assert len(claimed) == len(set(claimed)), Counter(claimed).most_common(3)
    assert sorted(claimed) == sorted(world.jobs)
    in_ledger = Counter(e["subject"]["name"] for e in new if e["action"] == "job.claimed")
    assert max(in_ledger.values()) == 1
