"""Reading /metrics as a scraper does, and what an attacker with the database does to it."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

from tests.cli.test_tamper import APPEND_ONLY, drop_triggers
from tests.utils.server import LiveServer


@dataclass(frozen=True)
class Scrape:
    """One parsed exposition: ``value(name, **labels)`` of any sample."""

    samples: dict[tuple[str, frozenset[tuple[str, str]]], float]

    def value(self, name: str, **labels: str) -> float:
        """The sample's value, 0 if the series does not exist (a counter not yet touched)."""
        return self.samples.get((name, frozenset(labels.items())), 0.0)

    def names(self) -> set[str]:
        return {name for name, _ in self.samples}


def parse(exposition: str) -> Scrape:
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return Scrape(samples)


def scrape(url: str, token: str | None = None) -> Scrape:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = httpx.get(f"{url}/metrics", headers=headers, timeout=30)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain"), response.headers
    return parse(response.text)


def wait_for(condition: Callable[[], bool], timeout: float = 20.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or condition}")
        time.sleep(0.1)


def roll_back(server: LiveServer, keep: int) -> None:
    """Restore an older state the way a backup would: the newest entries, their Merkle nodes
    and checkpoints are gone together, so what is left is a self-consistent shorter ledger."""
    drop_triggers(server, APPEND_ONLY)
    with server.cp.db.writer.begin() as conn:
        conn.execute(text("DELETE FROM ledger_entries WHERE seq >= :keep"), {"keep": keep})
        conn.execute(text("DELETE FROM checkpoints WHERE tree_size > :keep"), {"keep": keep})
        # A node at (level, idx) covers leaves [idx * 2**level, (idx + 1) * 2**level).
        levels = [row[0] for row in conn.execute(text("SELECT DISTINCT level FROM merkle_nodes"))]
        for level in levels:
            conn.execute(
                text(
                    "DELETE FROM merkle_nodes WHERE level = :level AND (idx + 1) * :width > :keep"
                ),
                {"level": level, "width": 2**level, "keep": keep},
            )
