"""Leases: heartbeats renew without ledger entries; an expired lease requeues the job
(ledgered) and its runner loses the claim; release and cancel are ledgered too."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from controlplane.runners.sdk import LeaseLost
from tests.api.helpers import assert_problem, fake_digest
from tests.governance.helpers import pinned_clock
from tests.runners.helpers import Lab


def test_an_expired_lease_requeues_the_job_and_the_old_runner_loses_it(lab: Lab) -> None:
    with pinned_clock(datetime.now(UTC)) as clk:
        rubric, dataset = lab.approved_data("l")
        first_runner, second_runner = lab.runner("runner-a"), lab.runner("runner-b")
        contract = lab.contract(
            "reward_model", [dataset, rubric], [first_runner.id, second_runner.id]
        )
        job = lab.queue("reward_model", datasets=[dataset["ref"]], rubric=rubric["ref"])
        a, b = lab.sdk(first_runner), lab.sdk(second_runner)

        held = a.claim_next(lab.project, contract, lease_seconds=30)
        assert held is not None and held["lease"]["lease_seconds"] == 30
        clk.advance(seconds=20)
        size = lab.size()
        a.heartbeat(held, {"fraction": 0.2})  # renewed until t+50, and not a ledger entry
        assert lab.size() == size
        clk.advance(seconds=20)
        assert b.claim_next(lab.project, contract) is None  # t+40: still a's

        clk.advance(seconds=15)  # t+55: a has been silent for 35 s
        before = lab.size()
        taken = b.claim_next(lab.project, contract, lease_seconds=30)
        assert taken is not None and taken["id"] == job["id"]
        assert (taken["runner"], taken["attempts"]) == (second_runner.id, 2)
        expired, claimed = lab.entries(before)
        assert (expired["action"], expired["actor"]) == ("job.lease_expired", "system")
        assert expired["payload"]["runner"] == first_runner.id
        assert expired["payload"]["claim_seq"] == held["claim_seq"]
        assert (claimed["action"], claimed["actor"]) == ("job.claimed", second_runner.id)

        with pytest.raises(LeaseLost, match="no longer held"):
            a.heartbeat(held)
        with pytest.raises(LeaseLost):
            a.finish(held, digest=fake_digest("late"), uri="file:///late")

        # a runner stopping gracefully gives the job back at once (recorded)
        before = lab.size()
        b.release(taken, "operator stopped the runner")
        assert [e["action"] for e in lab.entries(before)] == ["job.released"]
        assert lab.job(job["id"])["state"] == "queued"

        # a lease that runs out with nobody claiming is swept when jobs are listed
        again = a.claim_next(lab.project, contract, lease_seconds=30)
        assert again is not None
        clk.advance(minutes=5)
        with lab.http(lab.eng) as http:
            listed = http.get(f"/v1/projects/{lab.project}/jobs", params={"state": "queued"})
        assert [j["id"] for j in listed.json()["data"]] == [job["id"]]

        # cancel: only who queued it, or an admin; then nobody can claim it
        other = lab.person("eng2", "engineer")
        with lab.http(other) as http:
            assert_problem(http.post(f"/v1/jobs/{job['id']}/cancel", json={}), 403)
        with lab.http(lab.eng) as http:
            cancelled = http.post(f"/v1/jobs/{job['id']}/cancel", json={"reason": "superseded"})
        assert cancelled.status_code == 200, cancelled.text
        assert (cancelled.json()["state"], cancelled.json()["reason"]) == (
            "cancelled",
            "superseded",
        )
        assert b.claim_next(lab.project, contract) is None
        assert len(lab.entries(action="job.cancelled")) == 1
