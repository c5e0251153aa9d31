"""Bad input: schemathesis over the served OpenAPI document, then hand-picked nasty requests.

The fuzzer sends the admin's token, so requests get past authorization into the services. Each
operation is fuzzed three ways: with the path parameters of things that exist (a project with
a model, approved data, a request, a contract, a job, stored content, a principal), once with
schema-valid and once with schema-violating data; and with generated path parameters. No
response may be a server error, and each must match what the document declares for it: status
code, content type and body schema. Hypothesis is derandomized, so CI sees the same requests
every run; ``EXAMPLES`` bounds the run (10-20 s per database).

The explicit cases go where a generator rarely does: bodies over the size limit (a second
server on the same database with a small ``max_body_bytes``), deep nesting, odd Unicode, path
traversal in names, digests, manifests and URIs. Each must be a 4xx problem+json that writes
nothing: no ledger entry, no stored content.

schemathesis is used as a library (its pytest plugin does not run on pytest 9.2, and is turned
off in ``pyproject.toml``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
import requests
import schemathesis
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy import func, select

from controlplane import names
from controlplane.core import BOOTSTRAP_ADMIN, ControlPlane
from controlplane.crypto.keys import public_key_b64
from controlplane.errors import InvalidInput
from controlplane.store.models import ContentBlobRow
from tests.api.helpers import PROBLEM, assert_problem, digest_of, fake_digest, one_shot
from tests.security.helpers import Resources, seed
from tests.utils.server import LiveServer, live_server

PROJECT = "fuzz"
EXAMPLES = 4  # per operation and way; about 60 operations, three ways each
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
P = f"/v1/projects/{PROJECT}"
M = f"{P}/artifacts/reward_model/m"


@dataclass
class Target:
    resources: Resources
    principal: str
    token_id: str
    key_id: str

    def path_parameters(self) -> dict[str, str]:
        """A value that exists for every path parameter of the API."""
        return {
            "project": PROJECT,
            "kind": "reward_model",
            "name": "m",
            "version": "1",
            "request_id": str(self.resources.request_id),
            "job_id": str(self.resources.job_id),
            "contract_id": self.resources.contract_id,
            "digest": self.resources.content_digest,
            "principal_id": self.principal,
            "token_id": self.token_id,
            "key_id": self.key_id,
            "role": "runner",
            "seq": "0",
        }


@pytest.fixture(scope="module")
def target(live: LiveServer) -> Target:
    cp = live.cp
    resources = seed(cp, (PROJECT,))[PROJECT]
    # the fuzzer may disable this principal, revoke its token and key: never the admin's
    who = "fuzz-target"
    principal = cp.identity.create_principal(BOOTSTRAP_ADMIN, who)
    cp.identity.grant_role(BOOTSTRAP_ADMIN, who, "runner", PROJECT)
    token_id = cp.identity.issue_token(BOOTSTRAP_ADMIN, who, "fuzzed").id
    key = Ed25519PrivateKey.generate().public_key()
    key_id = cp.governance.register_key(principal, public_key_b64(key), "fuzzed")["key_id"]
    return Target(resources, who, token_id, str(key_id))


def _path_names(path: str) -> list[str]:
    return re.findall(r"{(\w+)}", path)


def test_no_server_error_and_no_response_off_its_schema(live: LiveServer, target: Target) -> None:
    config = schemathesis.Config.from_dict({"base-url": live.url, "request-timeout": 10})
    schema = schemathesis.openapi.from_url(f"{live.url}/openapi.json", config=config)
    auth = {"Authorization": f"Bearer {live.admin_token}"}
    existing = target.path_parameters()
    positive, negative = schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE
    failures: dict[str, str] = {}
    operations = 0
    session = requests.Session()  # keep-alive: a new connection per request costs more
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1
        fixed = {name: existing[name] for name in _path_names(operation.path)}
        ways = [("existing", fixed, positive), ("existing", fixed, negative)]
        if fixed:
            ways.append(("generated", {}, positive))
        for label, path_parameters, mode in ways:
            strategy = operation.as_strategy(generation_mode=mode, path_parameters=path_parameters)

            @settings(
                max_examples=EXAMPLES,
                deadline=timedelta(seconds=5),
                database=None,
                derandomize=True,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            @given(case=strategy)
            def run(case: schemathesis.Case) -> None:
                case.call_and_validate(session=session, headers=auth, checks=CHECKS)

            try:
                run()
            except Unsatisfiable:
                pass  # no schema-violating value exists for this operation
            except (Exception, BaseExceptionGroup) as exc:  # schemathesis: a group of failures
                failures[f"{operation.label} ({label} paths, {mode.value})"] = str(exc)[:4000]
    session.close()
    assert operations >= 50
    assert not failures, "\n\n".join(f"{k}:\n{v}" for k, v in failures.items())


# -- the explicit cases ----------------------------------------------------------------------


def footprint(cp: ControlPlane) -> tuple[int, int]:
    """What a request can write: ledger entries, and stored content (not ledgered)."""
    with cp.db.read() as session:
        blobs = session.execute(select(func.count()).select_from(ContentBlobRow)).scalar_one()
        return cp.store.size(session), int(blobs)


@dataclass(frozen=True)
class Bad:
    """A request that must be a 4xx problem and write nothing."""

    method: str
    path: str
    json: Any = None
    content: bytes | None = None
    content_type: str | None = None
    params: dict[str, str] | None = None
    statuses: tuple[int, ...] = (400, 404, 409, 413, 422)

    def send(self, client: httpx.Client) -> httpx.Response:
        headers = {"content-type": self.content_type} if self.content_type else {}
        content = self.content
        if content is None and self.json is not None:
            # escaped, so that lone surrogates survive the trip (httpx would refuse them)
            content = json.dumps(self.json, ensure_ascii=True).encode()
            headers["content-type"] = "application/json"
        path = self.path
        if self.params:  # lone surrogates go out as the bytes a broken client would send
            path += "?" + urlencode(self.params, encoding="utf-8", errors="surrogatepass")
        return client.request(self.method, path, content=content, headers=headers)


def responses(server: LiveServer, cases: dict[str, Bad]) -> Iterator[tuple[str, httpx.Response]]:
    """Each case's response, on one keep-alive connection while all goes well.

    uvicorn drops a connection after a 5xx or an early 413, and after a 5xx it logs the
    traceback once the response is already out (see :func:`tests.api.helpers.settled`): then
    a ``/healthz`` on a new connection returns only once the server is idle again, and the
    next case gets a new connection.
    """
    client = server.admin()
    try:
        for label, bad in cases.items():
            response = bad.send(client)
            if response.status_code >= 500 or response.status_code == 413:
                client.close()
                with one_shot(server) as settle:
                    settle.get("/healthz")
                client = server.admin()
            yield label, response
    finally:
        client.close()


def refused_and_nothing_written(server: LiveServer, cases: dict[str, Bad]) -> None:
    before = footprint(server.cp)
    wrong = []
    for label, response in responses(server, cases):
        bad = cases[label]
        status = response.status_code
        if status not in bad.statuses or not response.headers.get("content-type", "").startswith(
            PROBLEM
        ):
            wrong.append(
                f"{label}: {bad.method} {bad.path[:120]} -> {status} {response.text[:200]}"
            )
        else:
            assert_problem(response, status)
    assert not wrong, "\n".join(wrong)
    assert footprint(server.cp) == before, "a refused request wrote something"


# -- oversized bodies --------------------------------------------------------------------------

LIMIT = 4096


@pytest.fixture(scope="module")
def small(live: LiveServer) -> Iterator[LiveServer]:
    """A second API process image over the same database, with a 4 KiB body limit."""
    plane = ControlPlane(live.cp.settings.model_copy(update={"max_body_bytes": LIMIT}))
    try:
        with live_server(plane) as running:
            yield running
    finally:
        plane.close()


def test_bodies_over_the_limit_are_413(small: LiveServer, target: Target) -> None:
    big = "x" * (LIMIT + 1)
    blob = b"y" * (LIMIT + 1)
    request_id, job_id = target.resources.request_id, target.resources.job_id
    only_413 = (413,)
    cases = {
        "version metadata": Bad(
            "POST",
            f"{P}/artifacts/reward_model/big/versions",
            {"digest": fake_digest("big"), "uri": "s3://big", "metadata": {"pad": big}},
            statuses=only_413,
        ),
        "dataset content": Bad(
            "POST", f"{P}/artifacts/dataset/big/versions", {"content": big}, statuses=only_413
        ),
        "content upload": Bad(
            "PUT",
            f"{P}/content/{digest_of(blob)}",
            content=blob,
            content_type="application/octet-stream",
            statuses=only_413,
        ),
        "principal": Bad("POST", "/v1/principals", {"id": big}, statuses=only_413),
        "contract": Bad(
            "POST", f"{P}/contracts", {"envelope": {"payload": big}}, statuses=only_413
        ),
        "sign-off": Bad(
            "POST",
            f"/v1/requests/{request_id}/signoffs",
            {"envelope": {"payload": big}},
            statuses=only_413,
        ),
        "job": Bad(
            "POST",
            f"{P}/jobs",
            {"trainer": "dpo", "datasets": ["dataset/d@1"], "hyperparameters": {"x": big}},
            statuses=only_413,
        ),
        "claim": Bad(
            "POST", f"/v1/jobs/{job_id}/claim", {"contract": {"payload": big}}, statuses=only_413
        ),
        "webhook": Bad(
            "POST",
            "/v1/integrations/mlflow/webhook",
            content=big.encode(),
            content_type="application/json",
            statuses=only_413,
        ),
    }
    refused_and_nothing_written(small, cases)


def test_a_chunked_body_over_the_limit_is_413(small: LiveServer) -> None:
    """Without a Content-Length the limit is enforced as the body streams in."""

    def chunks() -> Iterator[bytes]:
        yield b'{"trainer": "dpo", "datasets": ["dataset/d@1"], "hyperparameters": {"x": "'
        for _ in range(LIMIT // 512 + 1):
            yield b"z" * 512
        yield b'"}}'

    before = footprint(small.cp)
    with one_shot(small, small.admin_token) as client:
        response = client.post(
            f"{P}/jobs", content=chunks(), headers={"content-type": "application/json"}
        )
        client.get("/healthz")
    assert "content-length" not in response.request.headers
    assert_problem(response, 413)
    assert footprint(small.cp) == before


def test_a_body_at_the_limit_is_served(small: LiveServer) -> None:
    name = f"limit-{small.cp.db.dialect}"
    body: dict[str, Any] = {"digest": fake_digest(name), "uri": "s3://l", "metadata": {"p": ""}}
    body["metadata"]["p"] = "p" * (LIMIT - len(json.dumps(body).encode()))
    raw = json.dumps(body).encode()
    assert len(raw) == LIMIT
    with small.admin() as admin:
        response = admin.post(
            f"{P}/artifacts/reward_model/{name}/versions",
            content=raw,
            headers={"content-type": "application/json"},
        )
    assert response.status_code in (200, 201), response.text[:300]


# -- deep JSON -------------------------------------------------------------------------------


def _deep_object(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


def _deep_array(depth: int) -> str:
    return "[" * depth + "1" + "]" * depth


def _raw(method: str, path: str, template: str, nested: str) -> Bad:
    return Bad(
        method,
        path,
        content=template.replace("NESTED", nested).encode(),
        content_type="application/json",
        statuses=(400, 413, 422),
    )


def _nested_cases(target: Target, depth: int) -> dict[str, Bad]:
    request_id, job_id = target.resources.request_id, target.resources.job_id
    contract_id = target.resources.contract_id
    places = {
        "version metadata": (
            "POST",
            f"{P}/artifacts/reward_model/deep/versions",
            '{"digest": "' + fake_digest("deep") + '", "uri": "s3://d", "metadata": NESTED}',
        ),
        "lineage": (
            "POST",
            f"{P}/artifacts/reward_model/deep/versions",
            '{"digest": "' + fake_digest("deep") + '", "uri": "s3://d", "lineage": NESTED}',
        ),
        "contract envelope": ("POST", f"{P}/contracts", '{"envelope": NESTED}'),
        "sign-off envelope": (
            "POST",
            f"/v1/requests/{request_id}/signoffs",
            '{"envelope": NESTED}',
        ),
        "job hyperparameters": (
            "POST",
            f"{P}/jobs",
            '{"trainer": "dpo", "datasets": ["dataset/d@1"], "base_model": "reward_model/m@1",'
            ' "hyperparameters": NESTED}',
        ),
        "claimed contract": ("POST", f"/v1/jobs/{job_id}/claim", '{"contract": NESTED}'),
        "heartbeat progress": (
            "POST",
            f"/v1/jobs/{job_id}/heartbeat",
            '{"claim": 1, "progress": NESTED}',
        ),
        "erasure": ("POST", f"{P}/annotators/erasures", '{"annotator": NESTED}'),
        "resolve": ("POST", f"/v1/contracts/{contract_id}/annotators/resolve", "NESTED"),
        "principal": ("POST", "/v1/principals", "NESTED"),
        "reconcile": ("POST", "/v1/integrations/mlflow/reconcile", '{"project": NESTED}'),
    }
    cases = {}
    for label, (method, path, template) in places.items():
        cases[f"{label} (objects)"] = _raw(method, path, template, _deep_object(depth))
        cases[f"{label} (arrays)"] = _raw(method, path, template, _deep_array(depth))
    return cases


@pytest.mark.parametrize("depth", [5_000, 200_000])
def test_deeply_nested_json_is_4xx(live: LiveServer, target: Target, depth: int) -> None:
    """Deeper than the JSON parser goes: refused before anything looks at it."""
    refused_and_nothing_written(live, _nested_cases(target, depth))


def test_nesting_the_parser_takes_is_never_a_server_error(live: LiveServer, target: Target) -> None:
    """300 levels parse; what the services make of them (a refusal, sometimes ledgered, such
    as a rejected contract) is their business, but never a 5xx."""
    wrong = []
    for label, response in responses(live, _nested_cases(target, 300)):
        if response.status_code >= 500:
            wrong.append(f"{label}: {response.status_code}")
    assert not wrong, wrong


# -- odd Unicode -----------------------------------------------------------------------------

ODD_IDENTIFIERS = {
    "nul": "a%00b",
    "rtl override": "abc%E2%80%AEgpj",
    "zero width joiner": "a%E2%80%8Db",
    "fullwidth dots": "%EF%BC%8E%EF%BC%8E",
    "overlong utf-8 dot": "%C0%AE%C0%AE",
    "invalid utf-8": "%FF%FE",
    "lone surrogate (cesu)": "%ED%A0%80",
    "combining": "e%CC%81",
    "emoji": "%F0%9F%98%80",
    "very long": "a" * 5000,
}


def test_odd_unicode_in_identifiers_is_4xx(live: LiveServer, target: Target) -> None:
    cases: dict[str, Bad] = {}
    for label, odd in ODD_IDENTIFIERS.items():
        cases[f"project {label}"] = Bad(
            "POST", f"/v1/projects/{odd}/artifacts/reward_model/m/versions", {"x": 1}
        )
        cases[f"name {label}"] = Bad(
            "POST",
            f"{P}/artifacts/reward_model/{odd}/versions",
            {"digest": fake_digest(label), "uri": "s3://u"},
        )
        cases[f"kind {label}"] = Bad("GET", f"{P}/artifacts/{odd}/m")
        cases[f"principal path {label}"] = Bad("POST", f"/v1/principals/{odd}/disable")
        cases[f"contract id {label}"] = Bad("POST", f"/v1/contracts/{odd}/revoke", {"reason": "r"})
        cases[f"key id {label}"] = Bad("POST", f"/v1/keys/{odd}/revoke", {"reason": "r"})
        cases[f"token id {label}"] = Bad("DELETE", f"/v1/tokens/{odd}")
        cases[f"digest {label}"] = Bad("GET", f"{P}/content/sha256:{odd}")
        cases[f"role {label}"] = Bad("DELETE", f"/v1/principals/{target.principal}/roles/{odd}")
    json_odd = {
        "nul": "a\u0000b",
        "lone surrogate": "a\ud800b",
        "rtl override": "abc\u202egpj",
        "very long": "a" * 5000,
    }
    for label, odd in json_odd.items():
        cases[f"principal id {label}"] = Bad("POST", "/v1/principals", {"id": odd})
        cases[f"grant project {label}"] = Bad(
            "POST",
            f"/v1/principals/{target.principal}/roles",
            {"role": "engineer", "project": odd},
        )
        cases[f"revoke project {label}"] = Bad(
            "DELETE",
            f"/v1/principals/{target.principal}/roles/runner",
            params={"project": odd},
        )
        cases[f"lineage ref {label}"] = Bad(
            "POST",
            f"{M}/versions",
            {
                "digest": fake_digest("lineage" + label),
                "uri": "s3://l",
                "lineage": [{"relation": "trained_on", "ref": f"dataset/{odd}@1"}],
            },
        )
        cases[f"job dataset {label}"] = Bad(
            "POST", f"{P}/jobs", {"trainer": "reward_model", "datasets": [f"dataset/{odd}@1"]}
        )
        cases[f"job output name {label}"] = Bad(
            "POST",
            f"{P}/jobs",
            {"trainer": "reward_model", "datasets": ["dataset/d@1"], "output_name": odd},
        )
        cases[f"uri {label}"] = Bad(
            "POST", f"{M}/versions", {"digest": fake_digest("uri" + label), "uri": f"s3://b/{odd}"}
        )
        cases[f"request kind {label}"] = Bad(
            "POST",
            f"{P}/requests",
            {
                "kind": odd[:30],
                "name": "m",
                "version": 1,
                "target_stage": "candidate",
                "justification": "j",
            },
        )
    # free text cannot hold what no database stores: NUL and lone surrogates
    for label in ("nul", "lone surrogate"):
        odd = json_odd[label]
        cases[f"display name {label}"] = Bad(
            "POST", "/v1/principals", {"id": f"odd-{label.replace(' ', '-')}", "display_name": odd}
        )
        cases[f"reason {label}"] = Bad(
            "POST", f"/v1/requests/{target.resources.request_id}/withdraw", {"reason": odd}
        )
        cases[f"justification {label}"] = Bad(
            "POST",
            f"{P}/requests",
            {
                "kind": "reward_model",
                "name": "m",
                "version": 1,
                "target_stage": "candidate",
                "justification": odd,
            },
        )
        cases[f"token name {label}"] = Bad(
            "POST", f"/v1/principals/{target.principal}/tokens", {"name": odd}
        )
        cases[f"key name {label}"] = Bad(
            "POST", "/v1/keys", {"public_key": "A" * 43 + "=", "name": odd}
        )
    # metadata is JSON kept as JSON: a NUL in it round-trips (tests/api), a lone surrogate
    # has no UTF-8 form at all
    cases["metadata key lone surrogate"] = Bad(
        "POST",
        f"{M}/versions",
        {"digest": fake_digest("meta-surrogate"), "uri": "s3://m", "metadata": {"\ud800": 1}},
    )
    refused_and_nothing_written(live, cases)


# -- path traversal --------------------------------------------------------------------------

TRAVERSALS = {
    "dot dot": "..",
    "encoded dot dot": "%2e%2e",
    "double-encoded dot dot": "%252e%252e",
    "dot dot slash": "..%2F..%2Fetc%2Fpasswd",
    "dot dot backslash": "..%5C..%5Cetc%5Cpasswd",
    "absolute": "%2Fetc%2Fpasswd",
    "file uri": "file:%2F%2F%2Fetc%2Fpasswd",
    "dots in a name": "a..b",
    "hidden": ".ssh",
}


def test_path_traversal_in_names_and_digests_is_4xx(live: LiveServer, target: Target) -> None:
    cases: dict[str, Bad] = {}
    blob = b"traversal"
    for label, odd in TRAVERSALS.items():
        cases[f"project {label}"] = Bad("GET", f"/v1/projects/{odd}/artifacts")
        cases[f"name {label}"] = Bad(
            "POST",
            f"{P}/artifacts/reward_model/{odd}/versions",
            {"digest": fake_digest(label), "uri": "s3://t"},
        )
        cases[f"lineage of {label}"] = Bad("GET", f"{P}/artifacts/reward_model/{odd}/versions/1")
        cases[f"rollback {label}"] = Bad(
            "POST", f"{P}/artifacts/reward_model/{odd}/rollback", {"reason": "r"}
        )
        cases[f"download {label}"] = Bad("GET", f"{P}/content/{odd}")
        cases[f"download sha256:{label}"] = Bad("GET", f"{P}/content/sha256:{odd}")
        cases[f"upload {label}"] = Bad(
            "PUT", f"{P}/content/{odd}", content=blob, content_type="application/octet-stream"
        )
        cases[f"contract {label}"] = Bad("GET", f"/v1/contracts/{odd}")
        cases[f"principal {label}"] = Bad("GET", f"/v1/principals/{odd}/tokens")
    # artifact locations that point somewhere else than they seem
    for label, uri in {
        "dot dot": "s3://bucket/models/../../secrets",
        "encoded dot dot": "s3://bucket/models/%2e%2e/%2e%2e/secrets",
        "double-encoded": "s3://bucket/%252e%252e/secrets",
        "backslash": "file:///srv/models/..\\..\\etc\\passwd",
        "file dot dot": "file:///srv/models/../../etc/passwd",
        "relative": "../../etc/passwd",
        "absolute path": "/etc/passwd",
        "no scheme": "models/rm",
        "rtl override": "file:///srv/exe.\u202egpj",
        "newline": "s3://bucket/a\nb",
    }.items():
        cases[f"uri {label}"] = Bad(
            "POST", f"{M}/versions", {"digest": fake_digest("loc" + label), "uri": uri}
        )
        cases[f"dataset uri {label}"] = Bad(
            "POST",
            f"{P}/artifacts/dataset/loc/versions",
            {
                "content": json.dumps({"prompt": "p", "chosen": "a", "rejected": "b"}) + "\n",
                "uri": uri,
            },
        )
    # a directory manifest whose paths leave the directory
    for label, path in {
        "dot dot": "../outside",
        "inner dot dot": "weights/../../outside",
        "absolute": "/etc/passwd",
        "backslash": "..\\outside",
        "empty segment": "a//b",
    }.items():
        manifest = f"{'0' * 64}  {path}\n".encode()
        cases[f"manifest {label}"] = Bad(
            "PUT",
            f"{P}/content/{digest_of(manifest)}",
            content=manifest,
            content_type="application/octet-stream",
            params={"kind": "manifest"},
        )
    refused_and_nothing_written(live, cases)


@pytest.mark.parametrize(
    "uri",
    [
        "s3://bucket/models/rm-1",
        "file:///srv/models/rm",
        "https://example.org/a..b/c",
        "urn:controlplane:dataset:sha256:" + "0" * 64,
        "s3://bucket/caf%C3%A9",
    ],
)
def test_plain_locations_are_uris(uri: str) -> None:
    assert names.uri(uri) == uri


@pytest.mark.parametrize(
    "uri",
    ["", " ", "x" * 4097, "s3://b/../x", "s3://b/%2E%2E/x", "C:rel/..\\x", "s3://b/\u2066x"],
)
def test_other_locations_are_not(uri: str) -> None:
    with pytest.raises(InvalidInput):
        names.uri(uri)


def test_a_version_at_a_plain_file_uri_is_registered(live: LiveServer) -> None:
    """``file:///etc/passwd`` is a location like any other: the server never reads it, and a
    runner checks what it reads there against the digest."""
    with live.admin() as admin:
        response = admin.post(
            f"{P}/artifacts/reward_model/at-etc/versions",
            json={"digest": fake_digest("at-etc"), "uri": "file:///etc/passwd"},
        )
        assert response.status_code in (200, 201), response.text
        got = admin.get(f"{P}/content/{fake_digest('at-etc')}")
        assert_problem(got, 404)


# -- the second success status of idempotent writes ------------------------------------------


def test_repeated_writes_answer_what_the_document_declares(
    live: LiveServer, target: Target
) -> None:
    """Registering, uploading and registering a contract again answer 200 instead of 201: the
    document must say so (the fuzzer rarely sends the same thing twice)."""
    config = schemathesis.Config.from_dict({"base-url": live.url, "request-timeout": 10})
    schema = schemathesis.openapi.from_url(f"{live.url}/openapi.json", config=config)
    admin = {"Authorization": f"Bearer {live.admin_token}"}
    owner = live.cp.identity.issue_token(BOOTSTRAP_ADMIN, "sec-owner", "fuzz").token
    with live.admin() as client:
        envelope = client.get(f"/v1/contracts/{target.resources.contract_id}").json()["envelope"]
    blob = f"uploaded twice on {live.cp.db.dialect}".encode()
    name = f"twice-{live.cp.db.dialect}"
    calls = [
        (
            "/v1/projects/{project}/content/{digest}",
            "PUT",
            {"project": PROJECT, "digest": digest_of(blob)},
            blob,
            admin,
            (201, 200),
        ),
        (
            "/v1/projects/{project}/artifacts/{kind}/{name}/versions",
            "POST",
            {"project": PROJECT, "kind": "reward_model", "name": name},
            {"digest": fake_digest(name), "uri": "s3://twice"},
            admin,
            (201, 200),
        ),
        (
            "/v1/projects/{project}/contracts",
            "POST",
            {"project": PROJECT},
            {"envelope": envelope},
            {"Authorization": f"Bearer {owner}"},
            (200, 200),
        ),
    ]
    for path, method, parameters, body, headers, statuses in calls:
        operation = schema[path][method]
        media = "application/octet-stream" if isinstance(body, bytes) else "application/json"
        seen = []
        for _ in statuses:
            case = operation.Case(path_parameters=parameters, body=body, media_type=media)
            seen.append(case.call_and_validate(headers=headers, checks=CHECKS).status_code)
        assert tuple(seen) == statuses, (path, seen)
