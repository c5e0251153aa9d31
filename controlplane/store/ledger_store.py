"""The append transaction and the ledger's read side.

Appending takes the chain head under a lock (PostgreSQL advisory lock, SQLite ``BEGIN
IMMEDIATE``), computes the entry, stores its Merkle nodes and runs its projection, all in one
transaction; committing signs one checkpoint over the new size, then tells the post-commit
listeners (:attr:`LedgerStore.listeners`) what was appended. ``UNIQUE(prev_hash)`` and the
primary key on ``seq`` are a second line of defence: a forked or gapped chain cannot commit.

Reads fetch stored nodes and hand them to :mod:`controlplane.ledger.merkle`, which does all the
tree math, so a proof at any size costs one indexed query for O(log n) rows.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import and_, func, insert, or_, select, text
from sqlalchemy.orm import Session

from controlplane import clock
from controlplane.crypto.keys import key_id
from controlplane.ledger import merkle
from controlplane.ledger.canonical import canonical_json
from controlplane.ledger.checkpoint import Checkpoint, CheckpointLink, NoteVerifier
from controlplane.ledger.entry import GENESIS_HASH, SYSTEM_ACTOR, Entry
from controlplane.ledger.verify import CHECKPOINT_MISSING_ACTION
from controlplane.store import projector
from controlplane.store.database import Database
from controlplane.store.models import CheckpointRow, LedgerEntryRow, MerkleNodeRow, ServerKeyRow

ADVISORY_LOCK_KEY = 0x6C65646765720001  # "ledger" + 1: one chain per database

log = logging.getLogger("controlplane.store")

CommitListener = Callable[[list[Entry]], None]
"""Called with the entries a transaction appended, after it committed (see ``listeners``)."""


class StoreError(Exception):
    """A storage-level failure that callers may report (not a verification failure)."""


@dataclass(frozen=True)
class Signer:
    """The server's checkpoint signing identity."""

    origin: str
    private_key: Ed25519PrivateKey

    @property
    def verifier(self) -> NoteVerifier:
        return NoteVerifier.from_public_key(self.origin, self.private_key.public_key())


def _raw_key_id(key: Ed25519PrivateKey) -> str:
    """The key id the ``server_keys`` table uses: hex SHA-256 of the raw public key."""
    return key_id(key.public_key())


def entry_to_row(entry: Entry) -> dict[str, Any]:
    subject = entry.subject
    return {
        "seq": entry.seq,
        "timestamp": entry.timestamp,
        "actor": entry.actor,
        "action": entry.action,
        "subject": canonical_json(subject).decode(),
        "payload": canonical_json(entry.payload).decode(),
        "prev_hash": entry.prev_hash,
        "entry_hash": entry.entry_hash,
        "subject_kind": _short(subject.get("kind")),
        "subject_name": _short(subject.get("name")),
        "project": _short(subject.get("project")),
    }


def _short(value: Any) -> str | None:
    return str(value)[:300] if value is not None else None


def row_to_dict(row: Any) -> dict[str, Any]:
    """The entry as served: exactly the hashed object plus ``entry_hash``.

    Parsing is lenient (a tampered row must still be served so the verifier can name it).
    """

    def load(text_value: str) -> Any:
        try:
            return json.loads(text_value)
        except (TypeError, ValueError):
            return text_value

    return {
        "seq": row.seq,
        "timestamp": row.timestamp,
        "actor": row.actor,
        "action": row.action,
        "subject": load(row.subject),
        "payload": load(row.payload),
        "prev_hash": row.prev_hash,
        "entry_hash": row.entry_hash,
    }


