"""Every endpoint x every role x own and other project: only what ``policies/policy.csv`` grants
gets past the authorization check, and every bad credential is a 401.

The endpoints are read from the served OpenAPI document, so a new endpoint without an entry in
:data:`MATRIX` fails :func:`test_every_endpoint_is_in_the_matrix`. Each entry says which
permission (casbin object, action and domain) the endpoint needs; what each role may do is not
written here but read from ``policies/policy.csv`` by :func:`granted`, a few lines that
evaluate the policy independently of the server's enforcer. The tests then check that the
server refuses exactly the requests the policy does not grant, with a 403 problem that names
the permission, and that every refused attempt to change something is an ``access.denied``
ledger entry. Requests carry minimal, plausible bodies: a 404, 409 or 422 for a request that
the role was allowed to make is fine; what counts is a policy 403 or not.

The hand-written role table of ``tests/api/test_authorization.py`` covers grants in ``*`` for
the artifact, ledger and principal endpoints; this matrix covers every endpoint.
"""

from __future__ import annotations

import base64
import csv
import dataclasses
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from controlplane import clock
from controlplane.authz.service import Principal
from controlplane.core import BOOTSTRAP_ADMIN, ControlPlane
from controlplane.crypto.keys import public_key_b64
from tests.api.conftest import unique
from tests.api.helpers import PROBLEM, all_entries, assert_problem, digest_of, model_body
from tests.security.helpers import Resources, seed
from tests.utils.server import LiveServer

OWN, OTHER = "alpha", "beta"
PROJECTS = (OWN, OTHER)
POLICY = Path(__file__).resolve().parents[2] / "policies" / "policy.csv"

# -- the policy, read independently ----------------------------------------------------------


def _policy_rules() -> list[tuple[str, str, str, str, str]]:
    """``(role, domain, object, action regex, effect)`` of every ``p`` line of policy.csv."""
    rules = []
    with POLICY.open() as handle:
        for row in csv.reader(handle, skipinitialspace=True):
            if row and row[0].strip() == "p":
                role, domain, obj, act, eft = (part.strip() for part in row[1:6])
                rules.append((role, domain, obj, act, eft))
    return rules


RULES = _policy_rules()


def granted(grants: list[tuple[str, str]], domain: str, obj: str, act: str) -> bool:
    """Does policy.csv let a principal with ``grants`` ``(role, project)`` do ``act`` on
    ``obj`` in ``domain``?

    ``domain`` is a project, ``"*"`` (only a grant in every project counts) or ``"any"`` (a
    shared resource such as the ledger: a grant in any one project that allows it is enough).
    """
    if domain == "any":
        return any(granted(grants, d, obj, act) for d in {d for _, d in grants} | {"*"})
    roles = {role for role, where in grants if where in (domain, "*")}

    def matches(eft: str) -> bool:
        return any(
            role in roles
            and where in ("*", domain)
            and rule_obj in ("*", obj)
            and re.search(rule_act, act) is not None
            and effect == eft
            for role, where, rule_obj, rule_act, effect in RULES
        )

    return matches("allow") and not matches("deny")


# -- what an endpoint needs ------------------------------------------------------------------


@dataclass(frozen=True)
class Need:
    """What a request needs to get past authorization.

    ``kind``: ``public`` (no token at all), ``signature`` (an HMAC signature, never a bearer
    token), ``self`` (any valid token: the caller acts on itself) or ``policy`` (``act`` on
    ``obj`` in ``domain``). ``audited``: a refusal is an ``access.denied`` entry. ``named``:
    the refusal comes from the one authorization check, whose detail names the permission
    (``False`` for checks made by a service, such as "the key's owner or an admin").
    """

    kind: str
    obj: str = ""
    act: str = ""
    domain: str = ""
    audited: bool = False
    named: bool = True


PUBLIC = Need("public")
SIGNATURE = Need("signature")
SELF = Need("self")


def read(obj: str, domain: str, act: str = "read") -> Need:
    return Need("policy", obj, act, domain)


def write(obj: str, act: str, domain: str, *, named: bool = True) -> Need:
    return Need("policy", obj, act, domain, audited=named, named=named)


