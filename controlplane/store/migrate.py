"""Run Alembic migrations from the application (``init``, ``serve``, tests).

Several replicas started at once on a new database all run ``upgrade``; without a lock they
race to create the same tables and all but one crash on start (PostgreSQL: a unique violation
in ``pg_type``; SQLite: "table already exists"). So an upgrade runs under a database-wide lock:
a PostgreSQL session-level advisory lock, or on SQLite a file lock beside the database file.
The next replica then finds the schema at head and does nothing.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, create_engine, make_url, pool, text

from controlplane.config import Settings

MIGRATION_LOCK_KEY = 0x6D69677261740001  # "migrat" + 1: one schema upgrade at a time


def alembic_config(url: str, settings: Settings | None = None) -> Config:
    settings = settings or Settings()
    cfg = Config()
    cfg.set_main_option("script_location", str(settings.migrations_dir))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str, settings: Settings | None = None, revision: str = "head") -> None:
    """Bring the database at ``url`` to ``revision`` (idempotent, one process at a time)."""
    cfg = alembic_config(url, settings)
    with _exclusive(url) as connection:
        if connection is not None:
            cfg.attributes["connection"] = connection  # migrate on the lock's own session
        command.upgrade(cfg, revision)
        if connection is not None:
            connection.commit()


@contextmanager
def _exclusive(url: str) -> Iterator[Connection | None]:
    """Hold the migration lock of the database at ``url``; on PostgreSQL yield the locked
    connection (the migration must run on it: the lock belongs to its session)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "postgresql":
        engine = create_engine(url, poolclass=pool.NullPool)
        try:
            with engine.connect() as connection:
                connection.execute(text("SELECT pg_advisory_lock(:k)"), {"k": MIGRATION_LOCK_KEY})
                connection.commit()  # session-level: Alembic opens its own transaction
                try:
                    yield connection
                finally:
                    connection.rollback()
                    connection.execute(
                        text("SELECT pg_advisory_unlock(:k)"), {"k": MIGRATION_LOCK_KEY}
                    )
                    connection.commit()
        finally:
            engine.dispose()
        return
    database = parsed.database
    if parsed.get_backend_name() != "sqlite" or not database or database == ":memory:":
        yield None
        return
    lock_path = Path(database).with_name(Path(database).name + ".migrate.lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield None
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def check(url: str, settings: Settings | None = None) -> None:
    """Raise if the models and the migrations disagree."""
    command.check(alembic_config(url, settings))
