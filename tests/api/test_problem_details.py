"""Details a client relies on, found by checking the API from outside.

- ``GET /v1/requests/{id}`` hands the approver a statement to sign whose time is the control
  plane's clock (``controlplane.clock``), like every other time the server decides; it read
  the wall clock directly, so a pinned or corrected clock and the template disagreed.
- A query parameter outside its list of choices is refused naming the choices, not with the
  regular expression that checks them.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from controlplane import clock
from tests.governance.helpers import World, pinned_clock, stamp
from tests.utils.server import LiveServer


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_the_statement_template_is_stamped_by_the_control_planes_clock(
    server: LiveServer,
) -> None:
    world = World(server.cp, project="default")
    policy = world.register("policy", "templated")
    request = world.open(policy, "candidate")
    alice = server.cp.identity.issue_token("admin", "alice", "test").token
    with pinned_clock(clock.now() + timedelta(minutes=7, microseconds=3)) as pinned:
        with server.client(alice) as http:
            response = http.get(f"/v1/requests/{request['id']}")
        assert response.status_code == 200, response.text
        template = response.json()["statement_template"]
        assert template["signed_at"] == stamp(pinned.now)
    assert template["request_id"] == request["id"] and template["signer"] == "alice"
    assert template["artifact"]["digest"] == policy["digest"]


QUERIES = {
    "/v1/projects/default/requests?state=pending": "open, approved, rejected, withdrawn, expired",
    "/v1/projects/default/jobs?state=running": "queued, claimed, succeeded, failed, cancelled",
    "/v1/projects/default/jobs?trainer=sft": "reward_model, dpo, evaluation",
    "/v1/projects/default/contracts?purpose=sft": "reward_model, dpo, ppo, evaluation",
}


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_choice_outside_the_list_names_the_choices_not_a_regex(server: LiveServer) -> None:
    with server.admin() as http:
        for path, choices in QUERIES.items():
            response = http.get(path)
            assert response.status_code == 422, response.text
            detail = response.json()["detail"]
            assert detail.endswith(f"must be one of {choices}"), detail
            assert "^" not in detail and "pattern" not in detail
        digest = http.get("/v1/projects/default/contracts?covers=sha256:xyz")
    assert digest.status_code == 422 and "pattern" in digest.json()["detail"]  # not a choice
