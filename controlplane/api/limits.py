"""Limits at the edge: request body size (enforced while the body streams in, not only by
Content-Length), NUL characters, and the number of requests handled at once."""

from __future__ import annotations

import asyncio
import json

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class RejectNul:
    """NUL characters in the path or query string are refused up front (PostgreSQL cannot
    store them and no identifier may contain one)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (
            "\x00" in scope.get("path", "") or b"%00" in scope.get("query_string", b"").lower()
        ):
            await _send_problem(
                send,
                422,
                "Invalid input",
                "NUL characters are not allowed in names, paths or queries",
            )
            return
        await self.app(scope, receive, send)


async def _send_problem(send: Send, status: int, title: str, detail: str) -> None:
    body = json.dumps(
        {
            "type": "https://controlplane.dev/problems/" + title.lower().replace(" ", "-"),
            "title": title,
            "status": status,
            "detail": detail,
        }
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/problem+json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def _reject(self, send: Send) -> None:
        await _send_problem(
            send, 413, "Payload too large", f"request body exceeds {self.max_bytes} bytes"
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    too_big = int(value) > self.max_bytes
                except ValueError:
                    too_big = True
                if too_big:
                    await self._reject(send)
                    return
        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    # FastAPI re-raises HTTPException from body reading as is (anything else
                    # becomes a 400), so the problem handler answers 413.
                    raise HTTPException(413, f"request body exceeds {self.max_bytes} bytes")
            return message

        await self.app(scope, limited_receive, send)


class ConcurrencyLimit:
    """At most ``limit`` requests of this replica are handled at once; the rest wait here, in
    order, holding nothing.

    A request holds a read session from authentication to its response, and a write needs a
    second connection (PostgreSQL: from the same pool; SQLite: the writer, then a read after
    the commit). Unbounded, 40 concurrent requests took every connection of the pools and then
    each waited for a second one that no one would free, until the pool timeout. The database
    pools are sized for ``limit`` (see ``Database``), so a request that got in always gets
    its connections. Waiting happens on the event loop, before any dependency runs.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit
        self._semaphore: asyncio.Semaphore | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self._semaphore is None:  # created on the serving event loop
            self._semaphore = asyncio.Semaphore(self.limit)
        async with self._semaphore:
            await self.app(scope, receive, send)