@dataclass(frozen=True)
class Cell:
    """One request of the matrix."""

    method: str
    path: str
    need: Need
    label: str = ""
    json: Any = None
    content: bytes | None = None
    params: dict[str, str] = field(default_factory=dict)

    def send(self, client: httpx.Client) -> httpx.Response:
        kwargs: dict[str, Any] = {"params": self.params}
        if self.content is not None:
            kwargs["content"] = self.content
            kwargs["headers"] = {"content-type": "application/octet-stream"}
        elif self.json is not None:
            kwargs["json"] = self.json
        return client.request(self.method, self.path, **kwargs)


# -- the world the requests are about ----------------------------------------------------------


@dataclass
class Caller:
    """A principal of the matrix and what it acts on: itself and a target of its own."""

    label: str
    grants: list[tuple[str, str]]
    id: str
    token: str
    spare_token_id: str
    key_id: str
    target: str
    target_token_id: str
    target_key_id: str


@dataclass
class World:
    server: LiveServer
    projects: dict[str, Resources]
    callers: list[Caller]


def _key(cp: ControlPlane, who: Principal) -> str:
    private = Ed25519PrivateKey.generate()
    registered = cp.governance.register_key(who, public_key_b64(private.public_key()), "k")
    return str(registered["key_id"])


# One principal per role, granted in the own project; one with no role; an admin everywhere.
GRANTS: dict[str, list[tuple[str, str]]] = {
    **{
        f"{role}@{OWN}": [(role, OWN)]
        for role in (
            "admin",
            "engineer",
            "approver",
            "compliance_reviewer",
            "data_owner",
            "runner",
        )
    },
    "no role": [],
    "admin@*": [("admin", "*")],
}


def _caller(cp: ControlPlane, label: str, grants: list[tuple[str, str]]) -> Caller:
    identity = cp.identity
    who = unique(label.split("@")[0].replace("_", "-").replace(" ", "-"))
    kind = "runner" if grants and grants[0][0] == "runner" else "user"
    principal = identity.create_principal(BOOTSTRAP_ADMIN, who, kind)
    for role, project in grants:
        identity.grant_role(BOOTSTRAP_ADMIN, who, role, project)
    token = identity.issue_token(BOOTSTRAP_ADMIN, who, "main").token
    spare = identity.issue_token(BOOTSTRAP_ADMIN, who, "spare").id
    target = identity.create_principal(BOOTSTRAP_ADMIN, unique("target"))
    target_token = identity.issue_token(BOOTSTRAP_ADMIN, target.id, "t").id
    return Caller(
        label,
        grants,
        who,
        token,
        spare,
        _key(cp, principal),
        target.id,
        target_token,
        _key(cp, target),
    )


@pytest.fixture(scope="module")
def world(live: LiveServer) -> World:
    cp = live.cp
    projects = seed(cp, PROJECTS)
    callers = [_caller(cp, label, grants) for label, grants in GRANTS.items()]
    return World(live, projects, callers)


# -- the matrix ------------------------------------------------------------------------------

Builder = Callable[[World, Caller], list[Cell]]


def each_project(build: Callable[[World, Caller, str], Cell]) -> Builder:
    """The same request in the caller's own project and in another one."""

    def cells(w: World, me: Caller) -> list[Cell]:
        out = []
        for project in PROJECTS:
            label = "own" if project == OWN else "other"
            out.append(dataclasses.replace(build(w, me, project), label=label))
        return out

    return cells


def one(
    method: str, path: str, need: Need, json: Any = None, params: dict[str, str] | None = None
) -> Builder:
    return lambda w, me: [Cell(method, path, need, json=json, params=params or {})]


def _model(p: str) -> str:
    return f"/v1/projects/{p}/artifacts/reward_model/m"


def _new_key() -> str:
    return public_key_b64(Ed25519PrivateKey.generate().public_key())


def _grants(method: str, path: str) -> Builder:
    """Granting and revoking roles: the domain is the project the grant is for."""

    def cells(w: World, me: Caller) -> list[Cell]:
        out = []
        for label, project in (("own", OWN), ("other", OTHER), ("everywhere", "*")):
            need = write("roles", "manage", project)
            url = path.format(target=me.target)
            if method == "POST":
                body = {"role": "runner", "project": project}
                out.append(Cell(method, url, need, label, json=body))
            else:
                out.append(Cell(method, url, need, label, params={"project": project}))
        return out

    return cells


def _reconcile(w: World, me: Caller) -> list[Cell]:
    path = "/v1/integrations/mlflow/reconcile"
    return [
        Cell("POST", path, write("mlflow", "reconcile", OWN), "own", json={"project": OWN}),
        Cell("POST", path, write("mlflow", "reconcile", OTHER), "other", json={"project": OTHER}),
        Cell("POST", path, write("mlflow", "reconcile", "*"), "everywhere", json={}),
    ]


