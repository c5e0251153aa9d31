"""The contract service: registration, revocation, queries, and the check a job runs.

Registration verifies everything the envelope claims, under the ledger lock: the signature is
by an active key registered to the caller, who must be the owner the predicate names; every
subject is an existing ``approved`` dataset or rubric version with exactly that digest. A
refusal that matters to an audit (a bad signature, someone else's contract, unapproved or
unknown data) is appended as ``contract.refused`` in a transaction of its own before the
caller hears a 403. Malformed input (not an envelope, a statement that does not validate, an
expired contract) is a plain 422 and is not recorded.

:meth:`ContractService.check_for_job` only decides; it never writes (the job service records
``contract.rejected``). It fails closed: anything it cannot establish is a refusal.

Refusal codes of :class:`ContractDecision` (``reason`` is one sentence that says the same):

==================  ===================================================================
``malformed``       not an envelope or contract id, or the statement does not validate
``unknown_key``     not signed by any key the owner registered
``forged_signature`` signed under a registered key id, but the signature does not verify
``key_revoked``     signed by a key the owner has revoked since
``unknown_contract`` no contract is registered under that id
``not_registered``  a validly signed envelope that is not the one registered under its id
``revoked``         the contract was revoked
``expired``         the contract's ``expires`` is not after ``clock.now()``
``no_inputs``       the job names no input digests (there is nothing to cover)
``not_covered``     an input digest is not a subject of the contract
``data_not_approved`` a covered version is no longer ``approved`` (deprecated since)
``wrong_purpose``   the job's purpose is not the contract's purpose
``wrong_consumer``  neither the consumer principal nor the job's project is allowed
==================  ===================================================================
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import select
from sqlalchemy.orm import Session

from controlplane import clock, names
from controlplane.authz.service import Principal
from controlplane.contracts import projections as _projections  # noqa: F401  (registers them)
from controlplane.contracts import statement as st
from controlplane.contracts.signatures import (
    Opened,
    SignatureProblem,
    check_signature,
    open_envelope,
)
from controlplane.crypto.keys import public_key_from_b64
from controlplane.errors import Conflict, ControlPlaneError, InvalidInput, NotFound
from controlplane.governance.service import Refused
from controlplane.registry.digests import DIGEST_PATTERN
from controlplane.registry.projections import find_version
from controlplane.store.ledger_store import LedgerStore
from controlplane.store.models import (
    AnnotatorPseudonymRow,
    ArtifactVersionRow,
    DataContractRow,
    DataContractSubjectRow,
    SigningKeyRow,
)

APPROVED = "approved"
STATES = ("active", "revoked", "expired")


@dataclass(frozen=True)
class ContractDecision:
    """Whether a presented contract lets a job use its inputs.

    ``contract_id``: the registered contract decided on; for an envelope whose signature does
    not verify, the registered id it claims (so the refusal names what was impersonated);
    ``None`` when no registered contract could be identified. ``envelope_digest``: the
    registered envelope's digest, once the contract is identified and verified. ``code``
    names the refusal (see the module docstring); it is ``None`` when accepted."""

    contract_id: str | None
    accepted: bool
    reason: str | None
    envelope_digest: str | None
    code: str | None = None


class _Refusal(Exception):
    def __init__(self, code: str, reason: str, contract_id: str | None = None) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.contract_id = contract_id


def _aware(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _owner_keys(session: Session, owner: str) -> tuple[dict[str, Ed25519PublicKey], dict[str, str]]:
    """Every key ``owner`` registered (id -> key) and those revoked (id -> when)."""
    keys: dict[str, Ed25519PublicKey] = {}
    revoked: dict[str, str] = {}
    rows = session.execute(select(SigningKeyRow).where(SigningKeyRow.principal_id == owner))
    for row in rows.scalars():
        try:
            keys[row.key_id] = public_key_from_b64(row.public_key)
        except (ValueError, TypeError):
            continue  # a key that cannot verify anything is as good as unknown
        if row.revoked_seq is not None:
            revoked[row.key_id] = (
                f"at seq {row.revoked_seq}"
                if row.revoked_at is None
                else f"at {st.format_time(_aware(row.revoked_at))} (seq {row.revoked_seq})"
            )
    return keys, revoked


def _normalise_digest(value: Any) -> str | None:
    if isinstance(value, str):
        text = value.strip()
        if DIGEST_PATTERN.fullmatch(text):
            return text
        if len(text) == 64 and DIGEST_PATTERN.fullmatch("sha256:" + text):
            return "sha256:" + text
    return None


class ContractService:
    def __init__(self, store: LedgerStore, pseudonym_key: bytes) -> None:
        self.store = store
        self._pseudonym_key = pseudonym_key

    # -- registration ----------------------------------------------------------------------------

    def register(
        self, caller: Principal, project: str, envelope: Any
    ) -> tuple[dict[str, Any], bool]:
        """Verify and register a signed contract. Returns ``(contract, created)``.

        Registering the very same envelope again returns the registered contract
        (``created=False``); another envelope under a registered id is a conflict.
        """
        names.project(project)
        opened = open_envelope(envelope)
        statement = opened.statement
        if statement.project != project:
            raise InvalidInput(
                f"the contract is for project {statement.project!r}, not {project!r}"
            )
        digest = st.envelope_digest(envelope)
        now = clock.now()
        if statement.expires <= now:
            raise InvalidInput(
                f"contract {statement.id} expired at {statement.predicate['expires']}"
            )
        refusal: str | None = None
        with self.store.transaction() as tx:
            tx.lock()
            session = tx.session
            existing = session.get(DataContractRow, statement.id)
            if existing is not None:
                if existing.envelope_digest == digest:
                    return self._contract_dict(session, existing), False
                raise Conflict(f"another contract is already registered as {statement.id}")
            try:
                self._check_registration(session, caller, opened)
            except _Refusal as exc:
                refusal = exc.reason
            else:
                tx.append(
                    actor=caller.id,
                    action="contract.registered",
                    subject={"project": project, "kind": "contract", "name": statement.id},
                    payload={
                        "contract_id": statement.id,
                        "owner": statement.owner,
                        "key_id": opened.key_id,
                        "purpose": statement.purpose,
                        "expires": statement.predicate["expires"],
                        "envelope_digest": digest,
                        "subjects": [
                            {"name": s.full_name, "kind": s.kind, "digest": s.digest}
                            for s in statement.subjects
                        ],
                        "envelope": envelope,
                    },
                )
        if refusal is not None:
            with self.store.transaction() as tx:
                tx.append(
                    actor=caller.id,
                    action="contract.refused",
                    subject={"project": project, "kind": "contract", "name": statement.id},
                    payload={
                        "contract_id": statement.id,
                        "owner": statement.owner,
                        "key_id": opened.key_id,
                        "envelope_digest": digest,
                        "reason": refusal,
                    },
                )
            raise Refused(refusal, contract_id=statement.id)
        with self.store.db.read() as session:
            return self.get(session, statement.id), True

    def _check_registration(self, session: Session, caller: Principal, opened: Opened) -> None:
        statement = opened.statement
        if statement.owner != caller.id:
            raise _Refusal(
                "wrong_owner",
                f"contract {statement.id} names {statement.owner} as its owner; only the owner "
                f"registers it with their own key ({caller.id} may not)",
            )
        keys, revoked = _owner_keys(session, statement.owner)
        try:
            check_signature(opened, keys, revoked)
        except SignatureProblem as exc:
            raise _Refusal(exc.code, f"contract {statement.id} refused: {exc.reason}") from None
        for subject in statement.subjects:
            version = find_version(
                session, subject.project, subject.kind, subject.name, subject.version
            )
            if version is None:
                raise _Refusal(
                    "unknown_data",
                    f"contract {statement.id} refused: {subject.ref} does not exist in project "
                    f"{subject.project}",
                )
            if version.digest != subject.digest:
                raise _Refusal(
                    "digest_mismatch",
                    f"contract {statement.id} refused: {subject.ref} has digest "
                    f"{version.digest}, not {subject.digest}",
                )
            if version.stage != APPROVED:
                raise _Refusal(
                    "data_not_approved",
                    f"contract {statement.id} refused: {subject.ref} is {version.stage}; only "
                    "approved datasets and rubrics may be covered",
                )

    # -- revocation ------------------------------------------------------------------------------

    def revoke(self, caller: Principal, contract_id: str, reason: str) -> dict[str, Any]:
        """Revoke a contract: from now on no job may use it (the API checks the role)."""
        if not reason.strip():
            raise InvalidInput("a reason is required")
        with self.store.transaction() as tx:
            tx.lock()
            row = tx.session.get(DataContractRow, contract_id)
            if row is None:
                raise NotFound(f"contract {contract_id} is not registered")
            if row.revoked_seq is not None:
                raise Conflict(f"contract {contract_id} is already revoked")
            tx.append(
                actor=caller.id,
                action="contract.revoked",
                subject={"project": row.project, "kind": "contract", "name": contract_id},
                payload={"contract_id": contract_id, "reason": reason[:2000]},
            )
        with self.store.db.read() as session:
            return self.get(session, contract_id)

    # -- queries ---------------------------------------------------------------------------------

    def row(self, session: Session, contract_id: str) -> DataContractRow:
        row = session.get(DataContractRow, contract_id) if isinstance(contract_id, str) else None
        if row is None:
            raise NotFound(f"contract {contract_id} is not registered")
        return row

    def get(self, session: Session, contract_id: str) -> dict[str, Any]:
        return self._contract_dict(session, self.row(session, contract_id), envelope=True)

    def contracts(
        self,
        session: Session,
        project: str,
        state: str | None = None,
        purpose: str | None = None,
        covers: str | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        """Contracts of a project, newest first; ``covers`` filters by a subject digest."""
        names.project(project)
        if state is not None and state not in STATES:
            raise InvalidInput(f"state must be one of {', '.join(STATES)}")
        query = select(DataContractRow).where(DataContractRow.project == project)
        now = clock.now()
        if state == "revoked":
            query = query.where(DataContractRow.revoked_seq.is_not(None))
        elif state == "active":
            query = query.where(
                DataContractRow.revoked_seq.is_(None), DataContractRow.expires_at > now
            )
        elif state == "expired":
            query = query.where(
                DataContractRow.revoked_seq.is_(None), DataContractRow.expires_at <= now
            )
        if purpose is not None:
            query = query.where(DataContractRow.purpose == purpose)
        if covers is not None:
            query = query.where(
                DataContractRow.id.in_(
                    select(DataContractSubjectRow.contract_id).where(
                        DataContractSubjectRow.digest == covers
                    )
                )
            )
        rows = session.execute(
            query.order_by(DataContractRow.registered_seq.desc()).limit(limit)
        ).scalars()
        return [self._contract_dict(session, r) for r in rows]

    def _contract_dict(
        self, session: Session, row: DataContractRow, *, envelope: bool = False
    ) -> dict[str, Any]:
        stored = json.loads(row.envelope)
        statement = open_envelope(stored).statement
        expires = _aware(row.expires_at)
        if row.revoked_seq is not None:
            state = "revoked"
        elif expires <= clock.now():
            state = "expired"
        else:
            state = "active"
        subjects = session.execute(
            select(DataContractSubjectRow)
            .where(DataContractSubjectRow.contract_id == row.id)
            .order_by(DataContractSubjectRow.name)
        ).scalars()
        out: dict[str, Any] = {
            "id": row.id,
            "project": row.project,
            "owner": row.owner,
            "key_id": row.key_id,
            "purpose": row.purpose,
            "state": state,
            "expires_at": expires,
            "registered_seq": row.registered_seq,
            "registered_at": _aware(row.registered_at),
            "revoked_seq": row.revoked_seq,
            "revoked_at": _aware(row.revoked_at) if row.revoked_at else None,
            "revoked_reason": row.revoked_reason,
            "envelope_digest": row.envelope_digest,
            "subjects": [{"name": s.name, "kind": s.kind, "digest": s.digest} for s in subjects],
            "statement": statement.to_dict(),
        }
        if envelope:
            out["envelope"] = stored
        return out

    # -- the job check ---------------------------------------------------------------------------

    def check_for_job(
        self,
        session: Session,
        presented: dict[str, Any] | str,
        *,
        input_digests: Sequence[str],
        purpose: str,
        consumer: str,
        project: str,
    ) -> ContractDecision:
        """May a job of ``project`` run by ``consumer`` for ``purpose`` read ``input_digests``
        under the ``presented`` contract (a DSSE envelope, or a registered contract's id)?

        Reads only; fails closed. See the module docstring for the refusal codes.
        """
        contract_id: str | None = None
        digest: str | None = None
        try:
            if isinstance(presented, str):
                row = session.get(DataContractRow, presented)
                if row is None:
                    raise _Refusal("unknown_contract", f"contract {presented!r} is not registered")
                contract_id = row.id
                # re-verify what is stored: a tampered row must not authorise anything
                stored = self._verified(session, json.loads(row.envelope))
                if (stored.statement.id, stored.statement.owner) != (row.id, row.owner):
                    raise _Refusal("malformed", f"the stored envelope of {row.id} is not its own")
                digest = row.envelope_digest
            elif isinstance(presented, dict):
                opened = self._verified(session, presented)
                contract_id = opened.statement.id
                row = session.get(DataContractRow, contract_id)
                if row is None:
                    raise _Refusal("unknown_contract", f"contract {contract_id} is not registered")
                registered = open_envelope(json.loads(row.envelope))
                if registered.payload != opened.payload or row.project != opened.statement.project:
                    raise _Refusal(
                        "not_registered",
                        f"the presented envelope is not the contract registered as {contract_id}",
                    )
                digest = row.envelope_digest
            else:
                raise _Refusal(
                    "malformed", "the presented contract is neither a DSSE envelope nor an id"
                )
            self._usable(session, row, input_digests, purpose, consumer, project)
        except _Refusal as exc:
            named = contract_id or exc.contract_id
            return ContractDecision(named, False, exc.reason, digest, exc.code)
        return ContractDecision(contract_id, True, None, digest, None)

    def _verified(self, session: Session, envelope: Any) -> Opened:
        try:
            opened = open_envelope(envelope)
        except ControlPlaneError as exc:
            raise _Refusal(
                "malformed", f"the presented contract is malformed: {exc.detail}"
            ) from None
        keys, revoked = _owner_keys(session, opened.statement.owner)
        try:
            check_signature(opened, keys, revoked)
        except SignatureProblem as exc:
            claimed = opened.statement.id
            known = session.get(DataContractRow, claimed) is not None
            raise _Refusal(exc.code, exc.reason, claimed if known else None) from None
        return opened

    def _usable(
        self,
        session: Session,
        row: DataContractRow,
        input_digests: Sequence[str],
        purpose: str,
        consumer: str,
        project: str,
    ) -> None:
        cid = row.id
        statement = open_envelope(json.loads(row.envelope)).statement
        if row.revoked_seq is not None:
            raise _Refusal(
                "revoked",
                f"contract {cid} was revoked (seq {row.revoked_seq}): {row.revoked_reason}",
            )
        if statement.expires <= clock.now():
            raise _Refusal("expired", f"contract {cid} expired at {statement.predicate['expires']}")
        if isinstance(input_digests, str) or not list(input_digests):
            raise _Refusal("no_inputs", "the job names no input digests for the contract to cover")
        for raw in input_digests:
            wanted = _normalise_digest(raw)
            subject = statement.covering(wanted) if wanted else None
            if subject is None:
                raise _Refusal("not_covered", f"contract {cid} does not cover input {raw}")
            version = find_version(
                session, subject.project, subject.kind, subject.name, subject.version
            )
            if version is None or version.digest != subject.digest:
                raise _Refusal(
                    "data_not_approved", f"{subject.ref} covered by contract {cid} is gone"
                )
            if version.stage != APPROVED:
                raise _Refusal(
                    "data_not_approved",
                    f"{subject.ref} covered by contract {cid} is {version.stage}, not approved",
                )
        if purpose != statement.purpose:
            raise _Refusal(
                "wrong_purpose",
                f"contract {cid} allows purpose {statement.purpose}, not {purpose}",
            )
        if not statement.allows_consumer(consumer, project):
            raise _Refusal(
                "wrong_consumer",
                f"contract {cid} allows neither consumer {consumer} nor project {project}",
            )

    # -- annotator identities --------------------------------------------------------------------

    def resolve_annotator(
        self, caller: Principal, contract_id: str, pseudonym: str
    ) -> dict[str, Any]:
        """Who is behind ``pseudonym``, if the contract allows ``caller`` to ask.

        The contract must be usable (registered, not revoked, not expired), allow identity
        resolution, and name the caller among its resolvers; the pseudonym must be an
        annotator of a dataset it covers. A resolution is ledgered (``annotator.resolved``)
        without naming the person: the entry holds a keyed commitment to the pseudonym, which
        the operator (who holds the pseudonym secret) can match to answer "who looked me up?"
        and nobody else can. A refused attempt is ledgered too.
        """
        if not isinstance(pseudonym, str) or not 0 < len(pseudonym) <= 80:
            raise InvalidInput("pseudonym must be a string of 1-80 characters")
        refusal: str | None = None
        with self.store.transaction() as tx:
            tx.lock()
            session = tx.session
            row = self.row(session, contract_id)
            statement = open_envelope(json.loads(row.envelope)).statement
            subject = {"project": row.project, "kind": "contract", "name": row.id}
            try:
                self._check_resolution(session, caller, row, statement, pseudonym)
            except _Refusal as exc:
                refusal = exc.reason
            else:
                mapping = session.get(AnnotatorPseudonymRow, pseudonym)
                if mapping is None or mapping.project != row.project:
                    raise NotFound(
                        "no identity is on record for this pseudonym (never recorded, or erased)"
                    )
                entry = tx.append(
                    actor=caller.id,
                    action="annotator.resolved",
                    subject=subject,
                    payload={"contract_id": row.id, "commitment": self._commitment(pseudonym)},
                )
                return {
                    "contract_id": row.id,
                    "pseudonym": pseudonym,
                    "annotator": mapping.annotator,
                    "seq": entry.seq,
                }
        assert refusal is not None
        with self.store.transaction() as tx:
            tx.append(
                actor=caller.id,
                action="annotator.resolution_refused",
                subject=subject,
                payload={"contract_id": row.id, "reason": refusal},
            )
        raise Refused(refusal)

    def _check_resolution(
        self,
        session: Session,
        caller: Principal,
        row: DataContractRow,
        statement: st.ContractStatement,
        pseudonym: str,
    ) -> None:
        cid = row.id
        if row.revoked_seq is not None:
            raise _Refusal("revoked", f"contract {cid} was revoked")
        if statement.expires <= clock.now():
            raise _Refusal("expired", f"contract {cid} has expired")
        if statement.identity_resolution != "allowed":
            raise _Refusal("forbidden", f"contract {cid} forbids resolving annotator identities")
        if caller.id not in statement.resolvers:
            raise _Refusal(
                "not_resolver", f"contract {cid} does not name {caller.id} among its resolvers"
            )
        for subject in statement.subjects:
            if subject.kind != "dataset":
                continue
            version = session.execute(
                select(ArtifactVersionRow.metadata_json).where(
                    ArtifactVersionRow.project == subject.project,
                    ArtifactVersionRow.kind == subject.kind,
                    ArtifactVersionRow.name == subject.name,
                    ArtifactVersionRow.version == subject.version,
                )
            ).scalar_one_or_none()
            stats = json.loads(version).get("stats", {}) if version else {}
            if pseudonym in (stats.get("rows_per_annotator") or {}):
                return
        raise _Refusal(
            "not_covered", f"the pseudonym is not an annotator of the data contract {cid} covers"
        )

    def _commitment(self, pseudonym: str) -> str:
        mac = hmac.new(self._pseudonym_key, b"resolution\x00" + pseudonym.encode(), hashlib.sha256)
        return mac.hexdigest()


__all__ = ["ContractDecision", "ContractService"]
