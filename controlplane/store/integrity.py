"""Server-side integrity check of a database: what ``controlplane verify --database`` runs.

Client-side verification sees only what the API serves. An operator with database access can
also check what the API does not serve: that every stored Merkle node is the hash of its
children (so proofs are honest), that the index columns copied from subjects match them, and
that the projection tables are exactly what a replay of the ledger produces.

The replay comparison is generic: every table the migrations create is a projection and is
compared row for row, except the tables named in :data:`NOT_PROJECTIONS` (the one list of
them, so a review sees every exclusion in one place) and any column whose model says
``Column(..., info={"projection": False})``. A projection table added by a later migration
is covered without touching this module. Surrogate keys (autoincrement integer ids, which
differ between databases) are left out, and a foreign key to one is replaced by the
referenced row itself.
"""

from __future__ import annotations

import json
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, MetaData, Table, func, inspect, select
from sqlalchemy.orm import Session
from sqlmodel import SQLModel

from controlplane.ledger import merkle
from controlplane.ledger.checkpoint import Checkpoint, NoteVerifier, split_note
from controlplane.ledger.entry import Entry
from controlplane.ledger.errors import LedgerError
from controlplane.ledger.verify import LinkChain, Observer, VerificationReport, verify_ledger
from controlplane.store import migrate, projector
from controlplane.store.database import Database
from controlplane.store.ledger_store import LedgerStore, entry_to_row
from controlplane.store.models import (
    CheckpointRow,
    LedgerEntryRow,
    MerkleNodeRow,
    ServerKeyRow,
)

Progress = Callable[[str, int], None]
_BATCH = 5000

#: Tables that are not projections of the ledger, so a replay cannot reproduce them.
NOT_PROJECTIONS = frozenset(
    {
        # the ledger itself, checked entry by entry and node by node above
        "ledger_entries",
        "merkle_nodes",
        "checkpoints",
        # Alembic's own bookkeeping
        "alembic_version",
        # secrets and personal data that must never enter the immutable ledger
        "api_tokens",
        "annotator_pseudonyms",
        # operational state: lease renewals and content bytes, written without an entry
        "job_leases",
        "content_blobs",
        # webhook outbox and sweep cursors (controlplane/webhooks): delivery state
        "outbox_cursors",
        "webhook_deliveries",
    }
)
_MAX_REFERENCE_DEPTH = 8


def check_database(
    store: LedgerStore,
    *,
    replay: bool = True,
    progress: Progress | None = None,
    observers: Iterable[Observer] = (),
) -> VerificationReport:
    """Verify chain, checkpoints, Merkle nodes, index columns and (optionally) projections.

    ``observers`` see every entry as :func:`verify_ledger` streams them: the callers above the
    store pass the sign-off and contract auditors (this layer cannot know them)."""
    with store.db.read() as session:
        keys = [r.verifier for r in session.execute(select(ServerKeyRow)).scalars()]
        verifiers = [NoteVerifier.parse(k) for k in keys] or [store.signer.verifier]
        notes = [r.note for r in store.sampled_checkpoints(session, 10_000)]
        report = verify_ledger(
            _checked_rows(session, store, progress),
            notes,
            verifiers,
            store.signer.origin,
            links=False,  # every link, not the sample's: _check_checkpoint_rows
            observers=observers,
        )
        _check_checkpoint_rows(session, report, verifiers)
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


def _check_checkpoint_rows(
    session: Session, report: VerificationReport, verifiers: list[NoteVerifier]
) -> None:
    """The unsigned columns of each checkpoint row must say what its signed note says (the
    API serves them beside the note), and the newest one must cover every entry: each
    transaction that appends signs a checkpoint when it commits, so entries covered by none
    mean the newest checkpoints were deleted (a client would be served the shorter ledger).

    Every row's link to the row before is checked as well (:class:`LinkChain`, complete):
    with the newest note's signature verified (it is always in the sample), a deleted,
    inserted or replaced checkpoint anywhere in the chain is named by its size. The rows are
    streamed in size order, so memory stays flat at millions of checkpoints. A row without a
    link after linked ones has its signature checked: the server's own (a replica of an earlier
    version during a rolling upgrade) restarts the chain, anything else is a stripped link."""

    def signed(note: str) -> bool:
        try:
            Checkpoint.open(note, verifiers)
        except LedgerError:
            return False
        return True

    chain = LinkChain(report, complete=True, signed=signed)
    rows = session.execute(
        select(CheckpointRow.tree_size, CheckpointRow.root_hash, CheckpointRow.note)
        .order_by(CheckpointRow.tree_size)
        .execution_options(yield_per=_BATCH)
    )
    newest = 0
    for tree_size, root_hash, note in rows:
        newest = max(newest, tree_size)
        try:
            signed = Checkpoint.parse_body(split_note(note)[0])
        except LedgerError:
            report.fail(f"checkpoint row for size {tree_size}: its note cannot be parsed")
            chain.feed(tree_size, note)
            continue
        chain.feed(tree_size, note, signed)
        if signed.size != tree_size:
            report.fail(
                f"checkpoint row for size {tree_size}: the tree_size column differs from its "
                f"signed note (size {signed.size})"
            )
        if signed.root_hash.hex() != root_hash:
            report.fail(
                f"checkpoint row for size {tree_size}: the root_hash column {root_hash} differs "
                f"from its signed note ({signed.root_hash.hex()})"
            )
    chain.finish()
    if newest < report.size:
        report.fail(
            f"the newest checkpoint covers {newest} entries but the ledger holds {report.size}: "
            f"seq {newest}..{report.size - 1} are under no signed checkpoint (checkpoints "
            "deleted?)"
        )


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
    last = session.execute(select(func.max(LedgerEntryRow.seq))).scalar_one_or_none()
    size = 0 if last is None else int(last) + 1
    level = 1
    while True:
        rows = session.execute(
            select(MerkleNodeRow.idx, MerkleNodeRow.hash)
            .where(MerkleNodeRow.level == level)
            .order_by(MerkleNodeRow.idx)
            .execution_options(yield_per=_BATCH)
        ).all()
        # Every complete subtree of the tree has its node; a deleted one (even the top one,
        # which no parent checks) leaves proofs through it unservable.
        width = 1 << level
        stored = {idx for idx, _ in rows}
        for idx in range(size >> level):
            if idx not in stored:
                report.fail(
                    f"stored Merkle node (level {level}, index {idx}) is missing: proofs for "
                    f"seq {idx * width}..{(idx + 1) * width - 1} cannot be served"
                )
        if not rows and width > size:
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


