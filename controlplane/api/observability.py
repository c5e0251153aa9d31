"""Request ids, access logs and request metrics for every HTTP request (one ASGI middleware),
and the wiring of the operations pieces into the app (:func:`install`).

The request id is the client's ``X-Request-ID`` when it is sane, otherwise a new random one;
it is echoed in the ``X-Request-ID`` response header, put in every problem+json body as
``request_id`` (so a user can quote it), and carried by every log line of the request. The
middleware is the outermost one the app adds, so it also sees the body-limit and NUL
refusals; an unhandled exception is answered by Starlette's error middleware outside it,
whose problem body and header come from :mod:`controlplane.api.problems` instead.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from controlplane.core import ControlPlane
from controlplane.ops.logs import ACCESS_LOGGER, accept_request_id, request_id
from controlplane.ops.metrics import UNMATCHED_ROUTE, Metrics
from controlplane.ops.selfcheck import IntegritySelfCheck

access_log = logging.getLogger(ACCESS_LOGGER)
_HEADER = b"x-request-id"
_PROBLEM = b"application/problem+json"
QUIET_ROUTES = frozenset({"/metrics", "/healthz"})
"""Scraped and probed every few seconds: their successful requests are logged at DEBUG."""


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            try:
                return str(value.decode("latin-1"))
            except UnicodeDecodeError:
                return None
    return None


class RequestContext:
    """Assigns the request id, times the request, logs one access line and observes it."""

    def __init__(self, app: ASGIApp, metrics: Metrics | None = None) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = accept_request_id(_header(scope, _HEADER))
        state = scope.setdefault("state", {})
        state["request_id"] = rid
        token = request_id.set(rid)
        started = time.perf_counter()
        status = 500
        held: Message | None = None
        chunks: list[bytes] = []

        async def send_with_id(message: Message) -> None:
            nonlocal status, held
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = list(message.get("headers", []))
                if not any(key.lower() == _HEADER for key, _ in headers):
                    headers.append((b"X-Request-ID", rid.encode()))
                message = {**message, "headers": headers}
                content_type = next((v for k, v in headers if k.lower() == b"content-type"), b"")
                if content_type.startswith(_PROBLEM):
                    held = message  # send it with the body, once request_id is in
                    return
            elif message["type"] == "http.response.body" and held is not None:
                chunks.append(message.get("body", b""))
                if message.get("more_body", False):
                    return
                start, body = _with_request_id(held, b"".join(chunks), rid)
                held = None
                await send(start)
                await send({"type": "http.response.body", "body": body})
                return
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id.reset(token)
            self._record(scope, status, time.perf_counter() - started, rid)

    def _record(self, scope: Scope, status: int, seconds: float, rid: str) -> None:
        route = scope.get("route")
        template = getattr(route, "path", None) or UNMATCHED_ROUTE
        method = scope.get("method", "")
        if self.metrics is not None:
            self.metrics.observe_request(method, template, status, seconds)
        if status >= 500:
            level = logging.ERROR
        elif template in QUIET_ROUTES and status < 400:
            level = logging.DEBUG
        else:
            level = logging.INFO
        if not access_log.isEnabledFor(level):
            return
        client = scope.get("client")
        access_log.log(
            level,
            "request",
            extra={
                "request_id": rid,
                "method": method,
                "path": scope.get("path", ""),
                "route": template,
                "status": status,
                "duration_ms": round(seconds * 1000, 3),
                "principal_id": scope.get("state", {}).get("principal_id"),
                "client": client[0] if client else None,
            },
        )


def _with_request_id(start: Message, body: bytes, rid: str) -> tuple[Message, bytes]:
    """The problem body with ``request_id`` added (unless it has one), and its new length."""
    try:
        problem = json.loads(body)
    except ValueError:
        return start, body
    if not isinstance(problem, dict) or "request_id" in problem:
        return start, body
    problem["request_id"] = rid
    new_body = json.dumps(problem).encode()
    headers = [(k, v) for k, v in start["headers"] if k.lower() != b"content-length"]
    headers.append((b"content-length", str(len(new_body)).encode()))
    return {**start, "headers": headers}, new_body


@dataclass
class Operations:
    """The operations pieces of one app: its metrics and the optional integrity self-check."""

    plane: ControlPlane
    metrics: Metrics
    selfcheck: IntegritySelfCheck

    def start(self) -> None:
        """At app start: repair a missed witness write, start the self-check thread."""
        if self.plane.witness is not None:
            self.plane.witness.sync()
        self.selfcheck.start()

    def stop(self) -> None:
        self.selfcheck.stop()
        listeners = self.plane.store.listeners
        if self.metrics.on_commit in listeners:
            listeners.remove(self.metrics.on_commit)


def install(app: FastAPI, plane: ControlPlane) -> Operations:
    """Metrics (fed by a post-commit listener), ``/metrics``, and the request middleware.

    Call after every other ``add_middleware`` so that the request middleware is outermost.
    """
    from controlplane.api.routers import metrics as metrics_routes

    metrics = Metrics(plane.db, plane.witness, plane.webhooks)
    plane.store.listeners.append(metrics.on_commit)
    app.state.metrics = metrics
    if plane.settings.metrics_enabled:
        app.include_router(metrics_routes.router)
    app.add_middleware(RequestContext, metrics=metrics)
    interval = plane.settings.integrity_check_interval_seconds
    return Operations(plane, metrics, IntegritySelfCheck(plane.store, metrics, interval))


def request_id_of(scope: dict[str, Any]) -> str | None:
    """The id the middleware gave this request (None outside it)."""
    state = scope.get("state")
    value = state.get("request_id") if isinstance(state, dict) else None
    return value if isinstance(value, str) else None


__all__ = ["Operations", "RequestContext", "install", "request_id_of"]
