"""Outgoing webhooks: signed, ordered, retried while the receiver is down, lossless across a
restart, leased between replicas (SQLite and PostgreSQL, a real HTTP receiver)."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from controlplane.core import ControlPlane
from controlplane.store.models import WebhookDeliveryRow
from controlplane.webhooks.outbox import (
    DELIVERY_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    WebhookOutbox,
    sign,
    verify_signature,
)
from tests.governance.helpers import World
from tests.utils.databases import make_settings
from tests.utils.server import live_server
from tests.webhooks.conftest import SECRET
from tests.webhooks.receiver import Receiver


def _rows(cp: ControlPlane) -> list[WebhookDeliveryRow]:
    with cp.db.read() as session:
        rows = list(
            session.execute(select(WebhookDeliveryRow).order_by(WebhookDeliveryRow.seq)).scalars()
        )
        session.expunge_all()  # usable after the read session rolls back
        return rows


def _drain(cp: ControlPlane, expected: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while sum(r.state == "delivered" for r in _rows(cp)) < expected:
        assert time.monotonic() < deadline, [(r.seq, r.state, r.last_error) for r in _rows(cp)]
        cp.webhooks.run_once()
        time.sleep(0.03)


def test_a_promotion_arrives_signed_with_the_ledger_entry(
    cp: ControlPlane, receiver: Receiver
) -> None:
    cp.webhooks.sweep()  # the receiver's cursor starts at the current head
    world = World(cp)
    model = world.register("policy", "pi")
    world.promote(model, "candidate")
    assert cp.webhooks.run_once() == len(_rows(cp)) > 0

    with cp.db.read() as session:
        wanted = [
            e
            for e in cp.store.entries(session, 0, 10**6)
            if e["action"].startswith(("promotion.", "signoff.", "stage."))
        ]
    assert [r.json["seq"] for r in receiver.received] == [e["seq"] for e in wanted]
    actions = {r.json["action"] for r in receiver.received}
    assert {"promotion.requested", "stage.changed"} <= actions, actions
    ids = set()
    for got, entry in zip(receiver.received, wanted, strict=True):
        assert verify_signature(SECRET, got.body, got.headers[SIGNATURE_HEADER])
        assert got.headers[SIGNATURE_HEADER] == sign(SECRET, got.body)
        assert not verify_signature("another secret", got.body, got.headers[SIGNATURE_HEADER])
        assert got.headers[TIMESTAMP_HEADER]
        ids.add(got.headers[DELIVERY_HEADER])
        body = got.json
        for field in ("seq", "action", "subject", "payload", "entry_hash", "timestamp"):
            assert body[field] == entry[field]
    assert len(ids) == len(receiver.received)  # one delivery id per event
    assert {r.state for r in _rows(cp)} == {"delivered"}
    assert cp.webhooks.run_once() == 0  # nothing is sent twice


def test_receiver_down_then_back_gets_everything_in_order(
    cp: ControlPlane, receiver: Receiver
) -> None:
    cp.webhooks.sweep()
    world = World(cp)
    receiver.down()
    model = world.register("policy", "pi")
    world.promote(model, "candidate")
    world.evaluation(model, "offline")
    world.promote(model, "staging")
    assert cp.webhooks.run_once() == 0
    rows = _rows(cp)
    assert rows and all(r.state == "pending" for r in rows)
    assert rows[0].attempts >= 1 and rows[0].last_error  # the head of the queue was tried
    for _ in range(3):  # a few more failing rounds: retried with backoff, nothing dropped
        time.sleep(0.06)
        cp.webhooks.run_once()
    assert _rows(cp)[0].attempts >= 2
    assert all(r.state == "pending" for r in _rows(cp))

    receiver.up()
    _drain(cp, len(rows))
    seqs = [b["seq"] for b in receiver.bodies()]
    assert seqs == sorted(seqs) == [r.seq for r in rows]  # all of them, in seq order


def test_nothing_is_lost_across_a_restart(db_url: str, tmp_path: Path, receiver: Receiver) -> None:
    """Entries committed by a process that never swept them still go out after a restart."""
    overrides = {
        "webhook_urls": [receiver.url],
        "webhook_secret": SECRET,
        "webhook_retry_base_seconds": 0.05,
        "webhook_poll_seconds": 0.05,
    }
    first = ControlPlane(make_settings(db_url, tmp_path, **overrides))
    first.init()
    first.webhooks.sweep()
    world = World(first)
    model = world.register("policy", "pi")
    receiver.down()
    world.promote(model, "candidate")
    first.webhooks.run_once()  # queued, one attempt failed
    world.evaluation(model, "offline")
    world.promote(model, "staging")  # committed, never swept: the process "dies" now
    with first.db.read() as session:
        wanted = [
            e["seq"]
            for e in first.store.entries(session, 0, 10**6)
            if first.webhooks.wanted(e["action"])
        ]
    first.close()

    receiver.up()
    second = ControlPlane(make_settings(db_url, tmp_path, **overrides))
    try:
        with live_server(second):  # the API's lifespan starts the deliverer
            bodies = receiver.wait_for(lambda got: len(got) >= len(wanted))
        assert [b["seq"] for b in bodies] == wanted
    finally:
        second.close()


def test_a_claimed_delivery_is_leased_to_one_replica(cp: ControlPlane) -> None:
    cp.webhooks.sweep()
    world = World(cp)
    world.promote(world.register("policy", "pi"), "candidate")
    cp.webhooks.sweep()
    other = WebhookOutbox(cp.settings, cp.store)  # a second replica on the same database
    try:
        mine = cp.webhooks.claim(cp.settings.webhook_urls[0])
        assert mine
        assert other.claim(cp.settings.webhook_urls[0]) == []
    finally:
        other.close()


def test_gives_up_only_after_the_max_age_and_records_it(
    db_url: str, tmp_path: Path, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    plane = ControlPlane(
        make_settings(
            db_url,
            tmp_path,
            webhook_urls=[receiver.url],
            webhook_secret=SECRET,
            webhook_retry_base_seconds=0.01,
            webhook_max_age_seconds=0.2,
        )
    )
    try:
        plane.init()
        plane.webhooks.sweep()
        world = World(plane)
        world.promote(world.register("policy", "pi"), "candidate")
        receiver.down()
        plane.webhooks.run_once()
        assert {r.state for r in _rows(plane)} == {"pending"}
        time.sleep(0.25)
        with caplog.at_level("ERROR", logger="controlplane.webhooks"):
            for _ in range(50):
                plane.webhooks.run_once()
                if all(r.state == "failed" for r in _rows(plane)):
                    break
                time.sleep(0.02)
        rows = _rows(plane)
        assert rows and all(r.state == "failed" and r.last_error for r in rows)
        assert "given up" in caplog.text
    finally:
        plane.close()


def test_webhook_urls_without_a_secret_refuse_to_start(tmp_path: Path, sqlite_url: str) -> None:
    with pytest.raises(ValueError, match="webhook_secret"):
        ControlPlane(make_settings(sqlite_url, tmp_path, webhook_urls=["http://127.0.0.1:9/x"]))


def test_the_receiver_sees_a_bad_signature(receiver: Receiver) -> None:
    """The signature covers the raw body: one changed byte no longer verifies."""
    body = b'{"seq":1}'
    httpx.post(receiver.url, content=body, headers={SIGNATURE_HEADER: sign(SECRET, body)})
    got = receiver.received[-1]
    assert verify_signature(SECRET, got.body, got.headers[SIGNATURE_HEADER])
    assert not verify_signature(SECRET, b'{"seq":2}', got.headers[SIGNATURE_HEADER])
