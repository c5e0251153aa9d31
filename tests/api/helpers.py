"""Builders and assertions shared by the HTTP-level tests.

Everything goes through the API as the bootstrap admin: principals, role grants and tokens are
created exactly as an operator would create them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import httpx
import pytest

from tests.utils.server import LiveServer

PROBLEM = "application/problem+json"
ZERO_DIGEST = "sha256:" + "0" * 64


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def fake_digest(seed: str) -> str:
    """A well-formed digest for artifacts registered by reference (models, policies)."""
    return digest_of(seed.encode())


def make_principal(
    server: LiveServer,
    principal_id: str,
    grants: Sequence[tuple[str, str]] = (),
    *,
    kind: str = "user",
    expires_in_days: int | None = None,
) -> str:
    """Create ``principal_id`` with ``(role, project)`` grants; return a fresh token for it."""
    with server.admin() as admin:
        created = admin.post("/v1/principals", json={"id": principal_id, "kind": kind})
        assert created.status_code == 201, created.text
        for role, project in grants:
            granted = admin.post(
                f"/v1/principals/{principal_id}/roles", json={"role": role, "project": project}
            )
            assert granted.status_code == 201, granted.text
        body: dict[str, Any] = {"name": "test"}
        if expires_in_days is not None:
            body["expires_in_days"] = expires_in_days
        issued = admin.post(f"/v1/principals/{principal_id}/tokens", json=body)
        assert issued.status_code == 201, issued.text
        return str(issued.json()["token"])


def one_shot(server: LiveServer, token: str | None = None) -> httpx.Client:
    """A client that never reuses a connection.

    uvicorn closes a connection after an unhandled exception; a keep-alive client could then
    send its next request into a closed socket.
    """
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(
        base_url=server.url,
        headers=headers,
        timeout=30,
        limits=httpx.Limits(max_keepalive_connections=0),
    )


def settled(
    server: LiveServer, method: str, path: str, token: str | None = None, **kwargs: Any
) -> httpx.Response:
    """One request that may provoke a 500, returned only once the server is idle again.

    After a 500 uvicorn logs the traceback in the server thread *after* the response went
    out. On Python 3.11 formatting a traceback calls ``ast.parse``, whose recursion counter is
    shared by all threads; pytest formatting a failure at the same moment then dies with
    ``SystemError: AST constructor recursion depth mismatch``. A second request is served
    only after the event loop has finished logging the first one.
    """
    with one_shot(server, token) as client:
        response = client.request(method, path, **kwargs)
        client.get("/healthz")
    return response


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    """``response`` is an RFC 9457 problem with ``status``; return its body."""
    assert response.status_code == status, (response.status_code, response.text[:500])
    assert response.headers["content-type"].startswith(PROBLEM), response.headers
    body = response.json()
    assert isinstance(body, dict)
    for field in ("type", "title", "status", "detail"):
        assert field in body, (field, body)
    assert body["status"] == status
    assert isinstance(body["type"], str) and body["type"]
    assert isinstance(body["title"], str) and body["title"]
    assert isinstance(body["detail"], str)
    if status == 401:
        assert response.headers.get("www-authenticate", "").startswith("Bearer")
    return body


def register(
    client: httpx.Client,
    project: str,
    kind: str,
    name: str,
    body: dict[str, Any],
    expect: int | None = 201,
) -> dict[str, Any]:
    """Register a version; ``expect=None`` accepts any status."""
    response = client.post(f"/v1/projects/{project}/artifacts/{kind}/{name}/versions", json=body)
    assert expect is None or response.status_code == expect, response.text[:500]
    return response.json()  # type: ignore[no-any-return]


def model_body(seed: str, **extra: Any) -> dict[str, Any]:
    return {"digest": fake_digest(seed), "uri": f"s3://models/{seed}", **extra}


def all_entries(client: httpx.Client, **filters: Any) -> list[dict[str, Any]]:
    """Every ledger entry (matching ``filters``), following ``next_start``."""
    out: list[dict[str, Any]] = []
    start: int | None = 0
    while start is not None:
        response = client.get(
            "/v1/ledger/entries", params={"start": start, "limit": 1000, **filters}
        )
        assert response.status_code == 200, response.text[:500]
        page = response.json()
        out.extend(page["data"])
        start = page["next_start"]
    return out


def xfail_if(request: pytest.FixtureRequest, condition: bool, reason: str) -> None:
    """Mark the running test as a strict expected failure when ``condition`` holds."""
    if condition:
        request.applymarker(pytest.mark.xfail(strict=True, reason=reason))
