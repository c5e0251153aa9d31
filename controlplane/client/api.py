"""A small synchronous client of the controlplane HTTP API.

Errors come back as :class:`ApiError` carrying the problem+json fields, so interfaces can show
the server's ``detail`` and map ``status`` to an exit code.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx


class ApiError(Exception):
    """The server answered with an error, or could not be reached (``status`` 0)."""

    def __init__(self, status: int, detail: str, problem: dict[str, Any] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.problem = problem or {}


class ApiClient:
    def __init__(self, url: str, token: str | None, timeout: float = 60.0) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        headers["User-Agent"] = "controlplane-cli"
        self.url = url.rstrip("/")
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ApiError(0, f"cannot reach {self.url}: {exc}") from None
        if response.status_code >= 400:
            try:
                body = response.json()
            except ValueError:
                body = {}
            detail = body.get("detail") if isinstance(body, dict) else None
            raise ApiError(
                response.status_code,
                str(detail or f"HTTP {response.status_code} from {path}"),
                body if isinstance(body, dict) else None,
            )
        return response

    def get(self, path: str, **params: Any) -> Any:
        clean = {k: v for k, v in params.items() if v is not None}
        return self.request("GET", path, params=clean).json()

    def post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        return self.request("POST", path, json=body or {}).json()

    def delete(self, path: str, **params: Any) -> Any:
        response = self.request(
            "DELETE", path, params={k: v for k, v in params.items() if v is not None}
        )
        return response.json() if response.content else None

    def stream_to(self, path: str, handle: Any) -> Iterator[int]:
        """Stream a download into ``handle``; yields bytes written so far."""
        written = 0
        try:
            with self._http.stream("GET", path) as response:
                if response.status_code >= 400:
                    response.read()
                    detail = response.json().get("detail", f"HTTP {response.status_code}")
                    raise ApiError(response.status_code, str(detail))
                for chunk in response.iter_bytes():
                    handle.write(chunk)
                    written += len(chunk)
                    yield written
        except httpx.HTTPError as exc:
            raise ApiError(0, f"cannot reach {self.url}: {exc}") from None

    def entries(self, end: int, page: int = 5000) -> Iterator[dict[str, Any]]:
        """Entries ``[0, end)`` in order."""
        start = 0
        while start < end:
            limit = min(page, end - start)
            data = self.get("/v1/ledger/entries", start=start, limit=limit)["data"]
            if not data:
                return
            yield from data
            start = data[-1]["seq"] + 1
            if len(data) < limit:
                return
