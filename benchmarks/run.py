"""Performance benchmarks: every figure is a ratio against a baseline measured in the same run.

``python -m benchmarks.run [--db sqlite|postgresql|both] [--quick] [--sizes 10000,100000,1000000]
[--json OUT]``

Per database (a SQLite file in a temporary directory; a fresh PostgreSQL database, dropped at
the end) it measures:

1. registration: ``registry.register_version`` (one transaction each: entry, Merkle nodes,
   projection, signed checkpoint) and batched ``tx.append`` with projections, against plain ORM
   inserts of the same rows into a scratch table with the same columns and indexes;
2. verification: ``iter_entries`` + ``verify_ledger`` with the signed checkpoints, against
   reading the same rows and SHA-256-hashing their bytes;
3. inclusion and consistency proofs at each ledger size (filled with bulk appends), against a
   primary-key point read at the same size and against the proof latency at the first size;
4. ``registry.lineage(direction="ancestors")`` from deep nodes of a large version DAG, against
   a single-level parent lookup.

Progress goes to stderr, the final table to stdout, and ``--json`` writes every figure.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import platform
import random
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import (
    BigInteger,
    DateTime,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    bindparam,
    event,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from controlplane import clock
from controlplane.authz.projections import entry_time
from controlplane.config import Settings
from controlplane.core import ControlPlane
from controlplane.ledger import merkle
from controlplane.ledger.canonical import canonical_json
from controlplane.ledger.entry import GENESIS_HASH, Entry
from controlplane.ledger.verify import verify_ledger
from controlplane.registry.projections import find_version
from controlplane.registry.refs import VersionRef
from controlplane.store.ledger_store import ADVISORY_LOCK_KEY, entry_to_row
from controlplane.store.models import (
    ArtifactRow,
    ArtifactVersionRow,
    LedgerEntryRow,
    LineageEdgeRow,
    MerkleNodeRow,
)

ACTOR = "bench"
ORIGIN = "bench.controlplane/ledger"
PG_ADMIN_DSN = os.environ.get(
    "CONTROLPLANE_BENCH_PG_DSN", "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
)
PG_URL_TEMPLATE = os.environ.get(
    "CONTROLPLANE_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
)
DATABASES = ("sqlite", "postgresql")
REG_ARTIFACTS = 50  # registrations cycle over this many artifact names
FETCH_ONLY_MAX = 100_000  # the fetch-only breakdown of verification reads at most this prefix


# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------


@dataclass
class Config:
    sizes: list[int]
    reg_n: int = 2000
    reg_batch: int = 100
    proofs: int = 200
    fill_tx: int = 20_000
    fill_mode: str = "auto"
    fill_budget: float = 180.0
    verify_max: int = 1_000_000
    lineage_versions: int = 100_000
    lineage_depth: int = 40
    lineage_family: int = 4
    lineage_tx: int = 5000
    lineage_samples: int = 100
    lineage_budget: float = 60.0
    proof_budget: float = 60.0
    late_reg_n: int = 100
    late_reg_budget: float = 30.0
    seed: int = 6962


def make_config(args: argparse.Namespace) -> Config:
    if args.quick:
        cfg = Config(
            sizes=[1000, 10_000],
            reg_n=200,
            reg_batch=50,
            proofs=50,
            fill_tx=5000,
            lineage_versions=2000,
            lineage_depth=20,
            lineage_tx=1000,
            lineage_samples=30,
            fill_budget=4.0,
            lineage_budget=4.0,
            proof_budget=5.0,
            late_reg_n=20,
            late_reg_budget=3.0,
        )
    else:
        cfg = Config(sizes=[10_000, 100_000, 1_000_000])
    if args.sizes:
        cfg.sizes = sorted({int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip()})
    for name in (
        "reg_n",
        "reg_batch",
        "proofs",
        "fill_tx",
        "fill_mode",
        "fill_budget",
        "verify_max",
        "lineage_versions",
        "lineage_depth",
        "lineage_budget",
        "proof_budget",
        "seed",
    ):
        value = getattr(args, name)
        if value is not None:
            setattr(cfg, name, value)
    if cfg.lineage_depth < 2 or cfg.lineage_versions < cfg.lineage_depth:
        raise SystemExit("--lineage-versions must be at least --lineage-depth, depth at least 2")
    return cfg


def log(label: str, message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] [{label}] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Measuring
# ---------------------------------------------------------------------------------------------


class SqlCounter:
    """Counts statements sent to the database (``BEGIN``/``COMMIT`` excluded: psycopg sends
    its ``BEGIN`` without telling SQLAlchemy, SQLite's ``BEGIN IMMEDIATE`` is explicit)."""

    def __init__(self, engines: list[Any]) -> None:
        self.count = 0
        for engine in {id(e): e for e in engines}.values():
            event.listen(engine, "before_cursor_execute", self._on_execute)

    def _on_execute(self, _conn: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
        if not statement.lstrip()[:6].upper().startswith(("BEGIN", "COMMIT")):
            self.count += 1


def percentile(samples: list[float], q: float) -> float:
    """Nearest-rank percentile of ``samples`` (any order)."""
    ordered = sorted(samples)
    return ordered[max(0, min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1))]


def latency(samples: list[float], statements: int) -> dict[str, float]:
    """Milliseconds: median, p99, mean; statements per call."""
    return {
        "n": len(samples),
        "median_ms": statistics.median(samples) * 1e3,
        "p99_ms": percentile(samples, 0.99) * 1e3,
        "mean_ms": statistics.fmean(samples) * 1e3,
        "statements_per_call": statements / len(samples),
    }


def timed(fn: Callable[[], Any], counter: SqlCounter) -> tuple[float, int, Any]:
    before = counter.count
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, counter.count - before, result


def digest_of(tag: str) -> str:
    return "sha256:" + hashlib.sha256(tag.encode()).hexdigest()


# ---------------------------------------------------------------------------------------------
# Databases
# ---------------------------------------------------------------------------------------------


def _pg_admin(dsn: str, sql: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql)


@contextlib.contextmanager
def fresh_database(kind: str, args: argparse.Namespace) -> Iterator[tuple[str, Path]]:
    """A SQLite file in a temporary directory or a new PostgreSQL database (dropped after)."""
    with tempfile.TemporaryDirectory(prefix="cp-bench-") as tmp:
        if kind == "sqlite":
            yield f"sqlite:///{Path(tmp) / 'bench.db'}", Path(tmp)
            return
        name = f"cp_bench_{uuid.uuid4().hex[:10]}"
        _pg_admin(args.pg_admin_dsn, f'CREATE DATABASE "{name}"')
        try:
            yield args.pg_url_template.format(name=name), Path(tmp)
        finally:
            _pg_admin(args.pg_admin_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def server_version(cp: ControlPlane) -> str:
    if cp.db.is_sqlite:
        return f"SQLite {sqlite3.sqlite_version}"
    with cp.db.read() as session:
        return "PostgreSQL " + str(session.execute(text("SHOW server_version")).scalar_one())


def ledger_size(cp: ControlPlane) -> int:
    with cp.db.read() as session:
        return cp.store.size(session)


# ---------------------------------------------------------------------------------------------
# 1. Registration vs plain ORM inserts
# ---------------------------------------------------------------------------------------------


class _ScratchBase(DeclarativeBase):
    pass


class ScratchVersion(_ScratchBase):
    """Same columns and indexes as ``artifact_versions`` (no ledger, no foreign key)."""

    __tablename__ = "bench_scratch_versions"
    __table_args__ = (
        UniqueConstraint("artifact_id", "version"),
        Index("ix_bench_scratch_lookup", "project", "kind", "name", "version"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    artifact_id: Mapped[int] = mapped_column(Integer, nullable=False)
    project: Mapped[str] = mapped_column(String(100), nullable=False)
    kind: Mapped[str] = mapped_column(String(30), nullable=False)
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    digest: Mapped[str] = mapped_column(String(71), nullable=False, index=True)
    uri: Mapped[str] = mapped_column(Text, nullable=False)
    metadata_json: Mapped[str] = mapped_column(Text, nullable=False)
    created_by: Mapped[str] = mapped_column(String(100), nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    ledger_seq: Mapped[int] = mapped_column(BigInteger, nullable=False)


def _reg_metadata(i: int) -> dict[str, Any]:
    return {"rows": 1000 + i, "split": "train", "source": "bench"}


_TAG_OFFSET = {"single": 0, "batch": 1, "late": 2}


def register_one(cp: ControlPlane, tag: str, i: int) -> None:
    """One ``register_version`` call: its own transaction, projection and checkpoint."""
    cp.registry.register_version(
        ACTOR,
        "bench",
        "dataset",
        f"{tag}-{i % REG_ARTIFACTS}",
        digest=digest_of(f"{tag}-{i}"),
        uri=f"s3://bench/{tag}/{i}",
        metadata=_reg_metadata(i),
    )


def _scratch_row(tag: str, i: int) -> ScratchVersion:
    return ScratchVersion(
        artifact_id=(i % REG_ARTIFACTS) + 1 + _TAG_OFFSET[tag] * REG_ARTIFACTS,
        project="bench",
        kind="dataset",
        name=f"{tag}-{i % REG_ARTIFACTS}",
        version=i // REG_ARTIFACTS + 1,
        digest=digest_of(f"{tag}-{i}"),
        uri=f"s3://bench/{tag}/{i}",
        metadata_json=canonical_json(_reg_metadata(i)).decode(),
        created_by=ACTOR,
        created_at=clock.now(),
        ledger_seq=i,
    )


def insert_one(cp: ControlPlane, tag: str, i: int) -> None:
    """The baseline: one plain ORM insert of the equivalent row in its own transaction."""
    with cp.db.write_session() as session, session.begin():
        session.add(_scratch_row(tag, i))


def bench_registration(cp: ControlPlane, cfg: Config, counter: SqlCounter, label: str) -> dict:
    _ScratchBase.metadata.create_all(cp.db.writer)
    n, batch = cfg.reg_n, cfg.reg_batch
    rounds = 5  # alternate measured and baseline in rounds so that drift hits both alike
    bounds = [(n * r // rounds, n * (r + 1) // rounds) for r in range(rounds)]
    spent = {"ledgered": 0.0, "baseline": 0.0, "ledgered_batch": 0.0, "baseline_batch": 0.0}
    stmts = dict.fromkeys(spent, 0)

    def ledgered_single(lo: int, hi: int) -> None:
        for i in range(lo, hi):
            register_one(cp, "single", i)

    def baseline_single(lo: int, hi: int) -> None:
        for i in range(lo, hi):
            insert_one(cp, "single", i)

    def ledgered_batch(lo: int, hi: int) -> None:
        for start in range(lo, hi, batch):
            with cp.store.transaction() as tx:
                for i in range(start, min(hi, start + batch)):
                    tx.append(
                        actor=ACTOR,
                        action="artifact.version_registered",
                        subject={
                            "project": "bench",
                            "kind": "dataset",
                            "name": f"batch-{i % REG_ARTIFACTS}",
                            "version": i // REG_ARTIFACTS + 1,
                        },
                        payload={
                            "digest": digest_of(f"batch-{i}"),
                            "uri": f"s3://bench/batch/{i}",
                            "metadata": _reg_metadata(i),
                            "lineage": [],
                        },
                    )

    def baseline_batch(lo: int, hi: int) -> None:
        for start in range(lo, hi, batch):
            with cp.db.write_session() as session, session.begin():
                session.add_all(
                    [_scratch_row("batch", i) for i in range(start, min(hi, start + batch))]
                )

    runners = {
        "ledgered": ledgered_single,
        "baseline": baseline_single,
        "ledgered_batch": ledgered_batch,
        "baseline_batch": baseline_batch,
    }
    for lo, hi in bounds:
        for key, fn in runners.items():
            seconds, count, _ = timed(lambda fn=fn, lo=lo, hi=hi: fn(lo, hi), counter)
            spent[key] += seconds
            stmts[key] += count
        log(label, f"registration {hi}/{n}")

    with cp.db.read() as session:
        stored = session.execute(
            select(ArtifactVersionRow.id).where(ArtifactVersionRow.project == "bench")
        ).all()
        scratch = session.execute(select(ScratchVersion.id)).all()
    if len(stored) != 2 * n or len(scratch) != 2 * n:
        raise RuntimeError(f"registration stored {len(stored)} versions, scratch {len(scratch)}")

    def rate(key: str) -> dict[str, float]:
        return {
            "ops_per_s": n / spent[key],
            "ms_per_op": spent[key] / n * 1e3,
            "statements_per_op": stmts[key] / n,
        }

    return {
        "n": n,
        "batch": batch,
        "single": {"ledgered": rate("ledgered"), "baseline": rate("baseline")},
        "batched": {"ledgered": rate("ledgered_batch"), "baseline": rate("baseline_batch")},
    }


class LateRegistration:
    """``register_version`` latency once the ledger is large, against the same ORM insert.

    Samples alternate (one registration, one baseline insert) until ``late_reg_n`` pairs or
    ``late_reg_budget`` seconds (at least 5 pairs)."""

    def __init__(self, cp: ControlPlane, cfg: Config, counter: SqlCounter) -> None:
        self.cp, self.cfg, self.counter = cp, cfg, counter
        self._next = 0

    def measure(self, size: int) -> dict:
        samples: dict[str, list[float]] = {"ledgered": [], "baseline": []}
        stmts = dict.fromkeys(samples, 0)
        began = time.perf_counter()
        while len(samples["ledgered"]) < self.cfg.late_reg_n and (
            len(samples["ledgered"]) < 5 or time.perf_counter() - began < self.cfg.late_reg_budget
        ):
            i = self._next
            self._next += 1
            for key, fn in (("ledgered", register_one), ("baseline", insert_one)):
                seconds, count, _ = timed(lambda fn=fn, i=i: fn(self.cp, "late", i), self.counter)
                samples[key].append(seconds)
                stmts[key] += count
        return {
            "size": size,
            "ledgered": latency(samples["ledgered"], stmts["ledgered"]),
            "baseline": latency(samples["baseline"], stmts["baseline"]),
        }


# ---------------------------------------------------------------------------------------------
# Filling the ledger (bulk appends)
# ---------------------------------------------------------------------------------------------


def direct_append(cp: ControlPlane, session: Any, fields: list[dict[str, Any]]) -> list[Entry]:
    """Append entries exactly as ``tx.append(..., project=False)`` stores them (same rows, same
    Merkle nodes, built with the product's entry and tree functions, under the same lock) but
    with one executemany per table instead of two statements per entry. Benchmark-only."""
    store = cp.store
    if cp.db.dialect == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": ADVISORY_LOCK_KEY})
    head = session.execute(
        select(LedgerEntryRow.seq, LedgerEntryRow.entry_hash)
        .order_by(LedgerEntryRow.seq.desc())
        .limit(1)
    ).first()
    seq, prev = (0, GENESIS_HASH) if head is None else (head[0] + 1, head[1])
    cache: dict[merkle.NodeId, bytes] = {}

    def lookup(node: merkle.NodeId) -> bytes:
        found = cache.get(node)
        return found if found is not None else store.fetch_nodes(session, [node])[node]

    entries: list[Entry] = []
    nodes: list[dict[str, Any]] = []
    for item in fields:
        entry = Entry.create(seq=seq, timestamp=clock.now(), prev_hash=prev, **item)
        entries.append(entry)
        created = merkle.completed_nodes(seq, merkle.leaf_hash(entry.leaf_input), lookup)
        cache.update(created)
        nodes.extend({"level": lv, "idx": ix, "hash": h} for (lv, ix), h in created)
        seq, prev = seq + 1, entry.entry_hash
    rows = [entry_to_row(e) for e in entries]
    for table, values in ((LedgerEntryRow.__table__, rows), (MerkleNodeRow.__table__, nodes)):
        for start in range(0, len(values), 5000):
            session.execute(insert(table), values[start : start + 5000])
    return entries


def _fill_fields(i: int) -> dict[str, Any]:
    return {
        "actor": "bench-filler",
        "action": "bench.filled",
        "subject": {"kind": "bench", "name": f"fill-{i}", "project": "bench"},
        "payload": {
            "digest": digest_of(f"fill-{i}"),
            "uri": f"s3://bench/fill/{i}",
            "note": "synthetic entry for the proof benchmarks",
        },
    }


class Budgeted:
    """Chooses between the product's ``tx.append`` path and :func:`direct_append`.

    ``append``: always the product path; ``direct``: always the bulk path; ``auto``: the
    product path until ``budget`` seconds were spent on it, then the bulk path."""

    def __init__(self, mode: str, budget: float) -> None:
        self.mode, self.budget = mode, budget
        self.stats = {
            "append_entries": 0,
            "append_seconds": 0.0,
            "direct_entries": 0,
            "direct_seconds": 0.0,
        }

    def path(self) -> str:
        if self.mode == "append" or (
            self.mode == "auto" and self.stats["append_seconds"] < self.budget
        ):
            return "append"
        return "direct"

    def record(self, path: str, entries: int, seconds: float) -> None:
        self.stats[f"{path}_entries"] += entries
        self.stats[f"{path}_seconds"] += seconds

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {**self.stats, "mode": self.mode, "budget_s": self.budget}
        for path in ("append", "direct"):
            seconds = self.stats[f"{path}_seconds"]
            out[f"{path}_entries_per_s"] = (
                self.stats[f"{path}_entries"] / seconds if seconds else None
            )
        return out


class Filler:
    """Grows the ledger with ``tx.append(..., project=False)``, ``fill_tx`` per transaction
    (each transaction signs one checkpoint), switching to :func:`direct_append` per
    :class:`Budgeted`. Everything it writes is verified by the verification benchmark."""

    def __init__(self, cp: ControlPlane, cfg: Config, label: str) -> None:
        self.cp, self.cfg, self.label = cp, cfg, label
        self.budget = Budgeted(cfg.fill_mode, cfg.fill_budget)
        self._next = 0

    def fill_to(self, target: int) -> None:
        size = ledger_size(self.cp)
        start_time, start_size = time.perf_counter(), size
        while size < target:
            chunk = min(self.cfg.fill_tx, target - size)
            path = self.budget.path()
            began = time.perf_counter()
            with self.cp.store.transaction() as tx:
                fields = [_fill_fields(self._next + k) for k in range(chunk)]
                if path == "append":
                    for item in fields:
                        tx.append(**item, project=False)
                else:
                    direct_append(self.cp, tx.session, fields)
                    tx.sign_checkpoint()
            self._next += chunk
            seconds = time.perf_counter() - began
            self.budget.record(path, chunk, seconds)
            size += chunk
            rate = (size - start_size) / (time.perf_counter() - start_time)
            log(
                self.label,
                f"fill {size:,}/{target:,} via {path} ({chunk / seconds:,.0f} entries/s in this "
                f"transaction, eta {(target - size) / rate:,.0f} s)",
            )
        if ledger_size(self.cp) != max(target, start_size):
            raise RuntimeError("the fill did not reach its target size")


# ---------------------------------------------------------------------------------------------
# 2. Verification vs reading and hashing the same rows
# ---------------------------------------------------------------------------------------------


def bench_verification(cp: ControlPlane, size: int, counter: SqlCounter) -> dict:
    store = cp.store

    def verify() -> Any:
        with cp.db.read() as session:
            notes = [
                r.note for r in store.sampled_checkpoints(session, 1000) if r.tree_size <= size
            ]
            report = verify_ledger(
                store.iter_entries(session, end=size), notes, [cp.signer.verifier], cp.signer.origin
            )
            expected = session.execute(
                text("SELECT root_hash FROM checkpoints WHERE tree_size = :n"), {"n": size}
            ).scalar_one_or_none()
        return report, notes, expected

    fetch_n = min(size, FETCH_ONLY_MAX)

    def fetch_only() -> int:
        with cp.db.read() as session:
            return sum(1 for _ in store.iter_entries(session, end=fetch_n))

    table = LedgerEntryRow.__table__
    columns = [
        table.c.seq,
        table.c.timestamp,
        table.c.actor,
        table.c.action,
        table.c.subject,
        table.c.payload,
        table.c.prev_hash,
    ]

    def read_and_hash() -> int:
        hashed = 0
        with cp.db.read() as session:
            start = 0
            while start < size:
                rows = session.execute(
                    select(*columns)
                    .where(table.c.seq >= start)
                    .order_by(table.c.seq)
                    .limit(min(5000, size - start))
                ).all()
                if not rows:
                    break
                for row in rows:
                    hashlib.sha256("\x1f".join(row[1:]).encode()).digest()
                hashed += len(rows)
                start = rows[-1][0] + 1
        return hashed

    verify_s, verify_stmts, (report, notes, expected) = timed(verify, counter)
    if not report.ok or report.size != size:
        raise RuntimeError(f"verification failed at size {size}: {report.problems[:3]}")
    if expected is not None and expected != report.root_hash:
        raise RuntimeError("verified root differs from the signed checkpoint at that size")
    fetch_s, _, fetched = timed(fetch_only, counter)
    base_s, base_stmts, hashed = timed(read_and_hash, counter)
    if fetched != fetch_n or hashed != size:
        raise RuntimeError(f"read {fetched}/{hashed} entries, expected {size}")
    return {
        "entries": size,
        "checkpoints_verified": report.checkpoints_verified,
        "checkpoints_offered": len(notes),
        "verify": {"seconds": verify_s, "entries_per_s": size / verify_s},
        "verify_statements": verify_stmts,
        "fetch_only": {"entries": fetch_n, "seconds": fetch_s, "entries_per_s": fetch_n / fetch_s},
        "baseline": {"seconds": base_s, "entries_per_s": size / base_s},
        "baseline_statements": base_stmts,
    }


# ---------------------------------------------------------------------------------------------
# 3. Proof latency vs point reads
# ---------------------------------------------------------------------------------------------


def bench_proofs(
    cp: ControlPlane, size: int, cfg: Config, counter: SqlCounter, rng: random.Random
) -> dict:
    """Random inclusion and consistency proofs at ``size``, interleaved with point reads.

    Up to ``proofs`` samples of each; stops early (after at least 10) once ``proof_budget``
    seconds have passed, so that a slow proof path cannot stall the run."""
    store = cp.store
    table = LedgerEntryRow.__table__
    samples: dict[str, list[float]] = {"inclusion": [], "consistency": [], "point_read": []}
    stmts = dict.fromkeys(samples, 0)
    with cp.db.read() as session:
        checkpoint_root = session.execute(
            text("SELECT root_hash FROM checkpoints WHERE tree_size = :n"), {"n": size}
        ).scalar_one_or_none()
        # warm-up, and a check that what is timed is a valid proof
        for _ in range(3):
            index, first = rng.randrange(size), rng.randrange(1, size)
            proof = store.inclusion_proof(session, index, size)
            merkle.verify_inclusion(
                index,
                size,
                bytes.fromhex(proof["leaf_hash"]),
                [bytes.fromhex(h) for h in proof["hashes"]],
                bytes.fromhex(proof["root_hash"]),
            )
            cons = store.consistency_proof(session, first, size)
            merkle.verify_consistency(
                first,
                size,
                bytes.fromhex(cons["first_root"]),
                bytes.fromhex(cons["second_root"]),
                [bytes.fromhex(h) for h in cons["hashes"]],
            )
            if checkpoint_root is not None and proof["root_hash"] != checkpoint_root:
                raise RuntimeError("proof root differs from the signed checkpoint")
            session.execute(select(table).where(table.c.seq == index)).one()
        began = time.perf_counter()
        while len(samples["inclusion"]) < cfg.proofs and (
            len(samples["inclusion"]) < 10 or time.perf_counter() - began < cfg.proof_budget
        ):
            index, first, point = rng.randrange(size), rng.randrange(1, size), rng.randrange(size)
            calls: dict[str, Callable[[], Any]] = {
                "inclusion": lambda index=index: store.inclusion_proof(session, index, size),
                "consistency": lambda first=first: store.consistency_proof(session, first, size),
                "point_read": lambda point=point: session.execute(
                    select(table).where(table.c.seq == point)
                ).one(),
            }
            for key, call in calls.items():
                seconds, count, _ = timed(call, counter)
                samples[key].append(seconds)
                stmts[key] += count
    return {key: latency(values, stmts[key]) for key, values in samples.items()}


# ---------------------------------------------------------------------------------------------
# 4. Lineage ancestors vs a single-level parent lookup
# ---------------------------------------------------------------------------------------------


def _lineage_parents(c: int, k: int, family: int) -> list[tuple[str, int, int]]:
    """Parents of version ``k`` of chain ``c``: ``(relation, chain, version)``.

    Each chain is one policy artifact with versions 1..depth (``initialized_from`` the previous
    version); every 5th version is also ``derived_from`` the previous chain of its family one
    level down, and every 10th version ``derived_from`` its own version k-3 (paths of different
    lengths, so the walk meets nodes at several depths).
    """
    if k == 1:
        return []
    parents = [("initialized_from", c, k - 1)]
    if c % family and k % 5 == 0:
        parents.append(("derived_from", c - 1, k - 1))
    if k % 10 == 0 and k > 3:
        parents.append(("derived_from", c, k - 3))
    return parents


def _lineage_fields(c: int, k: int, family: int) -> dict[str, Any]:
    """The entry ``register_version`` would append for this version (same payload shape)."""
    edges = sorted(
        (relation, str(VersionRef("policy", f"lin-{pc}", pk)), pc, pk)
        for relation, pc, pk in _lineage_parents(c, k, family)
    )
    return {
        "actor": ACTOR,
        "action": "artifact.version_registered",
        "subject": {"project": "lineage", "kind": "policy", "name": f"lin-{c}", "version": k},
        "payload": {
            "digest": digest_of(f"lin-{c}-{k}"),
            "uri": f"s3://bench/lineage/{c}/{k}",
            "metadata": {"step": k},
            "lineage": [
                {"relation": r, "kind": "policy", "name": f"lin-{pc}", "version": pk}
                for r, _ref, pc, pk in edges
            ],
        },
    }


class LineageBuilder:
    """Registers the lineage graph with bulk appends (``tx.append`` with projections), parents
    before children, ``lineage_tx`` per transaction; per :class:`Budgeted` the rest goes
    through :func:`direct_append` plus the same projection rows written with executemany."""

    def __init__(self, cp: ControlPlane, cfg: Config, label: str) -> None:
        self.cp, self.cfg, self.label = cp, cfg, label
        self.budget = Budgeted(cfg.fill_mode, cfg.lineage_budget)
        self._artifacts: dict[str, int] | None = None
        self._versions: dict[tuple[str, int], int] = {}

    def build(self) -> dict:
        cfg = self.cfg
        depth, family = cfg.lineage_depth, cfg.lineage_family
        chains = cfg.lineage_versions // depth
        order = [(c, k) for k in range(1, depth + 1) for c in range(chains)]  # parents first
        began = time.perf_counter()
        for start in range(0, len(order), cfg.lineage_tx):
            fields = [
                _lineage_fields(c, k, family) for c, k in order[start : start + cfg.lineage_tx]
            ]
            path = self.budget.path()
            t0 = time.perf_counter()
            with self.cp.store.transaction() as tx:
                if path == "append":
                    for item in fields:
                        tx.append(**item)
                else:
                    self._direct(tx.session, fields)
                    tx.sign_checkpoint()
            self.budget.record(path, len(fields), time.perf_counter() - t0)
            done = start + len(fields)
            log(
                self.label,
                f"lineage {done:,}/{len(order):,} via {path} "
                f"({len(fields) / (time.perf_counter() - t0):,.0f} versions/s in this transaction)",
            )
        seconds = time.perf_counter() - began
        expected_edges = sum(len(_lineage_parents(c, k, family)) for c, k in order)
        with self.cp.db.read() as session:
            versions = session.execute(
                text("SELECT COUNT(*) FROM artifact_versions WHERE project = 'lineage'")
            ).scalar_one()
            edges = session.execute(text("SELECT COUNT(*) FROM lineage_edges")).scalar_one()
        if versions != len(order) or edges != expected_edges:
            raise RuntimeError(f"lineage graph has {versions} versions and {edges} edges")
        return {
            "versions": len(order),
            "chains": chains,
            "depth": depth,
            "edges": int(edges),
            "ingest_seconds": seconds,
            "ingest": self.budget.summary(),
        }

    def _direct(self, session: Any, fields: list[dict[str, Any]]) -> None:
        """The entries plus exactly the rows the ``artifact.version_registered`` projection
        writes (artifacts, artifact_versions, lineage_edges), in bulk."""
        artifacts, versions = ArtifactRow.__table__, ArtifactVersionRow.__table__
        if self._artifacts is None:  # pick up what the product path registered
            self._artifacts = dict(
                session.execute(
                    select(artifacts.c.name, artifacts.c.id).where(artifacts.c.project == "lineage")
                ).all()
            )
            self._versions = {
                (name, version): vid
                for vid, name, version in session.execute(
                    select(versions.c.id, versions.c.name, versions.c.version).where(
                        versions.c.project == "lineage"
                    )
                )
            }
        entries = direct_append(self.cp, session, fields)
        new = {}
        for entry in entries:
            name = entry.subject["name"]
            if name not in self._artifacts and name not in new:
                new[name] = {
                    "project": "lineage",
                    "kind": "policy",
                    "name": name,
                    "latest_version": entry.subject["version"],
                    "created_at": entry_time(entry),
                    "created_by": entry.actor,
                }
        if new:
            ids = session.execute(
                insert(artifacts).returning(artifacts.c.id, sort_by_parameter_order=True),
                list(new.values()),
            ).scalars()
            self._artifacts.update(zip(new, ids, strict=True))
        latest: dict[int, int] = {}
        for entry in entries:
            aid = self._artifacts[entry.subject["name"]]
            latest[aid] = max(latest.get(aid, 0), entry.subject["version"])
        session.execute(
            update(artifacts)
            .where(artifacts.c.id == bindparam("b_id"))
            .values(latest_version=bindparam("b_version")),
            [{"b_id": aid, "b_version": v} for aid, v in latest.items()],
        )
        rows = [
            {
                "artifact_id": self._artifacts[e.subject["name"]],
                "project": "lineage",
                "kind": "policy",
                "name": e.subject["name"],
                "version": e.subject["version"],
                "digest": e.payload["digest"],
                "uri": e.payload["uri"],
                "metadata_json": canonical_json(e.payload["metadata"]).decode(),
                "created_by": e.actor,
                "created_at": entry_time(e),
                "ledger_seq": e.seq,
            }
            for e in entries
        ]
        ids = session.execute(
            insert(versions).returning(versions.c.id, sort_by_parameter_order=True), rows
        ).scalars()
        for entry, vid in zip(entries, ids, strict=True):
            self._versions[(entry.subject["name"], entry.subject["version"])] = vid
        edges = [
            {
                "child_id": self._versions[(e.subject["name"], e.subject["version"])],
                "parent_id": self._versions[(edge["name"], edge["version"])],
                "relation": edge["relation"],
            }
            for e in entries
            for edge in e.payload["lineage"]
        ]
        if edges:
            session.execute(insert(LineageEdgeRow.__table__), edges)


def sample_lineage(
    cp: ControlPlane, cfg: Config, counter: SqlCounter, rng: random.Random, chains: int
) -> dict:
    """``lineage(direction="ancestors")`` from the deepest version of random chains,
    alternating with the single-level parent lookup of the same version."""
    depth = cfg.lineage_depth
    registry = cp.registry
    samples: dict[str, list[float]] = {"ancestors": [], "parents": []}
    stmts = dict.fromkeys(samples, 0)
    sizes: list[int] = []
    max_distance = 0

    def parents(ref: VersionRef) -> list[Any]:
        row = find_version(session, "lineage", ref.kind, ref.name, ref.version)
        assert row is not None
        return session.execute(
            select(LineageEdgeRow.relation, ArtifactVersionRow)
            .join(ArtifactVersionRow, ArtifactVersionRow.id == LineageEdgeRow.parent_id)
            .where(LineageEdgeRow.child_id == row.id)
        ).all()

    with cp.db.read() as session:
        warm = VersionRef("policy", f"lin-{rng.randrange(chains)}", depth)
        registry.lineage(session, "lineage", warm, direction="ancestors")
        parents(warm)
        for _ in range(cfg.lineage_samples):
            ref = VersionRef("policy", f"lin-{rng.randrange(chains)}", depth)
            session.expunge_all()
            seconds, count, result = timed(
                lambda ref=ref: registry.lineage(session, "lineage", ref, direction="ancestors"),
                counter,
            )
            samples["ancestors"].append(seconds)
            stmts["ancestors"] += count
            sizes.append(len(result["nodes"]) - 1)
            max_distance = max(max_distance, max(n["distance"] for n in result["nodes"]))
            session.expunge_all()
            seconds, count, rows = timed(lambda ref=ref: parents(ref), counter)
            if not rows:
                raise RuntimeError(f"{ref} has no parents")
            samples["parents"].append(seconds)
            stmts["parents"] += count
    return {
        "ancestors": latency(samples["ancestors"], stmts["ancestors"]),
        "parents": latency(samples["parents"], stmts["parents"]),
        "ancestors_returned_median": statistics.median(sizes),
        "ancestors_returned_max": max(sizes),
        "max_distance": max_distance,
    }


def analyze(cp: ControlPlane) -> float:
    """Run ``ANALYZE`` on the whole database (planner statistics); seconds it took."""
    began = time.perf_counter()
    with cp.db.writer.begin() as conn:
        conn.execute(text("ANALYZE"))
    return time.perf_counter() - began


# ---------------------------------------------------------------------------------------------
# One database
# ---------------------------------------------------------------------------------------------


def run_database(kind: str, cfg: Config, args: argparse.Namespace) -> dict:
    label = kind
    rng = random.Random(cfg.seed)
    began = time.perf_counter()
    with fresh_database(kind, args) as (url, tmp):
        settings = Settings(
            data_dir=tmp / "data",
            database_url=url,
            pseudonym_secret="bench-pseudonym-secret",
            origin=ORIGIN,
            mlflow_enabled=False,  # measure the ledger, not a background MLflow mirror
        )
        cp = ControlPlane(settings)
        try:
            cp.init()
            counter = SqlCounter([cp.db.writer, cp.db.reader])
            result: dict[str, Any] = {
                "database": kind,
                "server": server_version(cp),
                "config_fill_tx": cfg.fill_tx,
                "config_lineage_tx": cfg.lineage_tx,
            }
            log(label, f"{result['server']}: registration, n={cfg.reg_n}")
            result["registration"] = bench_registration(cp, cfg, counter, label)
            filler = Filler(cp, cfg, label)
            late = LateRegistration(cp, cfg, counter)
            result["sizes"] = []
            for size in cfg.sizes:
                filler.fill_to(size)
                log(label, f"proofs at {size:,}")
                point = {"size": size, "proofs": bench_proofs(cp, size, cfg, counter, rng)}
                if size <= cfg.verify_max:
                    log(label, f"verification of {size:,} entries")
                    point["verification"] = bench_verification(cp, size, counter)
                log(label, f"registration latency at {size:,}")
                point["registration"] = late.measure(size)
                result["sizes"].append(point)
            result["fill"] = filler.budget.summary()
            log(label, f"lineage: {cfg.lineage_versions:,} versions, depth {cfg.lineage_depth}")
            graph = LineageBuilder(cp, cfg, label).build()
            log(label, "lineage queries")
            result["lineage"] = {**graph, **sample_lineage(cp, cfg, counter, rng, graph["chains"])}
            # The tables were bulk-loaded moments ago; nothing in the product runs ANALYZE
            # (and autovacuum may be off or not have run yet). Measure again with statistics.
            log(label, "ANALYZE, then proofs and lineage again")
            largest = cfg.sizes[-1]
            result["after_analyze"] = {
                "analyze_seconds": analyze(cp),
                "size": largest,
                "proofs": bench_proofs(cp, largest, cfg, counter, rng),
                "lineage": sample_lineage(cp, cfg, counter, rng, graph["chains"]),
            }
            result["load_average"] = os.getloadavg()
            result["final_ledger_size"] = ledger_size(cp)
        finally:
            cp.close()
    result["wall_seconds"] = time.perf_counter() - began
    log(label, f"done in {result['wall_seconds']:,.0f} s")
    return result


# ---------------------------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------------------------

Row = tuple[str, str, dict[str, tuple[float, float] | None]]
"""(what, unit, {database: (measured, baseline)}); ratio = cost(measured) / cost(baseline)."""


def _size_label(size: int) -> str:
    if size >= 1_000_000 and size % 1_000_000 == 0:
        return f"{size // 1_000_000}M"
    if size >= 1000 and size % 1000 == 0:
        return f"{size // 1000}k"
    return str(size)


def table_rows(results: list[dict]) -> list[tuple[str, list[Row]]]:
    by_db = {r["database"]: r for r in results}

    def each(fn: Callable[[dict], tuple[float, float] | None]) -> dict:
        out = {}
        for db, res in by_db.items():
            try:
                out[db] = fn(res)
            except (KeyError, IndexError, TypeError):
                out[db] = None
        return out

    sections: list[tuple[str, list[Row]]] = []
    reg: list[Row] = []
    for mode, what in (("single", "one per transaction"), ("batched", "batched")):

        def pair(res: dict, mode: str = mode, key: str = "ops_per_s") -> tuple[float, float]:
            part = res["registration"][mode]
            return part["ledgered"][key], part["baseline"][key]

        batch = results[0]["registration"]["batch"]
        suffix = f" ({batch}/tx)" if mode == "batched" else ""
        reg.append((f"registrations, {what}{suffix}", "ops/s", each(pair)))
        reg.append(
            (
                f"  SQL statements per registration{suffix}",
                "stmts",
                each(lambda res, mode=mode: pair(res, mode, "statements_per_op")),
            )
        )
    sizes = [p["size"] for p in results[0]["sizes"]]
    for i, size in enumerate(sizes):
        tag = _size_label(size)
        for stat in ("median_ms", "p99_ms"):
            reg.append(
                (
                    f"register_version @{tag} ledger, {stat[:-3]} (vs ORM insert)",
                    "ms",
                    each(
                        lambda res, i=i, stat=stat: (
                            res["sizes"][i]["registration"]["ledgered"][stat],
                            res["sizes"][i]["registration"]["baseline"][stat],
                        )
                    ),
                )
            )
        if i > 0:
            reg.append(
                (
                    f"register_version @{tag} ledger, median (vs @{_size_label(sizes[0])})",
                    "ms",
                    each(
                        lambda res, i=i: (
                            res["sizes"][i]["registration"]["ledgered"]["median_ms"],
                            res["sizes"][0]["registration"]["ledgered"]["median_ms"],
                        )
                    ),
                )
            )
    sections.append(("1. ledgered registration vs plain ORM insert of the same rows", reg))

    def ingest(part: Callable[[dict], dict]) -> Callable[[dict], tuple[float, float] | None]:
        def pair(res: dict) -> tuple[float, float] | None:
            stats = part(res)
            if not stats["append_entries_per_s"] or not stats["direct_entries_per_s"]:
                return None
            return stats["append_entries_per_s"], stats["direct_entries_per_s"]

        return pair

    bulk: list[Row] = [
        (
            f"ledger fill, tx.append x{results[0]['config_fill_tx']:,}/tx, no projection",
            "entries/s",
            each(ingest(lambda res: res["fill"])),
        ),
        (
            f"lineage ingest, tx.append x{results[0]['config_lineage_tx']:,}/tx with projections",
            "versions/s",
            each(ingest(lambda res: res["lineage"]["ingest"])),
        ),
    ]
    sections.append(
        (
            "1b. bulk appends vs executemany of the same rows (only when both paths ran)",
            bulk,
        )
    )

    ver: list[Row] = []
    for i, size in enumerate(sizes):

        def vpair(res: dict, i: int = i, key: str = "verify") -> tuple[float, float]:
            v = res["sizes"][i]["verification"]
            return v[key]["entries_per_s"], v["baseline"]["entries_per_s"]

        ver.append(
            (f"verify {_size_label(size)} entries (fetch + verify)", "entries/s", each(vpair))
        )
        ver.append(
            (
                f"  of which fetch only (iter_entries, "
                f"first {_size_label(min(size, FETCH_ONLY_MAX))})",
                "entries/s",
                each(lambda res, i=i: vpair(res, i, "fetch_only")),
            )
        )
    sections.append(("2. full verification vs reading the rows and SHA-256 of their bytes", ver))

    proofs: list[Row] = []
    for i, size in enumerate(sizes):
        tag = _size_label(size)
        for kind in ("inclusion", "consistency"):
            for stat in ("median_ms", "p99_ms"):
                proofs.append(
                    (
                        f"{kind} proof @{tag}, {stat[:-3]} (vs point read)",
                        "ms",
                        each(
                            lambda res, i=i, kind=kind, stat=stat: (
                                res["sizes"][i]["proofs"][kind][stat],
                                res["sizes"][i]["proofs"]["point_read"][stat],
                            )
                        ),
                    )
                )
            if i > 0:
                proofs.append(
                    (
                        f"{kind} proof @{tag}, median (vs @{_size_label(sizes[0])})",
                        "ms",
                        each(
                            lambda res, i=i, kind=kind: (
                                res["sizes"][i]["proofs"][kind]["median_ms"],
                                res["sizes"][0]["proofs"][kind]["median_ms"],
                            )
                        ),
                    )
                )
        proofs.append(
            (
                f"point read @{tag}, median (vs @{_size_label(sizes[0])})",
                "ms",
                each(
                    lambda res, i=i: (
                        res["sizes"][i]["proofs"]["point_read"]["median_ms"],
                        res["sizes"][0]["proofs"]["point_read"]["median_ms"],
                    )
                ),
            )
        )
        proofs.append(
            (
                f"  SQL statements per inclusion / consistency proof @{tag}",
                "stmts",
                each(
                    lambda res, i=i: (
                        res["sizes"][i]["proofs"]["inclusion"]["statements_per_call"],
                        res["sizes"][i]["proofs"]["consistency"]["statements_per_call"],
                    )
                ),
            )
        )
    last, tag = len(sizes) - 1, _size_label(sizes[-1])
    for kind in ("inclusion", "consistency"):
        proofs.append(
            (
                f"{kind} proof @{tag} after ANALYZE, median (vs point read)",
                "ms",
                each(
                    lambda res, kind=kind: (
                        res["after_analyze"]["proofs"][kind]["median_ms"],
                        res["after_analyze"]["proofs"]["point_read"]["median_ms"],
                    )
                ),
            )
        )
        proofs.append(
            (
                f"{kind} proof @{tag} after ANALYZE, median (vs as loaded)",
                "ms",
                each(
                    lambda res, kind=kind: (
                        res["after_analyze"]["proofs"][kind]["median_ms"],
                        res["sizes"][last]["proofs"][kind]["median_ms"],
                    )
                ),
            )
        )
    sections.append(("3. proof latency vs primary-key point read (and vs the first size)", proofs))

    lin: list[Row] = []
    lineage0 = results[0]["lineage"]
    lin.append(
        (
            f"ancestors of a depth-{lineage0['depth']} node in "
            f"{_size_label(lineage0['versions'])} versions, as loaded, median",
            "ms",
            each(
                lambda res: (
                    res["lineage"]["ancestors"]["median_ms"],
                    res["lineage"]["parents"]["median_ms"],
                )
            ),
        )
    )
    lin.append(
        (
            "  p99 (vs parent lookup)",
            "ms",
            each(
                lambda res: (
                    res["lineage"]["ancestors"]["p99_ms"],
                    res["lineage"]["parents"]["p99_ms"],
                )
            ),
        )
    )
    lin.append(
        (
            "  SQL statements per call",
            "stmts",
            each(
                lambda res: (
                    res["lineage"]["ancestors"]["statements_per_call"],
                    res["lineage"]["parents"]["statements_per_call"],
                )
            ),
        )
    )
    lin.append(
        (
            "ancestors after ANALYZE, median (vs parent lookup)",
            "ms",
            each(
                lambda res: (
                    res["after_analyze"]["lineage"]["ancestors"]["median_ms"],
                    res["after_analyze"]["lineage"]["parents"]["median_ms"],
                )
            ),
        )
    )
    lin.append(
        (
            "  p99 (vs parent lookup)",
            "ms",
            each(
                lambda res: (
                    res["after_analyze"]["lineage"]["ancestors"]["p99_ms"],
                    res["after_analyze"]["lineage"]["parents"]["p99_ms"],
                )
            ),
        )
    )
    lin.append(
        (
            "ancestors after ANALYZE, median (vs as loaded)",
            "ms",
            each(
                lambda res: (
                    res["after_analyze"]["lineage"]["ancestors"]["median_ms"],
                    res["lineage"]["ancestors"]["median_ms"],
                )
            ),
        )
    )
    sections.append(("4. lineage ancestors vs a single-level parent lookup", lin))
    return sections


def _fmt(value: float) -> str:
    if value >= 1000:
        return f"{value:,.0f}"
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    if value >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def _ratio(unit: str, measured: float, baseline: float) -> str:
    if unit.endswith("/s"):  # throughput: cost ratio is baseline rate / measured rate
        return f"{baseline / measured:.2f}x" if measured else "inf"
    return f"{measured / baseline:.2f}x" if baseline else "n/a"


def _counts(res: dict, part: str, key: str) -> str:
    return ", ".join(f"{_size_label(p['size'])}: {p[part][key]['n']}" for p in res["sizes"])


def _paths(stats: dict[str, Any]) -> str:
    out = f"{stats['append_entries']:,} via tx.append"
    if stats["append_entries"]:
        out += f" ({_fmt(stats['append_entries_per_s'])}/s)"
    if stats["direct_entries"]:
        out += (
            f" + {stats['direct_entries']:,} via executemany "
            f"({_fmt(stats['direct_entries_per_s'])}/s"
        )
        out += (
            f", tx.append budget {stats['budget_s']:.0f} s used up)"
            if stats["mode"] == "auto"
            else ")"
        )
    return out


def render_table(results: list[dict]) -> str:
    dbs = [r["database"] for r in results]
    width = 62
    head = f"{'benchmark':<{width}} {'unit':<9}"
    for db in dbs:
        head += f" | {db + ': measured':>20} {'baseline':>10} {'ratio':>8}"
    lines = [head, "-" * len(head)]
    for title, rows in table_rows(results):
        lines.append(title)
        for what, unit, values in rows:
            line = f"  {what:<{width - 2}} {unit:<9}"
            for db in dbs:
                pair = values.get(db)
                if pair is None:
                    line += f" | {'-':>20} {'-':>10} {'-':>8}"
                else:
                    measured, baseline = pair
                    line += (
                        f" | {_fmt(measured):>20} {_fmt(baseline):>10} "
                        f"{_ratio(unit, measured, baseline):>8}"
                    )
            lines.append(line)
    lines.append("-" * len(head))
    lines.append(
        "ratio = cost of measured / cost of baseline (for ops/s and entries/s: baseline rate / "
        "measured rate), both measured in the same run on the same database"
    )
    for res in results:
        fill, lin = res["fill"], res["lineage"]
        ingest_stats = lin["ingest"]
        lines.append(
            f"{res['database']} ({res['server']}): ledger fill {_paths(fill)}; lineage graph "
            f"{lin['versions']:,} versions in {lin['chains']:,} chains of depth {lin['depth']}, "
            f"{lin['edges']:,} edges, {_paths(ingest_stats)}; ANALYZE took "
            f"{res['after_analyze']['analyze_seconds']:.1f} s; ancestors returned median "
            f"{lin['ancestors_returned_median']:.0f}, max {lin['ancestors_returned_max']} "
            f"(max distance {lin['max_distance']}); final ledger {res['final_ledger_size']:,} "
            f"entries; proof samples per kind {_counts(res, 'proofs', 'inclusion')}; "
            f"registration samples {_counts(res, 'registration', 'ledgered')}; "
            f"wall {res['wall_seconds']:,.0f} s; load average at end "
            f"{' '.join(f'{x:.1f}' for x in res['load_average'])}"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------------


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """The options every benchmark entry point has: databases, JSON output, seed, PostgreSQL."""
    parser.add_argument("--db", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--json", type=Path, help="write every figure to this file")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--pg-admin-dsn", default=PG_ADMIN_DSN)
    parser.add_argument("--pg-url-template", default=PG_URL_TEMPLATE)


def write_json(path: Path, cfg: Any, results: list[dict], table: str, **extra: Any) -> None:
    """Every figure of a run, with the configuration and the machine it ran on."""
    document = {
        "config": asdict(cfg),
        "argv": sys.argv,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        **extra,
        "results": results,
        "table": table.splitlines(),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2, default=str) + "\n")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run", description=__doc__.split("\n")[0]
    )
    add_common_args(parser)
    parser.add_argument("--quick", action="store_true", help="smoke test: sizes 1k,10k, n=200")
    parser.add_argument("--sizes", help="ledger sizes for proofs, e.g. 10000,100000,1000000")
    parser.add_argument("--n", dest="reg_n", type=int, help="registrations per variant")
    parser.add_argument("--batch", dest="reg_batch", type=int, help="appends per batch transaction")
    parser.add_argument("--proofs", type=int, help="random proofs per size")
    parser.add_argument("--fill-tx", dest="fill_tx", type=int, help="appends per fill transaction")
    parser.add_argument(
        "--fill-mode",
        dest="fill_mode",
        choices=["auto", "append", "direct"],
        help="append: product tx.append only; direct: executemany only; auto: append until "
        "--fill-budget seconds are spent, then direct (default)",
    )
    parser.add_argument(
        "--fill-budget", dest="fill_budget", type=float, help="seconds of tx.append fill per db"
    )
    parser.add_argument(
        "--verify-max", dest="verify_max", type=int, help="largest size that is fully verified"
    )
    parser.add_argument("--lineage-versions", dest="lineage_versions", type=int)
    parser.add_argument("--lineage-depth", dest="lineage_depth", type=int)
    parser.add_argument(
        "--lineage-budget",
        dest="lineage_budget",
        type=float,
        help="seconds of tx.append lineage ingest per db before executemany (auto mode)",
    )
    parser.add_argument(
        "--proof-budget",
        dest="proof_budget",
        type=float,
        help="seconds of proof sampling per size (at least 10 samples are always taken)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = make_config(args)
    dbs = list(DATABASES) if args.db == "both" else [args.db]
    log("bench", f"config {asdict(cfg)}; databases {dbs}")
    results = [run_database(db, cfg, args) for db in dbs]
    table = render_table(results)
    print(table)
    if args.json:
        write_json(args.json, cfg, results, table)
        log("bench", f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