class Transaction:
    """One write transaction on the ledger. Use through :meth:`LedgerStore.transaction`."""

    def __init__(self, session: Session, store: LedgerStore) -> None:
        self.session = session
        self._store = store
        self._head: tuple[int, str] | None = None
        self._nodes: dict[merkle.NodeId, bytes] = {}
        self._frontier_loaded = False
        self.appended: list[Entry] = []

    def _lock_head(self) -> tuple[int, str]:
        if self._head is None:
            if self._store.db.dialect == "postgresql":
                self.session.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": ADVISORY_LOCK_KEY}
                )
            last = self.session.execute(
                select(LedgerEntryRow.seq, LedgerEntryRow.entry_hash)
                .order_by(LedgerEntryRow.seq.desc())
                .limit(1)
            ).first()
            self._head = (0, GENESIS_HASH) if last is None else (last[0] + 1, last[1])
        return self._head

    @property
    def size(self) -> int:
        """Tree size including entries appended in this transaction."""
        return self._lock_head()[0]

    def lock(self) -> int:
        """Take the ledger lock now (before reading state a decision depends on); the size."""
        return self._lock_head()[0]

    def _lookup(self, node: merkle.NodeId) -> bytes:
        cached = self._nodes.get(node)
        if cached is not None:
            return cached
        row = self.session.execute(
            select(MerkleNodeRow.hash).where(
                MerkleNodeRow.level == node[0], MerkleNodeRow.idx == node[1]
            )
        ).scalar_one_or_none()
        if row is None:
            raise StoreError(f"Merkle node {node} is missing: the tree is damaged")
        self._nodes[node] = bytes(row)
        return self._nodes[node]

    def _load_frontier(self) -> None:
        """Have the nodes of the tree at the locked size in hand before the first append: the
        left siblings an append combines with and the checkpoint's root are all among them.
        They come from the store's memory when this process made the head, else in one query
        (instead of one per node)."""
        self._frontier_loaded = True
        size, head_hash = self._lock_head()
        if size == 0:
            return
        remembered = self._store.remembered_frontier(size, head_hash)
        if remembered is None:
            remembered = self._store.fetch_nodes(self.session, merkle.frontier_nodes(size))
        self._nodes.update(remembered)

    def _record_missing_checkpoint(self, expected: int, previous: CheckpointRow | None) -> None:
        found = None if previous is None else previous.tree_size
        log.error(
            "the signed checkpoint for size %d is missing from the database (the previous one "
            "is for size %s): recording it in the ledger",
            expected,
            found,
        )
        self.append(
            actor=SYSTEM_ACTOR,
            action=CHECKPOINT_MISSING_ACTION,
            subject={"kind": "checkpoint", "name": str(expected)},
            payload={"expected_checkpoint_size": expected, "previous_checkpoint_size": found},
        )

    def frontier(self) -> dict[merkle.NodeId, bytes] | None:
        """The nodes of the tree at the current size, if all are in hand."""
        size = self.size
        if size == 0:
            return None
        nodes = merkle.frontier_nodes(size)
        if not all(n in self._nodes for n in nodes):
            return None
        return {n: self._nodes[n] for n in nodes}

    def append(
        self,
        *,
        actor: str,
        action: str,
        subject: Mapping[str, Any],
        payload: Mapping[str, Any],
        project: bool = True,
    ) -> Entry:
        """Append one entry, store its Merkle nodes and (by default) run its projection."""
        if not self._frontier_loaded:
            self._load_frontier()
        seq, prev_hash = self._lock_head()
        entry = Entry.create(
            seq=seq,
            timestamp=clock.now(),
            actor=actor,
            action=action,
            subject=subject,
            payload=payload,
            prev_hash=prev_hash,
        )
        self.session.execute(insert(LedgerEntryRow), [entry_to_row(entry)])
        created = merkle.completed_nodes(seq, merkle.leaf_hash(entry.leaf_input), self._lookup)
        self.session.execute(
            insert(MerkleNodeRow),
            [{"level": level, "idx": idx, "hash": value} for (level, idx), value in created],
        )
        self._nodes.update(created)
        self._head = (seq + 1, entry.entry_hash)
        self.appended.append(entry)
        if project:
            projector.apply(self.session, entry)
        return entry

    def sign_checkpoint(self) -> CheckpointRow | None:
        """Sign the tree head at the current size (once per size), linked to the checkpoint
        before it (see :class:`CheckpointLink`): read under the ledger lock, so no other
        transaction can sign in between and two checkpoints never name the same one."""
        size = self.size
        if size == 0:
            return None
        previous = self._store.checkpoint_at_or_below(self.session, size)
        if previous is not None and previous.tree_size == size:
            return previous  # signed already (once per size)
        began = self.appended[0].seq if self.appended else None
        # (a checkpoint above ``began`` was signed by this very transaction, mid-way)
        if began and (previous is None or previous.tree_size < began):
            # Every appending transaction signs, so the one before ended at our first seq. If
            # it is gone, the chain of links would simply skip it: say so in the ledger.
            self._record_missing_checkpoint(began, previous)
            size = self.size
        root = self._store.root_at(self.session, size, self._nodes)
        signer = self._store.current_signer(self.session)
        link = None if previous is None else CheckpointLink.to(previous.tree_size, previous.note)
        checkpoint = Checkpoint.linked(signer.origin, size, root, link)
        note = checkpoint.sign(signer.origin, signer.private_key)
        row = CheckpointRow(
            tree_size=size,
            root_hash=root.hex(),
            note=note,
            key_id=signer.verifier.key_id_hex,
            created_at=clock.now(),
        )
        self.session.add(row)
        return row


