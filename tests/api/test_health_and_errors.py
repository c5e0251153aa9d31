"""Health, OpenAPI, authentication failures and the problem+json shape of every error."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import rfc8785

from controlplane import clock
from controlplane.core import ControlPlane
from tests.api.conftest import unique
from tests.api.helpers import (
    assert_problem,
    make_principal,
    model_body,
    register,
    settled,
)
from tests.utils.server import LiveServer, live_server

P = "/v1/projects/alpha/artifacts"


def _ledger_size(server: LiveServer) -> int:
    with server.client() as anonymous:
        return int(anonymous.get("/healthz").json()["ledger_size"])


# -- health and OpenAPI ----------------------------------------------------------------------


def test_healthz_answers_without_a_token(server: LiveServer) -> None:
    with server.client() as anonymous:
        response = anonymous.get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["database"] == server.cp.db.dialect
    assert body["origin"] == "test.controlplane/ledger"
    with server.admin() as admin:
        entries = admin.get("/v1/ledger/entries", params={"limit": 1000}).json()
    # init wrote at least: server key, bootstrap principal, its admin role, its token
    assert body["ledger_size"] == entries["count"] >= 4


def test_openapi_document_lists_the_api(api: LiveServer) -> None:
    with api.client() as anonymous:
        response = anonymous.get("/openapi.json")
    assert response.status_code == 200
    spec = response.json()
    assert spec["openapi"].startswith("3.")
    paths = spec["paths"]
    for path in (
        "/healthz",
        "/v1/principals",
        "/v1/projects/{project}/artifacts",
        "/v1/projects/{project}/artifacts/{kind}/{name}/versions",
        "/v1/projects/{project}/artifacts/{kind}/{name}/versions/{version}/lineage",
        "/v1/ledger/entries",
        "/v1/ledger/checkpoint",
        "/v1/ledger/proofs/inclusion",
        "/v1/ledger/proofs/consistency",
        "/v1/ledger/export",
    ):
        assert path in paths, path
    schemes = spec["components"]["securitySchemes"]
    assert any(s.get("scheme", "").lower() == "bearer" for s in schemes.values())


# -- 401 -------------------------------------------------------------------------------------


def test_missing_wrong_and_malformed_tokens_are_401(api: LiveServer) -> None:
    before = _ledger_size(api)
    with api.client() as anonymous:
        body = assert_problem(anonymous.get("/v1/whoami"), 401)
        assert "token" in body["detail"]
        assert_problem(anonymous.get(P), 401)
        assert_problem(anonymous.get("/v1/ledger/entries"), 401)
        assert_problem(anonymous.get("/v1/ledger/export"), 401)
        assert_problem(anonymous.post(f"{P}/reward_model/m/versions", json=model_body("m")), 401)
        assert_problem(anonymous.post("/v1/principals", json={"id": unique("x")}), 401)
        # the admin's token in a non-Bearer scheme is no token at all
        basic = base64.b64encode(f"x:{api.admin_token}".encode()).decode()
        response = anonymous.get("/v1/whoami", headers={"Authorization": f"Basic {basic}"})
        assert_problem(response, 401)
        response = anonymous.get("/v1/whoami", headers={"Authorization": api.admin_token})
        assert_problem(response, 401)
    for token in ("cpt_not-a-real-token", api.admin_token + "x", api.admin_token[:-1], "Bearer"):
        with api.client(token) as wrong:
            body = assert_problem(wrong.get("/v1/whoami"), 401)
            assert "not valid" in body["detail"]
    assert _ledger_size(api) == before


def test_revoked_token_is_401(api: LiveServer) -> None:
    who = unique("bob")
    token = make_principal(api, who, [("engineer", "alpha")])
    with api.client(token) as bob:
        assert bob.get("/v1/whoami").status_code == 200
        tokens = bob.get(f"/v1/principals/{who}/tokens").json()["data"]
        assert len(tokens) == 1 and tokens[0]["revoked_at"] is None
    with api.admin() as admin:
        assert admin.delete(f"/v1/tokens/{tokens[0]['id']}").status_code == 204
        # revoking again is harmless and records nothing new
        assert admin.delete(f"/v1/tokens/{tokens[0]['id']}").status_code == 204
        listed = admin.get(f"/v1/principals/{who}/tokens").json()["data"]
        assert listed[0]["revoked_at"] is not None
        revoked = admin.get("/v1/ledger/entries", params={"action": "token.revoked", "name": who})
        assert [e["payload"]["token_id"] for e in revoked.json()["data"]] == [tokens[0]["id"]]
        assert_problem(admin.delete("/v1/tokens/tok_does_not_exist"), 404)
    with api.client(token) as bob:
        body = assert_problem(bob.get("/v1/whoami"), 401)
        assert "revoked" in body["detail"]
        assert_problem(bob.get(P), 401)


def test_expired_token_is_401(api: LiveServer, monkeypatch: pytest.MonkeyPatch) -> None:
    token = make_principal(api, unique("bob"), [("engineer", "alpha")], expires_in_days=1)
    real_now = clock.now_fn
    with api.client(token) as bob:
        assert bob.get("/v1/whoami").status_code == 200
        monkeypatch.setattr(clock, "now_fn", lambda: real_now() + timedelta(hours=23))
        assert bob.get("/v1/whoami").status_code == 200
        monkeypatch.setattr(clock, "now_fn", lambda: real_now() + timedelta(days=1, minutes=1))
        body = assert_problem(bob.get("/v1/whoami"), 401)
        assert "expired" in body["detail"]
        assert_problem(bob.get(P), 401)
        monkeypatch.undo()
        assert clock.now_fn is real_now
        assert bob.get("/v1/whoami").status_code == 200


def test_token_lifetime_is_validated(api: LiveServer) -> None:
    with api.admin() as admin:
        for days in (0, -1, 3651, "soon", 1.5):
            response = admin.post(
                "/v1/principals/admin/tokens", json={"name": "x", "expires_in_days": days}
            )
            assert_problem(response, 422)
        assert_problem(admin.post("/v1/principals/admin/tokens", json={"name": ""}), 422)
        issued = admin.post("/v1/principals/admin/tokens", json={"expires_in_days": 7}).json()
    expires = datetime.fromisoformat(issued["expires_at"].replace("Z", "+00:00"))
    assert timedelta(days=6, hours=23) < expires - datetime.now(UTC) <= timedelta(days=7)


def test_disabled_principal_is_401(api: LiveServer) -> None:
    who = unique("bob")
    token = make_principal(api, who, [("engineer", "alpha")])
    with api.client(token) as bob:
        assert bob.get(P).status_code == 200
    with api.admin() as admin:
        disabled = admin.post(f"/v1/principals/{who}/disable")
        assert disabled.status_code == 200 and disabled.json()["disabled"] is True
        # disabling twice is idempotent and writes one entry
        assert admin.post(f"/v1/principals/{who}/disable").status_code == 200
        params = {"action": "principal.disabled", "name": who}
        assert admin.get("/v1/ledger/entries", params=params).json()["count"] == 1
        # a disabled principal gets no new token either
        assert_problem(admin.post(f"/v1/principals/{who}/tokens", json={}), 409)
    with api.client(token) as bob:
        body = assert_problem(bob.get("/v1/whoami"), 401)
        assert "disabled" in body["detail"]
        assert_problem(bob.post(f"{P}/reward_model/m/versions", json=model_body("m")), 401)


# -- 404 / 405 / 409 -------------------------------------------------------------------------


def test_unknown_routes_and_resources_are_404(api: LiveServer) -> None:
    missing = unique("missing")
    with api.admin() as admin:
        for path in (
            "/nope",
            "/v1/nope",
            "/v1/projects/alpha/nope",
            f"{P}/dataset/{missing}",
            f"{P}/dataset/{missing}/versions/1",
            f"{P}/dataset/{missing}/versions/latest",
            f"{P}/dataset/{missing}/versions/1/lineage",
            "/v1/ledger/entries/999999",
            f"/v1/principals/{missing}",
            f"/v1/principals/{missing}/tokens",
        ):
            assert_problem(admin.get(path), 404)
        rm = unique("rm")
        register(admin, "alpha", "reward_model", rm, model_body(rm))
        assert_problem(admin.get(f"{P}/reward_model/{rm}/versions/2"), 404)
        assert_problem(admin.get(f"/v1/projects/beta/artifacts/reward_model/{rm}/versions/1"), 404)
        assert_problem(admin.post(f"/v1/principals/{missing}/roles", json={"role": "runner"}), 404)
        assert_problem(admin.post(f"/v1/principals/{missing}/disable"), 404)
        assert_problem(admin.post(f"/v1/principals/{missing}/tokens", json={}), 404)
        assert_problem(admin.delete("/v1/principals/admin/roles/runner"), 404)
        # a lineage parent that does not exist
        body = model_body(
            "child", lineage=[{"relation": "trained_on", "ref": f"dataset/{missing}@1"}]
        )
        assert_problem(admin.post(f"{P}/reward_model/{unique('rm')}/versions", json=body), 404)


def test_wrong_method_is_405_and_duplicates_are_409(api: LiveServer) -> None:
    who = unique("bob")
    with api.admin() as admin:
        assert_problem(admin.put("/healthz"), 405)
        assert_problem(admin.delete("/v1/ledger/entries/0"), 405)
        assert_problem(admin.patch(f"{P}/reward_model/x/versions"), 405)
        assert admin.post("/v1/principals", json={"id": who}).status_code == 201
        assert_problem(admin.post("/v1/principals", json={"id": who}), 409)
        assert_problem(admin.post("/v1/principals", json={"id": "admin"}), 409)
        grant = {"role": "engineer", "project": "alpha"}
        assert admin.post(f"/v1/principals/{who}/roles", json=grant).status_code == 201
        assert_problem(admin.post(f"/v1/principals/{who}/roles", json=grant), 409)


# -- 422 -------------------------------------------------------------------------------------

_DIGEST = "sha256:" + "a" * 64


def test_invalid_requests_are_422_and_write_nothing(api: LiveServer) -> None:
    """Bad JSON, bad names, bad digests, unknown kinds, extra fields: 422 problem+json."""
    raw_bodies = [b"{not json", b"[1, 2]", b'"text"', b"", b"null", b'{"digest": }']
    json_bodies = [
        {"digest": _DIGEST, "uri": "s3://x", "extra": 1},
        {"digest": "sha256:" + "A" * 64, "uri": "s3://x"},
        {"digest": "md5:" + "a" * 32, "uri": "s3://x"},
        {"digest": "sha256:" + "a" * 63, "uri": "s3://x"},
        {"digest": "sha256:" + "g" * 64, "uri": "s3://x"},
        {"digest": "SHA256:" + "a" * 64, "uri": "s3://x"},
        {"digest": 5, "uri": "s3://x"},
        {"digest": _DIGEST},
        {"uri": "s3://x"},
        {"digest": _DIGEST, "uri": ""},
        {"digest": _DIGEST, "uri": "x" * 4097},
        {"digest": _DIGEST, "uri": "s3://x", "metadata": []},
        {"digest": _DIGEST, "uri": "s3://x", "metadata": {"big": 2**60}},
        {"digest": _DIGEST, "uri": "s3://x", "lineage": {}},
        {"digest": _DIGEST, "uri": "s3://x", "lineage": [{"relation": "inspired_by"}]},
        {"digest": _DIGEST, "uri": "s3://x", "lineage": [{"relation": "trained_on"}]},
        {"digest": _DIGEST, "uri": "s3://x", "lineage": [{"relation": "trained_on", "ref": "x"}]},
        {
            "digest": _DIGEST,
            "uri": "s3://x",
            "lineage": [{"relation": "trained_on", "ref": "rubric/r@1"}],
        },
        {
            "digest": _DIGEST,
            "uri": "s3://x",
            "lineage": [{"relation": "trained_on", "ref": "dataset/d@1", "extra": True}],
        },
        {
            "digest": _DIGEST,
            "uri": "s3://x",
            "lineage": [{"relation": "trained_on", "kind": "dataset", "name": "d", "version": 0}],
        },
        {"digest": _DIGEST, "uri": "s3://x", "content_encoding": "rot13"},
    ]
    before = _ledger_size(api)
    with api.admin() as admin:
        url = f"{P}/reward_model/rm/versions"
        for raw in raw_bodies:
            response = admin.post(url, content=raw, headers={"content-type": "application/json"})
            assert_problem(response, 422)
        for body in json_bodies:
            problem = assert_problem(admin.post(url, json=body), 422)
            assert problem["detail"], body
        # a body that is not JSON at all
        response = admin.post(url, content=b"digest=x", headers={"content-type": "text/plain"})
        assert_problem(response, 422)
        # names: spaces, dot-dot, leading punctuation, too long, traversal spelled out
        for name in ("a%20b", "a..b", ".hidden", "-x", "x" * 201, "%2E%2E", "..%5Cetc", "a%00b"):
            response = admin.post(f"{P}/reward_model/{name}/versions", json=model_body("n"))
            body = assert_problem(response, 422)
            assert "name" in body["detail"]
        # a slash smuggled in as %2F is decoded before routing: no route matches
        for name in ("..%2Fetc", "..%2F..%2Fetc%2Fpasswd", "a%2Fb"):
            response = admin.post(f"{P}/reward_model/{name}/versions", json=model_body("n"))
            assert response.status_code in (404, 422)
            assert_problem(response, response.status_code)
        # projects
        for project in ("Alpha", "a%20b", "%2E%2E", "_x", "a" * 101):
            response = admin.post(
                f"/v1/projects/{project}/artifacts/reward_model/rm/versions", json=model_body("n")
            )
            assert "project" in assert_problem(response, 422)["detail"]
            assert_problem(admin.get(f"/v1/projects/{project}/artifacts"), 422)
        # unknown kinds, in every route that names one
        for path in (
            f"{P}/weights/w",
            f"{P}/weights/w/versions/1",
            f"{P}/weights/w/versions/latest",
            f"{P}/weights/w/versions/1/lineage",
        ):
            assert "kind" in assert_problem(admin.get(path), 422)["detail"]
        assert_problem(admin.get(P, params={"kind": "weights"}), 422)
        assert_problem(admin.post(f"{P}/weights/w/versions", json=model_body("w")), 422)
        # datasets and rubrics need their content; content must decode
        assert_problem(admin.post(f"{P}/dataset/d/versions", json={}), 422)
        assert_problem(admin.post(f"{P}/rubric/r/versions", json={"content": "   "}), 422)
        bad_b64 = {"content": "%%%", "content_encoding": "base64"}
        assert_problem(admin.post(f"{P}/dataset/d/versions", json=bad_b64), 422)
        # query parameters
        for params in ({"limit": 0}, {"limit": 5001}, {"start": -1}, {"limit": "ten"}):
            assert_problem(admin.get("/v1/ledger/entries", params=params), 422)
        for params in ({"offset": -1}, {"limit": 0}, {"q": "x" * 201}):
            assert_problem(admin.get(P, params=params), 422)
        # principals and grants
        for body in (
            {"id": "Bob"},
            {"id": "a b"},
            {"id": ""},
            {"id": "x" * 101},
            {"id": "system"},
            {"id": "x", "kind": "robot"},
            {"id": "x", "roles": ["admin"]},
        ):
            assert_problem(admin.post("/v1/principals", json=body), 422)
        for body in (
            {"role": "superuser", "project": "alpha"},
            {"role": "engineer", "project": "Alpha"},
            {"role": "engineer", "project": ""},
            {"role": "engineer", "project": "alpha", "until": "never"},
        ):
            assert_problem(admin.post("/v1/principals/admin/roles", json=body), 422)
    # none of the refused requests reached the ledger
    assert _ledger_size(api) == before


def test_bad_version_and_direction_are_422(api: LiveServer) -> None:
    rm = unique("rm")
    with api.admin() as admin:
        register(admin, "alpha", "reward_model", rm, model_body(rm))
        for version in ("0", "-1", "one", "1.0", "latest1", "%201"):
            assert_problem(admin.get(f"{P}/reward_model/{rm}/versions/{version}"), 422)
        url = f"{P}/reward_model/{rm}/versions/1/lineage"
        assert_problem(admin.get(url, params={"direction": "up"}), 422)


def test_unicode_digit_version_is_422(api: LiveServer) -> None:
    rm = unique("rm")
    with api.admin() as admin:
        register(admin, "alpha", "reward_model", rm, model_body(rm))
    response = settled(api, "GET", f"{P}/reward_model/{rm}/versions/%C2%B2", api.admin_token)
    assert_problem(response, 422)


@pytest.mark.parametrize(
    "path",
    [
        "/v1/ledger/entries/99999999999999999999",
        "/v1/ledger/entries?start=99999999999999999999",
        f"{P}/reward_model/rm/versions/99999999999999999999",
    ],
    ids=["entry-seq", "entries-start", "version"],
)
def test_huge_integers_are_4xx(api: LiveServer, path: str) -> None:
    with api.admin() as admin:
        register(admin, "alpha", "reward_model", "rm", model_body("rm"), expect=None)
    response = settled(api, "GET", path, api.admin_token)
    assert 400 <= response.status_code < 500, response.text
    assert_problem(response, response.status_code)


def test_nul_characters_are_refused_or_stored_never_500(
    api: LiveServer, request: pytest.FixtureRequest
) -> None:
    """A NUL in a text field or filter is either accepted or refused with a 4xx."""
    who = unique("bob")
    make_principal(api, who)
    attempts = [
        ("POST", "/v1/principals", {"json": {"id": unique("nul"), "display_name": "a\0b"}}),
        ("POST", f"/v1/principals/{who}/tokens", {"json": {"name": "t\u0000"}}),
        ("POST", f"{P}/reward_model/{unique('rm')}/versions", {"json": model_body("x", uri="\0")}),
        ("GET", "/v1/ledger/entries", {"params": {"actor": "a\u0000b"}}),
        ("GET", "/v1/ledger/entries", {"params": {"name": "a\u0000b"}}),
        ("GET", P, {"params": {"q": "a\u0000b"}}),
        ("GET", "/v1/principals/a%00b", {}),
        ("POST", "/v1/principals/a%00b/disable", {}),
        ("DELETE", "/v1/tokens/a%00b", {}),
    ]
    failures = []
    for method, path, kwargs in attempts:
        response = settled(api, method, path, api.admin_token, **kwargs)
        if response.status_code >= 500:
            failures.append(f"{method} {path} {kwargs} -> {response.status_code}")
        elif response.status_code >= 400:
            assert_problem(response, response.status_code)
    assert not failures, failures


# -- 413 -------------------------------------------------------------------------------------

LIMIT = 2048


@pytest.fixture
def small_api(api: LiveServer) -> Iterator[LiveServer]:
    """A second app over the same (initialised) database with a 2 KiB body limit."""
    small = ControlPlane(api.cp.settings.model_copy(update={"max_body_bytes": LIMIT}))
    try:
        with live_server(small) as running:
            yield running
    finally:
        small.close()


def test_body_above_the_limit_is_413(small_api: LiveServer) -> None:
    before = _ledger_size(small_api)
    with small_api.admin() as admin:
        big = model_body("big", metadata={"pad": "x" * (LIMIT + 1)})
        body = assert_problem(admin.post(f"{P}/reward_model/big/versions", json=big), 413)
        assert str(LIMIT) in body["detail"]
        dataset = "\n".join(
            json.dumps({"prompt": f"p{i}", "chosen": "a", "rejected": "b"}) for i in range(100)
        )
        assert_problem(admin.post(f"{P}/dataset/d/versions", json={"content": dataset}), 413)
        assert_problem(admin.post("/v1/principals", json={"id": "x" * (LIMIT + 1)}), 413)
    assert _ledger_size(small_api) == before
    with small_api.admin() as admin:
        # below the limit still works
        name = unique("small")
        register(admin, "alpha", "reward_model", name, model_body(name, metadata={"p": "x" * 1500}))


def test_chunked_body_above_the_limit_is_413(small_api: LiveServer) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"digest": "' + model_body("c")["digest"].encode() + b'", "uri": "s3://c", '
        yield b'"metadata": {"pad": "'
        for _ in range(10):
            yield b"x" * 500
        yield b'"}}'

    response = settled(
        small_api,
        "POST",
        f"{P}/reward_model/chunked/versions",
        small_api.admin_token,
        content=chunks(),
        headers={"content-type": "application/json"},
    )
    assert "content-length" not in response.request.headers
    assert_problem(response, 413)


# -- nesting and Unicode ---------------------------------------------------------------------


def _nested(depth: int) -> bytes:
    inner = '{"a":' * depth + "1" + "}" * depth
    return (
        '{"digest": "' + model_body("deep")["digest"] + '", "uri": "s3://deep", '
        '"metadata": ' + inner + "}"
    ).encode()


@pytest.mark.parametrize("depth", [100_000, 5_000])
def test_very_deeply_nested_json_is_4xx(api: LiveServer, depth: int) -> None:
    before = _ledger_size(api)
    response = settled(
        api,
        "POST",
        f"{P}/reward_model/deep/versions",
        api.admin_token,
        content=_nested(depth),
        headers={"content-type": "application/json"},
    )
    assert 400 <= response.status_code < 500
    assert_problem(response, response.status_code)
    assert _ledger_size(api) == before


def test_metadata_nested_up_to_the_limit_round_trips(api: LiveServer) -> None:
    name = unique("deep")
    with api.admin() as admin:
        response = admin.post(
            f"{P}/reward_model/{name}/versions",
            content=_nested(30),
            headers={"content-type": "application/json"},
        )
        assert response.status_code == 201
        too_deep = admin.post(
            f"{P}/reward_model/{name}-x/versions",
            content=_nested(40),
            headers={"content-type": "application/json"},
        )
        assert "nested deeper than 32" in assert_problem(too_deep, 422)["detail"]
        got = admin.get(f"{P}/reward_model/{name}/versions/1").json()["metadata"]
        depth = 0
        while isinstance(got, dict):
            got, depth = got["a"], depth + 1
        assert (got, depth) == (1, 30)
        assert admin.get("/v1/ledger/entries", params={"name": name}).status_code == 200


def test_nesting_between_the_limits_is_refused_or_served(server: LiveServer) -> None:
    # its own server: on failure the ledger listing stays broken for good
    token = server.admin_token
    response = settled(
        server,
        "POST",
        f"{P}/reward_model/deep/versions",
        token,
        content=_nested(300),
        headers={"content-type": "application/json"},
    )
    assert response.status_code < 500, response.status_code
    if response.status_code == 201:
        got = settled(server, "GET", f"{P}/reward_model/deep/versions/1", token)
        assert got.status_code == 200
    assert settled(server, "GET", "/v1/ledger/entries", token).status_code == 200


ODD = {
    "emoji": "\U0001f600\U0001f9ea",
    "rtl_override": "abc\u202edef",
    "bom": "\ufeffx",
    "nul": "a\u0000b",
    "controls": "\u0001\u001f\u007f",
    "combining": "e\u0301 vs \u00e9",
    "astral_cjk": "\U00020000",
    "noncharacter": "\uffff\ufffe",
    "line_sep": "\u2028\u2029",
    "quotes": "\"'\\/",
    "k\u00e9y\u0000": ["\u00df", {"\U0001f600": "\u0000"}],
    "numbers": [0, -0.0, 1.5, 1e300, -(2**53) + 1, 2**53 - 1],
}


def test_odd_unicode_in_metadata_round_trips(api: LiveServer) -> None:
    name = unique("uni")
    with api.admin() as admin:
        created = register(admin, "alpha", "reward_model", name, model_body(name, metadata=ODD))
        assert created["metadata"] == ODD
        fetched = admin.get(f"{P}/reward_model/{name}/versions/1").json()
        assert fetched["metadata"] == ODD
        entry = admin.get(f"/v1/ledger/entries/{created['ledger_seq']}").json()
        assert entry["payload"]["metadata"] == ODD
        hashed = {k: v for k, v in entry.items() if k != "entry_hash"}
        assert hashlib.sha256(rfc8785.dumps(hashed)).hexdigest() == entry["entry_hash"]
        # registering the same again is recognised as identical
        again = register(
            admin, "alpha", "reward_model", name, model_body(name, metadata=ODD), expect=200
        )
        assert again["created"] is False and again["version"] == 1


def test_unrepresentable_metadata_is_422(api: LiveServer) -> None:
    before = _ledger_size(api)
    url = f"{P}/reward_model/{unique('odd')}/versions"
    head = b'{"digest": "' + model_body("odd")["digest"].encode() + b'", "uri": "s3://o", '
    with api.admin() as admin:
        for metadata in (
            b'{"x": "\\ud800"}',
            b'{"x": "\\udc00x"}',
            b'{"x": NaN}',
            b'{"x": Infinity}',
            b'{"x": -Infinity}',
        ):
            response = admin.post(
                url,
                content=head + b'"metadata": ' + metadata + b"}",
                headers={"content-type": "application/json"},
            )
            assert_problem(response, 422)
        # invalid UTF-8 in the body
        response = admin.post(
            url,
            content=head + b'"metadata": {"x": "\xff\xfe"}}',
            headers={"content-type": "application/json"},
        )
        assert 400 <= response.status_code < 500
        assert_problem(response, response.status_code)
    assert _ledger_size(api) == before
