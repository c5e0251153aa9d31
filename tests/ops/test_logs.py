"""JSON log lines with a request id that the response header and problem bodies repeat."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from controlplane.ops.logs import (
    ACCESS_LOGGER,
    JsonFormatter,
    RequestIdFilter,
    TextFormatter,
    accept_request_id,
    request_id,
)
from tests.api.helpers import assert_problem
from tests.ops.helpers import wait_for
from tests.utils.databases import served
from tests.utils.server import LiveServer


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with served("sqlite", tmp_path_factory.mktemp("logs")) as running:
        yield running


@pytest.fixture
def lines(api: LiveServer) -> Iterator[io.StringIO]:
    """Everything logged under ``controlplane`` while the test runs, as JSON lines."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RequestIdFilter())
    logger = logging.getLogger("controlplane")
    saved = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved)


def access_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    parsed = [json.loads(line) for line in stream.getvalue().splitlines()]  # each one JSON
    return [line for line in parsed if line["logger"] == ACCESS_LOGGER]


def only_line(stream: io.StringIO, rid: str) -> dict[str, Any]:
    """The access line of request ``rid`` (written just after the response went out)."""

    def matching() -> list[dict[str, Any]]:
        return [line for line in access_lines(stream) if line["request_id"] == rid]

    wait_for(lambda: bool(matching()), timeout=5, what=f"the access line of {rid}")
    found = matching()
    assert len(found) == 1, stream.getvalue()
    return found[0]


def test_a_sane_client_request_id_is_kept_echoed_and_logged(
    api: LiveServer, lines: io.StringIO
) -> None:
    with api.admin() as admin:
        response = admin.get("/v1/ledger/entries/1", headers={"X-Request-ID": "trace-42.a:b"})
    assert response.status_code == 200
    assert response.headers["x-request-id"] == "trace-42.a:b"
    line = only_line(lines, "trace-42.a:b")
    assert line["level"] == "info" and line["msg"] == "request"
    assert (line["method"], line["path"], line["route"], line["status"]) == (
        "GET",
        "/v1/ledger/entries/1",
        "/v1/ledger/entries/{seq}",
        200,
    )
    assert line["principal_id"] == "admin"
    assert isinstance(line["duration_ms"], float) and line["duration_ms"] > 0
    assert line["client"] == "127.0.0.1"
    assert line["ts"].endswith("Z")


@pytest.mark.parametrize(
    ("path", "admin", "status", "principal"),
    [
        ("/v1/ledger/entries/999999", True, 404, "admin"),  # a domain error
        ("/v1/ledger/checkpoint", False, 401, None),  # no token
        ("/v1/ledger/entries?start=-1", True, 422, "admin"),  # validation
        ("/v1/ledger/entries?name=a%00b", True, 422, None),  # refused before routing (NUL)
        ("/no/such/page", True, 404, None),  # no route at all
    ],
)
def test_every_problem_body_carries_the_request_id_of_its_log_line(
    api: LiveServer,
    lines: io.StringIO,
    path: str,
    admin: bool,
    status: int,
    principal: str | None,
) -> None:
    with api.client(api.admin_token if admin else None) as http:
        response = http.get(path)
    problem = assert_problem(response, status)
    rid = response.headers["x-request-id"]
    assert problem["request_id"] == rid
    assert len(rid) == 32 and int(rid, 16) >= 0  # generated: the client sent none
    line = only_line(lines, rid)
    assert line["status"] == status
    assert line["principal_id"] == principal
    assert int(response.headers["content-length"]) == len(response.content)


@pytest.mark.parametrize("sent", ["x" * 129, "has space", 'quote"d', "ünïcode", "-leading"])
def test_an_insane_request_id_is_replaced(api: LiveServer, lines: io.StringIO, sent: str) -> None:
    with httpx.Client(base_url=api.url) as http:
        response = http.get("/healthz", headers={"X-Request-ID": sent.encode()})
    assert response.status_code == 200
    rid = response.headers["x-request-id"]
    assert rid != sent and len(rid) == 32
    assert accept_request_id(sent) != sent


def test_log_records_inside_a_request_carry_its_id() -> None:
    """Any record logged while a request is served, not only the access line."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("controlplane.test-ops")
    logger.addHandler(handler)
    logger.propagate = False
    token = request_id.set("req-7")
    try:
        try:
            raise ValueError("boom")
        except ValueError:
            extra = {"job_id": 3, "where": Path("/x")}
            logger.error("failed %s", "here", exc_info=True, extra=extra)
    finally:
        request_id.reset(token)
        logger.removeHandler(handler)
    record = json.loads(stream.getvalue())
    assert record["request_id"] == "req-7" and record["msg"] == "failed here"
    assert record["job_id"] == 3 and record["where"] == "/x"
    assert "ValueError: boom" in record["exc"]

    text = logging.makeLogRecord({"msg": "hello", "request_id": "req-8", "levelname": "INFO"})
    assert TextFormatter().format(text).endswith("hello request_id=req-8")