def _self_or_other(method: str, path: str, other: Need, json: Any = None) -> Builder:
    """About the caller itself (always allowed) and about another principal."""
    return lambda w, me: [
        Cell(method, path.format(who=me.id), SELF, "self", json=json),
        Cell(method, path.format(who=me.target), other, "other", json=json),
    ]


def _job(path: str, need: Callable[[str], Need], json: Any = None) -> Builder:
    return each_project(
        lambda w, me, p: Cell(
            "POST" if json is not None else "GET",
            path.format(id=w.projects[p].job_id),
            need(p),
            json=json,
        )
    )


def _request(path: str, need: Callable[[str], Need], json: Any = None) -> Builder:
    return each_project(
        lambda w, me, p: Cell(
            "POST" if json is not None else "GET",
            path.format(id=w.projects[p].request_id),
            need(p),
            json=json,
        )
    )


def _contract(path: str, need: Callable[[str], Need], json: Any = None) -> Builder:
    return each_project(
        lambda w, me, p: Cell(
            "POST" if json is not None else "GET",
            path.format(id=w.projects[p].contract_id),
            need(p),
            json=json,
        )
    )


LEDGER = read("ledger", "any")
REASON = {"reason": "checking the authorization matrix"}
CLAIM = {"claim": 0}

MATRIX: dict[str, Builder] = {
    # health and the MLflow webhook take no bearer token
    "GET /healthz": one("GET", "/healthz", PUBLIC),
    # no API token either: loopback scrapers, or the separate metrics token when one is set
    "GET /metrics": one("GET", "/metrics", PUBLIC),
    "POST /v1/integrations/mlflow/webhook": one(
        "POST", "/v1/integrations/mlflow/webhook", SIGNATURE, json={}
    ),
    # principals, tokens, roles
    "GET /v1/whoami": one("GET", "/v1/whoami", SELF),
    "GET /v1/principals": one("GET", "/v1/principals", read("principals", "*")),
    "POST /v1/principals": lambda w, me: [
        Cell("POST", "/v1/principals", write("principals", "manage", "*"), json={"id": unique("n")})
    ],
    "GET /v1/principals/{principal_id}": _self_or_other(
        "GET", "/v1/principals/{who}", read("principals", "*")
    ),
    "POST /v1/principals/{principal_id}/disable": lambda w, me: [
        Cell(
            "POST",
            f"/v1/principals/{me.target}/disable",
            write("principals", "manage", "*"),
            "other",
        )
    ],
    "POST /v1/principals/{principal_id}/tokens": _self_or_other(
        "POST", "/v1/principals/{who}/tokens", write("principals", "manage", "*"), {"name": "m"}
    ),
    "GET /v1/principals/{principal_id}/tokens": _self_or_other(
        "GET", "/v1/principals/{who}/tokens", read("principals", "*")
    ),
    "DELETE /v1/tokens/{token_id}": lambda w, me: [
        Cell("DELETE", f"/v1/tokens/{me.spare_token_id}", SELF, "self"),
        Cell(
            "DELETE",
            f"/v1/tokens/{me.target_token_id}",
            write("principals", "manage", "*"),
            "other",
        ),
    ],
    "POST /v1/principals/{principal_id}/roles": _grants("POST", "/v1/principals/{target}/roles"),
    "DELETE /v1/principals/{principal_id}/roles/{role}": _grants(
        "DELETE", "/v1/principals/{target}/roles/runner"
    ),
    # artifacts and lineage
    "GET /v1/projects/{project}/artifacts": each_project(
        lambda w, me, p: Cell("GET", f"/v1/projects/{p}/artifacts", read("artifacts", p))
    ),
    "POST /v1/projects/{project}/artifacts/{kind}/{name}/versions": each_project(
        lambda w, me, p: Cell(
            "POST",
            f"/v1/projects/{p}/artifacts/reward_model/{unique('m')}/versions",
            write("artifacts", "register", p),
            json=model_body(unique("m")),
        )
    ),
    "GET /v1/projects/{project}/artifacts/{kind}/{name}": each_project(
        lambda w, me, p: Cell("GET", _model(p), read("artifacts", p))
    ),
    "GET /v1/projects/{project}/artifacts/{kind}/{name}/versions/{version}": each_project(
        lambda w, me, p: Cell("GET", f"{_model(p)}/versions/1", read("artifacts", p))
    ),
    "GET /v1/projects/{project}/artifacts/{kind}/{name}/versions/{version}/lineage": (
        each_project(
            lambda w, me, p: Cell("GET", f"{_model(p)}/versions/1/lineage", read("lineage", p))
        )
    ),
    "GET /v1/projects/{project}/artifacts/{kind}/{name}/status": each_project(
        lambda w, me, p: Cell("GET", f"{_model(p)}/status", read("artifacts", p))
    ),
    # sign-off keys
    "POST /v1/keys": lambda w, me: [
        Cell("POST", "/v1/keys", SELF, json={"public_key": _new_key(), "name": "matrix"})
    ],
    "GET /v1/keys": one("GET", "/v1/keys", SELF),
    "POST /v1/keys/{key_id}/revoke": lambda w, me: [
        Cell("POST", f"/v1/keys/{me.key_id}/revoke", SELF, "self", json=REASON),
        # the service decides: the key's owner, or whoever may manage principals everywhere
        Cell(
            "POST",
            f"/v1/keys/{me.target_key_id}/revoke",
            write("principals", "manage", "*", named=False),
            "other",
            json=REASON,
        ),
    ],
    # promotion requests, sign-offs, emergency stage changes
    "POST /v1/projects/{project}/requests": each_project(
        lambda w, me, p: Cell(
            "POST",
            f"/v1/projects/{p}/requests",
            write("requests", "open", p),
            json={
                "kind": "reward_model",
                "name": "m",
                "version": 1,
                "target_stage": "candidate",
                "justification": "matrix",
            },
        )
    ),
    "GET /v1/projects/{project}/requests": each_project(
        lambda w, me, p: Cell("GET", f"/v1/projects/{p}/requests", read("requests", p))
    ),
    "GET /v1/projects/{project}/alerts": each_project(
        lambda w, me, p: Cell("GET", f"/v1/projects/{p}/alerts", read("requests", p))
    ),
    "GET /v1/requests/{request_id}": _request("/v1/requests/{id}", lambda p: read("requests", p)),
    "POST /v1/requests/{request_id}/signoffs": _request(
        "/v1/requests/{id}/signoffs",
        lambda p: write("requests", "signoff", p),
        {"envelope": {"payload": "", "payloadType": "x", "signatures": []}},
    ),
    "POST /v1/requests/{request_id}/withdraw": _request(
        "/v1/requests/{id}/withdraw", lambda p: write("requests", "withdraw", p), REASON
    ),
    "POST /v1/projects/{project}/artifacts/{kind}/{name}/rollback": each_project(
        lambda w, me, p: Cell(
            "POST", f"{_model(p)}/rollback", write("stages", "rollback", p), json=REASON
        )
    ),
    "POST /v1/projects/{project}/artifacts/{kind}/{name}/versions/{version}/retire": each_project(
        lambda w, me, p: Cell(
            "POST",
            f"/v1/projects/{p}/artifacts/reward_model/never-registered/versions/1/retire",
            write("stages", "retire", p),
            json=REASON,
        )
    ),
    # the ledger: one chain for all projects
    "GET /v1/ledger/checkpoint": one("GET", "/v1/ledger/checkpoint", LEDGER),
    "GET /v1/ledger/checkpoints": one("GET", "/v1/ledger/checkpoints", LEDGER),
    "GET /v1/ledger/keys": one("GET", "/v1/ledger/keys", LEDGER),
    "GET /v1/ledger/entries": one("GET", "/v1/ledger/entries", LEDGER, params={"limit": "2"}),
    "GET /v1/ledger/entries/{seq}": one("GET", "/v1/ledger/entries/0", LEDGER),
    "GET /v1/ledger/proofs/inclusion": one(
        "GET", "/v1/ledger/proofs/inclusion", LEDGER, params={"seq": "0"}
    ),
    "GET /v1/ledger/proofs/consistency": one(
        "GET", "/v1/ledger/proofs/consistency", LEDGER, params={"first": "1"}
    ),
    "GET /v1/ledger/export": one("GET", "/v1/ledger/export", read("export", "any")),
    # data contracts and annotator identities
    "POST /v1/projects/{project}/contracts": each_project(
        lambda w, me, p: Cell(
            "POST",
            f"/v1/projects/{p}/contracts",
            write("contracts", "register", p),
            json={"envelope": {"payload": "", "payloadType": "x", "signatures": []}},
        )
    ),
    "GET /v1/projects/{project}/contracts": each_project(
        lambda w, me, p: Cell("GET", f"/v1/projects/{p}/contracts", read("contracts", p))
    ),
    "GET /v1/contracts/{contract_id}": _contract(
        "/v1/contracts/{id}", lambda p: read("contracts", p)
    ),
    "POST /v1/contracts/{contract_id}/revoke": _contract(
        "/v1/contracts/{id}/revoke", lambda p: write("contracts", "revoke", p), REASON
    ),
    # asking who is behind a pseudonym changes nothing but is audited like a change
    "POST /v1/contracts/{contract_id}/annotators/resolve": _contract(
        "/v1/contracts/{id}/annotators/resolve",
        lambda p: write("contracts", "read", p),
        {"pseudonym": "ann-0123456789abcdef"},
    ),
    "POST /v1/projects/{project}/annotators/erasures": each_project(
        lambda w, me, p: Cell(
            "POST",
            f"/v1/projects/{p}/annotators/erasures",
            write("annotators", "erase", p),
            json={"pseudonym": "ann-0123456789abcdef"},
        )
    ),
    # training jobs and content
    "POST /v1/projects/{project}/jobs": each_project(
        lambda w, me, p: Cell(
            "POST",
            f"/v1/projects/{p}/jobs",
            write("jobs", "queue", p),
            json={"trainer": "reward_model", "datasets": ["dataset/missing@1"]},
        )
    ),
    "GET /v1/projects/{project}/jobs": each_project(
        lambda w, me, p: Cell("GET", f"/v1/projects/{p}/jobs", read("jobs", p))
    ),
    "POST /v1/projects/{project}/jobs/claim": each_project(
        lambda w, me, p: Cell(
            "POST",
            f"/v1/projects/{p}/jobs/claim",
            write("jobs", "claim", p),
            json={"contract": "dc-does-not-exist"},
        )
    ),
    "GET /v1/jobs/{job_id}": _job("/v1/jobs/{id}", lambda p: read("jobs", p)),
    "POST /v1/jobs/{job_id}/claim": _job(
        "/v1/jobs/{id}/claim", lambda p: write("jobs", "claim", p), {"contract": "dc-nope"}
    ),
    "POST /v1/jobs/{job_id}/heartbeat": _job(
        "/v1/jobs/{id}/heartbeat", lambda p: write("jobs", "heartbeat", p), CLAIM
    ),
    "POST /v1/jobs/{job_id}/release": _job(
        "/v1/jobs/{id}/release", lambda p: write("jobs", "heartbeat", p), CLAIM
    ),
    "POST /v1/jobs/{job_id}/finish": _job(
        "/v1/jobs/{id}/finish",
        lambda p: write("jobs", "finish", p),
        {"claim": 0, "digest": digest_of(b"out"), "uri": "s3://out"},
    ),
    "POST /v1/jobs/{job_id}/fail": _job(
        "/v1/jobs/{id}/fail", lambda p: write("jobs", "finish", p), {"claim": 0, "reason": "x"}
    ),
    "POST /v1/jobs/{job_id}/cancel": _job(
        "/v1/jobs/{id}/cancel", lambda p: write("jobs", "cancel", p), {}
    ),
    "PUT /v1/projects/{project}/content/{digest}": each_project(
        lambda w, me, p: Cell(
            "PUT",
            f"/v1/projects/{p}/content/{digest_of(me.id.encode())}",
            write("content", "upload", p),
            content=me.id.encode(),
        )
    ),
    "GET /v1/projects/{project}/content/{digest}": each_project(
        lambda w, me, p: Cell(
            "GET",
            f"/v1/projects/{p}/content/{w.projects[p].content_digest}",
            read("artifacts", p),
        )
    ),
    # the MLflow mirror
    "GET /v1/integrations/mlflow/status": one(
        "GET", "/v1/integrations/mlflow/status", read("mlflow", "any", "status")
    ),
    "POST /v1/integrations/mlflow/reconcile": _reconcile,
    "GET /v1/integrations/mlflow/projects/{project}/artifacts/{kind}/{name}/versions/{version}": (
        each_project(
            lambda w, me, p: Cell(
                "GET",
                f"/v1/integrations/mlflow/projects/{p}/artifacts/reward_model/m/versions/1",
                read("artifacts", p),
            )
        )
    ),
}


