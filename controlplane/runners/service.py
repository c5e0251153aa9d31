"""The job service: queue, claim under a data contract, lease, finish with lineage, cancel.

Every transition is a ledger entry decided under the ledger lock (``Transaction.lock()``), so
the check-and-claim of one job is serialised on both databases: PostgreSQL holds the ledger's
advisory lock, SQLite holds its single writer lock (``BEGIN IMMEDIATE``). Two runners can
therefore never both claim a job; the loser sees 409.

Ledgered: ``job.queued``, ``job.claimed``, ``contract.rejected`` (a claim refused because no
contract, or no valid one, was presented), ``job.released``, ``job.lease_expired``,
``job.finished`` (together with the output's ``artifact.version_registered`` in one
transaction), ``job.failed`` and ``job.cancelled``.

Not ledgered: heartbeats. A lease lives in ``job_leases`` (operational, not a projection);
a heartbeat only moves its expiry. Expiry is decided by a conditional DELETE (``expires_at
<= now``) racing a heartbeat's conditional UPDATE (``expires_at > now``) on the same row: on
PostgreSQL the row lock orders them, on SQLite the writer lock does, so a lease is either
renewed or expired (and the job requeued, ledgered), never both. Expired leases are swept
whenever a runner claims, a job is listed, or a heartbeat arrives late.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from controlplane import clock, names
from controlplane.authz.service import SYSTEM_ACTOR, Principal
from controlplane.contracts.service import ContractDecision
from controlplane.crypto.dsse import EnvelopeError, parse_envelope
from controlplane.errors import Conflict, ControlPlaneError, Forbidden, InvalidInput, NotFound
from controlplane.ledger.canonical import canonical_json
from controlplane.ledger.entry import Entry
from controlplane.ledger.errors import MalformedError
from controlplane.registry.digests import DIGEST_PATTERN
from controlplane.registry.projections import find_version
from controlplane.registry.service import RegistryService
from controlplane.runners import projections as _projections  # noqa: F401  (registers them)
from controlplane.runners.openlineage import LineageEmitter
from controlplane.runners.spec import (
    OUTPUT_KIND,
    TRAINERS,
    JobRequest,
    check_metrics,
    data_digests,
    output_lineage,
)
from controlplane.store.ledger_store import LedgerStore, Transaction
from controlplane.store.models import DataContractRow, JobLeaseRow, JobRow

STATES = ("queued", "claimed", "succeeded", "failed", "cancelled")
MIN_LEASE_SECONDS = 5
MAX_LEASE_SECONDS = 86_400
MAX_REASON = 2000
MAX_PROGRESS_BYTES = 16 * 1024
CANDIDATES_SCANNED = 500


class ClaimRefused(ControlPlaneError):
    """A claim refused because the presented data contract does not allow it (ledgered)."""

    status = 403
    title = "Contract rejected"
    code = "contract-rejected"


class ContractChecker(Protocol):
    """What the queue needs of :class:`controlplane.contracts.service.ContractService`."""

    def check_for_job(
        self,
        session: Session,
        presented: dict[str, Any] | str,
        *,
        input_digests: Sequence[str],
        purpose: str,
        consumer: str,
        project: str,
    ) -> ContractDecision: ...


@dataclass
class _Outcome:
    """What a transaction decided: a value, or an error raised only after the commit (so
    the refusals and expiries it recorded are kept)."""

    value: Any = None
    error: ControlPlaneError | None = None
    events: list[tuple[str, dict[str, Any], dict[str, Any]]] = field(default_factory=list)

    def result(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.value


@dataclass(frozen=True)
class _Claims:
    id: str
    purpose: str
    digests: set[str]


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _aware(moment: datetime | None) -> datetime | None:
    if moment is not None and moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment


def _subject(project: str, job_id: int) -> dict[str, Any]:
    return {"project": project, "kind": "job", "name": str(job_id)}


def _lost(job: JobRow, claim_seq: int) -> Conflict:
    """409 for a runner whose claim ``claim_seq`` is over, saying why."""
    if job.state == "queued" and job.reason:
        why = f"it was returned to the queue ({job.reason})"
    else:
        why = f"it is {job.state}"
    return Conflict(
        f"claim {claim_seq} of job {job.id} is no longer held: {why}", job=job.id, state=job.state
    )


def _reason(text: Any, default: str) -> str:
    value = str(text or "").strip()
    return value[:MAX_REASON] if value else default


class JobService:
    def __init__(
        self,
        store: LedgerStore,
        registry: RegistryService,
        contracts: Callable[[], ContractChecker],
        lineage: LineageEmitter,
        lease_seconds: int,
    ) -> None:
        self.store = store
        self.registry = registry
        self._contracts = contracts
        self.lineage = lineage
        self.lease_seconds = lease_seconds

    # -- queue ---------------------------------------------------------------------------------

    def queue(self, caller: Principal, project: str, request: JobRequest) -> dict[str, Any]:
        """Resolve the inputs to their digests and ledger ``job.queued``."""
        names.project(project)
        with self.store.transaction() as tx:
            job_id = tx.lock()  # the job's id is the seq of its job.queued entry
            session = tx.session
            spec: dict[str, Any] = {"datasets": []}
            for role, ref in request.refs():
                row = find_version(session, project, ref.kind, ref.name, ref.version)
                if row is None:
                    raise NotFound(f"{role} input {ref} does not exist in project {project!r}")
                item = {"ref": str(ref), "digest": row.digest, "uri": row.uri}
                if role == "datasets":
                    spec["datasets"].append(item)
                else:
                    spec[role] = item
            spec["hyperparameters"] = request.hyperparameters
            output = {
                "kind": OUTPUT_KIND[request.trainer],
                "name": request.output_name or f"{request.trainer}-{job_id}",
            }
            tx.append(
                actor=caller.id,
                action="job.queued",
                subject=_subject(project, job_id),
                payload={"trainer": request.trainer, "spec": spec, "output": output},
            )
            return self._dict(session, self._row(session, job_id))

    # -- claims --------------------------------------------------------------------------------

    def claim(
        self,
        caller: Principal,
        job_id: int,
        presented: dict[str, Any] | str | None,
        lease_seconds: int | None = None,
    ) -> dict[str, Any]:
        """Claim one job by presenting a data contract (refusals are ledgered)."""
        lease = self._lease(lease_seconds)
        outcome = _Outcome()
        with self.store.transaction() as tx:
            tx.lock()
            now = clock.now()
            self._expire_in(tx, now, outcome)
            job = self._row(tx.session, job_id)
            if job.state != "queued":
                outcome.error = Conflict(f"job {job_id} is {job.state}, not queued")
            else:
                self._try_claim(tx, caller, job, presented, lease, now, outcome)
        self._emit(outcome)
        return outcome.result()

    def claim_next(
        self,
        caller: Principal,
        project: str,
        presented: dict[str, Any] | str | None,
        lease_seconds: int | None = None,
        trainers: Sequence[str] | None = None,
    ) -> dict[str, Any] | None:
        """Claim the oldest queued job of ``project`` that the presented contract says it
        covers (its purpose and subject digests, read unverified to choose); the claim itself
        is decided by the contract service. ``None`` when no queued job fits.

        A contract whose statement cannot be read at all is tried against the oldest queued
        job, so a garbage contract is refused (and ledgered) rather than silently idle.
        """
        names.project(project)
        wanted = set(trainers or TRAINERS)
        unknown = wanted - set(TRAINERS)
        if unknown:
            raise InvalidInput(f"unknown trainer {sorted(unknown)[0]!r}")
        lease = self._lease(lease_seconds)
        if not self._anything_to_claim(project, wanted):
            return None  # idle polls do not take the ledger lock
        outcome = _Outcome()
        with self.store.transaction() as tx:
            tx.lock()
            now = clock.now()
            self._expire_in(tx, now, outcome)
            session = tx.session
            claims = self._claims_of(session, project, presented)
            candidates = session.execute(
                select(JobRow)
                .where(
                    JobRow.project == project,
                    JobRow.state == "queued",
                    JobRow.trainer.in_(sorted(wanted)),
                )
                .order_by(JobRow.id)
                .limit(CANDIDATES_SCANNED)
            ).scalars()
            chosen = None
            for job in candidates:
                if claims is None or (
                    job.trainer == claims.purpose
                    and all(d in claims.digests for d in data_digests(json.loads(job.spec_json)))
                ):
                    chosen = job
                    break
            if chosen is not None:
                self._try_claim(tx, caller, chosen, presented, lease, now, outcome)
        self._emit(outcome)
        return outcome.result()

    def _anything_to_claim(self, project: str, trainers: set[str]) -> bool:
        """A queued job of these trainers, or a lease that expired (its job may be one)."""
        with self.store.db.read() as session:
            queued = session.execute(
                select(JobRow.id)
                .where(
                    JobRow.project == project,
                    JobRow.state == "queued",
                    JobRow.trainer.in_(sorted(trainers)),
                )
                .limit(1)
            ).first()
            if queued is not None:
                return True
            expired = session.execute(
                select(JobLeaseRow.job_id).where(JobLeaseRow.expires_at <= clock.now()).limit(1)
            ).first()
            return expired is not None

    def _claims_of(
        self, session: Session, project: str, presented: dict[str, Any] | str | None
    ) -> _Claims | None:
        """What a contract *says* (id, purpose, covered digests), unverified; None if
        unreadable. Only used to choose a job and to name a refused contract."""
        from controlplane.contracts.statement import parse_payload

        try:
            if isinstance(presented, str):
                row = session.get(DataContractRow, presented)
                if row is None or row.project != project:
                    return None
                envelope = json.loads(row.envelope)
            elif isinstance(presented, dict):
                envelope = presented
            else:
                return None
            _type, payload, _signatures = parse_envelope(envelope)
            statement = parse_payload(payload)
        except (ControlPlaneError, EnvelopeError, ValueError):
            return None
        return _Claims(statement.id, statement.purpose, {s.digest for s in statement.subjects})

    def _try_claim(
        self,
        tx: Transaction,
        caller: Principal,
        job: JobRow,
        presented: dict[str, Any] | str | None,
        lease_seconds: int,
        now: datetime,
        outcome: _Outcome,
    ) -> None:
        spec = json.loads(job.spec_json)
        digests = data_digests(spec)
        contract_id: str | None = None
        envelope_digest: str | None = None
        code: str | None = None
        if presented is None or presented == "" or presented == {}:
            accepted, reason, code = False, "no data contract was presented", "no_contract"
        else:
            try:
                decision = self._contracts().check_for_job(
                    tx.session,
                    presented,
                    input_digests=digests,
                    purpose=job.trainer,
                    consumer=caller.id,
                    project=job.project,
                )
            except ControlPlaneError as exc:  # a malformed presentation is a refusal too
                accepted, reason, code = False, exc.detail, "malformed"
            else:
                accepted, reason = decision.accepted, decision.reason
                contract_id, envelope_digest = decision.contract_id, decision.envelope_digest
                code = getattr(decision, "code", None)
        if not accepted:
            reason = _reason(reason, "the data contract was rejected")
            claims = None if contract_id else self._claims_of(tx.session, job.project, presented)
            tx.append(
                actor=caller.id,
                action="contract.rejected",
                subject={
                    "project": job.project,
                    "kind": "contract",
                    "name": contract_id or (claims.id if claims else "none"),
                },
                payload={
                    "job_id": job.id,
                    "trainer": job.trainer,
                    "consumer": caller.id,
                    "input_digests": digests,
                    "contract_id": contract_id,
                    "presented_id": None if contract_id or claims is None else claims.id,
                    "envelope_digest": envelope_digest,
                    "code": code,
                    "reason": reason,
                },
            )
            outcome.error = ClaimRefused(f"claim of job {job.id} refused: {reason}", job=job.id)
            return
        expires = now + timedelta(seconds=lease_seconds)
        entry = tx.append(
            actor=caller.id,
            action="job.claimed",
            subject=_subject(job.project, job.id),
            payload={
                "contract_id": contract_id,
                "envelope_digest": envelope_digest,
                "attempt": job.attempts + 1,
                "lease_seconds": lease_seconds,
                "lease_expires_at": _iso(expires),
            },
        )
        session = tx.session
        session.execute(delete(JobLeaseRow).where(JobLeaseRow.job_id == job.id))
        session.add(
            JobLeaseRow(
                job_id=job.id,
                runner=caller.id,
                claim_seq=entry.seq,
                lease_seconds=lease_seconds,
                expires_at=expires,
                heartbeat_at=now,
                progress_json="{}",
            )
        )
        session.flush()
        claimed = self._dict(session, job)
        outcome.value = claimed
        outcome.events.append(("START", claimed, {"claim_seq": entry.seq, "entry": entry}))

    def _lease(self, seconds: int | None) -> int:
        value = self.lease_seconds if seconds is None else seconds
        if not isinstance(value, int) or not MIN_LEASE_SECONDS <= value <= MAX_LEASE_SECONDS:
            raise InvalidInput(
                f"lease_seconds must be from {MIN_LEASE_SECONDS} to {MAX_LEASE_SECONDS}"
            )
        return value

    # -- leases --------------------------------------------------------------------------------

    def heartbeat(
        self,
        caller: Principal,
        job_id: int,
        claim_seq: int,
        progress: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Renew the lease (no ledger entry). 409 when the lease is no longer the caller's."""
        try:
            progress_text = canonical_json(dict(progress or {})).decode()
        except MalformedError as exc:
            raise InvalidInput(f"progress: {exc}") from None
        if len(progress_text) > MAX_PROGRESS_BYTES:
            raise InvalidInput(f"progress exceeds {MAX_PROGRESS_BYTES} bytes")
        now = clock.now()
        late = False
        with self.store.db.write_session() as session, session.begin():
            lease = session.get(JobLeaseRow, job_id)
            if lease is not None and lease.claim_seq == claim_seq and lease.runner == caller.id:
                expires = now + timedelta(seconds=lease.lease_seconds)
                renewed = session.execute(
                    update(JobLeaseRow)
                    .where(
                        JobLeaseRow.job_id == job_id,
                        JobLeaseRow.claim_seq == claim_seq,
                        JobLeaseRow.expires_at > now,
                    )
                    .values(expires_at=expires, heartbeat_at=now, progress_json=progress_text)
                    .execution_options(synchronize_session=False)
                ).rowcount
                if renewed == 1:
                    return {
                        "job_id": job_id,
                        "claim_seq": claim_seq,
                        "state": "claimed",
                        "lease_expires_at": expires,
                    }
                late = True
        if late:
            self.expire_due()
        raise self._not_held(job_id, claim_seq)

    def _not_held(self, job_id: int, claim_seq: int) -> Conflict:
        with self.store.db.read() as session:
            return _lost(self._row(session, job_id), claim_seq)

    def expire_due(self) -> int:
        """Requeue every job whose lease has expired (ledgered); the number requeued."""
        now = clock.now()
        with self.store.db.read() as session:
            due = session.execute(
                select(JobLeaseRow.job_id).where(JobLeaseRow.expires_at <= now).limit(1)
            ).first()
        if due is None:
            return 0
        outcome = _Outcome()
        with self.store.transaction() as tx:
            tx.lock()
            self._expire_in(tx, clock.now(), outcome)
        self._emit(outcome)
        return len(outcome.events)

    def _expire_in(self, tx: Transaction, now: datetime, outcome: _Outcome) -> None:
        session = tx.session
        leases = session.execute(
            select(JobLeaseRow).where(JobLeaseRow.expires_at <= now).order_by(JobLeaseRow.job_id)
        ).scalars()
        for lease in list(leases):
            job_id, claim_seq, runner = lease.job_id, lease.claim_seq, lease.runner
            expired_at, beat = _aware(lease.expires_at), _aware(lease.heartbeat_at)
            gone = session.execute(
                delete(JobLeaseRow).where(
                    JobLeaseRow.job_id == job_id,
                    JobLeaseRow.claim_seq == claim_seq,
                    JobLeaseRow.expires_at <= now,
                )
            ).rowcount
            if gone != 1:
                continue  # renewed by a heartbeat that committed first
            job = session.get(JobRow, job_id)
            if job is None or job.state != "claimed" or job.claim_seq != claim_seq:
                continue
            assert expired_at is not None and beat is not None
            entry = tx.append(
                actor=SYSTEM_ACTOR,
                action="job.lease_expired",
                subject=_subject(job.project, job_id),
                payload={
                    "claim_seq": claim_seq,
                    "runner": runner,
                    "lease_expired_at": _iso(expired_at),
                    "last_heartbeat_at": _iso(beat),
                    "reason": f"the lease of {runner} expired at {_iso(expired_at)}",
                },
            )
            outcome.events.append(
                ("ABORT", self._dict(session, job), {"claim_seq": claim_seq, "entry": entry})
            )

    def _held(
        self, tx: Transaction, caller: Principal, job_id: int, claim_seq: int, outcome: _Outcome
    ) -> JobRow | None:
        """The job if ``claim_seq`` is the caller's live claim; else sets a 409 and None."""
        now = clock.now()
        self._expire_in(tx, now, outcome)
        job = self._row(tx.session, job_id)
        lease = tx.session.get(JobLeaseRow, job_id)
        if (
            job.state != "claimed"
            or job.claim_seq != claim_seq
            or job.runner != caller.id
            or lease is None
            or lease.claim_seq != claim_seq
        ):
            outcome.error = _lost(job, claim_seq)
            return None
        return job

    def release(
        self, caller: Principal, job_id: int, claim_seq: int, reason: str | None = None
    ) -> dict[str, Any]:
        """Give the job back to the queue (a runner stopping gracefully)."""
        outcome = _Outcome()
        with self.store.transaction() as tx:
            tx.lock()
            job = self._held(tx, caller, job_id, claim_seq, outcome)
            if job is not None:
                text = _reason(reason, f"released by {caller.id}")
                entry = tx.append(
                    actor=caller.id,
                    action="job.released",
                    subject=_subject(job.project, job_id),
                    payload={"claim_seq": claim_seq, "reason": text},
                )
                self._drop_lease(tx.session, job_id)
                outcome.value = self._dict(tx.session, job)
                outcome.events.append(
                    ("ABORT", outcome.value, {"claim_seq": claim_seq, "entry": entry})
                )
        self._emit(outcome)
        return outcome.result()

    # -- results -------------------------------------------------------------------------------

    def finish(
        self,
        caller: Principal,
        job_id: int,
        claim_seq: int,
        *,
        digest: str,
        uri: str,
        metrics: Mapping[str, Any] | None = None,
        mlflow_run_id: str | None = None,
        parameters: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Register the output with its lineage and ledger ``job.finished``, in one
        transaction. Lineage and provenance come from the queued job, never from the runner."""
        checked = check_metrics(metrics)
        if not isinstance(digest, str) or not DIGEST_PATTERN.fullmatch(digest):
            raise InvalidInput(f"digest must be sha256:<64 lowercase hex>, got {digest!r}")
        if mlflow_run_id is not None and (
            not isinstance(mlflow_run_id, str) or not 0 < len(mlflow_run_id) <= 200
        ):
            raise InvalidInput("mlflow_run_id must be a string of at most 200 characters")
        outcome = _Outcome()
        with self.store.transaction() as tx:
            tx.lock()
            job = self._held(tx, caller, job_id, claim_seq, outcome)
            if job is not None:
                self._finish_in(
                    tx, caller, job, digest, uri, checked, mlflow_run_id, parameters, outcome
                )
        self._emit(outcome)
        return outcome.result()

    def _finish_in(
        self,
        tx: Transaction,
        caller: Principal,
        job: JobRow,
        digest: str,
        uri: str,
        metrics: dict[str, float],
        mlflow_run_id: str | None,
        parameters: Mapping[str, Any] | None,
        outcome: _Outcome,
    ) -> None:
        spec = json.loads(job.spec_json)
        metadata: dict[str, Any] = {
            "produced_by": {
                "job": job.id,
                "trainer": job.trainer,
                "runner": caller.id,
                "claim_seq": job.claim_seq,
                "queued_by": job.queued_by,
                "mlflow_run_id": mlflow_run_id,
            },
            "contract": {"id": job.contract_id, "envelope_digest": job.contract_digest},
            "inputs": {
                role: ([i["ref"] for i in item] if role == "datasets" else item["ref"])
                for role, item in spec.items()
                if role != "hyperparameters" and item
            },
            "hyperparameters": spec.get("hyperparameters", {}),
            "metrics": metrics,
        }
        if parameters:
            metadata["parameters"] = dict(parameters)
        if job.trainer == "evaluation":
            metadata["mode"] = spec.get("hyperparameters", {}).get("mode", "offline")
        version, _created = self.registry.register_version(
            caller.id,
            job.project,
            job.output_kind,
            job.output_name,
            digest=digest,
            uri=uri,
            metadata=metadata,
            lineage=output_lineage(job.trainer, spec),
            tx=tx,
        )
        output = {
            "ref": version["ref"],
            "kind": version["kind"],
            "name": version["name"],
            "version": version["version"],
            "digest": version["digest"],
            "uri": version["uri"],
        }
        result = {"output": output, "metrics": metrics, "mlflow_run_id": mlflow_run_id}
        entry = tx.append(
            actor=caller.id,
            action="job.finished",
            subject=_subject(job.project, job.id),
            payload={"claim_seq": job.claim_seq, "result": result},
        )
        self._drop_lease(tx.session, job.id)
        finished = self._dict(tx.session, job)
        outcome.value = finished
        outcome.events.append(
            (
                "COMPLETE",
                finished,
                {"claim_seq": job.claim_seq, "entry": entry, "outputs": [output]},
            )
        )

    def fail(self, caller: Principal, job_id: int, claim_seq: int, reason: str) -> dict[str, Any]:
        """The runner could not produce an output (bad input bytes, a trainer error)."""
        text = _reason(reason, "the runner reported a failure")
        outcome = _Outcome()
        with self.store.transaction() as tx:
            tx.lock()
            job = self._held(tx, caller, job_id, claim_seq, outcome)
            if job is not None:
                entry = tx.append(
                    actor=caller.id,
                    action="job.failed",
                    subject=_subject(job.project, job_id),
                    payload={"claim_seq": claim_seq, "reason": text},
                )
                self._drop_lease(tx.session, job_id)
                outcome.value = self._dict(tx.session, job)
                outcome.events.append(
                    ("FAIL", outcome.value, {"claim_seq": claim_seq, "entry": entry, "error": text})
                )
        self._emit(outcome)
        return outcome.result()

    def cancel(
        self, caller: Principal, job_id: int, reason: str | None, *, is_admin: bool
    ) -> dict[str, Any]:
        """Cancel a queued or claimed job: only who queued it, or an admin.

        Someone else's attempt is refused and recorded (``access.denied``, like every refused
        attempt to change something), in a transaction of its own before the 403.
        """
        outcome = _Outcome()
        with self.store.db.read() as session:  # who queued a job never changes
            job = self._row(session, job_id)
            project, queued_by = job.project, job.queued_by
        if queued_by != caller.id and not is_admin:
            detail = f"only {queued_by} (who queued job {job_id}) or an admin may cancel it"
            with self.store.transaction() as tx:
                tx.append(
                    actor=caller.id,
                    action="access.denied",
                    subject=_subject(project, job_id),
                    payload={"object": "jobs", "action": "cancel", "reason": detail},
                )
            raise Forbidden(detail)
        with self.store.transaction() as tx:
            tx.lock()
            job = self._row(tx.session, job_id)
            if job.state not in ("queued", "claimed"):
                raise Conflict(
                    f"job {job_id} is {job.state}; only queued or claimed jobs are cancelled"
                )
            was_claimed = job.state == "claimed"
            entry = tx.append(
                actor=caller.id,
                action="job.cancelled",
                subject=_subject(job.project, job_id),
                payload={
                    "reason": _reason(reason, f"cancelled by {caller.id}"),
                    "claim_seq": job.claim_seq if was_claimed else None,
                },
            )
            self._drop_lease(tx.session, job_id)
            outcome.value = self._dict(tx.session, job)
            if was_claimed and job.claim_seq is not None:
                outcome.events.append(
                    ("ABORT", outcome.value, {"claim_seq": job.claim_seq, "entry": entry})
                )
        self._emit(outcome)
        return outcome.result()

    @staticmethod
    def _drop_lease(session: Session, job_id: int) -> None:
        session.execute(delete(JobLeaseRow).where(JobLeaseRow.job_id == job_id))

    # -- reading -------------------------------------------------------------------------------

    @staticmethod
    def _row(session: Session, job_id: int) -> JobRow:
        row = session.get(JobRow, job_id)
        if row is None:
            raise NotFound(f"job {job_id} does not exist")
        return row

    def get(self, session: Session, job_id: int) -> dict[str, Any]:
        return self._dict(session, self._row(session, job_id))

    def project_of(self, session: Session, job_id: int) -> str:
        return self._row(session, job_id).project

    def list(
        self,
        session: Session,
        project: str,
        state: str | None = None,
        trainer: str | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        names.project(project)
        query = select(JobRow).where(JobRow.project == project)
        if state is not None:
            if state not in STATES:
                raise InvalidInput(f"state must be one of {', '.join(STATES)}")
            query = query.where(JobRow.state == state)
        if trainer is not None:
            query = query.where(JobRow.trainer == trainer)
        rows = session.execute(query.order_by(JobRow.id.desc()).limit(limit)).scalars()
        return [self._dict(session, row) for row in rows]

    @staticmethod
    def _dict(session: Session, row: JobRow) -> dict[str, Any]:
        lease = session.get(JobLeaseRow, row.id) if row.state == "claimed" else None
        return {
            "id": row.id,
            "project": row.project,
            "trainer": row.trainer,
            "state": row.state,
            "spec": json.loads(row.spec_json),
            "output": {"kind": row.output_kind, "name": row.output_name},
            "queued_by": row.queued_by,
            "queued_at": _aware(row.queued_at),
            "attempts": row.attempts,
            "runner": row.runner,
            "contract_id": row.contract_id,
            "contract_digest": row.contract_digest,
            "claim_seq": row.claim_seq,
            "claimed_at": _aware(row.claimed_at),
            "closed_seq": row.closed_seq,
            "closed_at": _aware(row.closed_at),
            "reason": row.reason,
            "result": json.loads(row.result_json) if row.result_json else None,
            "lease": None
            if lease is None
            else {
                "claim_seq": lease.claim_seq,
                "expires_at": _aware(lease.expires_at),
                "heartbeat_at": _aware(lease.heartbeat_at),
                "lease_seconds": lease.lease_seconds,
                "progress": json.loads(lease.progress_json),
            },
        }

    # -- events --------------------------------------------------------------------------------

    def _emit(self, outcome: _Outcome) -> None:
        """OpenLineage events of a committed transaction (never raises)."""
        for event_type, job, extra in outcome.events:
            entry: Entry = extra["entry"]
            self.lineage.emit(
                event_type,
                job,
                claim_seq=extra["claim_seq"],
                event_time=entry.timestamp,
                outputs=extra.get("outputs", ()),
                error=extra.get("error"),
            )


__all__ = ["STATES", "ClaimRefused", "ContractChecker", "JobService"]
