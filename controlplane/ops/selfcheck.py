"""The API server's periodic integrity self-check (off unless configured).

Every ``integrity_check_interval_seconds`` a worker thread runs the database integrity check
(:func:`controlplane.store.integrity.check_database`: the chain, signed checkpoints, Merkle
nodes and index columns; without the projection replay, which ``controlplane verify
--database`` adds) and records the outcome in the metrics, so a database edited behind the
server's back raises ``controlplane_verification_failures_total{check="integrity"}`` for
alerting. It reads the whole ledger each time: choose the interval by the ledger's size (a
million entries take tens of seconds). Each replica that has it on runs its own check.
"""

from __future__ import annotations

import logging
import threading

from controlplane.ledger.verify import VerificationReport
from controlplane.ops.metrics import Metrics
from controlplane.store.integrity import check_database
from controlplane.store.ledger_store import LedgerStore

log = logging.getLogger("controlplane.selfcheck")


class IntegritySelfCheck:
    """Runs :meth:`run_once` every ``interval`` seconds in a daemon thread until stopped."""

    def __init__(self, store: LedgerStore, metrics: Metrics, interval: float) -> None:
        self.store = store
        self.metrics = metrics
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> VerificationReport:
        try:
            report = check_database(self.store, replay=False)
        except Exception as exc:  # a check that cannot run is a failed check
            log.exception("integrity self-check could not run")
            report = VerificationReport()
            report.fail(f"the integrity check could not run: {type(exc).__name__}")
        self.metrics.integrity_checked(report)
        if report.ok:
            log.info("integrity self-check passed", extra={"tree_size": report.size})
        else:
            log.error(
                "integrity self-check FAILED: %s",
                "; ".join(report.problems[:5]),
                extra={"first_bad_seq": report.first_bad_seq, "problems": len(report.problems)},
            )
        return report

    def start(self) -> None:
        if self.interval <= 0 or self._thread is not None:
            return
        self._thread = threading.Thread(
            target=self._work, name="controlplane-integrity-selfcheck", daemon=True
        )
        self._thread.start()

    def _work(self) -> None:
        while not self._stop.wait(self.interval):
            self.run_once()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None


__all__ = ["IntegritySelfCheck"]