def operations(server: LiveServer) -> set[str]:
    """``METHOD /path`` of every operation in the served OpenAPI document."""
    with server.client() as anonymous:
        spec = anonymous.get("/openapi.json").json()
    methods = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}
    return {
        f"{method.upper()} {path}"
        for path, item in spec["paths"].items()
        for method in item
        if method in methods
    }


def test_every_endpoint_is_in_the_matrix(live: LiveServer) -> None:
    served = operations(live)
    missing = sorted(served - set(MATRIX))
    assert not missing, (
        "endpoints without an authorization-matrix entry (add them to MATRIX in "
        f"{Path(__file__).name}, with the permission they need): {missing}"
    )
    stale = sorted(set(MATRIX) - served)
    assert not stale, f"MATRIX names endpoints the app no longer serves: {stale}"


# -- running it ------------------------------------------------------------------------------


def expected_allowed(caller: Caller, need: Need) -> bool:
    if need.kind in ("public", "self"):
        return True
    if need.kind == "signature":
        return False
    return granted(caller.grants, need.domain, need.obj, need.act)


def policy_refusal(response: httpx.Response) -> bool:
    """A 403 from the authorization check (not a service's own refusal, such as a rejected
    contract or "only who queued it may cancel it")."""
    if response.status_code != 403:
        return False
    body = response.json()
    return str(body.get("type", "")).endswith("/forbidden") and " may not " in body["detail"]


