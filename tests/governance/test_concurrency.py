"""Concurrent final approvals never double-promote (SQLite and PostgreSQL).

Every sign-off runs under the ledger lock in one transaction, so however the threads
interleave, the request is approved once, the version changes stage once, the superseded
production version is retired once, and the chain and projections stay sound.
"""

from __future__ import annotations

import threading
from typing import Any

from controlplane.errors import Conflict, ControlPlaneError
from controlplane.store.integrity import check_database
from tests.governance.helpers import Person, World


def race(world: World, people: list[Person], request_id: int) -> list[Any]:
    """All of ``people`` submit an approval of ``request_id`` at the same moment."""
    request = world.request(request_id)
    envelopes = [world.envelope(who, request) for who in people]
    barrier = threading.Barrier(len(people))
    results: list[Any] = [None] * len(people)

    def submit(index: int) -> None:
        barrier.wait()
        try:
            results[index] = world.cp.governance.sign_off(
                people[index].principal, request_id, envelopes[index]
            )
        except ControlPlaneError as exc:
            results[index] = exc
        except Exception as exc:  # anything else is a bug the assertions will show
            results[index] = exc

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(len(people))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(t.is_alive() for t in threads)
    return results


def test_concurrent_final_approvals_never_double_promote(world: World) -> None:
    v1 = world.register("policy", "raced")
    world.to_production(v1)
    v2 = world.register("policy", "raced")
    world.promote(v2, "candidate")
    world.evaluation(v2, "offline")
    world.promote(v2, "staging")
    world.promote(v2, "canary", traffic_share=0.25)
    world.evaluation(v2, "online")
    request = world.open(v2, "production")
    rid = request["id"]
    people = [world.carol] + [world.person(f"approver{i}", "approver") for i in range(5)]
    before = world.size()

    results = race(world, people, rid)

    unexpected = [r for r in results if isinstance(r, Exception) and not isinstance(r, Conflict)]
    assert not unexpected, unexpected
    refused = [r for r in results if isinstance(r, Conflict)]
    assert all(f"request {rid} is approved" in r.detail for r in refused), refused
    accepted = [r for r in results if isinstance(r, dict)]
    assert len(accepted) >= 2

    new = world.entries(start=before)
    signed = [e for e in new if e["action"] == "promotion.signed_off"]
    assert len(signed) == len(accepted)
    assert len(signed) + len(refused) == len(people)
    assert [e["action"] for e in new].count("promotion.approved") == 1
    to_production = [
        e for e in new if e["action"] == "stage.changed" and e["payload"]["to"] == "production"
    ]
    assert [e["subject"]["version"] for e in to_production] == [2]
    retired = [e for e in new if e["action"] == "stage.changed" and e["payload"]["to"] == "retired"]
    assert [e["subject"]["version"] for e in retired] == [1]
    # nothing was signed after the promotion
    approved_at = next(e["seq"] for e in new if e["action"] == "promotion.approved")
    assert all(e["seq"] < approved_at for e in signed)

    closed = world.request(rid)
    assert closed["state"] == "approved"
    assert len(closed["signoffs"]) == len(accepted)
    assert (world.stage(v1), world.stage(v2)) == ("retired", "production")
    report = check_database(world.cp.store)
    assert report.ok, report.problems


def test_concurrent_requests_for_the_same_move_open_once(world: World) -> None:
    policy = world.register("policy", "dup")
    barrier = threading.Barrier(4)
    results: list[Any] = []
    lock = threading.Lock()

    def open_one() -> None:
        barrier.wait()
        try:
            outcome: Any = world.open(policy, "candidate")
        except Exception as exc:
            outcome = exc
        with lock:
            results.append(outcome)

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    opened = [r for r in results if isinstance(r, dict)]
    assert len(opened) == 1, results
    assert all(isinstance(r, Conflict) for r in results if not isinstance(r, dict)), results
    assert len(world.entries("promotion.requested")) == 1
