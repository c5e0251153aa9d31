"""The API served from a thread of the current process, on a loopback port of its own.

For programs that host the API and then drive it over real HTTP, as its users would
(``controlplane demo``): the socket is bound before the server starts (port 0 lets the
kernel choose a free one), so there is no window in which another process could take the
port, and the caller learns the address before the first request.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn

from controlplane.api.app import create_app
from controlplane.core import ControlPlane


@contextmanager
def serve_in_thread(
    cp: ControlPlane, host: str = "127.0.0.1", port: int = 0, timeout: float = 15.0
) -> Iterator[str]:
    """Serve ``cp`` (already initialised) until the block ends; yields the base URL.

    uvicorn installs no signal handlers outside the main thread, so Ctrl-C still reaches the
    caller; leaving the block (normally or by an exception) shuts the server down gracefully.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    bound_port = int(sock.getsockname()[1])
    config = uvicorn.Config(create_app(cp=cp), log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="controlplane-api", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + timeout
    try:
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError(f"the API server did not start on {host}:{bound_port}")
            time.sleep(0.02)
        yield f"http://{host}:{bound_port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


__all__ = ["serve_in_thread"]
