"""The PostgreSQL lineage walk is an index walk even on tables without planner statistics.

A freshly bulk-loaded ``lineage_edges`` (no ``ANALYZE`` yet) makes PostgreSQL guess millions
of rows for the recursive step and pick a merge or hash join over the whole edge table, once per
level, plus JIT compilation: a 40-deep walk took 627 ms at 100k versions instead of a few.
The walk runs with those plans turned off for its statement only. This checks the plan the
walk actually runs (EXPLAIN of the very statement, on its connection, at the moment it runs)
and that the session's settings are the same afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text

from controlplane.core import ControlPlane
from controlplane.registry.refs import VersionRef
from tests.utils.databases import database_url, make_settings

CHAINS = 400
DEPTH = 30


@pytest.fixture(scope="module")
def bulk_loaded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """CHAINS chains of DEPTH versions, written in bulk and never analysed."""
    directory: Path = tmp_path_factory.mktemp("lineage-plan")
    with database_url("postgresql", directory) as url:
        plane = ControlPlane(make_settings(url, directory))
        plane.init()
        with plane.db.writer.begin() as conn:
            for table in ("artifacts", "artifact_versions", "lineage_edges"):
                # no statistics for the whole module: autovacuum must not analyse them
                conn.execute(text(f"ALTER TABLE {table} SET (autovacuum_enabled = false)"))
            conn.execute(
                text(
                    "INSERT INTO artifacts (project, kind, name, latest_version, created_at, "
                    "created_by) SELECT 'default', 'policy', 'c' || c, :depth, now(), 'alice' "
                    "FROM generate_series(1, :chains) AS c"
                ),
                {"chains": CHAINS, "depth": DEPTH},
            )
            conn.execute(
                text(
                    "INSERT INTO artifact_versions (artifact_id, project, kind, name, version, "
                    "digest, uri, metadata_json, created_by, created_at, ledger_seq) "
                    "SELECT a.id, 'default', 'policy', a.name, k, "
                    "'sha256:' || repeat('0', 64), 's3://b/' || a.name || '/' || k, '{}', "
                    "'alice', now(), 0 FROM artifacts a, generate_series(1, :depth) AS k"
                ),
                {"depth": DEPTH},
            )
            conn.execute(
                text(
                    "INSERT INTO lineage_edges (child_id, parent_id, relation) "
                    "SELECT c.id, p.id, 'derived_from' FROM artifact_versions c "
                    "JOIN artifact_versions p ON p.artifact_id = c.artifact_id "
                    "AND p.version = c.version - 1"
                )
            )
        try:
            yield plane
        finally:
            plane.close()


def _settings(session: Any) -> tuple[str, ...]:
    return tuple(
        session.execute(text(f"SHOW {name}")).scalar_one()
        for name in ("jit", "enable_hashjoin", "enable_mergejoin")
    )


def test_walk_plans_an_index_nested_loop_without_statistics(bulk_loaded: ControlPlane) -> None:
    plans: list[str] = []

    def explain(conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if "RECURSIVE" in statement:
            cursor.execute("EXPLAIN " + statement, parameters)
            plans.append("\n".join(row[0] for row in cursor.fetchall()))

    event.listen(bulk_loaded.db.reader, "before_cursor_execute", explain)
    try:
        with bulk_loaded.db.read() as session:
            before = _settings(session)
            result = bulk_loaded.registry.lineage(
                session, "default", VersionRef.parse(f"policy/c7@{DEPTH}"), "ancestors"
            )
            assert _settings(session) == before  # the walk's settings ended with it
    finally:
        event.remove(bulk_loaded.db.reader, "before_cursor_execute", explain)
    assert [n["distance"] for n in result["nodes"]] == list(range(DEPTH))
    assert len(plans) == 1
    assert "Nested Loop" in plans[0], plans[0]
    assert "Merge Join" not in plans[0] and "Hash Join" not in plans[0], plans[0]


def test_without_the_settings_the_planner_would_scan(bulk_loaded: ControlPlane) -> None:
    """The fixture is big enough to matter: unhinted, the planner picks a whole-table join."""
    with bulk_loaded.db.read() as session:
        plan = "\n".join(
            session.execute(
                text(
                    "EXPLAIN WITH RECURSIVE walk(id, depth) AS (SELECT parent_id, 1 FROM "
                    "lineage_edges WHERE child_id = 1 UNION SELECT e.parent_id, walk.depth + 1 "
                    "FROM lineage_edges e JOIN walk ON e.child_id = walk.id) "
                    "SELECT id, min(depth) FROM walk GROUP BY id"
                )
            ).scalars()
        )
    assert "Merge Join" in plan or "Hash Join" in plan, plan