@dataclass
class Outcome:
    cell: Cell
    op: str
    status: int
    wrong: str | None


def judge(op: str, caller: Caller, cell: Cell, response: httpx.Response) -> Outcome:
    status = response.status_code
    need = cell.need
    wrong: str | None = None
    if status >= 500:
        wrong = "server error"
    elif need.kind == "signature":
        if status != 401 or "www-authenticate" in response.headers:
            wrong = "an unsigned webhook delivery must be 401 without a Bearer challenge"
    elif expected_allowed(caller, need):
        if policy_refusal(response):
            wrong = f"refused, but policy.csv grants {need.act} {need.obj} in {need.domain}"
    elif status != 403:
        wrong = f"not refused, but policy.csv does not grant {need.act} {need.obj} in {need.domain}"
    else:
        assert_problem(response, 403)
        detail = response.json()["detail"]
        if need.named and f"may not {need.act} {need.obj}" not in detail:
            wrong = f"refused for another permission than {need.act} {need.obj}: {detail}"
    return Outcome(cell, op, status, wrong)


def run_row(world: World, caller: Caller) -> list[Outcome]:
    cells = [(op, cell) for op, build in MATRIX.items() for cell in build(world, caller)]
    # disabling the target and revoking tokens last: other cells are about the target
    cells.sort(key=lambda item: item[1].method == "DELETE" or item[1].path.endswith("/disable"))
    outcomes = []
    with world.server.client(caller.token) as client:
        for op, cell in cells:
            outcomes.append(judge(op, caller, cell, cell.send(client)))
    return outcomes


