"""Prometheus metrics of one API process (``prometheus_client``, a registry per app).

Each process counts what it did itself: its requests, the entries its transactions appended
(a post-commit listener on the ledger store), the lease expiries among them, the verification
failures it saw. With several API replicas, scrape every replica and sum the counters in
PromQL (``sum by (route) (rate(...))``). The figures read from the database at scrape time
(``controlplane_jobs_queued``, ``controlplane_ledger_tree_size``) are the same on every replica:
aggregate them with ``max``. ``serve --workers N`` puts N processes behind one port, so a
scrape reaches one of them at random: run one replica per port instead when scraping.

Names (``_total`` is added to counters by the client library):

- ``controlplane_http_request_duration_seconds{method, route, status}`` histogram; ``route``
  is the route template (``/v1/ledger/entries/{seq}``), ``unmatched`` for paths no route
  matched, so the label set stays bounded whatever clients request.
- ``controlplane_ledger_entries_appended_total{action}``: entries committed by this process.
- ``controlplane_job_lease_expiries_total``: ``job.lease_expired`` entries (a runner's lease
  ran out and the job was requeued) committed by this process.
- ``controlplane_verification_failures_total{check}``: ``integrity`` (a failed server-side
  integrity check, see :mod:`controlplane.ops.selfcheck`), ``witness`` (a witnessed
  checkpoint disagrees with the one just signed), ``contract`` (a data contract presented with
  a claim or for registration did not verify or did not allow it: ``contract.rejected``,
  ``contract.refused``), ``signoff`` (a sign-off refused: ``signoff.refused``).
- ``controlplane_integrity_checks_total{result}``; ``controlplane_witness_checkpoints_total
  {outcome}`` (``written``, ``conflict``, ``error``).
- ``controlplane_jobs_queued`` (and ``controlplane_jobs_queued_by_project{project}``) and
  ``controlplane_ledger_tree_size``: read at scrape time with one indexed query each;
  ``controlplane_database_up`` is 0 when they failed. A claimed job whose lease ran out counts
  as queued once it is swept (at the next claim, job listing or late heartbeat).
- ``controlplane_webhook_delivery_attempts_total{outcome}``: POSTs this process made to
  webhook receivers, by outcome: ``delivered`` (2xx), ``retrying`` (failed, retried later),
  ``failed`` (failed past ``webhook_max_age_seconds``: given up, the row is ``failed``).
- ``controlplane_webhook_deliveries_pending`` (rows of ``webhook_deliveries`` not yet delivered
  nor given up: due, leased or waiting for a retry) and ``controlplane_webhook_outbox_lag``
  (ledger entries after the outbox cursor, not yet swept into the outbox; the largest over the
  receivers): read at scrape time, like the job gauges. The webhook series exist only when
  webhooks are configured.
- ``process_*`` and ``python_*``: the client library's process collectors.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import (
    CollectorRegistry,
    Counter,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from controlplane.ledger.entry import Entry
from controlplane.ledger.verify import VerificationReport
from controlplane.store.database import Database
from controlplane.store.models import (
    CheckpointRow,
    JobRow,
    OutboxCursorRow,
    WebhookDeliveryRow,
)
from controlplane.webhooks.outbox import OUTCOMES, WebhookOutbox, cursor_name

if TYPE_CHECKING:
    from controlplane.ops.witness import CheckpointWitness

log = logging.getLogger("controlplane.metrics")

LEASE_EXPIRED = "job.lease_expired"
REFUSALS = {
    "contract.rejected": "contract",
    "contract.refused": "contract",
    "signoff.refused": "signoff",
}
"""Ledger actions that record a failed verification of something signed, by check."""
CHECKS = ("integrity", "witness", "contract", "signoff")
UNMATCHED_ROUTE = "unmatched"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Metrics:
    """The metrics of one API process: a registry, the instruments, the scrape-time reads."""

    def __init__(
        self,
        db: Database,
        witness: CheckpointWitness | None = None,
        webhooks: WebhookOutbox | None = None,
    ) -> None:
        self.registry = CollectorRegistry()
        self.db = db
        self.witness = witness
        self.webhooks = webhooks if webhooks is not None and webhooks.enabled else None
        self.requests = Histogram(
            "controlplane_http_request_duration_seconds",
            "Time to answer an HTTP request, by method, route template and status.",
            ("method", "route", "status"),
            registry=self.registry,
            buckets=LATENCY_BUCKETS,
        )
        self.appends = Counter(
            "controlplane_ledger_entries_appended",
            "Ledger entries committed by this process, by action.",
            ("action",),
            registry=self.registry,
        )
        self.lease_expiries = Counter(
            "controlplane_job_lease_expiries",
            "Job leases that expired (job.lease_expired entries committed by this process).",
            registry=self.registry,
        )
        self.integrity_checks = Counter(
            "controlplane_integrity_checks",
            "Server-side integrity checks of the database run by this process, by result.",
            ("result",),
            registry=self.registry,
        )
        for result in ("ok", "failed"):
            self.integrity_checks.labels(result)
        self._lock = threading.Lock()
        self._failures = dict.fromkeys(CHECKS, 0)
        self.registry.register(_Collected(self))
        for collector in (ProcessCollector, PlatformCollector, GCCollector):
            collector(registry=self.registry)

    # -- feeding -------------------------------------------------------------------------------

    def on_commit(self, entries: list[Entry]) -> None:
        """Post-commit listener of the ledger store: count what this process appended."""
        for entry in entries:
            self.appends.labels(entry.action).inc()
            if entry.action == LEASE_EXPIRED:
                self.lease_expiries.inc()
            check = REFUSALS.get(entry.action)
            if check is not None:
                self.verification_failed(check)

    def verification_failed(self, check: str) -> None:
        with self._lock:
            self._failures[check] = self._failures.get(check, 0) + 1

    def integrity_checked(self, report: VerificationReport) -> None:
        self.integrity_checks.labels("ok" if report.ok else "failed").inc()
        if not report.ok:
            self.verification_failed("integrity")

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).observe(seconds)

    # -- exposing ------------------------------------------------------------------------------

    def render(self, accept: str | None) -> tuple[bytes, str]:
        """The exposition in the format the scraper asked for (Prometheus text by default,
        OpenMetrics when its ``Accept`` says so) and its content type."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type

    def failures(self) -> dict[str, int]:
        with self._lock:
            counts = dict(self._failures)
        if self.witness is not None:
            counts["witness"] += self.witness.conflicts
        return counts


