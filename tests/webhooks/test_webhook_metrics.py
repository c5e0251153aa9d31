"""/metrics over real HTTP follows the webhook outbox: attempts by outcome, pending deliveries,
and the lag of the outbox behind the ledger (SQLite and PostgreSQL, a real receiver)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from controlplane.config import Settings
from controlplane.core import ControlPlane
from controlplane.store.models import WebhookDeliveryRow
from tests.governance.helpers import World
from tests.ops.helpers import Scrape, scrape
from tests.utils.databases import make_settings
from tests.utils.server import LiveServer, live_server
from tests.webhooks.conftest import webhook_settings
from tests.webhooks.receiver import Receiver

ATTEMPTS = "controlplane_webhook_delivery_attempts_total"
PENDING = "controlplane_webhook_deliveries_pending"
LAG = "controlplane_webhook_outbox_lag"
MAX_AGE = 1.0


@pytest.fixture
def settings(db_url: str, tmp_path: Path, receiver: Receiver) -> Settings:
    """Fast retries and a short maximum age, so that a delivery is given up soon."""
    return webhook_settings(
        db_url, tmp_path, receiver, webhook_retry_max_seconds=0.1, webhook_max_age_seconds=MAX_AGE
    )


def _states(cp: ControlPlane) -> dict[str, int]:
    with cp.db.read() as session:
        rows = session.execute(
            select(WebhookDeliveryRow.state, func.count()).group_by(WebhookDeliveryRow.state)
        ).all()
    return {state: count for state, count in rows}


def _attempts(scraped: Scrape) -> dict[str, float]:
    return {o: scraped.value(ATTEMPTS, outcome=o) for o in ("delivered", "retrying", "failed")}


def test_webhook_metrics_follow_the_outbox(server: LiveServer, receiver: Receiver) -> None:
    cp = server.cp
    cp.webhooks.stop()  # the test drives the rounds itself, so every number is exact
    with cp.db.read() as session:
        start = cp.store.size(session)
    first = scrape(server.url)
    assert _attempts(first) == {"delivered": 0, "retrying": 0, "failed": 0}
    assert {ATTEMPTS, PENDING, LAG} <= first.names()
    assert first.value(PENDING) == 0 and first.value(LAG) == 0

    # committed but not swept yet: the outbox lags by every entry since its cursor
    world = World(cp)
    model = world.register("policy", "pi")
    world.promote(model, "candidate")
    with cp.db.read() as session:
        grown = cp.store.size(session) - start
    assert grown > 0
    assert scrape(server.url).value(LAG) == grown

    # one round sweeps (no lag) and delivers everything wanted
    delivered = cp.webhooks.run_once()
    assert delivered == _states(cp)["delivered"] > 0
    after = scrape(server.url)
    assert after.value(LAG) == 0 and after.value(PENDING) == 0
    assert _attempts(after) == {"delivered": delivered, "retrying": 0, "failed": 0}

    # the receiver is down: the head of the queue is retried, the rest wait, all pending
    receiver.down()
    world.promote(world.register("policy", "other"), "candidate")
    assert cp.webhooks.run_once() == 0
    waiting = _states(cp)["pending"]
    down = scrape(server.url)
    assert down.value(PENDING) == waiting > 0 and down.value(LAG) == 0
    assert _attempts(down) == {"delivered": delivered, "retrying": 1, "failed": 0}

    # past the maximum age every pending delivery is given up, one failed attempt each
    time.sleep(MAX_AGE + 0.1)
    deadline = time.monotonic() + 15
    while _states(cp).get("pending"):
        assert time.monotonic() < deadline, _states(cp)
        cp.webhooks.run_once()
        time.sleep(0.02)
    given_up = scrape(server.url)
    assert given_up.value(PENDING) == 0
    counted = _attempts(given_up)
    assert counted["failed"] == _states(cp)["failed"] == waiting
    assert counted["delivered"] == delivered and counted["retrying"] >= 1


def test_no_webhook_series_without_receivers(tmp_path: Path, sqlite_url: str) -> None:
    """Webhooks off: the series are absent rather than a misleading zero."""
    plane = ControlPlane(make_settings(sqlite_url, tmp_path))
    try:
        plane.init()
        with live_server(plane) as running:
            names = scrape(running.url).names()
    finally:
        plane.close()
    assert "controlplane_jobs_queued" in names
    assert not {ATTEMPTS, PENDING, LAG} & names
