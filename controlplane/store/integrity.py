"""Server-side integrity check of a database: what ``controlplane verify --database`` runs.

Client-side verification sees only what the API serves. An operator with database access can
also check what the API does not serve: that every stored Merkle node is the hash of its
children (so proofs are honest), that the index columns copied from subjects match them, and
that the projection tables are exactly what a replay of the ledger produces.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from controlplane.ledger import merkle
from controlplane.ledger.checkpoint import NoteVerifier
from controlplane.ledger.entry import Entry
from controlplane.ledger.errors import LedgerError
from controlplane.ledger.verify import VerificationReport, verify_ledger
from controlplane.store import migrate, projector
from controlplane.store.database import Database
from controlplane.store.ledger_store import LedgerStore, entry_to_row
from controlplane.store.models import (
    ArtifactRow,
    ArtifactVersionRow,
    LedgerEntryRow,
    LineageEdgeRow,
    MerkleNodeRow,
    PrincipalRow,
    RoleGrantRow,
    ServerKeyRow,
)

Progress = Callable[[str, int], None]
_BATCH = 5000


def check_database(
    store: LedgerStore, *, replay: bool = True, progress: Progress | None = None
) -> VerificationReport:
    """Verify chain, checkpoints, Merkle nodes, index columns and (optionally) projections."""
    with store.db.read() as session:
        keys = [r.verifier for r in session.execute(select(ServerKeyRow)).scalars()]
        verifiers = [NoteVerifier.parse(k) for k in keys] or [store.signer.verifier]
        notes = [r.note for r in store.sampled_checkpoints(session, 10_000)]
        report = verify_ledger(
            _checked_rows(session, store, progress), notes, verifiers, store.signer.origin
        )
        if replay and report.ok:
            _check_projections(session, store, report, progress)
        _check_nodes(session, report, progress)
        _check_index_columns(session, report)
    return report


def _checked_rows(session: Session, store: LedgerStore, progress: Progress | None) -> Any:
    for count, entry in enumerate(store.iter_entries(session, _BATCH), start=1):
        if progress and count % 10_000 == 0:
            progress("entries", count)
        yield entry


def _check_nodes(session: Session, report: VerificationReport, progress: Progress | None) -> None:
    """Every stored node must be the hash of its stored children (leaves: of the entry)."""
    leaves = session.execute(
        select(LedgerEntryRow.seq, LedgerEntryRow.entry_hash, MerkleNodeRow.hash)
        .outerjoin(
            MerkleNodeRow, (MerkleNodeRow.level == 0) & (MerkleNodeRow.idx == LedgerEntryRow.seq)
        )
        .order_by(LedgerEntryRow.seq)
        .execution_options(yield_per=_BATCH)
    )
    for seq, entry_hash, stored in leaves:
        try:
            expected = merkle.leaf_hash(bytes.fromhex(entry_hash))
        except ValueError:
            continue  # the chain check already named this entry
        if stored is None or bytes(stored) != expected:
            report.fail("stored Merkle leaf does not match the entry", seq)
    level = 1
    while True:
        rows = session.execute(
            select(MerkleNodeRow.idx, MerkleNodeRow.hash)
            .where(MerkleNodeRow.level == level)
            .order_by(MerkleNodeRow.idx)
            .execution_options(yield_per=_BATCH)
        ).all()
        if not rows:
            return
        children = dict(
            session.execute(
                select(MerkleNodeRow.idx, MerkleNodeRow.hash).where(
                    MerkleNodeRow.level == level - 1
                )
            ).all()
        )
        for idx, value in rows:
            left, right = children.get(2 * idx), children.get(2 * idx + 1)
            if (
                left is None
                or right is None
                or merkle.node_hash(bytes(left), bytes(right)) != bytes(value)
            ):
                first = idx << level
                report.fail(
                    f"stored Merkle node (level {level}, index {idx}) is not the hash of its "
                    f"children: proofs for seq {first}..{first + (1 << level) - 1} would lie"
                )
        if progress:
            progress(f"merkle level {level}", len(rows))
        level += 1


def _check_index_columns(session: Session, report: VerificationReport) -> None:
    rows = session.execute(select(LedgerEntryRow).execution_options(yield_per=_BATCH)).scalars()
    for row in rows:
        try:
            entry = Entry.from_dict(
                {
                    "seq": row.seq,
                    "timestamp": row.timestamp,
                    "actor": row.actor,
                    "action": row.action,
                    "subject": _json(row.subject),
                    "payload": _json(row.payload),
                    "prev_hash": row.prev_hash,
                    "entry_hash": row.entry_hash,
                }
            )
        except (LedgerError, ValueError):
            continue
        expected = entry_to_row(entry)
        for column in ("subject_kind", "subject_name", "project"):
            if getattr(row, column) != expected[column]:
                report.fail(f"index column {column} does not match the entry's subject", row.seq)


def _json(text: str) -> Any:
    return json.loads(text)


def _snapshot(session: Session) -> dict[str, set[tuple[Any, ...]]]:
    """Projection tables by natural keys (surrogate ids differ between databases)."""
    versions = {
        v.id: (v.project, v.kind, v.name, v.version)
        for v in session.execute(select(ArtifactVersionRow)).scalars()
    }
    return {
        "principals": {
            (p.id, p.kind, p.display_name, bool(p.disabled), p.created_by)
            for p in session.execute(select(PrincipalRow)).scalars()
        },
        "role_grants": {
            (g.principal_id, g.role, g.project, g.granted_seq)
            for g in session.execute(select(RoleGrantRow)).scalars()
        },
        "server_keys": {
            (k.key_id, k.verifier, k.registered_seq, k.retired_seq)
            for k in session.execute(select(ServerKeyRow)).scalars()
        },
        "artifacts": {
            (a.project, a.kind, a.name, a.latest_version, a.created_by)
            for a in session.execute(select(ArtifactRow)).scalars()
        },
        "artifact_versions": {
            (
                v.project,
                v.kind,
                v.name,
                v.version,
                v.digest,
                v.uri,
                v.metadata_json,
                v.created_by,
                v.ledger_seq,
            )
            for v in session.execute(select(ArtifactVersionRow)).scalars()
        },
        "lineage_edges": {
            (versions.get(e.child_id), versions.get(e.parent_id), e.relation)
            for e in session.execute(select(LineageEdgeRow)).scalars()
        },
    }


def _check_projections(
    session: Session, store: LedgerStore, report: VerificationReport, progress: Progress | None
) -> None:
    """Replay every entry into a scratch SQLite database and compare the projections."""
    with tempfile.TemporaryDirectory(prefix="controlplane-replay-") as tmp:
        url = f"sqlite:///{Path(tmp) / 'replay.db'}"
        migrate.upgrade(url)
        scratch = Database(url)
        try:
            with scratch.write_session() as target:
                for count, data in enumerate(store.iter_entries(session, _BATCH), start=1):
                    entry = Entry.from_dict(data)
                    try:
                        projector.apply(target, entry)
                    except Exception as exc:  # a ledger the projections cannot replay
                        report.fail(f"replay failed: {exc}", entry.seq)
                        return
                    if progress and count % 10_000 == 0:
                        progress("replay", count)
                target.commit()
            with scratch.read() as replayed:
                expected = _snapshot(replayed)
        finally:
            scratch.dispose()
    actual = _snapshot(session)
    for table, rows in expected.items():
        missing, extra = rows - actual[table], actual[table] - rows
        if missing or extra:
            sample = sorted(map(str, (missing or extra)))[:3]
            report.fail(
                f"projection {table} differs from a replay of the ledger: "
                f"{len(missing)} row(s) missing, {len(extra)} unexpected, e.g. {sample}"
            )


__all__ = ["check_database"]
