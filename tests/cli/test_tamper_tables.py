"""Tampering with each table of the ledger, on SQLite and on PostgreSQL (issue #6).

tests/cli/test_tamper.py edits the hashed columns of ``ledger_entries`` and checks the client
verify; this module covers the rest: the ``seq`` and index columns, every column under the
operator's ``verify --database`` (:func:`check_database`), the ``merkle_nodes`` and
``checkpoints`` tables (a deleted or replaced checkpoint from the middle among them), a deleted
entry, and a restored older backup. Reversible edits share one ledger per database (``shared``
of test_tamper.py) and put the original back.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from controlplane.ledger.checkpoint import Checkpoint, CheckpointLink
from controlplane.ledger.verify import VerificationReport
from controlplane.store.integrity import check_database
from tests.cli.helpers import (
    describe,
    fails,
    invoke,
    json_of,
    ok,
    operator_env,
    run_json,
)
from tests.cli.test_tamper import (
    EDITS,
    Ledger,
    drop_triggers,
    flip_hex,
    flip_letter,
    ledger,
    read_column,
    shared,
    write_column,
)
from tests.utils.databases import pg_admin
from tests.utils.server import LiveServer

__all__ = ["ledger", "shared"]  # fixtures, used by name


@pytest.fixture(scope="module")
def tables(shared: Ledger) -> Ledger:
    """``shared`` with the append-only triggers of the Merkle nodes and checkpoints dropped."""
    drop_triggers(shared.server, ("merkle_nodes", "checkpoints"))
    return shared


def sql(server: LiveServer, statement: str, **params: Any) -> Any:
    with server.cp.db.writer.begin() as conn:
        return conn.execute(text(statement), params)


def database_check(server: LiveServer) -> VerificationReport:
    """What ``controlplane verify --database`` runs, on the server's own database; without
    the replay of the projections (no test here touches them; it costs a migrated scratch
    database each time, and the command itself runs it in ``database_cli``)."""
    return check_database(server.cp.store, replay=False)


def database_cli(server: LiveServer, directory: Path, k: int) -> dict[str, Any]:
    """``controlplane verify --database --json`` fails and names seq ``k`` first."""
    report = json_of(fails(["verify", "--database", "--json"], operator_env(server, directory), 1))
    assert report["first_bad_seq"] == k, report
    return report


def assert_intact(ledger: Ledger, client: bool = True) -> None:
    """Once the original is back, both checks pass again: the edit alone was caught."""
    report = database_check(ledger.server)
    assert report.ok, report.problems
    if client:
        assert run_json(["verify", "--state", ledger.state], ledger.env)["ok"] is True


def client_report(ledger: Ledger, state: Path) -> dict[str, Any]:
    """A failed client verify (exit 1) as its JSON report."""
    report = json_of(fails(["verify", "--state", state, "--json"], ledger.env, 1))
    assert report["ok"] is False, report
    return report


# --- ledger_entries: every column under verify --database, seq and the index columns --------

INDEX_COLUMNS = ("subject_kind", "subject_name", "project")
# words the database check must say about each edited column (besides "seq k: ")
DATABASE_WORDS: dict[str, str] = {
    "timestamp": "altered",
    "actor": "altered",
    "action": "altered",
    "subject": "altered",
    "payload": "altered",
    "payload-invalid-json": "malformed entry",
    "subject-invalid-json": "malformed entry",
    "prev_hash": "prev_hash",
    "entry_hash": "altered",
    **{column: f"index column {column}" for column in INDEX_COLUMNS},
}


@pytest.mark.parametrize("case", list(DATABASE_WORDS))
def test_every_entry_column_is_named_by_the_database_check(
    shared: Ledger, case: str, tmp_path: Path
) -> None:
    column, edit = EDITS.get(case, (case, flip_letter))
    server, k = shared.server, shared.target
    original = read_column(server, k, column)
    write_column(server, k, column, edit(original))
    try:
        report = database_check(server)
        assert report.first_bad_seq == k, report.problems
        assert report.problems[0].startswith(f"seq {k}: "), report.problems
        assert any(
            p.startswith(f"seq {k}: ") and DATABASE_WORDS[case] in p for p in report.problems
        ), report.problems
        if column in INDEX_COLUMNS:
            # not hashed and not served: only the operator's check can see the copy lie
            assert report.problems == [
                f"seq {k}: index column {column} does not match the entry's subject"
            ]
            if column == "subject_name":  # the command itself, once (it costs ~1 s)
                assert database_cli(server, tmp_path, k)["problems"] == report.problems
    finally:
        write_column(server, k, column, original)
    assert_intact(shared, client=False)  # the client side: test_tamper.py


def test_changed_seq_is_a_gap_named_by_both_checks(shared: Ledger, tmp_path: Path) -> None:
    """One byte of the 8-byte seq of entry k (k ^ 0x100): k is missing, a stray one appears."""
    server, k = shared.server, shared.target
    moved = k ^ 0x100
    sql(server, "UPDATE ledger_entries SET seq = :moved WHERE seq = :k", moved=moved, k=k)
    try:
        report = client_report(shared, shared.state)
        assert report["first_bad_seq"] == k, report
        assert report["problems"][0].startswith(f"seq {k}: expected seq {k} but found"), report
        database = database_check(server)
        assert database.first_bad_seq == k, database.problems
        assert "gap or reordering" in database.problems[0], database.problems
    finally:
        sql(server, "UPDATE ledger_entries SET seq = :k WHERE seq = :moved", moved=moved, k=k)
    assert_intact(shared)


def test_deleted_entry_is_a_gap_named_by_its_seq(shared: Ledger, tmp_path: Path) -> None:
    server, k = shared.server, shared.target
    columns = (
        "seq, timestamp, actor, action, subject, payload, prev_hash, entry_hash, "
        "subject_kind, subject_name, project"
    )
    with server.cp.db.writer.connect() as conn:
        row = (
            conn.execute(text(f"SELECT {columns} FROM ledger_entries WHERE seq = :k"), {"k": k})
            .mappings()
            .one()
        )
    sql(server, "DELETE FROM ledger_entries WHERE seq = :k", k=k)
    try:
        for state in (shared.state, tmp_path / "fresh.json"):
            report = client_report(shared, state)
            assert report["first_bad_seq"] == k, report
            assert "gap or reordering" in report["problems"][0], report
        text_result = fails(["verify", "--state", tmp_path / "fresh.json"], shared.env, 1)
        assert f"FAILED: first bad seq {k} " in text_result.stderr, describe(text_result)
        assert "gap or reordering" in database_cli(server, tmp_path, k)["problems"][0]
    finally:
        placeholders = ", ".join(f":{c.strip()}" for c in columns.split(","))
        sql(server, f"INSERT INTO ledger_entries ({columns}) VALUES ({placeholders})", **row)
    assert_intact(shared)


# --- merkle_nodes ----------------------------------------------------------------------------


def _node(server: LiveServer, level: int, idx: int) -> bytes:
    with server.cp.db.writer.connect() as conn:
        value = conn.execute(
            text("SELECT hash FROM merkle_nodes WHERE level = :level AND idx = :idx"),
            {"level": level, "idx": idx},
        ).scalar_one()
    return bytes(value)


def _set_node(server: LiveServer, level: int, idx: int, value: bytes) -> None:
    changed = sql(
        server,
        "UPDATE merkle_nodes SET hash = :value WHERE level = :level AND idx = :idx",
        value=value,
        level=level,
        idx=idx,
    ).rowcount
    assert changed == 1


def _proof_fails(ledger: Ledger, seq: int) -> str:
    """``proof inclusion SEQ``: checked client-side against the signed checkpoint."""
    result = invoke(["proof", "inclusion", seq], ledger.env)
    assert result.exit_code != 0, describe(result)
    assert "Traceback" not in result.stderr, describe(result)
    return result.stderr


def _one_byte(value: bytes) -> bytes:
    return value[:5] + bytes([value[5] ^ 0x01]) + value[6:]


@pytest.mark.parametrize("level", [0, 1])
def test_altered_merkle_node_is_named(tables: Ledger, level: int) -> None:
    """One byte of a stored hash. Entry k's own proof does not use its leaf, its sibling's
    does: that proof, served from the damaged tree, fails against the signed checkpoint."""
    server, k = tables.server, tables.target
    idx = k >> level
    original = _node(server, level, idx)
    _set_node(server, level, idx, _one_byte(original))
    try:
        report = database_check(server)
        assert not report.ok
        if level == 0:
            assert report.first_bad_seq == k, report.problems
            assert f"seq {k}: stored Merkle leaf does not match the entry" in report.problems
        else:
            assert any(f"(level 1, index {idx})" in p for p in report.problems), report.problems
        sibling = (idx ^ 1) << level  # a leaf whose proof carries the altered node
        assert "does not match expected root" in _proof_fails(tables, sibling)
        # the entries and checkpoints are intact: a full verify still passes
        assert run_json(["verify", "--state", tables.state], tables.env)["ok"] is True
    finally:
        _set_node(server, level, idx, original)
    assert_intact(tables)
    ok(["proof", "inclusion", k ^ 1], tables.env)


@pytest.mark.parametrize("level", [0, 1, 3])
def test_deleted_merkle_node_is_named(tables: Ledger, level: int) -> None:
    server, k = tables.server, tables.target
    idx = k >> level
    assert (idx + 1) << level <= tables.size, "a complete subtree, so a stored node"
    original = _node(server, level, idx)
    sql(server, "DELETE FROM merkle_nodes WHERE level = :l AND idx = :i", l=level, i=idx)
    try:
        report = database_check(server)
        assert not report.ok
        first, last = idx << level, ((idx + 1) << level) - 1
        if level == 0:
            assert report.first_bad_seq == k, report.problems
        else:
            assert any(
                f"Merkle node (level {level}, index {idx}) is missing" in p
                and f"seq {first}..{last}" in p
                for p in report.problems
            ), report.problems
        _proof_fails(tables, (idx ^ 1) << level)  # the server cannot serve it
    finally:
        sql(
            server,
            "INSERT INTO merkle_nodes (level, idx, hash) VALUES (:l, :i, :h)",
            l=level,
            i=idx,
            h=original,
        )
    assert_intact(tables)


# --- checkpoints -----------------------------------------------------------------------------


def _checkpoint(server: LiveServer, size: int) -> dict[str, Any]:
    with server.cp.db.writer.connect() as conn:
        row = (
            conn.execute(text("SELECT * FROM checkpoints WHERE tree_size = :size"), {"size": size})
            .mappings()
            .one()
        )
    return dict(row)


def _flip_note(note: str) -> str:
    """One character of the root line of the note body: still a well-formed note."""
    lines = note.split("\n")
    root = lines[2]
    index = 3
    lines[2] = root[:index] + ("A" if root[index] != "A" else "B") + root[index + 1 :]
    return "\n".join(lines)


@pytest.mark.parametrize("column", ["note", "root_hash", "tree_size"])
def test_altered_checkpoint_row_is_named(tables: Ledger, column: str, tmp_path: Path) -> None:
    """The newest checkpoint row, edited: its note (the signature breaks), or one of the
    unsigned columns the API serves beside it (the client pins the served root)."""
    server, size = tables.server, tables.size
    row = _checkpoint(server, size)
    value = {
        "note": _flip_note(row["note"]),
        "root_hash": flip_hex(row["root_hash"]),
        "tree_size": size ^ 0x100,
    }[column]
    sql(server, f"UPDATE checkpoints SET {column} = :v WHERE tree_size = :s", v=value, s=size)
    try:
        words = {
            "note": f"checkpoint rejected (size {size})",
            "root_hash": f"served as size {size}, root {value}",
            "tree_size": f"served as size {value}, root {row['root_hash']}",
        }[column]
        fresh = tmp_path / "fresh.json"
        for state in (tables.state, fresh):
            report = client_report(tables, state)
            assert any(words in p for p in report["problems"]), report
        assert not fresh.exists(), "nothing pinned from an altered checkpoint"
        database = database_check(server)
        named = {
            "note": f"checkpoint rejected (size {size})",
            "root_hash": f"checkpoint row for size {size}: the root_hash column",
            "tree_size": f"checkpoint row for size {value}: the tree_size column",
        }[column]
        assert any(named in p for p in database.problems), database.problems
    finally:
        sql(
            server,
            f"UPDATE checkpoints SET {column} = :v WHERE tree_size = :s",
            v=row[column],
            s=value if column == "tree_size" else size,
        )
    assert_intact(tables)


def test_deleted_checkpoint_row_is_named(tables: Ledger, tmp_path: Path) -> None:
    """Without its newest checkpoint the server serves the shorter, signed ledger: a client
    that pinned the newest fails, and the database check finds entries under no checkpoint."""
    server, size = tables.server, tables.size
    row = _checkpoint(server, size)
    sql(server, "DELETE FROM checkpoints WHERE tree_size = :s", s=size)
    try:
        report = client_report(tables, tables.state)
        assert any("truncated or rolled back" in p for p in report["problems"]), report
        database = database_check(server)
        older = max(int(s) for s in _sizes(server))
        assert any(
            f"the newest checkpoint covers {older} entries but the ledger holds {size}: "
            f"seq {older}..{size - 1} are under no signed checkpoint" in p
            for p in database.problems
        ), database.problems
    finally:
        placeholders = ", ".join(f":{c}" for c in row)
        sql(server, f"INSERT INTO checkpoints ({', '.join(row)}) VALUES ({placeholders})", **row)
    assert_intact(tables)


def test_deleted_middle_checkpoint_row_is_named(tables: Ledger, tmp_path: Path) -> None:
    """A checkpoint from the middle: everything else still verifies, but the next checkpoint
    links to it (``prev`` line, under its signature), so the operator's check names both sizes.
    (A client sees a sample of the checkpoints, where a gap is no fault: see README.)"""
    server = tables.server
    sizes = sorted(_sizes(server))
    gone, after = sizes[len(sizes) // 2], sizes[len(sizes) // 2 + 1]
    row = _checkpoint(server, gone)
    sql(server, "DELETE FROM checkpoints WHERE tree_size = :s", s=gone)
    try:
        words = (
            f"checkpoint for size {after} names previous checkpoint at size {gone}, which is "
            "missing (the checkpoint was deleted)"
        )
        assert database_check(server).problems == [words]
        env = operator_env(server, tmp_path)
        report = json_of(fails(["verify", "--database", "--json"], env, 1))
        assert report["ok"] is False and report["problems"] == [words], report
        result = fails(["verify", "--database"], env, 1)
        assert f"  {words}" in result.stderr, describe(result)
    finally:
        placeholders = ", ".join(f":{c}" for c in row)
        sql(server, f"INSERT INTO checkpoints ({', '.join(row)}) VALUES ({placeholders})", **row)
    assert_intact(tables)


def test_replaced_middle_checkpoint_row_is_named(tables: Ledger) -> None:
    """Replaced by a validly signed note for the same size and root, linked elsewhere (what a
    holder of the key could make): the next checkpoint's link names the original note."""
    server = tables.server
    sizes = sorted(_sizes(server))
    size, after = sizes[len(sizes) // 2], sizes[len(sizes) // 2 + 1]
    row = _checkpoint(server, size)
    signer = server.cp.store.signer
    with server.cp.db.read() as session:
        root = server.cp.store.root_at(session, size)
    forged = Checkpoint.linked(
        signer.origin, size, root, CheckpointLink(sizes[0], b"\x00" * 32)
    ).sign(signer.origin, signer.private_key)
    sql(server, "UPDATE checkpoints SET note = :n WHERE tree_size = :s", n=forged, s=size)
    try:
        problems = database_check(server).problems
        assert (
            f"checkpoint for size {after} names previous checkpoint at size {size}, which "
            f"differs from the one linked (the checkpoint at size {size} was replaced)"
        ) in problems, problems
    finally:
        sql(server, "UPDATE checkpoints SET note = :n WHERE tree_size = :s", n=row["note"], s=size)
    assert_intact(tables)


def _sizes(server: LiveServer) -> list[int]:
    with server.cp.db.writer.connect() as conn:
        return [r[0] for r in conn.execute(text("SELECT tree_size FROM checkpoints"))]


# --- an older backup restored ----------------------------------------------------------------


def _pg_name(server: LiveServer) -> str:
    return server.cp.db.writer.url.database or ""


def _disconnect(server: LiveServer) -> None:
    """Close the server's pooled connections (reopened on the next request), as a restore
    under a running server needs: PostgreSQL copies a database only without connections."""
    server.cp.db.dispose()
    if not server.cp.db.is_sqlite:  # and any connection a background thread still holds
        pg_admin(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            f"WHERE datname = '{_pg_name(server)}' AND pid <> pg_backend_pid()"
        )


def _backup(server: LiveServer, directory: Path) -> str:
    if server.cp.db.is_sqlite:
        path = Path(server.cp.db.writer.url.database or "")
        copy = directory / "backup.db"
        with sqlite3.connect(path) as live, sqlite3.connect(copy) as target:
            live.backup(target)  # a consistent copy of the WAL database
        return str(copy)
    name = f"{_pg_name(server)}_backup"
    _disconnect(server)
    pg_admin(f'CREATE DATABASE "{name}" TEMPLATE "{_pg_name(server)}"')
    return name


def _restore(server: LiveServer, backup: str) -> None:
    _disconnect(server)
    if server.cp.db.is_sqlite:
        path = Path(server.cp.db.writer.url.database or "")
        with sqlite3.connect(backup) as source, sqlite3.connect(path) as live:
            source.backup(live)
        return
    live = _pg_name(server)
    pg_admin(f'DROP DATABASE "{live}" WITH (FORCE)')
    pg_admin(f'CREATE DATABASE "{live}" TEMPLATE "{backup}"')
    pg_admin(f'DROP DATABASE "{backup}"')


@pytest.fixture
def restored(ledger: Ledger, tmp_path: Path) -> Iterator[tuple[Ledger, int]]:
    """Back up, append and verify (pinning the longer ledger), then restore the backup."""
    backup = _backup(ledger.server, tmp_path)
    other = tmp_path / "later.md"
    other.write_text("# Later\n\nAppended after the backup.\n")
    for n in range(2):
        ok(["register", "rubric", f"later-{n}", other], ledger.env)
    longer = run_json(["verify", "--state", ledger.state], ledger.env)
    assert longer["ok"] is True and longer["size"] > ledger.size
    _restore(ledger.server, backup)
    yield ledger, longer["size"]
    if not ledger.server.cp.db.is_sqlite:
        pg_admin(f'DROP DATABASE IF EXISTS "{backup}"')


def test_restored_older_backup_fails_the_pinned_client(
    restored: tuple[Ledger, int], tmp_path: Path
) -> None:
    ledger, longer = restored
    # The backup is a valid, signed ledger: the operator's check and a newcomer accept it...
    database = database_check(ledger.server)
    assert database.ok and database.size == ledger.size, database.problems
    newcomer = run_json(["verify", "--state", tmp_path / "newcomer.json"], ledger.env)
    assert newcomer["size"] == ledger.size
    # ...the client that verified the longer ledger does not, and says why.
    report = client_report(ledger, ledger.state)
    assert report["size"] == ledger.size
    assert any(
        f"has {ledger.size} entries but {longer} were verified before: history was truncated "
        "or rolled back" in p
        for p in report["problems"]
    ), report
    result = fails(["verify", "--state", ledger.state], ledger.env, 1)
    assert "truncated or rolled back" in result.stderr, describe(result)
