"""Alembic migrations on fresh SQLite and PostgreSQL databases.

``alembic upgrade head`` is the only way the schema is made: it must create every table the
models declare (plus the append-only triggers), agree with the models (``alembic check``), be
idempotent, and survive a full downgrade to base and back.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import create_engine, inspect, pool, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError
from sqlmodel import SQLModel

import controlplane.store.models  # noqa: F401  (registers the tables)
from controlplane.config import Settings
from controlplane.core import ControlPlane
from controlplane.store import migrate

APPEND_ONLY = ("ledger_entries", "merkle_nodes", "checkpoints")
MODEL_TABLES = set(SQLModel.metadata.tables)


def _engine(url: str) -> Engine:
    return create_engine(url, poolclass=pool.NullPool)


def _tables(url: str) -> set[str]:
    engine = _engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def _triggers(url: str) -> set[str]:
    engine = _engine(url)
    try:
        with engine.connect() as conn:
            if engine.dialect.name == "sqlite":
                rows = conn.execute(text("SELECT name FROM sqlite_master WHERE type = 'trigger'"))
            else:
                rows = conn.execute(text("SELECT tgname FROM pg_trigger WHERE NOT tgisinternal"))
            return {row[0] for row in rows}
    finally:
        engine.dispose()


def _revision(url: str) -> str | None:
    engine = _engine(url)
    try:
        with engine.connect() as conn:
            if "alembic_version" not in inspect(conn).get_table_names():
                return None
            return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    finally:
        engine.dispose()


def _assert_update_refused(url: str) -> None:
    """Insert a Merkle node on the raw schema and check that changing it is refused."""
    engine = _engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(
                text("INSERT INTO merkle_nodes (level, idx, hash) VALUES (0, 0, :h)"),
                {"h": b"\x01" * 32},
            )
        with pytest.raises(DBAPIError, match="append-only"), engine.begin() as conn:
            conn.execute(text("UPDATE merkle_nodes SET hash = :h"), {"h": b"\x02" * 32})
        with engine.connect() as conn:
            assert conn.execute(text("SELECT hash FROM merkle_nodes")).scalar() == b"\x01" * 32
    finally:
        engine.dispose()


@pytest.fixture
def fresh_url(db_url: str) -> str:
    """``db_url`` is already a fresh, empty database of either kind."""
    assert _tables(db_url) == set()
    return db_url


def test_upgrade_head_creates_every_table_and_the_triggers(fresh_url: str) -> None:
    migrate.upgrade(fresh_url, Settings())
    tables = _tables(fresh_url)
    assert tables == MODEL_TABLES | {"alembic_version"}
    for table in (
        *APPEND_ONLY,
        "server_keys",
        "principals",
        "api_tokens",
        "role_grants",
        "artifacts",
        "artifact_versions",
        "lineage_edges",
        "annotator_pseudonyms",
    ):
        assert table in tables
    triggers = _triggers(fresh_url)
    for table in APPEND_ONLY:
        assert any(name.startswith(table) for name in triggers), (table, triggers)
    assert _revision(fresh_url) is not None


def test_models_match_migrations(fresh_url: str) -> None:
    migrate.upgrade(fresh_url, Settings())
    migrate.check(fresh_url, Settings())  # raises if autogenerate would emit anything


def test_upgrade_is_idempotent(fresh_url: str) -> None:
    settings = Settings()
    migrate.upgrade(fresh_url, settings)
    revision, tables, triggers = _revision(fresh_url), _tables(fresh_url), _triggers(fresh_url)
    migrate.upgrade(fresh_url, settings)
    migrate.upgrade(fresh_url, settings)
    assert _revision(fresh_url) == revision
    assert _tables(fresh_url) == tables
    assert _triggers(fresh_url) == triggers
    migrate.check(fresh_url, settings)


def test_downgrade_to_base_and_upgrade_again(fresh_url: str) -> None:
    settings = Settings()
    migrate.upgrade(fresh_url, settings)
    head = _revision(fresh_url)

    command.downgrade(migrate.alembic_config(fresh_url, settings), "base")
    assert _tables(fresh_url) <= {"alembic_version"}
    assert _triggers(fresh_url) == set()
    assert _revision(fresh_url) is None

    migrate.upgrade(fresh_url, settings)
    assert _revision(fresh_url) == head
    assert _tables(fresh_url) == MODEL_TABLES | {"alembic_version"}
    migrate.check(fresh_url, settings)
    _assert_update_refused(fresh_url)


def test_control_plane_init_migrates_a_fresh_database(fresh_url: str, tmp_path: Path) -> None:
    plane = ControlPlane(
        Settings(data_dir=tmp_path / "data", database_url=fresh_url, pseudonym_secret="s")
    )
    try:
        first = plane.init()
        second = plane.init()
    finally:
        plane.close()
    assert first.created_admin and first.key_registered
    assert not second.created_admin and not second.key_registered
    assert _tables(fresh_url) == MODEL_TABLES | {"alembic_version"}