SERVICE_AUDITED = {("jobs", "cancel")}
"""Writes the policy allows but the service may still refuse, recording ``access.denied``."""


@pytest.mark.parametrize("label", list(GRANTS))
def test_only_what_the_policy_grants_gets_through(world: World, label: str) -> None:
    caller = next(c for c in world.callers if c.label == label)
    outcomes = run_row(world, caller)
    wrong = [
        f"{o.op} [{o.cell.label or '-'}] {o.cell.path} -> {o.status}: {o.wrong}"
        for o in outcomes
        if o.wrong
    ]
    assert not wrong, f"{label}:\n" + "\n".join(wrong)
    # every refused attempt to change something, and nothing else, is in the audit trail
    # ... whether the policy refused it, or the service did after the policy let it through
    # (cancelling a job somebody else queued: only its owner or an admin may)
    refused_writes = [
        o
        for o in outcomes
        if o.cell.need.audited
        and (
            not expected_allowed(caller, o.cell.need)
            or (o.status == 403 and (o.cell.need.obj, o.cell.need.act) in SERVICE_AUDITED)
        )
    ]
    with world.server.admin() as admin:
        denials = all_entries(admin, actor=caller.id, action="access.denied")
    recorded = Counter(
        (d["payload"]["object"], d["payload"]["action"], d["subject"]["project"]) for d in denials
    )
    expected = Counter(
        (o.cell.need.obj, o.cell.need.act, o.cell.need.domain) for o in refused_writes
    )
    assert recorded == expected, (
        f"recorded but not expected: {recorded - expected}; "
        f"expected but not recorded: {expected - recorded}"
    )


