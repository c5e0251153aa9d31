"""ASGI entry point for process managers: ``uvicorn controlplane.api.asgi:app``.

Settings come from the environment; the database must have been initialised (``controlplane
init``), which ``controlplane serve`` does on start.
"""

from __future__ import annotations

from controlplane.api.app import create_app

app = create_app()
