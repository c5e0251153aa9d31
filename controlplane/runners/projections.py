"""Projection of ``job.*`` entries into the ``jobs`` table.

States: ``queued`` -> ``claimed`` -> ``succeeded`` | ``failed``; a claimed job goes back to
``queued`` when its runner releases it or its lease expires; ``queued`` or ``claimed`` ->
``cancelled``. Every column comes from the entries, so a replay rebuilds the table exactly.
The live lease (``job_leases``) is written by the service, not here: it is not a projection.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from controlplane.authz.projections import entry_time
from controlplane.ledger.canonical import canonical_json
from controlplane.ledger.entry import Entry
from controlplane.store.models import JobRow
from controlplane.store.projector import projects

TERMINAL = ("succeeded", "failed", "cancelled")


def _job(session: Session, entry: Entry) -> JobRow:
    row = session.get(JobRow, int(entry.subject["name"]))
    if row is None:  # the service checked this under the lock; replay of a bad ledger
        raise LookupError(f"job {entry.subject['name']} of seq {entry.seq} does not exist")
    row.updated_seq = entry.seq
    return row


@projects("job.queued")
def _queued(session: Session, entry: Entry) -> None:
    payload = entry.payload
    if int(entry.subject["name"]) != entry.seq:
        raise LookupError(f"job.queued at seq {entry.seq} names job {entry.subject['name']}")
    session.add(
        JobRow(
            id=entry.seq,
            project=entry.subject["project"],
            trainer=payload["trainer"],
            state="queued",
            spec_json=canonical_json(payload["spec"]).decode(),
            output_kind=payload["output"]["kind"],
            output_name=payload["output"]["name"],
            queued_by=entry.actor,
            queued_at=entry_time(entry),
            attempts=0,
            updated_seq=entry.seq,
        )
    )
    session.flush()


@projects("job.claimed")
def _claimed(session: Session, entry: Entry) -> None:
    row = _job(session, entry)
    row.state = "claimed"
    row.runner = entry.actor
    row.contract_id = entry.payload["contract_id"]
    row.contract_digest = entry.payload["envelope_digest"]
    row.claim_seq = entry.seq
    row.claimed_at = entry_time(entry)
    row.attempts = int(entry.payload["attempt"])
    session.flush()


def _requeue(session: Session, entry: Entry) -> None:
    row = _job(session, entry)
    row.state = "queued"
    row.reason = entry.payload.get("reason")
    session.flush()


projects("job.released")(_requeue)
projects("job.lease_expired")(_requeue)


def _close(session: Session, entry: Entry, state: str) -> JobRow:
    row = _job(session, entry)
    row.state = state
    row.closed_seq = entry.seq
    row.closed_at = entry_time(entry)
    row.reason = entry.payload.get("reason")
    return row


@projects("job.finished")
def _finished(session: Session, entry: Entry) -> None:
    row = _close(session, entry, "succeeded")
    row.result_json = canonical_json(entry.payload["result"]).decode()
    session.flush()


@projects("job.failed")
def _failed(session: Session, entry: Entry) -> None:
    _close(session, entry, "failed")
    session.flush()


@projects("job.cancelled")
def _cancelled(session: Session, entry: Entry) -> None:
    _close(session, entry, "cancelled")
    session.flush()
