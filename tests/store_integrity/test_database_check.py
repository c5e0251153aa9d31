"""``verify --database``: what only an operator with database access can check."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from controlplane.core import ControlPlane
from controlplane.store.integrity import NOT_PROJECTIONS, _plans, check_database


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


def test_every_column_of_a_projection_is_compared(cp: ControlPlane) -> None:
    """Columns a hand-written comparison once left out; one database, one check, four tables."""
    _populate(cp)
    with cp.db.writer.begin() as conn:
        conn.execute(text("UPDATE artifacts SET created_by = 'mallory'"))
        conn.execute(text("UPDATE artifact_versions SET stage = 'production', stage_seq = 1"))
        conn.execute(
            text("UPDATE principals SET created_at = '2000-01-01 00:00:00' WHERE id = 'alice'")
        )
        conn.execute(text("UPDATE lineage_edges SET relation = 'trained_on'"))
    report = check_database(cp.store)
    differing = {p.split()[1] for p in report.problems if "differs from a replay" in p}
    assert differing == {"artifacts", "artifact_versions", "principals", "lineage_edges"}


def test_every_migrated_table_is_compared_unless_it_is_not_a_projection(cp: ControlPlane) -> None:
    """Generic coverage: tables added by later migrations are compared without a change here."""
    with cp.db.read() as session:
        plans, _ = _plans(session.connection())
    compared = {name for name, plan in plans.items() if plan.compared}
    assert set(plans) - compared <= NOT_PROJECTIONS
    assert {
        "artifact_versions",
        "promotion_requests",
        "signoffs",
        "signing_keys",
        "principals",
        "role_grants",
    } <= compared
    assert not compared & {"ledger_entries", "api_tokens", "annotator_pseudonyms"}
    # surrogate ids are left out, and references to them resolved to the row they name
    assert plans["artifact_versions"].surrogate == "id"
    assert plans["artifact_versions"].references == {"artifact_id": "artifacts"}
    assert plans["lineage_edges"].references == {
        "child_id": "artifact_versions",
        "parent_id": "artifact_versions",
    }
    assert plans["signoffs"].references == {}  # promotion_requests.id is a seq, not surrogate


def test_surrogate_ids_that_differ_from_a_replay_are_not_a_difference(cp: ControlPlane) -> None:
    """PostgreSQL burns sequence values on rolled-back inserts, so the ids of a long-lived
    database differ from a fresh replay's; only what rows say (and point to) is compared."""
    with cp.db.writer.begin() as conn:
        if cp.db.is_sqlite:  # the next rowid is max + 1: park rows at 1000, removed below
            conn.execute(
                text(
                    "INSERT INTO artifacts (id, project, kind, name, latest_version, created_at,"
                    " created_by) VALUES (1000, 'gap', 'policy', 'gap', 1, CURRENT_TIMESTAMP, 'x')"
                )
            )
            conn.execute(
                text(
                    "INSERT INTO artifact_versions (id, artifact_id, project, kind, name, version,"
                    " digest, uri, metadata_json, created_by, created_at, ledger_seq, stage)"
                    " VALUES (1000, 1000, 'gap', 'policy', 'gap', 1, 'sha256:0', 'x', '{}', 'x',"
                    " CURRENT_TIMESTAMP, 0, 'registered')"
                )
            )
        else:
            for table in ("artifacts", "artifact_versions"):
                conn.execute(text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), 1000)"))
    _populate(cp)
    with cp.db.writer.begin() as conn:
        conn.execute(text("DELETE FROM artifact_versions WHERE project = 'gap'"))
        conn.execute(text("DELETE FROM artifacts WHERE project = 'gap'"))
        ids = conn.execute(text("SELECT min(id) FROM artifact_versions")).scalar_one()
    assert ids > 1000
    report = check_database(cp.store)
    assert report.ok, report.problems


def test_tables_that_are_not_projections_may_change(cp: ControlPlane) -> None:
    _populate(cp)
    with cp.db.writer.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO annotator_pseudonyms (pseudonym, project, annotator, created_at) "
                "VALUES ('ann-1', 'default', 'Ada', CURRENT_TIMESTAMP)"
            )
        )
        conn.execute(text("CREATE TABLE operator_notes (note TEXT)"))  # not ours at all
        conn.execute(text("INSERT INTO operator_notes VALUES ('hello')"))
    report = check_database(cp.store)
    assert report.ok, report.problems


def test_a_missing_projection_table_is_reported(cp: ControlPlane) -> None:
    _populate(cp)
    with cp.db.writer.begin() as conn:
        conn.execute(text("DROP TABLE signoffs"))
    report = check_database(cp.store)
    assert not report.ok
    assert any("projection table signoffs is missing" in p for p in report.problems)
