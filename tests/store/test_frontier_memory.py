"""The tree frontier a process remembers between its appends never yields a wrong root.

Two :class:`ControlPlane` instances on one database stand for two API replicas: each
remembers the frontier nodes of the head it committed, and must notice when the other one
appended since (or the ledger changed under it) and read the nodes anew. Every signed
checkpoint's root must equal the RFC 6962 root recomputed from the entries, whatever the
order of writers and batch sizes; and when the same process made the head, an append reads
no Merkle node from the database at all.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import event

from controlplane.core import ControlPlane
from controlplane.ledger import verify_ledger
from tests.utils.databases import KINDS, database_url, make_settings


@pytest.fixture(scope="module", params=KINDS)
def replicas(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ControlPlane, ControlPlane]]:
    directory: Path = tmp_path_factory.mktemp(f"frontier-{request.param}")
    with database_url(request.param, directory) as url:
        first = ControlPlane(make_settings(url, directory))
        first.init()
        second = ControlPlane(make_settings(url, directory))
        try:
            yield first, second
        finally:
            second.close()
            first.close()


def _append(plane: ControlPlane, count: int) -> None:
    with plane.store.transaction() as tx:
        for k in range(count):
            tx.append(actor="alice", action="test.frontier", subject={"n": k}, payload={})


def _checkpoints_match_entries(plane: ControlPlane) -> None:
    """Every signed checkpoint verifies, against the roots recomputed from the entries."""
    with plane.db.read() as session:
        entries = list(plane.store.iter_entries(session))
        notes = [row.note for row in plane.store.checkpoints(session, limit=100_000)]
    report = verify_ledger(entries, notes, [plane.signer.verifier], plane.signer.origin)
    assert report.ok, report.problems
    assert report.checkpoints_verified == len(notes)


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(steps=st.lists(st.tuples(st.booleans(), st.integers(1, 5)), min_size=1, max_size=8))
def test_interleaved_writers_sign_true_roots(
    replicas: tuple[ControlPlane, ControlPlane], steps: list[tuple[bool, int]]
) -> None:
    for use_second, count in steps:
        _append(replicas[1] if use_second else replicas[0], count)
    _checkpoints_match_entries(replicas[0])


def test_own_head_needs_no_node_reads(replicas: tuple[ControlPlane, ControlPlane]) -> None:
    first, second = replicas
    _append(second, 3)  # the other replica made the head: the first must read nodes
    statements: list[str] = []

    def record(_conn, _cursor, statement, *_args) -> None:  # type: ignore[no-untyped-def]
        statements.append(statement)

    event.listen(first.db.writer, "before_cursor_execute", record)
    try:
        _append(first, 1)
        assert any("merkle_nodes.hash" in s or "FROM merkle_nodes" in s for s in statements)
        statements.clear()
        for _ in range(3):
            _append(first, 2)
        assert not [s for s in statements if "FROM merkle_nodes" in s]
    finally:
        event.remove(first.db.writer, "before_cursor_execute", record)
    _checkpoints_match_entries(first)
