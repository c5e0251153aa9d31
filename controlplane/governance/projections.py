"""Projections of key, request, sign-off and stage entries."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import update
from sqlalchemy.orm import Session

from controlplane.authz.projections import entry_time
from controlplane.ledger.canonical import canonical_json
from controlplane.ledger.entry import Entry
from controlplane.registry.projections import find_version
from controlplane.store.models import PromotionRequestRow, SigningKeyRow, SignoffRow
from controlplane.store.projector import projects

CLOSING = {
    "promotion.approved": "approved",
    "promotion.rejected": "rejected",
    "promotion.withdrawn": "withdrawn",
    "promotion.expired": "expired",
}


@projects("signing_key.registered")
def _key_registered(session: Session, entry: Entry) -> None:
    session.add(
        SigningKeyRow(
            key_id=entry.payload["key_id"],
            principal_id=entry.subject["name"],
            public_key=entry.payload["public_key"],
            name=entry.payload["name"],
            registered_seq=entry.seq,
            registered_at=entry_time(entry),
        )
    )
    session.flush()


@projects("signing_key.revoked")
def _key_revoked(session: Session, entry: Entry) -> None:
    session.execute(
        update(SigningKeyRow)
        .where(SigningKeyRow.key_id == entry.payload["key_id"])
        .values(revoked_seq=entry.seq, revoked_at=entry_time(entry))
    )


@projects("promotion.requested")
def _requested(session: Session, entry: Entry) -> None:
    s, p = entry.subject, entry.payload
    when = entry_time(entry)
    session.add(
        PromotionRequestRow(
            id=entry.seq,
            project=s["project"],
            kind=s["kind"],
            name=s["name"],
            version=s["version"],
            from_stage=p["from_stage"],
            target_stage=p["target_stage"],
            traffic_share=p.get("traffic_share"),
            justification=p["justification"],
            requester=entry.actor,
            rules_seq=p["rules_seq"],
            state="open",
            opened_at=when,
            expires_at=entry_time_of(p["expires_at"]),
        )
    )
    session.flush()


def entry_time_of(text: str) -> datetime:
    """An RFC 3339 ``...Z`` time from a payload."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@projects("promotion.signed_off")
def _signed_off(session: Session, entry: Entry) -> None:
    p = entry.payload
    session.add(
        SignoffRow(
            request_id=p["request_id"],
            signer=entry.actor,
            key_id=p["key_id"],
            decision=p["decision"],
            comment=p["comment"],
            envelope=canonical_json(p["envelope"]).decode(),
            seq=entry.seq,
            signed_at=p["signed_at"],
        )
    )
    session.flush()


def _closed(session: Session, entry: Entry) -> None:
    session.execute(
        update(PromotionRequestRow)
        .where(PromotionRequestRow.id == entry.payload["request_id"])
        .values(
            state=CLOSING[entry.action],
            closed_seq=entry.seq,
            closed_at=entry_time(entry),
            closed_reason=entry.payload.get("reason"),
        )
    )


for _action in CLOSING:
    projects(_action)(_closed)


@projects("stage.changed")
def _stage_changed(session: Session, entry: Entry) -> None:
    s = entry.subject
    row = find_version(session, s["project"], s["kind"], s["name"], s["version"])
    if row is None:
        raise LookupError(f"stage change of a missing version at seq {entry.seq}")
    row.stage = entry.payload["to"]
    row.stage_seq = entry.seq
    session.flush()
