"""/metrics over real HTTP: the numbers move with what the server does (both databases)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from controlplane.api.app import create_app
from tests.cli.test_tamper import drop_triggers
from tests.governance.helpers import pinned_clock
from tests.ops.helpers import parse, scrape, wait_for
from tests.runners.helpers import Lab
from tests.utils.databases import KINDS, served
from tests.utils.server import LiveServer

DURATION = "controlplane_http_request_duration_seconds_count"
APPENDED = "controlplane_ledger_entries_appended_total"
FAILURES = "controlplane_verification_failures_total"


@pytest.fixture
def lab(server: LiveServer) -> Iterator[Lab]:
    world = Lab(server)
    try:
        yield world
    finally:
        world.close()


def test_requests_appends_queue_depth_refusals_and_lease_expiries_are_counted(lab: Lab) -> None:
    url, project = lab.server.url, lab.project
    with pinned_clock(datetime.now(UTC)) as clk:
        rubric, dataset = lab.approved_data("m")
        runner = lab.runner("runner-m")
        contract = lab.contract("reward_model", [dataset, rubric], [runner.id])
        before = scrape(url)
        assert before.value("controlplane_jobs_queued") == 0
        assert before.value("controlplane_database_up") == 1
        queued_before = before.value(APPENDED, action="job.queued")

        job = lab.queue("reward_model", datasets=[dataset["ref"]], rubric=rubric["ref"])
        with lab.http(lab.eng) as http:
            assert http.get("/v1/no/such/route").status_code == 404
        after = scrape(url)
        assert after.value("controlplane_jobs_queued") == 1
        assert after.value("controlplane_jobs_queued_by_project", project=project) == 1
        assert after.value(APPENDED, action="job.queued") == queued_before + 1
        route = "/v1/projects/{project}/jobs"
        assert after.value(DURATION, method="POST", route=route, status="201") == (
            before.value(DURATION, method="POST", route=route, status="201") + 1
        )
        # a path no route matches is one bounded series, whatever the path was
        assert after.value(DURATION, method="GET", route="unmatched", status="404") >= 1
        assert not any("/v1/no/such/route" in str(labels) for _, labels in after.samples)
        with lab.cp.db.read() as session:
            size = lab.cp.store.latest_checkpoint(session).tree_size  # type: ignore[union-attr]
        assert after.value("controlplane_ledger_tree_size") == size

        # a claim presenting no contract is refused and ledgered: a failed verification
        with lab.http(runner) as http:
            refused = http.post(f"/v1/jobs/{job['id']}/claim", json={"contract": None})
        assert refused.status_code == 403, refused.text
        counted = scrape(url)
        contract_failures = counted.value(FAILURES, check="contract")
        assert contract_failures == after.value(FAILURES, check="contract") + 1

        # a lease that runs out is swept (at the next listing) and counted
        held = lab.sdk(runner).claim_next(project, contract, lease_seconds=30)
        assert held is not None
        assert scrape(url).value("controlplane_jobs_queued") == 0
        clk.advance(minutes=5)
        with lab.http(lab.eng) as http:
            assert http.get(f"/v1/projects/{project}/jobs").status_code == 200
        expired = scrape(url)
        assert expired.value("controlplane_job_lease_expiries_total") == 1
        assert expired.value(APPENDED, action="job.lease_expired") == 1
        assert expired.value("controlplane_jobs_queued") == 1


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    directory = tmp_path_factory.mktemp("metrics-token")
    with served("sqlite", directory, metrics_token="scrape-secret") as running:
        yield running


def test_a_metrics_token_is_required_when_set(guarded: LiveServer) -> None:
    for token in (None, "wrong", guarded.admin_token):  # an API token is not the metrics token
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        response = httpx.get(f"{guarded.url}/metrics", headers=headers)
        assert response.status_code == 401, response.text
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.headers["www-authenticate"].startswith("Bearer")
    assert scrape(guarded.url, "scrape-secret").value("controlplane_database_up") == 1


def test_openmetrics_is_served_when_asked_for(guarded: LiveServer) -> None:
    response = httpx.get(
        f"{guarded.url}/metrics",
        headers={
            "Authorization": "Bearer scrape-secret",
            "Accept": "application/openmetrics-text; version=1.0.0",
        },
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.text.rstrip().endswith("# EOF")


@pytest.mark.parametrize(("client", "status"), [("127.0.0.1", 200), ("203.0.113.9", 403)])
def test_without_a_token_only_loopback_clients_are_answered(
    guarded: LiveServer, tmp_path: Path, client: str, status: int
) -> None:
    """The client address is the ASGI scope's: set here in-process (no packet leaves)."""
    plane = guarded.cp
    saved = plane.settings.metrics_token
    plane.settings.metrics_token = None
    try:
        response = asyncio.run(_get_metrics(create_app(cp=plane), client))
    finally:
        plane.settings.metrics_token = saved
    assert response.status_code == status, response.text
    if status == 200:
        assert "controlplane_ledger_tree_size" in parse(response.text).names()


async def _get_metrics(app: Any, client: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=app, client=(client, 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as http:
        return await http.get("/metrics")


@pytest.mark.parametrize("kind", KINDS)
def test_the_integrity_self_check_counts_a_tampered_database(kind: str, tmp_path: Path) -> None:
    with served(kind, tmp_path, integrity_check_interval_seconds=1) as server:
        checks = "controlplane_integrity_checks_total"
        wait_for(lambda: scrape(server.url).value(checks, result="ok") >= 1, what="a check")
        assert scrape(server.url).value(FAILURES, check="integrity") == 0
        drop_triggers(server)
        with server.cp.db.writer.begin() as conn:
            conn.execute(text("UPDATE ledger_entries SET actor = 'mallory' WHERE seq = 1"))
        wait_for(
            lambda: scrape(server.url).value(FAILURES, check="integrity") >= 1,
            what="the self-check to fail",
        )
        assert scrape(server.url).value(checks, result="failed") >= 1
