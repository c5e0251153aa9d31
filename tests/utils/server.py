"""A real uvicorn server on a free loopback port, in a thread, for HTTP-level tests."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx
import uvicorn

from controlplane.api.app import create_app
from controlplane.core import ControlPlane


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LiveServer:
    url: str
    cp: ControlPlane
    admin_token: str

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)

    def admin(self) -> httpx.Client:
        return self.client(self.admin_token)


@contextmanager
def live_server(cp: ControlPlane) -> Iterator[LiveServer]:
    """Serve ``cp`` (already initialised) until the block ends."""
    token = cp.settings.admin_token_file.read_text().strip()
    port = free_port()
    config = uvicorn.Config(
        create_app(cp=cp), host="127.0.0.1", port=port, log_level="warning", lifespan="on"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield LiveServer(f"http://127.0.0.1:{port}", cp, token)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