class LedgerStore:
    """Persistence of the ledger: appends, entries, nodes, proofs, checkpoints."""

    def __init__(
        self,
        db: Database,
        signer: Signer,
        key_loader: Callable[[], Ed25519PrivateKey] | None = None,
    ) -> None:
        self.db = db
        self.signer = signer
        self.key_loader = key_loader
        """Re-reads the key file; used when the ledger's current key is no longer the one in
        memory (another process rotated it), so a replica follows a rotation unrestarted."""
        self._frontier: tuple[int, str, dict[merkle.NodeId, bytes]] | None = None
        self._frontier_lock = threading.Lock()
        self.listeners: list[CommitListener] = []
        """Post-commit hooks for integrations (the MLflow mirror). Each is called with the
        entries of every transaction that appended some, after its commit succeeded, in the
        committing thread. They run outside the transaction, so they cannot change or block
        what was recorded; an exception is logged and swallowed, since the entries are
        already durable. Keep them quick (hand work to a thread)."""

    def remembered_frontier(self, size: int, head_hash: str) -> dict[merkle.NodeId, bytes] | None:
        """The frontier nodes this process committed last, if the head is still that one.

        Keyed by the head's entry hash, not only the size: after another replica appended, or
        a database restored from an older backup grew again, the nodes are read anew.
        """
        with self._frontier_lock:
            if self._frontier is None or self._frontier[:2] != (size, head_hash):
                return None
            return dict(self._frontier[2])

    def remember_frontier(
        self, size: int, head_hash: str, nodes: dict[merkle.NodeId, bytes]
    ) -> None:
        with self._frontier_lock:
            self._frontier = (size, head_hash, nodes)

    def notify_committed(self, entries: Sequence[Entry]) -> None:
        for listener in list(self.listeners):
            try:
                listener(list(entries))
            except Exception:
                log.exception("post-commit listener %r failed", listener)

    # -- writing -------------------------------------------------------------------------------

    def current_signer(self, session: Session) -> Signer:
        """The signer for a checkpoint now: the key the ledger names current (under the lock).

        A checkpoint must be signed by the key that is current at its size, or verification
        refuses it. If another process rotated the key, the key file is re-read once; if it
        still holds another key, signing is refused (the transaction rolls back) rather than
        producing a checkpoint with a retired or unannounced key. Before the first key is
        registered (``init``) any key signs.
        """
        current = session.execute(
            select(ServerKeyRow.key_id).where(ServerKeyRow.retired_seq.is_(None))
        ).scalar_one_or_none()
        if current is None or _raw_key_id(self.signer.private_key) == current:
            return self.signer
        if self.key_loader is not None:
            loaded = self.key_loader()
            if _raw_key_id(loaded) == current:
                self.signer = Signer(self.signer.origin, loaded)
                log.info("checkpoint key changed to %s (rotated elsewhere)", current[:16])
                return self.signer
        raise StoreError(
            f"the ledger's current checkpoint key is {current[:16]}… but this process holds "
            f"{_raw_key_id(self.signer.private_key)[:16]}…: the key was rotated; put the new "
            "key file in place (see `controlplane server-key rotate`)"
        )

    def transaction(self) -> _TransactionContext:
        """``with store.transaction() as tx: tx.append(...)`` commits and signs on success."""
        return _TransactionContext(self)

    # -- reading -------------------------------------------------------------------------------

    def size(self, session: Session) -> int:
        value = session.execute(select(func.max(LedgerEntryRow.seq))).scalar_one_or_none()
        return 0 if value is None else int(value) + 1

    def fetch_nodes(
        self, session: Session, nodes: Sequence[merkle.NodeId]
    ) -> dict[merkle.NodeId, bytes]:
        if not nodes:
            return {}
        found: dict[merkle.NodeId, bytes] = {}
        for start in range(0, len(nodes), 500):
            chunk = nodes[start : start + 500]
            # OR of (level, idx) pairs: SQLite answers a row-value IN list with a full scan
            # (178 ms at a million entries) but an OR of key lookups with index searches.
            rows = session.execute(
                select(MerkleNodeRow.level, MerkleNodeRow.idx, MerkleNodeRow.hash).where(
                    or_(
                        *(
                            and_(MerkleNodeRow.level == level, MerkleNodeRow.idx == idx)
                            for level, idx in chunk
                        )
                    )
                )
            )
            found.update({(level, idx): bytes(value) for level, idx, value in rows})
        missing = [node for node in nodes if node not in found]
        if missing:
            raise StoreError(f"Merkle nodes {missing[:3]} are missing: the tree is damaged")
        return found

    def root_at(
        self,
        session: Session,
        size: int,
        cache: Mapping[merkle.NodeId, bytes] | None = None,
    ) -> bytes:
        if size == 0:
            return merkle.EMPTY_ROOT
        needed = merkle.range_nodes(0, size)
        have = dict(cache or {})
        have.update(self.fetch_nodes(session, [n for n in needed if n not in have]))
        return merkle.range_hash(0, size, have)

    def inclusion_proof(self, session: Session, index: int, size: int) -> dict[str, Any]:
        ranges = merkle.inclusion_ranges(index, size)
        nodes = self.fetch_nodes(
            session, merkle.nodes_for([*ranges, (index, index + 1), (0, size)])
        )
        return {
            "leaf_index": index,
            "tree_size": size,
            "leaf_hash": nodes[(0, index)].hex(),
            "root_hash": merkle.range_hash(0, size, nodes).hex(),
            "hashes": [h.hex() for h in merkle.hashes_for(ranges, nodes)],
        }

    def consistency_proof(self, session: Session, first: int, second: int) -> dict[str, Any]:
        ranges = merkle.consistency_ranges(first, second) if first != second else []
        nodes = self.fetch_nodes(session, merkle.nodes_for([*ranges, (0, first), (0, second)]))
        return {
            "first": first,
            "second": second,
            "first_root": merkle.range_hash(0, first, nodes).hex(),
            "second_root": merkle.range_hash(0, second, nodes).hex(),
            "hashes": [h.hex() for h in merkle.hashes_for(ranges, nodes)],
        }

    def entries(
        self, session: Session, start: int = 0, limit: int = 1000, **filters: Any
    ) -> list[dict[str, Any]]:
        query = select(LedgerEntryRow).where(LedgerEntryRow.seq >= start)
        for column in ("actor", "action", "subject_kind", "subject_name", "project"):
            if filters.get(column) is not None:
                query = query.where(getattr(LedgerEntryRow, column) == filters[column])
        query = query.order_by(LedgerEntryRow.seq).limit(limit)
        return [row_to_dict(row) for row in session.execute(query).scalars()]

    def iter_entries(
        self, session: Session, batch: int = 5000, end: int | None = None
    ) -> Iterator[dict[str, Any]]:
        """Every entry in order (below ``end`` if given), fetched in seq ranges."""
        start = 0
        while end is None or start < end:
            size = batch if end is None else min(batch, end - start)
            rows = self.entries(session, start, size)
            yield from rows
            if len(rows) < size:
                return
            start = rows[-1]["seq"] + 1

    def entry(self, session: Session, seq: int) -> dict[str, Any] | None:
        row = session.get(LedgerEntryRow, seq)
        return row_to_dict(row) if row is not None else None

    def latest_checkpoint(self, session: Session) -> CheckpointRow | None:
        return session.execute(
            select(CheckpointRow).order_by(CheckpointRow.tree_size.desc()).limit(1)
        ).scalar_one_or_none()

    def checkpoint_at_or_below(self, session: Session, size: int) -> CheckpointRow | None:
        """The checkpoint with the largest tree size up to ``size``: the one at ``size`` if it
        was signed already, else the one a new checkpoint at ``size`` links to."""
        return session.execute(
            select(CheckpointRow)
            .where(CheckpointRow.tree_size <= size)
            .order_by(CheckpointRow.tree_size.desc())
            .limit(1)
        ).scalar_one_or_none()

    def sampled_checkpoints(self, session: Session, at_most: int = 1000) -> list[CheckpointRow]:
        """Up to about ``at_most`` checkpoints spread over the tree, always with the latest.

        A checkpoint is signed per write transaction, so a large ledger has very many; a
        spread sample still pins every region of history for verifiers.
        """
        latest = self.latest_checkpoint(session)
        if latest is None:
            return []
        step = max(1, latest.tree_size // max(1, at_most))
        sizes = set(
            session.execute(
                select(func.min(CheckpointRow.tree_size)).group_by(CheckpointRow.tree_size // step)
            ).scalars()
        )
        sizes.add(latest.tree_size)
        rows = []
        ordered = sorted(sizes)
        for start in range(0, len(ordered), 500):
            chunk = ordered[start : start + 500]
            rows.extend(
                session.execute(
                    select(CheckpointRow).where(CheckpointRow.tree_size.in_(chunk))
                ).scalars()
            )
        return sorted(rows, key=lambda row: row.tree_size)

    def checkpoints(
        self, session: Session, start: int = 0, limit: int = 1000
    ) -> list[CheckpointRow]:
        return list(
            session.execute(
                select(CheckpointRow)
                .where(CheckpointRow.tree_size >= start)
                .order_by(CheckpointRow.tree_size)
                .limit(limit)
            ).scalars()
        )


class _TransactionContext:
    def __init__(self, store: LedgerStore) -> None:
        self._store = store
        self._session: Session | None = None
        self._tx: Transaction | None = None

    def __enter__(self) -> Transaction:
        self._session = self._store.db.write_session()
        self._session.begin()
        self._tx = Transaction(self._session, self._store)
        return self._tx

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        assert self._session is not None and self._tx is not None
        committed = False
        try:
            if exc_type is None:
                if self._tx.appended:
                    self._tx.sign_checkpoint()
                self._session.commit()
                committed = True
                frontier = self._tx.frontier() if self._tx.appended else None
                if frontier is not None:
                    self._store.remember_frontier(
                        self._tx.size, self._tx.appended[-1].entry_hash, frontier
                    )
            else:
                self._session.rollback()
        finally:
            self._session.close()
        if committed and self._tx.appended:
            self._store.notify_committed(self._tx.appended)