class _Collected:
    """Samples computed at scrape time: failure counts, witness outcomes, database reads."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def describe(self) -> list[Metric]:
        # Named here so the registry never queries the database just to learn the names.
        return [
            CounterMetricFamily("controlplane_verification_failures", "x", labels=["check"]),
            CounterMetricFamily("controlplane_witness_checkpoints", "x", labels=["outcome"]),
            GaugeMetricFamily("controlplane_jobs_queued", "x"),
            GaugeMetricFamily("controlplane_jobs_queued_by_project", "x", labels=["project"]),
            GaugeMetricFamily("controlplane_ledger_tree_size", "x"),
            GaugeMetricFamily("controlplane_database_up", "x"),
            CounterMetricFamily("controlplane_webhook_delivery_attempts", "x", labels=["outcome"]),
            GaugeMetricFamily("controlplane_webhook_deliveries_pending", "x"),
            GaugeMetricFamily("controlplane_webhook_outbox_lag", "x"),
        ]

    def collect(self) -> Iterator[Metric]:
        metrics = self.metrics
        failures = CounterMetricFamily(
            "controlplane_verification_failures",
            "Verifications that failed in this process, by check (integrity, witness, "
            "contract, signoff).",
            labels=["check"],
        )
        for check, count in metrics.failures().items():
            failures.add_metric([check], count)
        yield failures
        witness = metrics.witness
        if witness is not None:
            outcomes = CounterMetricFamily(
                "controlplane_witness_checkpoints",
                "Checkpoints this process published to the witness directory, by outcome.",
                labels=["outcome"],
            )
            for outcome, count in (
                ("written", witness.written),
                ("conflict", witness.conflicts),
                ("error", witness.errors),
            ):
                outcomes.add_metric([outcome], count)
            yield outcomes
        webhooks = metrics.webhooks
        if webhooks is not None:
            attempts = CounterMetricFamily(
                "controlplane_webhook_delivery_attempts",
                "Webhook POSTs this process made, by outcome (delivered, retrying, failed).",
                labels=["outcome"],
            )
            counts = webhooks.outcomes()
            for outcome in OUTCOMES:
                attempts.add_metric([outcome], counts[outcome])
            yield attempts
        yield from _database_gauges(metrics.db, webhooks)


def _database_gauges(db: Database, webhooks: WebhookOutbox | None) -> Iterator[Metric]:
    queued = GaugeMetricFamily(
        "controlplane_jobs_queued",
        "Jobs waiting for a runner (from the jobs table at scrape time).",
    )
    by_project = GaugeMetricFamily(
        "controlplane_jobs_queued_by_project",
        "Jobs waiting for a runner, by project (from the jobs table at scrape time).",
        labels=["project"],
    )
    size = GaugeMetricFamily(
        "controlplane_ledger_tree_size", "Size of the tree of the latest signed checkpoint."
    )
    up = GaugeMetricFamily(
        "controlplane_database_up", "1 if the scrape-time database reads succeeded."
    )
    try:
        with db.read() as session:
            rows = session.execute(
                select(JobRow.project, func.count())
                .where(JobRow.state == "queued")
                .group_by(JobRow.project)
            ).all()
            latest = session.execute(select(func.max(CheckpointRow.tree_size))).scalar()
            backlog = _webhook_backlog(session, webhooks) if webhooks is not None else None
    except Exception as exc:  # a scrape must answer even when the database does not
        log.warning("metrics: database read failed: %s", exc)
        up.add_metric([], 0)
        yield up
        return
    for project, count in rows:
        by_project.add_metric([project], count)
    queued.add_metric([], sum(count for _, count in rows))
    size.add_metric([], latest or 0)
    up.add_metric([], 1)
    yield from (queued, by_project, size, up)
    if backlog is not None:
        pending = GaugeMetricFamily(
            "controlplane_webhook_deliveries_pending",
            "Webhook deliveries not yet delivered nor given up, retries included (from the "
            "webhook_deliveries table at scrape time).",
        )
        pending.add_metric([], backlog[0])
        lag = GaugeMetricFamily(
            "controlplane_webhook_outbox_lag",
            "Ledger entries after the webhook outbox cursor, not yet swept into the outbox "
            "(the largest over the receivers, at scrape time).",
        )
        lag.add_metric([], backlog[1])
        yield from (pending, lag)


def _webhook_backlog(session: Session, webhooks: WebhookOutbox) -> tuple[int, int]:
    """Pending deliveries (an indexed count) and the outbox lag: the ledger size minus the
    entries each receiver's cursor has swept (a receiver without a cursor yet starts at the
    head, so it lags by nothing)."""
    pending = session.execute(
        select(func.count()).where(WebhookDeliveryRow.state == "pending")
    ).scalar_one()
    last = webhooks.store.size(session) - 1
    swept = session.execute(
        select(func.min(OutboxCursorRow.last_seq)).where(
            OutboxCursorRow.consumer.in_([cursor_name(r) for r in webhooks.receivers])  # type: ignore[attr-defined]
        )
    ).scalar()
    return int(pending), 0 if swept is None else max(0, last - int(swept))


__all__ = ["CHECKS", "LEASE_EXPIRED", "REFUSALS", "UNMATCHED_ROUTE", "Metrics"]
