"""Engines and sessions for SQLite (embedded default) and PostgreSQL.

SQLite serialises writers with ``BEGIN IMMEDIATE`` (a deferred ``BEGIN`` loses appends to
"database is locked" under concurrent writers) in WAL mode with a long busy timeout; readers use
a second engine with deferred transactions so they never wait for the write lock. Within one
process the writer engine has a single pooled connection, so writer threads queue in order on
the pool instead of in SQLite's busy handler, which polls with sleeps of up to 100 ms and lets
a late arrival overtake: with four concurrent writers that made the p99 of an append 25 times
its median. Writers in other processes still meet at the busy timeout. PostgreSQL serialises
appends with a transaction-scoped advisory lock taken by the append itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

SQLITE_BUSY_TIMEOUT_MS = 60_000


_SQLITE_WRITER_POOL = {
    # one write transaction at a time per process anyway: writers queue on the pool
    "pool_size": 1,
    "max_overflow": 0,
    "pool_timeout": SQLITE_BUSY_TIMEOUT_MS / 1000,
}


def _sqlite_engine(url: str, immediate: bool, pool: dict[str, Any] | None) -> Engine:
    database = make_url(url).database
    if not database or database == ":memory:":
        pool = None  # a memory database has a singleton pool of its own
    engine = create_engine(
        url, connect_args={"check_same_thread": False, "timeout": 60}, **(pool or {})
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # let SQLAlchemy's begin event issue BEGIN
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


class Database:
    """A writer and a reader engine over one database URL.

    ``concurrency`` is how many requests may use the database at once (the API's
    ``api_concurrency``): each may hold two connections at a time (its read session and a
    write, or a read after its commit), and background workers (outbox, mirror, alerts) a few
    more, so the pools reach ``2 * concurrency + 8`` before anyone waits. Idle connections
    beyond ``concurrency`` are closed as they come back.
    """

    def __init__(self, url: str, *, echo: bool = False, concurrency: int = 16) -> None:
        self.url = url
        self.dialect = make_url(url).get_backend_name()
        pool = {"pool_size": concurrency, "max_overflow": concurrency + 8}
        if self.dialect == "sqlite":
            self.writer = _sqlite_engine(url, immediate=True, pool=_SQLITE_WRITER_POOL)
            self.reader = _sqlite_engine(url, immediate=False, pool=pool)
        else:
            self.writer = create_engine(url, echo=echo, pool_pre_ping=True, **pool)
            self.reader = self.writer
        self._write_sessions = sessionmaker(self.writer, expire_on_commit=False)
        self._read_sessions = sessionmaker(self.reader, expire_on_commit=False)

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A session for queries; rolled back at the end so it never writes."""
        with self._read_sessions() as session:
            try:
                yield session
            finally:
                session.rollback()

    def write_session(self) -> Session:
        """A new session on the writer engine (the caller commits or rolls back)."""
        return self._write_sessions()

    def dispose(self) -> None:
        self.writer.dispose()
        if self.reader is not self.writer:
            self.reader.dispose()