def test_the_matrix_refuses_and_allows_something_for_every_role(world: World) -> None:
    """A guard against a matrix that proves nothing: the policy grants each role something
    beyond itself and refuses it something, and admin@* everything."""
    for caller in world.callers:
        needs = [c.need for build in MATRIX.values() for c in build(world, caller)]
        policy = [n for n in needs if n.kind == "policy"]
        allowed = [n for n in policy if expected_allowed(caller, n)]
        if caller.label == "admin@*":
            assert len(allowed) == len(policy)
        elif caller.label == "no role":
            assert not allowed
        else:
            assert 0 < len(allowed) < len(policy), caller.label


# -- 401: every endpoint, every way a credential can be bad -----------------------------------


@pytest.fixture(scope="module")
def bad_credentials(world: World) -> dict[str, dict[str, str]]:
    """Authorization headers that must all be 401; the expired one is only expired while
    the clock is pinned two days ahead (see the test)."""
    cp = world.server.cp
    identity = cp.identity
    who = unique("strong")
    identity.create_principal(BOOTSTRAP_ADMIN, who)
    identity.grant_role(BOOTSTRAP_ADMIN, who, "admin", "*")
    revoked = identity.issue_token(BOOTSTRAP_ADMIN, who, "revoked")
    identity.revoke_token(BOOTSTRAP_ADMIN, revoked.id)
    expiring = identity.issue_token(BOOTSTRAP_ADMIN, who, "expiring", expires_in_days=1)
    admin = world.server.admin_token
    flipped = admin[:-1] + ("0" if admin[-1] != "0" else "1")
    basic = base64.b64encode(f"admin:{admin}".encode()).decode()
    return {
        "no token": {},
        "empty bearer": {"Authorization": "Bearer"},
        "malformed": {"Authorization": "Bearer not/a token@all=="},
        "other scheme": {"Authorization": f"Basic {basic}"},
        "no scheme": {"Authorization": admin},
        "wrong": {"Authorization": f"Bearer {flipped}"},
        "unknown": {"Authorization": "Bearer cpt_" + "a" * 40},
        "revoked": {"Authorization": f"Bearer {revoked.token}"},
        "expired": {"Authorization": f"Bearer {expiring.token}"},
    }


def test_bad_credentials_are_401_everywhere(
    world: World, bad_credentials: dict[str, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    server = world.server
    real_now = clock.now_fn
    monkeypatch.setattr(clock, "now_fn", lambda: real_now() + timedelta(days=2))
    everything = next(c for c in world.callers if c.label == "admin@*")
    cells = [
        (op, cell)
        for op, build in MATRIX.items()
        for cell in build(world, everything)[:1]
        if cell.need.kind not in ("public", "signature")
    ]
    with server.client() as anonymous:
        before = anonymous.get("/healthz").json()["ledger_size"]
    wrong = []
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for name, headers in bad_credentials.items():
            client.headers.clear()
            client.headers.update(headers)
            for op, cell in cells:
                response = cell.send(client)
                challenge = response.headers.get("www-authenticate", "")
                if (
                    response.status_code != 401
                    or not challenge.startswith("Bearer")
                    or not response.headers.get("content-type", "").startswith(PROBLEM)
                ):
                    wrong.append(f"{name}: {op} -> {response.status_code} {challenge!r}")
                else:
                    assert_problem(response, 401)
    assert not wrong, "\n".join(wrong)
    with server.client() as anonymous:
        assert anonymous.get("/healthz").json()["ledger_size"] == before
    # the expiring token is still good once the clock is back
    monkeypatch.undo()
    expiring = bad_credentials["expired"]
    with httpx.Client(base_url=server.url, headers=expiring, timeout=30) as client:
        assert client.get("/v1/whoami").status_code == 200


def test_the_unsigned_webhook_is_401_without_a_bearer_challenge(live: LiveServer) -> None:
    with live.client() as anonymous:
        response = anonymous.post("/v1/integrations/mlflow/webhook", json={"x": 1})
    assert response.status_code == 401
    assert response.headers["content-type"].startswith(PROBLEM)
    assert "www-authenticate" not in response.headers
