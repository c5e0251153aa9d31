"""RFC 9457 problem+json: every error the API returns, mapped in one place.

Internal exception text is never echoed on a 500.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from controlplane.api.observability import request_id_of
from controlplane.errors import ControlPlaneError
from controlplane.ledger.errors import LedgerError
from controlplane.store.ledger_store import StoreError

log = logging.getLogger("controlplane.api")
PROBLEM = "application/problem+json"
TYPE_BASE = "https://controlplane.dev/problems/"

PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "request_id": {"type": "string"},
        "errors": {"type": "array", "items": {"type": "object"}},
    },
}
RESPONSES: dict[int | str, dict[str, Any]] = {
    "4XX": {
        "description": "The request was refused: an RFC 9457 problem (401 also carries "
        "`WWW-Authenticate: Bearer`)",
        "content": {PROBLEM: {"schema": PROBLEM_SCHEMA}},
    }
}
"""Declared on every operation, so the OpenAPI document says what an error looks like (and
FastAPI's default 422 schema, which is not what :func:`install` answers, is left out)."""


def json_object(description: str) -> dict[str, Any]:
    """A second success status of an operation (``responses={200: json_object(...)}``)."""
    return {
        "description": description,
        "content": {"application/json": {"schema": {"type": "object"}}},
    }


def problem(
    status: int, title: str, detail: str, code: str, request: Request | None = None, **extra: Any
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": TYPE_BASE + code,
        "title": title,
        "status": status,
        "detail": detail,
    }
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else {}
    if request is not None:
        body["instance"] = request.url.path
        # the request middleware's id, quoted by users in reports (and in the server's logs)
        rid = request_id_of(request.scope)
        if rid is not None:
            body["request_id"] = rid
            headers["X-Request-ID"] = rid
    body.update({k: v for k, v in extra.items() if v is not None})
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers or None)


_CHOICES = re.compile(r"\^\(([A-Za-z0-9_]+(?:\|[A-Za-z0-9_]+)+)\)\$")


def _message(error: Any) -> str:
    """Pydantic's message, except that a choice written as a ``^(a|b)$`` pattern is said in
    words ("must be one of a, b"): the regular expression means nothing to a CLI user."""
    pattern = (error.get("ctx") or {}).get("pattern")
    if error.get("type") == "string_pattern_mismatch" and isinstance(pattern, str):
        choices = _CHOICES.fullmatch(pattern)
        if choices:
            return "must be one of " + ", ".join(choices.group(1).split("|"))
    return str(error.get("msg", ""))


def _validation_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    out = []
    for error in exc.errors():
        out.append(
            {
                "loc": [str(part) for part in error.get("loc", ())],
                "msg": _message(error),
                "type": str(error.get("type", "")),
            }
        )
    return out


def install(app: FastAPI) -> None:
    @app.exception_handler(ControlPlaneError)
    async def _domain(request: Request, exc: ControlPlaneError) -> JSONResponse:
        return problem(exc.status, exc.title, exc.detail, exc.code, request, **exc.extra)

    @app.exception_handler(LedgerError)
    async def _ledger(request: Request, exc: LedgerError) -> JSONResponse:
        return problem(422, "Invalid input", str(exc), "invalid-input", request)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = _validation_errors(exc)
        first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
        detail = f"{'.'.join(first['loc'])}: {first['msg']}" if first["loc"] else first["msg"]
        return problem(422, "Invalid input", detail, "invalid-input", request, errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        titles = {404: "Not found", 405: "Method not allowed", 413: "Payload too large"}
        title = titles.get(exc.status_code, "Error")
        return problem(
            exc.status_code, title, str(exc.detail), title.lower().replace(" ", "-"), request
        )

    @app.exception_handler(DataError)
    async def _data(request: Request, exc: DataError) -> JSONResponse:
        log.warning("database refused a value on %s: %s", request.url.path, exc.orig)
        return problem(
            422,
            "Invalid input",
            "a value is out of range or not storable",
            "invalid-input",
            request,
        )

    @app.exception_handler(StoreError)
    async def _store(request: Request, exc: StoreError) -> JSONResponse:
        # A damaged tree or a replica holding a retired signing key: nothing was written, the
        # operator must act; the client may retry later.
        log.error("ledger store refused a write on %s: %s", request.url.path, exc)
        return problem(
            503,
            "Service unavailable",
            # our own message (a damaged tree, a retired signing key): an auditor needs it
            f"the ledger store cannot serve this request: {exc}; nothing was recorded",
            "ledger-unavailable",
            request,
        )

    @app.exception_handler(OperationalError)
    @app.exception_handler(PoolTimeout)
    async def _busy(request: Request, exc: Exception) -> JSONResponse:
        if not transient(exc):
            return _internal_error(request, exc)
        # The database is unreachable, or still locked by other writers after the wait (the
        # SQLite busy timeout, the writer pool's timeout): transient, so the client may retry.
        log.error("database unavailable on %s: %s", request.url.path, exc)
        response = problem(
            503,
            "Service unavailable",
            "the database is unavailable or busy; retry later",
            "database-unavailable",
            request,
        )
        response.headers["Retry-After"] = "1"
        return response

    @app.exception_handler(OverflowError)
    async def _overflow(request: Request, exc: OverflowError) -> JSONResponse:
        return problem(422, "Invalid input", "a number is out of range", "invalid-input", request)

    @app.exception_handler(RecursionError)
    async def _deep(request: Request, exc: RecursionError) -> JSONResponse:
        return problem(400, "Bad request", "JSON is nested too deeply", "bad-request", request)

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        return _internal_error(request, exc)


def _internal_error(request: Request, exc: Exception) -> JSONResponse:
    log.exception(
        "unhandled error on %s %s",
        request.method,
        request.url.path,
        exc_info=exc,
        extra={"request_id": request_id_of(request.scope)},
    )
    return problem(
        500, "Internal error", "the server failed; see its log", "internal-error", request
    )


def transient(exc: Exception) -> bool:
    """Whether a database error is a passing state worth a retry: the pool's wait ran out,
    SQLite is still locked or busy, or PostgreSQL's connection failed or it broke a deadlock
    or serialisation conflict. SQLite reports a missing table or a read-only file with the same
    exception class: those are faults, not a reason to retry."""
    if isinstance(exc, PoolTimeout):
        return True
    if not isinstance(exc, OperationalError):
        return False
    orig = getattr(exc, "orig", None)
    if type(orig).__module__.startswith("sqlite3"):
        text = str(orig).lower()
        return "locked" in text or "busy" in text
    return True  # psycopg: connection failures, deadlocks, serialisation failures, cancels
