"""Projections of principal and role entries."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete
from sqlalchemy.orm import Session

from controlplane.ledger.entry import Entry
from controlplane.store.models import PrincipalRow, RoleGrantRow
from controlplane.store.projector import projects


def entry_time(entry: Entry) -> datetime:
    return datetime.fromisoformat(entry.timestamp.replace("Z", "+00:00"))


@projects("principal.created")
def _principal_created(session: Session, entry: Entry) -> None:
    session.add(
        PrincipalRow(
            id=entry.subject["name"],
            kind=entry.payload["kind"],
            display_name=entry.payload["display_name"],
            created_at=entry_time(entry),
            created_by=entry.actor,
        )
    )
    session.flush()


@projects("principal.disabled")
def _principal_disabled(session: Session, entry: Entry) -> None:
    row = session.get(PrincipalRow, entry.subject["name"])
    if row is not None:
        row.disabled = True
        session.flush()


@projects("role.granted")
def _role_granted(session: Session, entry: Entry) -> None:
    session.add(
        RoleGrantRow(
            principal_id=entry.subject["name"],
            role=entry.payload["role"],
            project=entry.payload["project"],
            granted_seq=entry.seq,
        )
    )
    session.flush()


@projects("role.revoked")
def _role_revoked(session: Session, entry: Entry) -> None:
    session.execute(
        delete(RoleGrantRow).where(
            RoleGrantRow.principal_id == entry.subject["name"],
            RoleGrantRow.role == entry.payload["role"],
            RoleGrantRow.project == entry.payload["project"],
        )
    )
