"""The post-commit hook of :class:`LedgerStore`: listeners hear what a transaction appended,
only after it committed, and a failing listener changes nothing (both databases)."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from controlplane.core import ControlPlane
from controlplane.ledger.entry import Entry


def test_listeners_hear_committed_entries_only(
    cp: ControlPlane, caplog: pytest.LogCaptureFixture
) -> None:
    heard: list[list[Entry]] = []
    durable: list[bool] = []

    def broken(_entries: list[Entry]) -> None:
        raise RuntimeError("a listener bug")

    def reader(entries: list[Entry]) -> None:
        with cp.db.read() as session:  # another session: the commit is already visible
            durable.append(cp.store.entry(session, entries[-1].seq) is not None)

    cp.store.listeners.extend([broken, heard.append, reader])
    subject: dict[str, Any] = {"kind": "test", "name": "hook"}
    with caplog.at_level(logging.ERROR, logger="controlplane.store"), cp.store.transaction() as tx:
        first = tx.append(actor="t", action="test.one", subject=subject, payload={})
        second = tx.append(actor="t", action="test.two", subject=subject, payload={})
    assert heard == [[first, second]] and durable == [True]
    assert "a listener bug" in caplog.text  # logged, swallowed

    with pytest.raises(ValueError), cp.store.transaction() as tx:
        tx.append(actor="t", action="test.three", subject=subject, payload={})
        raise ValueError("rolled back")
    with cp.store.transaction() as tx:
        tx.lock()  # a transaction that appends nothing
    assert len(heard) == 1
