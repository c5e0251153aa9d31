"""What an engineer may queue and cancel, checked over HTTP: absurd or untrainable
hyperparameters are a 422 at queue time (nothing ledgered); a claim presenting an over-long
contract id is a 422 too rather than a refusal that copies the string into the ledger; and
cancelling someone else's job is refused *and recorded*, as the README promises of every
refused attempt to change something (it was a bare 403).

Found from outside: ``seed=-5`` was queued and then failed the job on the runner ("Seed must
be between 0 and 2**32 - 1"), and ``max_steps=1e30`` was queued for a runner to train for
ever.
"""

from __future__ import annotations

from typing import Any

import pytest

from controlplane.store.integrity import check_database
from tests.runners.helpers import Lab

REFUSED = {
    "negative seed": ("reward_model", {"seed": -5}, "seed"),
    "seed beyond numpy": ("dpo", {"seed": 2**32}, "seed"),
    "endless steps": ("reward_model", {"max_steps": 1e30}, "max_steps"),
    "eleven-digit steps": ("dpo", {"max_steps": 99_999_999_999}, "max_steps"),
    "huge batch": ("reward_model", {"batch_size": 10**9}, "batch_size"),
    "learning rate 1e300": ("reward_model", {"learning_rate": 1e300}, "learning_rate"),
    "negative centring": ("reward_model", {"center_rewards_coefficient": -1.0}, "center"),
    "threshold above one": ("evaluation", {"match_threshold": 2}, "match_threshold"),
}


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_untrainable_hyperparameters_are_refused_when_queued(lab: Lab) -> None:
    _, dataset = lab.approved_data("bounds")
    base = lab.register_model("policy", "base", "sha256:" + "1" * 64, "file:///nowhere/base")
    judge = lab.register_model("reward_model", "judge", "sha256:" + "2" * 64, "file:///j")
    inputs: dict[str, dict[str, Any]] = {
        "reward_model": {"datasets": [dataset["ref"]]},
        "dpo": {"datasets": [dataset["ref"]], "base_model": base["ref"]},
        "evaluation": {
            "datasets": [dataset["ref"]],
            "base_model": base["ref"],
            "policy": base["ref"],
            "reward_model": judge["ref"],
        },
    }
    before = lab.size()
    with lab.http(lab.eng) as http:
        for label, (trainer, params, name) in REFUSED.items():
            response = http.post(
                f"/v1/projects/{lab.project}/jobs",
                json={"trainer": trainer, **inputs[trainer], "hyperparameters": params},
            )
            assert response.status_code == 422, (label, response.text)
            assert response.headers["content-type"].startswith("application/problem+json")
            assert name in response.json()["detail"], (label, response.json())
    assert lab.size() == before  # nothing queued, nothing recorded

    # the edges are fine
    job = lab.queue(
        "reward_model",
        **inputs["reward_model"],
        hyperparameters={"seed": 2**32 - 1, "max_steps": 1, "learning_rate": 1},
    )
    assert job["state"] == "queued"

    runner = lab.runner("runner-1")
    queued = lab.size()
    with lab.http(runner) as http:
        response = http.post(f"/v1/jobs/{job['id']}/claim", json={"contract": "c" * 5000})
    assert response.status_code == 422, response.text
    assert lab.size() == queued  # not a contract.rejected entry carrying 5000 characters


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_cancelling_someone_elses_job_is_refused_and_recorded(lab: Lab) -> None:
    _, dataset = lab.approved_data("cancel")
    job = lab.queue("reward_model", datasets=[dataset["ref"]])
    other = lab.person("eng-2", "engineer")
    before = lab.size()
    with lab.http(other) as http:
        response = http.post(f"/v1/jobs/{job['id']}/cancel", json={"reason": "not mine"})
    assert response.status_code == 403, response.text
    assert "only eng" in response.json()["detail"]
    (denied,) = lab.entries(before)
    assert denied["action"] == "access.denied" and denied["actor"] == "eng-2"
    assert denied["subject"] == {"project": lab.project, "kind": "job", "name": str(job["id"])}
    assert denied["payload"]["action"] == "cancel"
    assert lab.job(job["id"])["state"] == "queued"
    with lab.http(lab.eng) as http:  # who queued it still may
        assert http.post(f"/v1/jobs/{job['id']}/cancel", json={}).status_code == 200
    report = check_database(lab.cp.store)  # the projections still replay
    assert report.ok, report.problems
