"""``verify --database``: what only an operator with database access can check."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from controlplane.core import ControlPlane
from controlplane.store.integrity import check_database


def _populate(cp: ControlPlane) -> None:
    cp.registry.register_rubric("admin", "default", "guide", b"# Guide\nBe helpful.\n")
    cp.registry.register_version(
        "admin",
        "default",
        "policy",
        "pol",
        digest="sha256:" + "a" * 64,
        uri="s3://bucket/pol",
        lineage=[{"relation": "derived_from", "ref": "rubric/guide@1"}],
    )
    cp.identity.create_principal("admin", "alice")
    cp.identity.grant_role("admin", "alice", "engineer", "default")


def _drop_triggers(cp: ControlPlane, table: str) -> None:
    with cp.db.writer.begin() as conn:
        if cp.db.is_sqlite:
            conn.exec_driver_sql(f"DROP TRIGGER {table}_no_update")
        else:
            conn.exec_driver_sql(f"DROP TRIGGER {table}_append_only ON {table}")


def test_intact_database_verifies(cp: ControlPlane) -> None:
    _populate(cp)
    report = check_database(cp.store)
    assert report.ok, report.problems
    assert report.size >= 8  # bootstrap entries plus the four above


def test_forged_merkle_node_is_found(cp: ControlPlane) -> None:
    _populate(cp)
    _drop_triggers(cp, "merkle_nodes")
    with cp.db.writer.begin() as conn:
        conn.execute(
            text("UPDATE merkle_nodes SET hash = :h WHERE level = 1 AND idx = 1"),
            {"h": b"\x00" * 32},
        )
    report = check_database(cp.store)
    assert not report.ok
    assert any("level 1, index 1" in p for p in report.problems)


def test_edited_index_column_is_found(cp: ControlPlane) -> None:
    _populate(cp)
    _drop_triggers(cp, "ledger_entries")
    with cp.db.writer.begin() as conn:
        conn.execute(text("UPDATE ledger_entries SET subject_name = 'other' WHERE seq = 5"))
    report = check_database(cp.store)
    assert report.first_bad_seq == 5


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE artifact_versions SET uri = 's3://elsewhere' WHERE kind = 'policy'",
        "DELETE FROM lineage_edges",
        "UPDATE principals SET display_name = 'Mallory' WHERE id = 'alice'",
        "INSERT INTO role_grants (principal_id, role, project, granted_seq) "
        "VALUES ('alice', 'admin', '*', 1)",
    ],
)
def test_projection_that_differs_from_replay_is_found(cp: ControlPlane, statement: str) -> None:
    _populate(cp)
    with cp.db.writer.begin() as conn:
        conn.execute(text(statement))
    report = check_database(cp.store)
    assert not report.ok
    assert any("differs from a replay" in p for p in report.problems)
