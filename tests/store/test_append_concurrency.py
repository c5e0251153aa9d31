"""Concurrent appends from several processes and threads never fork or gap the chain.

Every process builds its own :class:`ControlPlane` from the same database URL and data
directory (so the same checkpoint signing key), like API replicas and runners sharing one
database. Afterwards the ledger has exactly the expected number of entries with ``seq``
0..n-1, the client-side verifier accepts the chain and every signed checkpoint, and the stored
Merkle root equals the root the verifier computed.
"""

from __future__ import annotations

import multiprocessing
import threading
import time
import traceback
from collections import Counter
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from controlplane.config import Settings
from controlplane.core import ControlPlane
from controlplane.ledger import Checkpoint, verify_ledger
from controlplane.store.models import ArtifactVersionRow, CheckpointRow, LedgerEntryRow
from tests.utils.databases import make_settings

PROCESSES = 4
APPENDS_PER_PROCESS = 25
THREADS = 8
APPENDS_PER_THREAD = 12
REGISTRATIONS_PER_PROCESS = 6
JOIN_TIMEOUT_S = 60


def _settings_kwargs(settings: Settings) -> dict[str, Any]:
    return {
        "data_dir": str(settings.data_dir),
        "database_url": settings.resolved_database_url,
        "pseudonym_secret": settings.pseudonym_secret,
        "origin": settings.origin,
    }


# -- process bodies (module level so that 'spawn' children can import them) ---------------------


def _append_worker(kwargs: dict[str, Any], worker: int, count: int, barrier: Any, out: Any) -> None:
    try:
        plane = ControlPlane(Settings(**kwargs))
        try:
            barrier.wait(timeout=JOIN_TIMEOUT_S)
            seqs = []
            for k in range(count):
                with plane.store.transaction() as tx:
                    entry = tx.append(
                        actor=f"worker-{worker}",
                        action="test.hammered",
                        subject={"kind": "test", "name": f"p{worker}"},
                        payload={"n": k},
                    )
                seqs.append(entry.seq)
        finally:
            plane.close()
        out.put((worker, "ok", seqs))
    except BaseException:
        out.put((worker, "error", traceback.format_exc()))


def _register_worker(
    kwargs: dict[str, Any], worker: int, count: int, barrier: Any, out: Any
) -> None:
    try:
        plane = ControlPlane(Settings(**kwargs))
        try:
            barrier.wait(timeout=JOIN_TIMEOUT_S)
            results = []
            # Everybody registers the same content once: exactly one of them creates it.
            version, created = plane.registry.register_version(
                f"worker-{worker}",
                "hammer",
                "dataset",
                "identical",
                digest="sha256:" + "ab" * 32,
                uri="s3://bucket/identical.jsonl",
            )
            results.append(("identical", version["version"], created, version["ledger_seq"]))
            for k in range(count):
                digest = "sha256:" + f"{worker:02x}{k:02x}".ljust(64, "0")
                version, created = plane.registry.register_version(
                    f"worker-{worker}",
                    "hammer",
                    "dataset",
                    "shared",
                    digest=digest,
                    uri=f"s3://bucket/shared-{worker}-{k}.jsonl",
                    metadata={"worker": worker, "k": k},
                )
                results.append(("shared", version["version"], created, version["ledger_seq"]))
        finally:
            plane.close()
        out.put((worker, "ok", results))
    except BaseException:
        out.put((worker, "error", traceback.format_exc()))


def _init_worker(kwargs: dict[str, Any], worker: int, _count: int, barrier: Any, out: Any) -> None:
    try:
        plane = ControlPlane(Settings(**kwargs))
        try:
            barrier.wait(timeout=JOIN_TIMEOUT_S)
            result = plane.init()
        finally:
            plane.close()
        out.put((worker, "ok", (result.created_admin, result.key_registered)))
    except BaseException:
        out.put((worker, "error", traceback.format_exc()))


