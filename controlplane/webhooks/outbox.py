"""Outgoing webhooks: a durable outbox filled from the ledger, delivered with retries.

Why a sweep and not only a post-commit listener: a listener runs after the ledger commit, so a
process that dies between the commit and the outbox write would lose the event. Instead the
outbox is filled by :meth:`WebhookOutbox.sweep`, which reads every entry after the receiver's
cursor (``outbox_cursors``), inserts one ``webhook_deliveries`` row per matching entry and
advances the cursor in the same transaction. Nothing committed to the ledger is skipped, even
across crashes; the post-commit listener only wakes the worker so deliveries go out promptly.

Delivery is at-least-once. A deliverer claims due rows with a lease (PostgreSQL
``FOR UPDATE SKIP LOCKED``, so several API replicas do not take the same row; SQLite serializes
writers on one host); a replica that dies mid-POST leaves the lease to expire and the row is
sent again. Receivers must deduplicate by ``X-Controlplane-Delivery`` (or ``seq``). One worker
sends a receiver's deliveries in ``seq`` order and stops at the first failure, so a receiver
that was down gets the backlog in order when it returns; with several replicas the order can
interleave, which is why every body carries ``seq``.

A failed POST (no answer, or not 2xx) is retried with exponential backoff and jitter, for as
long as the delivery is younger than ``webhook_max_age_seconds``; past that it is marked
``failed`` (kept in the table, logged at error level), never silently dropped.
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import json
import logging
import random
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import insert, select, text, update
from sqlalchemy.orm import Session

from controlplane import clock
from controlplane.config import Settings
from controlplane.ledger.entry import Entry
from controlplane.store.ledger_store import LedgerStore
from controlplane.store.models import LedgerEntryRow, OutboxCursorRow, WebhookDeliveryRow

log = logging.getLogger("controlplane.webhooks")

SWEEP_LOCK_KEY = 0x7765626F6F6B0001  # "webook" + 1: one outbox sweep at a time
SIGNATURE_HEADER = "X-Controlplane-Signature"
DELIVERY_HEADER = "X-Controlplane-Delivery"
TIMESTAMP_HEADER = "X-Controlplane-Timestamp"
_SWEEP_BATCH = 1000
OUTCOMES = ("delivered", "retrying", "failed")
"""How one POST attempt ended: delivered (2xx), retrying (failed, another attempt is due
later), failed (failed past ``webhook_max_age_seconds``: the delivery was given up)."""


def cursor_name(receiver: str) -> str:
    """The ``outbox_cursors`` row of one receiver (read by the metrics' lag gauge too)."""
    return f"webhook:{receiver}"[:300]


def sign(secret: str, body: bytes) -> str:
    """The signature header value: ``sha256=<hex HMAC-SHA-256 of the raw body>``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify_signature(secret: str, body: bytes, header: str) -> bool:
    """What a receiver does: recompute over the raw bytes, compare in constant time."""
    return hmac.compare_digest(sign(secret, body), header or "")


@dataclass(frozen=True)
class Delivery:
    id: int
    receiver: str
    seq: int
    attempts: int
    created_at: datetime


class WebhookOutbox:
    """Fills and drains the webhook outbox for the receivers named in settings."""

    def __init__(
        self,
        settings: Settings,
        store: LedgerStore,
        before_round: Callable[[], object] | None = None,
    ) -> None:
        if settings.webhook_urls and not settings.webhook_secret:
            raise ValueError("webhook_urls are set but webhook_secret is not: refusing to send")
        self.settings = settings
        self.store = store
        self.receivers: tuple[str, ...] = tuple(settings.webhook_urls)
        self.events: tuple[str, ...] = tuple(settings.webhook_events)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._client = httpx.Client(timeout=settings.webhook_timeout_seconds)
        self._before_round = before_round
        """Run first in every worker round: the alert monitor's catch-up, so an evaluation
        committed just before a crash is judged (and its alert delivered) after restart."""
        self._counts_lock = threading.Lock()
        self._outcomes = dict.fromkeys(OUTCOMES, 0)

    @property
    def enabled(self) -> bool:
        return bool(self.receivers)

    def outcomes(self) -> dict[str, int]:
        """POST attempts made by this process, by outcome (see ``OUTCOMES``), for /metrics."""
        with self._counts_lock:
            return dict(self._outcomes)

    def wanted(self, action: str) -> bool:
        return any(fnmatch.fnmatchcase(action, pattern) for pattern in self.events)

    def on_commit(self, entries: list[Entry]) -> None:
        """Post-commit listener: only a wake-up; :meth:`sweep` is what makes it lossless."""
        if any(self.wanted(e.action) for e in entries):
            self._wake.set()

    # -- filling -------------------------------------------------------------------------------

    def sweep(self) -> int:
        """Enqueue every matching entry after each receiver's cursor; the number enqueued.

        A receiver seen for the first time starts at the ledger's current head (it gets events
        from now on, not the whole history).
        """
        added = 0
        for receiver in self.receivers:
            while True:
                count, more = self._sweep_one(receiver)
                added += count
                if not more:
                    break
        return added

    def _sweep_one(self, receiver: str) -> tuple[int, bool]:
        consumer = cursor_name(receiver)
        now = clock.now()
        with self.store.db.write_session() as session, session.begin():
            _lock(session, self.store)
            cursor = session.get(OutboxCursorRow, consumer)
            if cursor is None:
                head = self.store.size(session) - 1
                session.add(OutboxCursorRow(consumer=consumer, last_seq=head, updated_at=now))
                return 0, False
            rows = session.execute(
                select(LedgerEntryRow.seq, LedgerEntryRow.action)
                .where(LedgerEntryRow.seq > cursor.last_seq)
                .order_by(LedgerEntryRow.seq)
                .limit(_SWEEP_BATCH)
            ).all()
            if not rows:
                return 0, False
            values = [
                {
                    "receiver": receiver[:300],
                    "seq": seq,
                    "action": action,
                    "state": "pending",
                    "attempts": 0,
                    "created_at": now,
                    "next_attempt_at": now,
                }
                for seq, action in rows
                if self.wanted(action)
            ]
            if values:
                session.execute(insert(WebhookDeliveryRow), values)
            cursor.last_seq = rows[-1][0]
            cursor.updated_at = now
            return len(values), len(rows) == _SWEEP_BATCH

    # -- draining ------------------------------------------------------------------------------

    def claim(self, receiver: str, limit: int = 50) -> list[Delivery]:
        """Lease the due deliveries at the head of ``receiver``'s queue, lowest ``seq`` first.

        Only the due prefix is taken: a row waiting for its retry holds back the rows after it,
        so one worker delivers a receiver's events in ``seq`` order.
        """
        now = clock.now()
        lease = now + timedelta(seconds=self.settings.webhook_lease_seconds)
        with self.store.db.write_session() as session, session.begin():
            query = (
                select(WebhookDeliveryRow)
                .where(
                    WebhookDeliveryRow.receiver == receiver[:300],
                    WebhookDeliveryRow.state == "pending",
                )
                .order_by(WebhookDeliveryRow.seq)
                .limit(limit)
            )
            if self.store.db.dialect == "postgresql":
                query = query.with_for_update(skip_locked=True)
            taken = []
            for row in session.execute(query).scalars():
                leased = row.lease_until is not None and row.lease_until > now
                if row.next_attempt_at > now or leased:
                    break
                row.lease_until = lease
                taken.append(row)
            return [
                Delivery(r.id, r.receiver, r.seq, r.attempts, r.created_at)  # type: ignore[arg-type]
                for r in taken
            ]

    def body(self, seq: int) -> bytes:
        with self.store.db.read() as session:
            entry = self.store.entry(session, seq)
        if entry is None:
            raise LookupError(f"ledger entry {seq} is missing")
        document = {
            "seq": entry["seq"],
            "action": entry["action"],
            "actor": entry["actor"],
            "subject": entry["subject"],
            "payload": entry["payload"],
            "entry_hash": entry["entry_hash"],
            "timestamp": entry["timestamp"],
        }
        return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()

    def send(self, delivery: Delivery) -> str | None:
        """POST one delivery; None on success, else the reason it failed."""
        try:
            body = self.body(delivery.seq)
        except LookupError as exc:
            return str(exc)
        assert self.settings.webhook_secret is not None
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(self.settings.webhook_secret, body),
            DELIVERY_HEADER: str(delivery.id),
            TIMESTAMP_HEADER: clock.now().isoformat(),
        }
        try:
            response = self._client.post(delivery.receiver, content=body, headers=headers)
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__}: {exc}"[:500]
        if 200 <= response.status_code < 300:
            return None
        return f"HTTP {response.status_code}"

    def deliver_due(self) -> int:
        """Send what is due, per receiver in ``seq`` order; stop a receiver at its first
        failure (the rest wait, unleased, so order holds). The number delivered."""
        delivered = 0
        for receiver in self.receivers:
            while True:
                batch = self.claim(receiver)
                if not batch:
                    break
                failed = False
                for position, delivery in enumerate(batch):
                    error = self.send(delivery)
                    self._record(delivery, error)
                    if error is not None:
                        self._release(batch[position + 1 :])
                        failed = True
                        break
                    delivered += 1
                if failed:
                    break
        return delivered

    def _record(self, delivery: Delivery, error: str | None) -> None:
        now = clock.now()
        values: dict[str, Any]
        outcome = "retrying"
        if error is None:
            outcome = "delivered"
            values = {"state": "delivered", "delivered_at": now, "lease_until": None}
            values["attempts"] = delivery.attempts + 1
            values["last_error"] = None
        else:
            attempts = delivery.attempts + 1
            age = (now - delivery.created_at).total_seconds()
            if age >= self.settings.webhook_max_age_seconds:
                log.error(
                    "webhook delivery %s of seq %s to %s given up after %s attempts: %s",
                    delivery.id,
                    delivery.seq,
                    delivery.receiver,
                    attempts,
                    error,
                )
                values = {"state": "failed", "lease_until": None}
                outcome = "failed"
            else:
                delay = min(
                    self.settings.webhook_retry_max_seconds,
                    self.settings.webhook_retry_base_seconds * 2 ** (attempts - 1),
                )
                delay *= random.uniform(0.5, 1.0)  # jitter: replicas do not retry in lockstep
                values = {"next_attempt_at": now + timedelta(seconds=delay), "lease_until": None}
                log.warning(
                    "webhook delivery %s of seq %s to %s failed (attempt %s), retry in %.1fs: %s",
                    delivery.id,
                    delivery.seq,
                    delivery.receiver,
                    attempts,
                    delay,
                    error,
                )
            values["attempts"] = attempts
            values["last_error"] = error
        with self.store.db.write_session() as session, session.begin():
            session.execute(
                update(WebhookDeliveryRow)
                .where(WebhookDeliveryRow.id == delivery.id)
                .values(**values)
            )
        with self._counts_lock:
            self._outcomes[outcome] += 1

    def _release(self, deliveries: Sequence[Delivery]) -> None:
        if not deliveries:
            return
        with self.store.db.write_session() as session, session.begin():
            session.execute(
                update(WebhookDeliveryRow)
                .where(WebhookDeliveryRow.id.in_([d.id for d in deliveries]))  # type: ignore[union-attr]
                .values(lease_until=None)
            )

    def run_once(self) -> int:
        """One sweep and one delivery round (what the worker loops on); delivered count."""
        if self._before_round is not None:
            self._before_round()
        self.sweep()
        return self.deliver_due()

    def status(self) -> list[dict[str, Any]]:
        """Delivery rows, newest first (operators' view of what is pending or failed)."""
        with self.store.db.read() as session:
            rows = session.execute(
                select(WebhookDeliveryRow).order_by(WebhookDeliveryRow.id.desc()).limit(1000)  # type: ignore[union-attr]
            ).scalars()
            return [
                {
                    "id": r.id,
                    "receiver": r.receiver,
                    "seq": r.seq,
                    "action": r.action,
                    "state": r.state,
                    "attempts": r.attempts,
                    "last_error": r.last_error,
                }
                for r in rows
            ]

    # -- the worker thread ---------------------------------------------------------------------

    def start(self) -> bool:
        """Sweep once now (fixing the cursor of new receivers), then work in a thread."""
        if not self.enabled:
            return False
        self.sweep()
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._work, name="controlplane-webhooks", daemon=True
        )
        self._thread.start()
        return True

    def _work(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception:  # the database may be briefly away; try again next round
                log.exception("webhook round failed")
            self._wake.wait(self.settings.webhook_poll_seconds)
            self._wake.clear()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        self._thread = None

    def close(self) -> None:
        self.stop()
        self._client.close()


def _lock(session: Session, store: LedgerStore) -> None:
    """Serialize sweeps across replicas (SQLite writers are serialized by BEGIN IMMEDIATE)."""
    if store.db.dialect == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": SWEEP_LOCK_KEY})
