"""The database itself refuses to change the append-only tables.

Raw SQL goes straight to the writer engine (no application code in the way): UPDATE and DELETE
on ``ledger_entries``, ``merkle_nodes`` and ``checkpoints`` are refused by triggers on both
databases, TRUNCATE is refused on PostgreSQL, and the rows are unchanged afterwards.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from controlplane.core import ControlPlane
from controlplane.ledger import verify_ledger

KEYS = {
    "ledger_entries": "seq",
    "merkle_nodes": "level, idx",
    "checkpoints": "tree_size",
}

FIRST_CHECKPOINT = "(SELECT MIN(tree_size) FROM checkpoints)"

CHANGES = [
    ("ledger_entries", "UPDATE ledger_entries SET actor = 'mallory' WHERE seq = 0"),
    ("ledger_entries", "UPDATE ledger_entries SET payload = '{}'"),
    ("ledger_entries", "UPDATE ledger_entries SET seq = seq + 1000 WHERE seq = 1"),
    (
        "ledger_entries",
        "DELETE FROM ledger_entries WHERE seq = (SELECT MAX(seq) FROM ledger_entries)",
    ),
    ("ledger_entries", "DELETE FROM ledger_entries"),
    ("merkle_nodes", "UPDATE merkle_nodes SET hash = :zero WHERE level = 0 AND idx = 0"),
    ("merkle_nodes", "UPDATE merkle_nodes SET idx = idx + 1000"),
    ("merkle_nodes", "DELETE FROM merkle_nodes WHERE level = 1"),
    ("merkle_nodes", "DELETE FROM merkle_nodes"),
    ("checkpoints", "UPDATE checkpoints SET root_hash = :zero_hex"),
    ("checkpoints", f"UPDATE checkpoints SET note = 'forged' WHERE tree_size = {FIRST_CHECKPOINT}"),
    ("checkpoints", f"DELETE FROM checkpoints WHERE tree_size = {FIRST_CHECKPOINT}"),
    ("checkpoints", "DELETE FROM checkpoints"),
]

PARAMS = {"zero": b"\x00" * 32, "zero_hex": "0" * 64}


def _snapshot(cp: ControlPlane, table: str) -> list[tuple[Any, ...]]:
    with cp.db.writer.connect() as conn:
        rows = conn.execute(text(f"SELECT * FROM {table} ORDER BY {KEYS[table]}")).all()
    return [tuple(bytes(v) if isinstance(v, memoryview) else v for v in row) for row in rows]


def _ledger_is_valid(cp: ControlPlane) -> None:
    with cp.db.read() as session:
        entries = list(cp.store.iter_entries(session))
        notes = [row.note for row in cp.store.checkpoints(session)]
        report = verify_ledger(entries, notes, [cp.signer.verifier], cp.signer.origin)
        assert report.ok, report.problems
        assert report.root_hash == cp.store.root_at(session, len(entries)).hex()


@pytest.fixture
def busy_cp(cp: ControlPlane) -> ControlPlane:
    """A ledger with several entries, Merkle levels and checkpoints."""
    for n in range(6):
        with cp.store.transaction() as tx:
            tx.append(
                actor="admin",
                action="test.appended",
                subject={"kind": "test", "name": f"e{n}"},
                payload={"n": n},
            )
    return cp


@pytest.mark.parametrize("table", list(KEYS))
def test_update_and_delete_are_refused(busy_cp: ControlPlane, table: str) -> None:
    cp = busy_cp
    before = {name: _snapshot(cp, name) for name in KEYS}
    assert before[table], f"{table} should have rows to attack"
    statements = [statement for target, statement in CHANGES if target == table]
    assert len(statements) >= 4
    for statement in statements:
        with pytest.raises(DBAPIError, match="append-only"), cp.db.writer.begin() as conn:
            conn.execute(text(statement), PARAMS)
        after = {name: _snapshot(cp, name) for name in KEYS}
        assert after == before, statement
    _ledger_is_valid(cp)


def test_refusal_inside_a_larger_transaction_rolls_it_back(busy_cp: ControlPlane) -> None:
    """A transaction that appends correctly and then tries to edit history commits nothing."""
    cp = busy_cp
    before = {name: _snapshot(cp, name) for name in KEYS}
    for table in KEYS:
        with pytest.raises(DBAPIError, match="append-only"), cp.store.transaction() as tx:
            tx.append(actor="admin", action="test.sneaky", subject={"kind": "test"}, payload={})
            tx.session.execute(text(f"DELETE FROM {table}"))
        assert {name: _snapshot(cp, name) for name in KEYS} == before, table
    _ledger_is_valid(cp)


def test_truncate_is_refused_on_postgresql(busy_cp: ControlPlane) -> None:
    cp = busy_cp
    if cp.db.dialect != "postgresql":
        pytest.skip("TRUNCATE exists only on PostgreSQL")
    before = {name: _snapshot(cp, name) for name in KEYS}
    for table in KEYS:
        for statement in (f"TRUNCATE {table}", f"TRUNCATE {table} CASCADE"):
            with pytest.raises(DBAPIError, match="append-only"), cp.db.writer.begin() as conn:
                conn.execute(text(statement))
            assert {name: _snapshot(cp, name) for name in KEYS} == before, statement
    _ledger_is_valid(cp)


def test_appends_still_work_after_refusals(busy_cp: ControlPlane) -> None:
    cp = busy_cp
    with pytest.raises(DBAPIError), cp.db.writer.begin() as conn:
        conn.execute(text("DELETE FROM ledger_entries"))
    with cp.db.read() as session:
        size = cp.store.size(session)
    with cp.store.transaction() as tx:
        entry = tx.append(actor="admin", action="test.after", subject={"kind": "test"}, payload={})
    assert entry.seq == size
    _ledger_is_valid(cp)