def _run_processes(
    target: Any, kwargs: dict[str, Any], count: int, processes: int = PROCESSES
) -> dict[int, Any]:
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(processes)
    out = ctx.Queue()
    procs = [
        ctx.Process(target=target, args=(kwargs, worker, count, barrier, out), daemon=True)
        for worker in range(processes)
    ]
    for proc in procs:
        proc.start()
    results: dict[int, Any] = {}
    deadline = time.monotonic() + JOIN_TIMEOUT_S
    try:
        for _ in procs:
            worker, status, value = out.get(timeout=max(1.0, deadline - time.monotonic()))
            assert status == "ok", f"worker {worker} failed:\n{value}"
            results[worker] = value
    finally:
        for proc in procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()
                proc.join()
    assert all(proc.exitcode == 0 for proc in procs), [proc.exitcode for proc in procs]
    return results


# -- checks --------------------------------------------------------------------------------------


def _size(cp: ControlPlane) -> int:
    with cp.db.read() as session:
        return cp.store.size(session)


def _assert_ledger_sound(cp: ControlPlane, expected_size: int) -> None:
    with cp.db.read() as session:
        count = session.execute(select(func.count()).select_from(LedgerEntryRow)).scalar_one()
        assert count == expected_size
        entries = list(cp.store.iter_entries(session))
        assert [e["seq"] for e in entries] == list(range(expected_size))
        checkpoints = cp.store.checkpoints(session, limit=10_000)
        notes = [row.note for row in checkpoints]
        report = verify_ledger(entries, notes, [cp.signer.verifier], cp.signer.origin)
        assert report.ok, report.problems
        assert report.size == expected_size
        assert report.checkpoints_verified == len(notes)
        stored_root = cp.store.root_at(session, expected_size)
        assert stored_root.hex() == report.root_hash
        # The newest checkpoint covers the whole ledger and signs the same root.
        latest = cp.store.latest_checkpoint(session)
        assert latest is not None and latest.tree_size == expected_size
        opened = Checkpoint.open(latest.note, [cp.signer.verifier])
        assert opened.size == expected_size and opened.root_hash == stored_root
        # Every checkpoint signs the root of its own size.
        for row in checkpoints:
            assert row.root_hash == cp.store.root_at(session, row.tree_size).hex()
        n_checkpoints = session.execute(
            select(func.count()).select_from(CheckpointRow)
        ).scalar_one()
        assert n_checkpoints == len(checkpoints)


# -- tests ---------------------------------------------------------------------------------------


def test_appends_from_several_processes(cp: ControlPlane) -> None:
    initial = _size(cp)
    results = _run_processes(_append_worker, _settings_kwargs(cp.settings), APPENDS_PER_PROCESS)
    total = PROCESSES * APPENDS_PER_PROCESS
    _assert_ledger_sound(cp, initial + total)

    every_seq = sorted(seq for seqs in results.values() for seq in seqs)
    assert every_seq == list(range(initial, initial + total))
    for seqs in results.values():
        assert seqs == sorted(seqs)  # a process sees its own appends in order

    with cp.db.read() as session:
        hammered = cp.store.entries(session, limit=10_000, action="test.hammered")
    assert len(hammered) == total
    per_worker: dict[str, list[int]] = {}
    for entry in hammered:
        per_worker.setdefault(entry["subject"]["name"], []).append(entry["payload"]["n"])
    assert per_worker == {f"p{i}": list(range(APPENDS_PER_PROCESS)) for i in range(PROCESSES)}
    # Every write transaction signed a checkpoint of its own size.
    with cp.db.read() as session:
        sizes = {row.tree_size for row in cp.store.checkpoints(session, limit=10_000)}
    assert set(range(initial + 1, initial + total + 1)) <= sizes


def test_appends_from_several_threads(cp: ControlPlane) -> None:
    initial = _size(cp)
    barrier = threading.Barrier(THREADS)
    errors: list[BaseException] = []
    seqs: list[int] = []
    lock = threading.Lock()

    def work(worker: int) -> None:
        try:
            barrier.wait(timeout=JOIN_TIMEOUT_S)
            for k in range(APPENDS_PER_THREAD):
                with cp.store.transaction() as tx:
                    entry = tx.append(
                        actor=f"thread-{worker}",
                        action="test.hammered",
                        subject={"kind": "test", "name": f"t{worker}"},
                        payload={"n": k},
                    )
                with lock:
                    seqs.append(entry.seq)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=JOIN_TIMEOUT_S)
    assert not any(thread.is_alive() for thread in threads)
    assert not errors, errors
    total = THREADS * APPENDS_PER_THREAD
    assert sorted(seqs) == list(range(initial, initial + total))
    _assert_ledger_sound(cp, initial + total)