@dataclass(frozen=True)
class _Plan:
    """How one table's rows are compared: which columns are left out, which are replaced by
    the row they reference (a foreign key to another table's surrogate key)."""

    name: str
    surrogate: str | None
    skipped: frozenset[str]
    references: dict[str, str]  # column -> referenced table (its surrogate key)
    compared: bool


def _plans(connection: Connection) -> tuple[dict[str, _Plan], dict[str, Table]]:
    """Plans for every table of the (freshly migrated) replay database.

    Tables come from the models when they have one (their types read both databases alike),
    else from reflection; the plan is made once and applied to both databases.
    """
    names = set(inspect(connection).get_table_names())
    models = SQLModel.metadata.tables
    known = {name: models[name] for name in names & set(models)}
    reflected = MetaData()
    if names - set(known):
        reflected.reflect(bind=connection, only=sorted(names - set(known)))
    tables = {**{t.name: t for t in reflected.tables.values() if t.name in names}, **known}
    plans = {}
    for name, table in tables.items():
        surrogate = table.autoincrement_column
        skipped = {c.name for c in table.columns if c.info.get("projection") is False}
        if surrogate is not None:
            skipped.add(surrogate.name)
        references = {}
        for column in table.columns:
            for fk in column.foreign_keys:
                key = fk.column.table.autoincrement_column
                if key is not None and key.name == fk.column.name:
                    references[column.name] = fk.column.table.name
        plans[name] = _Plan(
            name=name,
            surrogate=None if surrogate is None else surrogate.name,
            skipped=frozenset(skipped),
            references=references,
            compared=name not in NOT_PROJECTIONS,
        )
    return plans, tables


def _needed(plans: dict[str, _Plan]) -> set[str]:
    """The compared tables and every table they reference, transitively."""
    needed = {name for name, plan in plans.items() if plan.compared}
    todo = list(needed)
    while todo:
        for target in plans[todo.pop()].references.values():
            if target in plans and target not in needed:
                needed.add(target)
                todo.append(target)
    return needed


def _normal(value: Any) -> Any:
    """One spelling per value on both databases (hashable, so rows can be counted)."""
    if isinstance(value, memoryview):
        return bytes(value)
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if isinstance(value, list | dict):
        return json.dumps(value, sort_keys=True, default=str)
    return value


def _snapshot(
    session: Session, plans: dict[str, _Plan], tables: dict[str, Table]
) -> dict[str, Counter[tuple[Any, ...]]]:
    """Every compared table as a multiset of rows, surrogate ids resolved to what they name."""
    connection = session.connection()
    present = set(inspect(connection).get_table_names())
    raw: dict[str, list[dict[str, Any]]] = {}
    for name in sorted(_needed(plans) & present):
        table = tables[name]
        if name not in SQLModel.metadata.tables:  # reflected: read with this database's types
            table = Table(name, MetaData(), autoload_with=connection)
        raw[name] = [dict(row) for row in session.execute(select(table)).mappings()]
    by_id = {
        name: {row[plans[name].surrogate]: row for row in rows}
        for name, rows in raw.items()
        if plans[name].surrogate is not None
    }
    memo: dict[tuple[str, Any], Any] = {}

    def represent(name: str, row: dict[str, Any], depth: int) -> tuple[Any, ...]:
        plan = plans[name]
        out = []
        for column in sorted(row):
            if column in plan.skipped:
                continue
            value = row[column]
            target = plan.references.get(column)
            if target is not None and value is not None and depth < _MAX_REFERENCE_DEPTH:
                value = referenced(target, value, depth + 1)
            out.append((column, _normal(value)))
        return tuple(out)

    def referenced(name: str, key: Any, depth: int) -> Any:
        if (name, key) not in memo:
            row = by_id.get(name, {}).get(key)
            memo[(name, key)] = (
                (name, "missing row") if row is None else (name, represent(name, row, depth))
            )
        return memo[(name, key)]

    return {
        name: Counter(represent(name, row, 0) for row in raw.get(name, []))
        for name, plan in plans.items()
        if plan.compared and name in present
    }


def _sample(rows: Iterable[tuple[Any, ...]]) -> list[str]:
    return [text[:300] for text in sorted(str(dict(row)) for row in rows)[:3]]


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
                plans, tables = _plans(replayed.connection())
                expected = _snapshot(replayed, plans, tables)
        finally:
            scratch.dispose()
    actual = _snapshot(session, plans, tables)
    for table, rows in sorted(expected.items()):
        if table not in actual:
            report.fail(f"projection table {table} is missing: is the database migrated?")
            continue
        missing, extra = rows - actual[table], actual[table] - rows
        if missing or extra:
            report.fail(
                f"projection {table} differs from a replay of the ledger: "
                f"{sum(missing.values())} row(s) missing, {sum(extra.values())} unexpected, "
                f"e.g. {_sample(missing or extra)}"
            )


__all__ = ["check_database"]
