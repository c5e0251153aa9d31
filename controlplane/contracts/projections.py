"""Projections of ``contract.registered`` and ``contract.revoked`` into the contract tables.

Everything a row holds comes from the entry (the envelope itself is in the payload), so a
replay of the ledger on an empty database rebuilds the tables exactly.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import update
from sqlalchemy.orm import Session

from controlplane.authz.projections import entry_time
from controlplane.ledger.canonical import canonical_json
from controlplane.ledger.entry import Entry
from controlplane.store.models import DataContractRow, DataContractSubjectRow
from controlplane.store.projector import projects


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@projects("contract.registered")
def _registered(session: Session, entry: Entry) -> None:
    payload = entry.payload
    contract_id = payload["contract_id"]
    session.add(
        DataContractRow(
            id=contract_id,
            project=entry.subject["project"],
            owner=payload["owner"],
            key_id=payload["key_id"],
            purpose=payload["purpose"],
            envelope=canonical_json(payload["envelope"]).decode(),
            envelope_digest=payload["envelope_digest"],
            expires_at=_time(payload["expires"]),
            registered_seq=entry.seq,
            registered_at=entry_time(entry),
        )
    )
    session.flush()
    for subject in payload["subjects"]:
        session.add(
            DataContractSubjectRow(
                contract_id=contract_id,
                name=subject["name"],
                kind=subject["kind"],
                digest=subject["digest"],
            )
        )
    session.flush()


@projects("contract.revoked")
def _revoked(session: Session, entry: Entry) -> None:
    session.execute(
        update(DataContractRow)
        .where(DataContractRow.id == entry.payload["contract_id"])
        .values(
            revoked_seq=entry.seq,
            revoked_at=entry_time(entry),
            revoked_reason=entry.payload["reason"],
        )
    )
