"""The ledger: entries, signed checkpoints, signing keys, proofs and the audit export.

These paths are fixed (other tools depend on them). Hashes are lowercase hex; an entry is
served exactly as hashed, plus its ``entry_hash``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from fastapi.responses import StreamingResponse

from controlplane import clock
from controlplane.api.deps import CP, Caller, ReadSession
from controlplane.api.schemas import Checkpoint, ConsistencyProof, InclusionProof
from controlplane.errors import InvalidInput, NotFound
from controlplane.ledger.entry import format_timestamp
from controlplane.store.models import CheckpointRow, ServerKeyRow

router = APIRouter(prefix="/v1/ledger", tags=["ledger"])

BUNDLE_FORMAT = "controlplane-audit-bundle/v1"
MAX_INT = 2**63 - 1


def _checkpoint(cp: CP, row: CheckpointRow) -> Checkpoint:
    return Checkpoint(
        origin=cp.signer.origin,
        tree_size=row.tree_size,
        root_hash=row.root_hash,
        key_id=row.key_id,
        note=row.note,
        created_at=row.created_at,
    )


def _read(cp: CP, session: ReadSession, caller: Caller, obj: str = "ledger") -> None:
    cp.identity.authorize(session, caller, "*", obj, "read", any_project=True)


def _tree_size(cp: CP, session: ReadSession) -> int:
    latest = cp.store.latest_checkpoint(session)
    return 0 if latest is None else latest.tree_size


@router.get("/checkpoint", response_model=Checkpoint)
def latest_checkpoint(cp: CP, session: ReadSession, caller: Caller) -> Checkpoint:
    """The latest signed checkpoint (C2SP signed note) with its parsed size and root."""
    _read(cp, session, caller)
    row = cp.store.latest_checkpoint(session)
    if row is None:
        raise NotFound("the ledger is empty")
    return _checkpoint(cp, row)


@router.get("/checkpoints")
def list_checkpoints(
    cp: CP,
    session: ReadSession,
    caller: Caller,
    start: Annotated[int, Query(ge=0, le=MAX_INT, description="smallest tree size")] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    sample: Annotated[
        int | None, Query(ge=1, le=10000, description="spread sample of at most this many")
    ] = None,
) -> dict[str, Any]:
    """Signed checkpoints, all kept: a range by tree size, or a sample spread over history."""
    _read(cp, session, caller)
    rows = (
        cp.store.sampled_checkpoints(session, sample)
        if sample
        else cp.store.checkpoints(session, start, limit)
    )
    data = [_checkpoint(cp, r).model_dump(mode="json") for r in rows]
    return {"data": data, "count": len(data)}


@router.get("/keys")
def signing_keys(cp: CP, session: ReadSession, caller: Caller) -> dict[str, Any]:
    """Checkpoint signing keys, current and retired, as note verifier keys."""
    _read(cp, session, caller)
    rows = session.query(ServerKeyRow).order_by(ServerKeyRow.registered_seq).all()
    data = [
        {
            "key_id": r.key_id,
            "note_name": r.note_name,
            "public_key": r.public_key,
            "verifier": r.verifier,
            "registered_seq": r.registered_seq,
            "retired_seq": r.retired_seq,
        }
        for r in rows
    ]
    return {"origin": cp.signer.origin, "data": data, "count": len(data)}


@router.get("/entries")
def list_entries(
    cp: CP,
    session: ReadSession,
    caller: Caller,
    start: Annotated[int, Query(ge=0, le=MAX_INT)] = 0,
    limit: Annotated[int, Query(ge=1, le=5000)] = 100,
    actor: Annotated[str | None, Query(max_length=200)] = None,
    action: Annotated[str | None, Query(max_length=100)] = None,
    kind: Annotated[str | None, Query(max_length=50)] = None,
    name: Annotated[str | None, Query(max_length=300)] = None,
    project: Annotated[str | None, Query(max_length=100)] = None,
) -> dict[str, Any]:
    """Entries from ``start`` in seq order; ``next_start`` pages on."""
    _read(cp, session, caller)
    data = cp.store.entries(
        session,
        start,
        limit,
        actor=actor,
        action=action,
        subject_kind=kind,
        subject_name=name,
        project=project,
    )
    next_start = data[-1]["seq"] + 1 if len(data) == limit else None
    return {"data": data, "count": len(data), "next_start": next_start}


@router.get("/entries/{seq}")
def get_entry(
    seq: Annotated[int, Path(ge=0, le=MAX_INT)], cp: CP, session: ReadSession, caller: Caller
) -> dict[str, Any]:
    _read(cp, session, caller)
    entry = cp.store.entry(session, seq)
    if entry is None:
        raise NotFound(f"no entry with seq {seq}")
    return entry


@router.get("/proofs/inclusion", response_model=InclusionProof)
def inclusion_proof(
    cp: CP,
    session: ReadSession,
    caller: Caller,
    seq: Annotated[int, Query(ge=0, le=MAX_INT)],
    tree_size: Annotated[int | None, Query(ge=1, le=MAX_INT)] = None,
) -> InclusionProof:
    """RFC 6962 audit path of entry ``seq`` in the tree of ``tree_size`` (default: latest)."""
    _read(cp, session, caller)
    size = tree_size if tree_size is not None else _tree_size(cp, session)
    if size > cp.store.size(session):
        raise InvalidInput(f"tree_size {size} is larger than the ledger")
    if seq >= size:
        raise InvalidInput(f"seq {seq} is not below tree_size {size}")
    return InclusionProof(**cp.store.inclusion_proof(session, seq, size))


@router.get("/proofs/consistency", response_model=ConsistencyProof)
def consistency_proof(
    cp: CP,
    session: ReadSession,
    caller: Caller,
    first: Annotated[int, Query(ge=1, le=MAX_INT)],
    second: Annotated[int | None, Query(ge=1, le=MAX_INT)] = None,
) -> ConsistencyProof:
    """RFC 6962 proof that the tree of ``second`` entries extends the tree of ``first``."""
    _read(cp, session, caller)
    size = second if second is not None else _tree_size(cp, session)
    if size > cp.store.size(session):
        raise InvalidInput(f"second {size} is larger than the ledger")
    if first > size:
        raise InvalidInput(f"first {first} is larger than second {size}")
    return ConsistencyProof(**cp.store.consistency_proof(session, first, size))


def bundle_chunks(cp: CP, checkpoint_sample: int = 1000) -> Iterator[bytes]:
    """The audit bundle as streamed JSON: keys, checkpoints and the entries they cover."""
    with cp.db.read() as session:
        latest = cp.store.latest_checkpoint(session)
        size = 0 if latest is None else latest.tree_size
        keys = [r.verifier for r in session.query(ServerKeyRow).all()]
        checkpoints = [r.note for r in cp.store.sampled_checkpoints(session, checkpoint_sample)]
        header = {
            "format": BUNDLE_FORMAT,
            "origin": cp.signer.origin,
            "exported_at": format_timestamp(clock.now()),
            "tree_size": size,
            "keys": keys,
            "checkpoints": checkpoints,
        }
        yield json.dumps(header)[:-1].encode() + b', "entries": ['
        first = True
        for entry in cp.store.iter_entries(session, end=size):
            yield (b"" if first else b",\n") + json.dumps(entry, ensure_ascii=False).encode()
            first = False
        yield b"]}\n"


@router.get("/export")
def export_bundle(cp: CP, session: ReadSession, caller: Caller) -> StreamingResponse:
    """Download an audit bundle that ``controlplane verify --bundle`` checks offline."""
    cp.identity.authorize(session, caller, "*", "export", "read", any_project=True)
    return StreamingResponse(
        bundle_chunks(cp),
        media_type="application/json",
        headers={"Content-Disposition": 'attachment; filename="controlplane-audit-bundle.json"'},
    )