def test_multi_entry_transactions_from_threads_stay_contiguous(cp: ControlPlane) -> None:
    """Entries of one transaction are adjacent: nobody interleaves inside a held lock."""
    initial = _size(cp)
    batch = 5
    errors: list[BaseException] = []
    batches: list[list[int]] = []

    def work(worker: int) -> None:
        try:
            for k in range(4):
                with cp.store.transaction() as tx:
                    got = [
                        tx.append(
                            actor=f"thread-{worker}",
                            action="test.batched",
                            subject={"kind": "test", "name": f"t{worker}"},
                            payload={"k": k, "i": i},
                        ).seq
                        for i in range(batch)
                    ]
                batches.append(got)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=JOIN_TIMEOUT_S)
    assert not errors, errors
    for got in batches:
        assert got == list(range(got[0], got[0] + batch))
    total = 4 * 4 * batch
    _assert_ledger_sound(cp, initial + total)
    with cp.db.read() as session:
        sizes = [row.tree_size for row in cp.store.checkpoints(session, start=initial + 1)]
    # One checkpoint per transaction, at the end of its batch.
    assert sorted(sizes) == sorted(got[-1] + 1 for got in batches)


def test_concurrent_registrations_from_several_processes(cp: ControlPlane) -> None:
    initial = _size(cp)
    results = _run_processes(
        _register_worker, _settings_kwargs(cp.settings), REGISTRATIONS_PER_PROCESS
    )

    identical = [r for rs in results.values() for r in rs if r[0] == "identical"]
    assert len(identical) == PROCESSES
    assert {r[1] for r in identical} == {1}
    assert sum(1 for r in identical if r[2]) == 1, identical  # exactly one created it

    shared = [r for rs in results.values() for r in rs if r[0] == "shared"]
    total = PROCESSES * REGISTRATIONS_PER_PROCESS
    assert all(r[2] for r in shared)
    assert sorted(r[1] for r in shared) == list(range(1, total + 1))
    for rs in results.values():
        own = [r[1] for r in rs if r[0] == "shared"]
        assert own == sorted(own)

    with cp.db.read() as session:
        versions = cp.registry.list_versions(session, "hammer", "dataset", "shared")
        assert [v["version"] for v in versions] == list(range(1, total + 1))
        counts = Counter(v["digest"] for v in versions)
        assert len(counts) == total and set(counts.values()) == {1}
        latest = cp.registry.latest_version(session, "hammer", "dataset", "shared")
        assert latest["version"] == total
        rows = session.execute(
            select(ArtifactVersionRow.version, ArtifactVersionRow.ledger_seq).where(
                ArtifactVersionRow.project == "hammer"
            )
        ).all()
        assert len(rows) == total + 1
        for version, seq in rows:
            entry = cp.store.entry(session, seq)
            assert entry is not None and entry["action"] == "artifact.version_registered"
            assert entry["subject"]["version"] == version
    _assert_ledger_sound(cp, initial + total + 1)


def test_concurrent_init_initialises_once(db_url: str, tmp_path: Path) -> None:
    """Replicas starting at once on a migrated, empty database initialise it exactly once."""
    settings = make_settings(db_url, tmp_path)
    first = ControlPlane(settings)
    try:
        first.migrate()  # racing two Alembic runs on an empty schema is not what this tests
        results = _run_processes(_init_worker, _settings_kwargs(settings), 0, processes=2)
        assert sum(created for created, _ in results.values()) == 1, results
        assert sum(registered for _, registered in results.values()) == 1, results
        with first.db.read() as session:
            actions = [e["action"] for e in first.store.iter_entries(session)]
        assert actions.count("server_key.registered") == 1
        assert actions.count("principal.created") == 1
        assert actions.count("token.issued") == 1
        _assert_ledger_sound(first, len(actions))
        assert first.settings.admin_token_file.exists()
    finally:
        first.close()
