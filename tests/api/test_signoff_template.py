"""``GET /v1/requests/{id}`` hands the approver a statement to sign whose time is the control
plane's clock (``controlplane.clock``), like every other time the server decides: it read the
wall clock directly before, so a pinned or corrected clock and the template disagreed.
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
