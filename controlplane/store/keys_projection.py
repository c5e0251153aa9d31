"""Projection of the server's checkpoint-signing keys (``server_key.registered`` / ``.rotated``).

Both make the entry's key current and retire the one before it at the entry's seq; retired
keys stay listed, since every checkpoint they signed before retiring must still verify.
"""

from __future__ import annotations

from sqlalchemy import update
from sqlalchemy.orm import Session

from controlplane.ledger.entry import Entry
from controlplane.store.models import ServerKeyRow
from controlplane.store.projector import projects


@projects("server_key.rotated")
@projects("server_key.registered")
def _server_key_registered(session: Session, entry: Entry) -> None:
    payload = entry.payload
    session.execute(
        update(ServerKeyRow).where(ServerKeyRow.retired_seq.is_(None)).values(retired_seq=entry.seq)
    )
    session.add(
        ServerKeyRow(
            key_id=payload["key_id"],
            note_name=payload["note_name"],
            public_key=payload["public_key"],
            verifier=payload["verifier"],
            registered_seq=entry.seq,
        )
    )
    session.flush()
