"""Who may do what, over HTTP: a role x project x endpoint matrix that mirrors
``policies/policy.csv``, audited denials, revocation, and self-service tokens."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from controlplane.core import ControlPlane
from tests.api.conftest import unique
from tests.api.helpers import (
    all_entries,
    assert_problem,
    make_principal,
    model_body,
    register,
    settled,
)
from tests.utils.server import LiveServer, live_server

# -- the matrix ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    """One request; ``write`` requests that are refused must leave an ``access.denied``."""

    method: str
    path: str
    ok: int
    write: bool = False
    body: Callable[[], dict[str, Any]] | None = None


def _endpoints(target: str) -> dict[str, Call]:
    """The requests of the matrix; ``target`` is a principal the caller may try to manage."""

    def rm() -> dict[str, Any]:
        return model_body(unique("m"))

    def person() -> dict[str, Any]:
        return {"id": unique("new"), "kind": "user"}

    def versions(project: str) -> str:
        return f"/v1/projects/{project}/artifacts/reward_model/{unique('m')}/versions"

    shared = "artifacts/reward_model/shared/versions/1"
    return {
        "list@alpha": Call("GET", "/v1/projects/alpha/artifacts", 200),
        "list@beta": Call("GET", "/v1/projects/beta/artifacts", 200),
        "register@alpha": Call("POST", versions("alpha"), 201, True, rm),
        "register@beta": Call("POST", versions("beta"), 201, True, rm),
        "get@alpha": Call("GET", f"/v1/projects/alpha/{shared}", 200),
        "get@beta": Call("GET", f"/v1/projects/beta/{shared}", 200),
        "lineage@alpha": Call("GET", f"/v1/projects/alpha/{shared}/lineage", 200),
        "lineage@beta": Call("GET", f"/v1/projects/beta/{shared}/lineage", 200),
        "ledger.entries": Call("GET", "/v1/ledger/entries?limit=5", 200),
        "ledger.entry": Call("GET", "/v1/ledger/entries/0", 200),
        "ledger.checkpoint": Call("GET", "/v1/ledger/checkpoint", 200),
        "ledger.checkpoints": Call("GET", "/v1/ledger/checkpoints", 200),
        "ledger.keys": Call("GET", "/v1/ledger/keys", 200),
        "ledger.proof": Call("GET", "/v1/ledger/proofs/inclusion?seq=0", 200),
        "ledger.consistency": Call("GET", "/v1/ledger/proofs/consistency?first=1", 200),
        "export": Call("GET", "/v1/ledger/export", 200),
        "principals.list": Call("GET", "/v1/principals", 200),
        "principals.get_other": Call("GET", "/v1/principals/admin", 200),
        "principals.tokens_of_other": Call("GET", "/v1/principals/admin/tokens", 200),
        "principals.create": Call("POST", "/v1/principals", 201, True, person),
        "principals.token_for_other": Call(
            "POST", f"/v1/principals/{target}/tokens", 201, True, lambda: {"name": "x"}
        ),
        "roles.grant@alpha": Call(
            "POST",
            f"/v1/principals/{target}/roles",
            201,
            True,
            lambda: {"role": "runner", "project": "alpha"},
        ),
        "roles.grant@beta": Call(
            "POST",
            f"/v1/principals/{target}/roles",
            201,
            True,
            lambda: {"role": "runner", "project": "beta"},
        ),
        "roles.grant@*": Call(
            "POST",
            f"/v1/principals/{target}/roles",
            201,
            True,
            lambda: {"role": "approver", "project": "*"},
        ),
        "principals.disable_other": Call("POST", f"/v1/principals/{target}/disable", 200, True),
        # always allowed: about oneself
        "whoami": Call("GET", "/v1/whoami", 200),
    }


READS_ALPHA = {"list@alpha", "get@alpha", "lineage@alpha"}
READS_BETA = {"list@beta", "get@beta", "lineage@beta"}
LEDGER = {
    "ledger.entries",
    "ledger.entry",
    "ledger.checkpoint",
    "ledger.checkpoints",
    "ledger.keys",
    "ledger.proof",
    "ledger.consistency",
}
PRINCIPAL_READS = {"principals.list", "principals.get_other", "principals.tokens_of_other"}
EVERYTHING = set(_endpoints("x"))

# What policies/policy.csv grants, written out by hand:
#   admin               *  -> everything in its domain; "*"-wide objects (principals.manage,
#                             roles in "*") need the grant in "*"
#   engineer            artifacts read|register, lineage read, ledger read
#   approver / runner   artifacts read, lineage read, ledger read
#   compliance_reviewer artifacts read, lineage read, ledger read, export read, principals read
# The ledger and its export are one chain for all projects: a grant in any project that allows
# reading them is enough. Principals (and their tokens) span projects: reading them needs a
# grant in "*".
ALLOWED: dict[str, set[str]] = {
    "admin@alpha": READS_ALPHA
    | {"register@alpha", "roles.grant@alpha", "export", "whoami"}
    | LEDGER,
    "engineer@alpha": READS_ALPHA | {"register@alpha", "whoami"} | LEDGER,
    "approver@alpha": READS_ALPHA | {"whoami"} | LEDGER,
    "runner@alpha": READS_ALPHA | {"whoami"} | LEDGER,
    "compliance_reviewer@alpha": READS_ALPHA | {"export", "whoami"} | LEDGER,
    "engineer@*": READS_ALPHA | READS_BETA | {"register@alpha", "register@beta", "whoami"} | LEDGER,
    "compliance_reviewer@*": READS_ALPHA
    | READS_BETA
    | {"export", "whoami"}
    | LEDGER
    | PRINCIPAL_READS,
    "admin@*": EVERYTHING,
    "no role": {"whoami"},
}


@pytest.fixture
def seeded(api: LiveServer) -> LiveServer:
    """``reward_model/shared@1`` in alpha and beta (registering again is a no-op)."""
    with api.admin() as admin:
        for project in ("alpha", "beta"):
            register(admin, project, "reward_model", "shared", model_body("shared"), expect=None)
    return api


def _send(client: httpx.Client, call: Call) -> httpx.Response:
    body = call.body() if call.body is not None else None
    return client.request(call.method, call.path, json=body)


@pytest.mark.parametrize("grant", sorted(ALLOWED))
def test_role_matrix(seeded: LiveServer, grant: str) -> None:
    api = seeded
    who = unique(grant.split("@")[0].replace("_", "-").replace(" ", "-"))
    role, _, project = grant.partition("@")
    token = make_principal(api, who, [] if grant == "no role" else [(role, project)])
    target = unique("target")
    make_principal(api, target)
    endpoints = _endpoints(target)
    allowed = ALLOWED[grant]
    assert allowed <= set(endpoints)
    with api.admin() as admin:
        denied_before = len(all_entries(admin, actor=who, action="access.denied"))
    assert denied_before == 0
    outcome: dict[str, int] = {}
    with api.client(token) as client:
        # disabling the target last: it would break the other target-related calls
        order = sorted(endpoints, key=lambda name: name == "principals.disable_other")
        for name in order:
            call = endpoints[name]
            response = _send(client, call)
            outcome[name] = response.status_code
            if response.status_code == 403:
                assert_problem(response, 403)
    expected = {name: (c.ok if name in allowed else 403) for name, c in endpoints.items()}
    wrong = {
        name: (outcome[name], expected[name])
        for name in endpoints
        if outcome[name] != expected[name]
    }
    assert not wrong, f"{grant}: endpoint -> (got, expected): {wrong}"
    # every refused write, and nothing else, is in the audit trail
    with api.admin() as admin:
        denials = all_entries(admin, actor=who, action="access.denied")
    refused_writes = [n for n, c in endpoints.items() if c.write and n not in allowed]
    assert len(denials) == len(refused_writes), [d["payload"] for d in denials]


def test_whoami_lists_the_roles(api: LiveServer) -> None:
    who = unique("multi")
    token = make_principal(api, who, [("engineer", "alpha"), ("approver", "beta")])
    with api.client(token) as client:
        me = client.get("/v1/whoami").json()
    assert me["id"] == who and me["kind"] == "user" and me["disabled"] is False
    assert sorted((r["role"], r["project"]) for r in me["roles"]) == [
        ("approver", "beta"),
        ("engineer", "alpha"),
    ]
    with api.client(token) as client:
        # engineer in alpha, approver in beta: registers in alpha only
        register(client, "alpha", "reward_model", unique("m"), model_body(unique("m")))
        response = client.post(
            f"/v1/projects/beta/artifacts/reward_model/{unique('m')}/versions",
            json=model_body("x"),
        )
        assert_problem(response, 403)
        assert client.get("/v1/projects/beta/artifacts").status_code == 200


def test_denied_registration_is_audited(api: LiveServer) -> None:
    who = unique("approver")
    token = make_principal(api, who, [("approver", "alpha")])
    name = unique("m")
    with api.client(token) as client:
        before = client.get("/healthz").json()["ledger_size"]
        response = client.post(
            f"/v1/projects/alpha/artifacts/reward_model/{name}/versions", json=model_body(name)
        )
        body = assert_problem(response, 403)
        assert who in body["detail"] and "register" in body["detail"]
        assert client.get("/healthz").json()["ledger_size"] == before + 1
        # reads that are refused are not entries
        assert_problem(client.get("/v1/projects/beta/artifacts"), 403)
        assert client.get("/healthz").json()["ledger_size"] == before + 1
    with api.admin() as admin:
        (denial,) = all_entries(admin, actor=who, action="access.denied")
        assert denial["seq"] == before
        assert denial["subject"] == {"kind": "artifacts", "name": "alpha", "project": "alpha"}
        assert denial["payload"] == {"object": "artifacts", "action": "register"}
        assert_problem(admin.get(f"/v1/projects/alpha/artifacts/reward_model/{name}"), 404)


def test_revoking_a_role_takes_effect_on_the_next_request(api: LiveServer) -> None:
    who = unique("eng")
    token = make_principal(api, who, [("engineer", "alpha")])
    with api.client(token) as engineer, api.admin() as admin:
        register(engineer, "alpha", "reward_model", unique("m"), model_body(unique("m")))
        revoked = admin.delete(f"/v1/principals/{who}/roles/engineer", params={"project": "alpha"})
        assert revoked.status_code == 200 and revoked.json()["roles"] == []
        response = engineer.post(
            f"/v1/projects/alpha/artifacts/reward_model/{unique('m')}/versions",
            json=model_body("after"),
        )
        assert_problem(response, 403)
        assert_problem(engineer.get("/v1/projects/alpha/artifacts"), 403)
        assert_problem(engineer.get("/v1/ledger/entries"), 403)
        # the revocation is a ledger entry; revoking again is 404
        (entry,) = all_entries(admin, action="role.revoked", name=who)
        assert entry["actor"] == "admin"
        assert entry["payload"] == {"role": "engineer", "project": "alpha"}
        gone = admin.delete(f"/v1/principals/{who}/roles/engineer", params={"project": "alpha"})
        assert_problem(gone, 404)
        # granting again restores access at once
        grant = {"role": "engineer", "project": "alpha"}
        assert admin.post(f"/v1/principals/{who}/roles", json=grant).status_code == 201
        register(engineer, "alpha", "reward_model", unique("m"), model_body(unique("m")))


@pytest.fixture
def replica(api: LiveServer) -> Iterator[LiveServer]:
    """A second API process image over the same database (its own enforcer cache)."""
    plane = ControlPlane(api.cp.settings)
    try:
        with live_server(plane) as running:
            yield running
    finally:
        plane.close()


def test_revocation_reaches_another_replica(api: LiveServer, replica: LiveServer) -> None:
    who = unique("eng")
    token = make_principal(api, who, [("engineer", "alpha")])
    with replica.client(token) as on_replica:
        # the replica has loaded its policy with the grant in it
        assert on_replica.get("/v1/projects/alpha/artifacts").status_code == 200
        with api.admin() as admin:
            response = admin.delete(
                f"/v1/principals/{who}/roles/engineer", params={"project": "alpha"}
            )
            assert response.status_code == 200
        assert_problem(on_replica.get("/v1/projects/alpha/artifacts"), 403)
    with replica.admin() as admin:
        grant = {"role": "engineer", "project": "alpha"}
        assert admin.post(f"/v1/principals/{who}/roles", json=grant).status_code == 201
    with api.client(token) as on_first:
        assert on_first.get("/v1/projects/alpha/artifacts").status_code == 200


def test_a_principal_manages_its_own_tokens(api: LiveServer) -> None:
    who = unique("runner")
    first = make_principal(api, who, [("runner", "alpha")], kind="runner")
    with api.client(first) as client:
        issued = client.post(f"/v1/principals/{who}/tokens", json={"name": "ci"})
        assert issued.status_code == 201
        second = issued.json()
        assert second["principal_id"] == who and second["token"].startswith("cpt_")
        listed = client.get(f"/v1/principals/{who}/tokens").json()
        assert listed["count"] == 2
        assert {t["name"] for t in listed["data"]} == {"test", "ci"}
        assert all("token" not in t and "token_hash" not in t for t in listed["data"])
    with api.client(second["token"]) as client:
        assert client.get("/v1/whoami").json()["id"] == who
        # a token may revoke itself
        assert client.delete(f"/v1/tokens/{second['id']}").status_code == 204
        assert_problem(client.get("/v1/whoami"), 401)
    with api.client(first) as client:
        assert client.get("/v1/whoami").status_code == 200
        # but not anybody else's
        admin_tokens = client.get("/v1/principals/admin/tokens")
        assert_problem(admin_tokens, 403)
        assert_problem(client.post("/v1/principals/admin/tokens", json={}), 403)
        with api.admin() as admin:
            admin_token_id = admin.get("/v1/principals/admin/tokens").json()["data"][0]["id"]
        assert_problem(client.delete(f"/v1/tokens/{admin_token_id}"), 403)
    with api.admin() as admin:
        assert admin.get("/v1/whoami").status_code == 200
        issued_entries = all_entries(admin, action="token.issued", name=who)
        assert [e["actor"] for e in issued_entries] == ["admin", who]
        assert [e["actor"] for e in all_entries(admin, action="token.revoked", name=who)] == [who]
        assert [
            e["payload"]["action"]
            for e in all_entries(admin, actor=who)
            if e["action"] == "access.denied"
        ] == ["manage", "manage"]


def test_a_principal_named_like_a_role_grants_nothing_to_that_role(server: LiveServer) -> None:
    project = "esc"
    worker = make_principal(server, "carol", [("runner", project)])
    with server.admin() as admin:
        created = admin.post("/v1/principals", json={"id": "runner", "kind": "runner"})
        if created.status_code != 201:  # refusing such ids is a fine fix too
            assert_problem(created, 422)
            return
        grant = {"role": "engineer", "project": project}
        assert admin.post("/v1/principals/runner/roles", json=grant).status_code == 201
    with server.client(worker) as carol:
        response = carol.post(
            f"/v1/projects/{project}/artifacts/reward_model/m/versions", json=model_body("m")
        )
        assert_problem(response, 403)


def test_project_admin_cannot_reach_beyond_its_project(api: LiveServer) -> None:
    who = unique("padmin")
    token = make_principal(api, who, [("admin", "alpha")])
    target = unique("target")
    make_principal(api, target)
    with api.client(token) as client:
        # may grant roles in alpha, even admin in alpha
        for role in ("engineer", "admin"):
            grant = {"role": role, "project": "alpha"}
            assert client.post(f"/v1/principals/{target}/roles", json=grant).status_code == 201
        assert (
            client.delete(
                f"/v1/principals/{target}/roles/engineer", params={"project": "alpha"}
            ).status_code
            == 200
        )
        # not in beta, not everywhere, and not its own reach
        for project in ("beta", "*"):
            grant = {"role": "admin", "project": project}
            assert_problem(client.post(f"/v1/principals/{who}/roles", json=grant), 403)
        assert_problem(
            client.delete("/v1/principals/admin/roles/admin", params={"project": "*"}), 403
        )
        assert_problem(client.post(f"/v1/principals/{target}/disable"), 403)


def test_invalid_projects_never_reach_the_ledger(api: LiveServer) -> None:
    who = unique("nobody")
    token = make_principal(api, who)
    attempts: list[tuple[str, str, dict[str, Any]]] = [
        ("DELETE", "/v1/principals/admin/roles/admin", {"params": {"project": "x" * 150}}),
        ("DELETE", "/v1/principals/admin/roles/admin", {"params": {"project": "Jane Doe"}}),
        ("DELETE", "/v1/principals/admin/roles/admin", {"params": {"project": "a\u0000b"}}),
        ("POST", f"/v1/principals/{who}/roles", {"json": {"role": "admin", "project": "No!"}}),
        ("POST", f"/v1/principals/{who}/roles", {"json": {"role": "admin", "project": "a\0"}}),
    ]
    statuses = []
    for method, path, kwargs in attempts:
        response = settled(api, method, path, token, **kwargs)
        statuses.append(response.status_code)
    with api.admin() as admin:
        recorded = [e["subject"]["project"] for e in all_entries(admin, actor=who)]
    assert all(status in (403, 422) for status in statuses), statuses
    assert all(len(p) <= 100 and p.isprintable() and " " not in p for p in recorded), [
        p[:40] for p in recorded
    ]
