"""ASGI entry point for process managers: ``uvicorn controlplane.api.asgi:app``.

Settings come from the environment; the database must have been initialised (``controlplane
init``), which ``controlplane serve`` does on start. Logging is configured here for the whole
process (``CONTROLPLANE_LOG_FORMAT``, ``CONTROLPLANE_LOG_LEVEL``); pass uvicorn
``--no-access-log``, since the API writes its own access line with the request id.
"""

from __future__ import annotations

from controlplane.api.app import create_app
from controlplane.config import Settings
from controlplane.ops.logs import configure_logging

_settings = Settings()
configure_logging(_settings.log_format, _settings.log_level)  # JSON lines by default
app = create_app(_settings)
