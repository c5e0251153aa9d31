"""Stored Merkle nodes give RFC 6962 proofs that verify, cheaply, at every size.

Entries are appended one transaction at a time (so a checkpoint exists for every size) and in
one big transaction (one checkpoint for the lot). For every size and index, the stored
inclusion proof verifies with the RFC 9162 verifier, its leaf is the entry's leaf hash and its
root is the root of the entries so far; consistency proofs verify between every pair of sizes;
a proof costs one indexed query for O(log n) rows; every checkpoint opens and signs root_at.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import event, select
from sqlalchemy.orm import Session

from controlplane.core import ControlPlane
from controlplane.ledger import Checkpoint, merkle
from controlplane.ledger.errors import MalformedError
from controlplane.ledger.merkle import leaf_hash, verify_consistency, verify_inclusion
from controlplane.store.models import MerkleNodeRow

INCREMENTAL_SIZE = 70
BIG_BATCH = 300
CONSISTENCY_SIZES = {*range(1, 18), 31, 32, 33, 47, 63, 64, 65}
"""Sizes n at which every consistency proof m -> n (1 <= m <= n) is checked."""


def _append(cp: ControlPlane, count: int, tag: str) -> None:
    with cp.store.transaction() as tx:
        for k in range(count):
            tx.append(
                actor="admin",
                action="test.proof",
                subject={"kind": "test", "name": f"{tag}-{k}"},
                payload={"k": k, "tag": tag},
            )


def _leaves(session: Session, cp: ControlPlane) -> list[bytes]:
    return [leaf_hash(bytes.fromhex(e["entry_hash"])) for e in cp.store.iter_entries(session)]


def _check_inclusion(session: Session, cp: ControlPlane, leaves: list[bytes], size: int) -> None:
    root = merkle.root_of(leaves[:size])
    assert cp.store.root_at(session, size) == root
    for index in range(size):
        proof = cp.store.inclusion_proof(session, index, size)
        assert proof["leaf_index"] == index and proof["tree_size"] == size
        leaf = bytes.fromhex(proof["leaf_hash"])
        assert leaf == leaves[index]
        assert proof["root_hash"] == root.hex()
        hashes = [bytes.fromhex(h) for h in proof["hashes"]]
        verify_inclusion(index, size, leaf, hashes, root)
        if size > 1:  # a proof for a different index or size must not verify
            with pytest.raises(merkle.ProofError):
                verify_inclusion((index + 1) % size, size, leaf, hashes, root)


def _check_consistency(session: Session, cp: ControlPlane, leaves: list[bytes], size: int) -> None:
    second_root = merkle.root_of(leaves[:size])
    for first in range(1, size + 1):
        proof = cp.store.consistency_proof(session, first, size)
        first_root = merkle.root_of(leaves[:first])
        assert proof["first_root"] == first_root.hex()
        assert proof["second_root"] == second_root.hex()
        hashes = [bytes.fromhex(h) for h in proof["hashes"]]
        verify_consistency(first, size, first_root, second_root, hashes)
        if first == size:
            assert hashes == []


def _check_checkpoints(session: Session, cp: ControlPlane, leaves: list[bytes]) -> list[int]:
    sizes = []
    for row in cp.store.checkpoints(session, limit=100_000):
        checkpoint = Checkpoint.open(row.note, [cp.signer.verifier])
        assert checkpoint.origin == cp.signer.origin
        assert checkpoint.size == row.tree_size
        assert checkpoint.root_hash == cp.store.root_at(session, row.tree_size)
        assert checkpoint.root_hash == merkle.root_of(leaves[: row.tree_size])
        assert row.root_hash == checkpoint.root_hash.hex()
        assert row.key_id == cp.signer.verifier.key_id_hex
        sizes.append(row.tree_size)
    return sizes


@contextmanager
def _count_queries(cp: ControlPlane) -> Iterator[list[str]]:
    statements: list[str] = []

    def before(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    event.listen(cp.db.reader, "before_cursor_execute", before)
    try:
        yield statements
    finally:
        event.remove(cp.db.reader, "before_cursor_execute", before)


def test_proofs_at_every_size_as_entries_arrive_one_per_transaction(cp: ControlPlane) -> None:
    with cp.db.read() as session:
        start = cp.store.size(session)
        initial = _check_checkpoints(session, cp, _leaves(session, cp))
    assert start >= 1 and initial[-1] == start
    checked: list[int] = []
    for size in range(start, INCREMENTAL_SIZE + 1):
        if size > start:
            _append(cp, 1, f"one-{size}")
        with cp.db.read() as session:
            assert cp.store.size(session) == size
            leaves = _leaves(session, cp)
            assert len(leaves) == size
            _check_inclusion(session, cp, leaves, size)
            if size in CONSISTENCY_SIZES or size == INCREMENTAL_SIZE:
                _check_consistency(session, cp, leaves, size)
        checked.append(size)
    assert checked[-1] == INCREMENTAL_SIZE
    with cp.db.read() as session:
        leaves = _leaves(session, cp)
        # Every write transaction signed exactly one checkpoint for its own size.
        assert _check_checkpoints(session, cp, leaves) == [
            *initial,
            *range(start + 1, INCREMENTAL_SIZE + 1),
        ]
        # Historical proofs: a proof at an old size is served from the same stored nodes.
        for size in (1, 2, 3, 7, 8, 9, 31, 32, 33, 64, 65):
            _check_inclusion(session, cp, leaves, size)


def test_proofs_after_one_big_transaction(cp: ControlPlane) -> None:
    with cp.db.read() as session:
        start = cp.store.size(session)
        before = _check_checkpoints(session, cp, _leaves(session, cp))
    _append(cp, BIG_BATCH, "big")
    size = start + BIG_BATCH
    with cp.db.read() as session:
        leaves = _leaves(session, cp)
        assert len(leaves) == size
        _check_inclusion(session, cp, leaves, size)
        _check_consistency(session, cp, leaves, size)
        for historical in (start + 1, 128, 255, 256, 257, size - 1):
            _check_inclusion(session, cp, leaves, historical)
        # One checkpoint for the whole transaction, none for the sizes inside it.
        assert _check_checkpoints(session, cp, leaves) == [*before, size]
        # Exactly the perfect subtrees were stored: one node per (level, idx) of the tree.
        stored = {
            (level, idx)
            for level, idx in session.execute(select(MerkleNodeRow.level, MerkleNodeRow.idx))
        }
        expected = {
            (level, idx) for level in range(size.bit_length()) for idx in range(size >> level)
        }
        assert stored == expected


def test_a_transaction_without_appends_signs_nothing(cp: ControlPlane) -> None:
    with cp.db.read() as session:
        before = [row.tree_size for row in cp.store.checkpoints(session)]
    with cp.store.transaction() as tx:
        tx.lock()
    with pytest.raises(RuntimeError), cp.store.transaction() as tx:
        tx.append(actor="admin", action="test.rolled_back", subject={"kind": "t"}, payload={})
        raise RuntimeError("abort")
    with cp.db.read() as session:
        assert [row.tree_size for row in cp.store.checkpoints(session)] == before
        assert cp.store.size(session) == before[-1]
        assert cp.store.entries(session, action="test.rolled_back") == []


def test_a_proof_is_one_query_for_logarithmically_many_rows(cp: ControlPlane) -> None:
    _append(cp, BIG_BATCH, "cost")
    with cp.db.read() as session:
        size = cp.store.size(session)  # also begins the read transaction
        for index in (0, 1, size // 3, size // 2, size - 2, size - 1):
            with _count_queries(cp) as statements:
                proof = cp.store.inclusion_proof(session, index, size)
            assert len(statements) == 1, statements
            assert "merkle_nodes" in statements[0]
            assert len(proof["hashes"]) <= size.bit_length()
        for first in (1, 5, size // 2, size - 1):
            with _count_queries(cp) as statements:
                cp.store.consistency_proof(session, first, size)
            assert len(statements) == 1, statements
        with _count_queries(cp) as statements:
            cp.store.root_at(session, size)
        assert len(statements) == 1, statements


@pytest.mark.parametrize("size", [1, 2, 3, 5, 70, 304, 1023, 1024, 1025, 10**6, 2**40 + 12345])
def test_nodes_a_proof_needs_are_logarithmic(size: int) -> None:
    bound = 2 * size.bit_length() + 1
    indices = {0, 1 % size, size // 2, size - 2 if size > 1 else 0, size - 1, (size * 7) // 11}
    for index in indices:
        ranges = merkle.inclusion_ranges(index, size)
        assert len(ranges) <= size.bit_length()
        nodes = merkle.nodes_for([*ranges, (index, index + 1), (0, size)])
        assert len(nodes) <= bound, (index, size, len(nodes))
    for first in {1, size // 2 or 1, size - 1 or 1, size}:
        ranges = merkle.consistency_ranges(first, size) if first != size else []
        nodes = merkle.nodes_for([*ranges, (0, first), (0, size)])
        assert len(nodes) <= 3 * size.bit_length() + 1, (first, size, len(nodes))


def test_proofs_outside_the_tree_are_refused(cp: ControlPlane) -> None:
    with cp.db.read() as session:
        size = cp.store.size(session)
        for index, at in ((size, size), (-1, size), (0, 0)):
            with pytest.raises(MalformedError):
                cp.store.inclusion_proof(session, index, at)
        with pytest.raises(MalformedError):
            cp.store.consistency_proof(session, 0, size)
        with pytest.raises(MalformedError):
            cp.store.consistency_proof(session, size, size - 1 if size > 1 else 0)
        # A size beyond the ledger asks for nodes that do not exist.
        with pytest.raises(Exception, match="missing"):
            cp.store.inclusion_proof(session, 0, size + 5)
