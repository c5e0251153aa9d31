"""Structured logs: one JSON object a line, with the request id of the request being served.

Stdlib :mod:`logging` only. The API middleware sets :data:`request_id` (a context variable) for
the duration of each request; :class:`JsonFormatter` adds it to every record logged meanwhile,
from the event loop or from the worker thread of a sync endpoint (Starlette copies the
context into its thread pool), so an error logged deep in a service carries the same id as the
access line and the problem+json body the user sees.

Fields of every line: ``ts`` (RFC 3339 UTC, from the record), ``level``, ``logger``, ``msg``;
then ``request_id`` when in a request, anything passed as ``extra={...}``, and ``exc`` with
the formatted traceback for exceptions. The access line (logger ``controlplane.access``,
``msg`` ``"request"``) adds ``method``, ``path``, ``route``, ``status``, ``duration_ms``,
``principal_id`` and ``client``.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

request_id: ContextVar[str | None] = ContextVar("controlplane_request_id", default=None)
"""The id of the HTTP request being served in this context (None outside requests)."""

ACCESS_LOGGER = "controlplane.access"
REQUEST_ID_HEADER = "X-Request-ID"
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@/+=-]{0,127}")

LogFormat = Literal["json", "text"]

# Attributes every LogRecord has; anything else on a record came from ``extra=`` (except
# uvicorn's ``color_message``, the same message with terminal colour codes).
_RECORD_FIELDS = frozenset(
    vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None)).keys()
) | {"message", "asctime", "taskName", "color_message"}


def accept_request_id(value: str | None) -> str:
    """The client's ``X-Request-ID`` if it is sane (1-128 printable ASCII characters of an
    id-like alphabet), else a new random id. A client cannot inject newlines, quotes or
    megabytes into our logs through it."""
    if value and _SANE_REQUEST_ID.fullmatch(value):
        return value
    return new_request_id()


def new_request_id() -> str:
    return secrets.token_hex(16)


def _timestamp(created: float) -> str:
    moment = datetime.fromtimestamp(created, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


class RequestIdFilter(logging.Filter):
    """Copies the current request id onto each record (``record.request_id``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = request_id.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object a line; values that JSON cannot hold become their ``str``."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": _timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        current = getattr(record, "request_id", None) or request_id.get()
        if current is not None:
            data["request_id"] = current
        for key, value in vars(record).items():
            if key not in _RECORD_FIELDS and key not in data and key != "request_id":
                data[key] = value
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            data["exc"] = record.exc_text
        if record.stack_info:
            data["stack"] = self.formatStack(record.stack_info)
        return json.dumps(data, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """For development: the usual one-line text, with the request id and extras appended."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = {
            k: v
            for k, v in vars(record).items()
            if k not in _RECORD_FIELDS and k != "request_id" and not k.startswith("_")
        }
        current = getattr(record, "request_id", None) or request_id.get()
        if current is not None:
            extras = {"request_id": current, **extras}
        if extras:
            line += " " + " ".join(f"{k}={v}" for k, v in extras.items())
        return line


_HANDLER_NAME = "controlplane-ops"


def configure_logging(
    log_format: LogFormat = "json", level: str = "INFO", stream: TextIO | None = None
) -> logging.Handler:
    """Send every log record of the process (ours, uvicorn's, SQLAlchemy's) to ``stream``
    (default stderr) in ``log_format``; idempotent (a second call replaces the handler).

    For server processes only: ``controlplane serve`` and ``controlplane.api.asgi``. Start
    uvicorn with ``log_config=None`` so that it does not install its own handlers, and with
    ``access_log=False``: the API middleware writes its own access line with the request id.
    """
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        # uvicorn's default config gives its loggers handlers of their own; ours is the root's
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    return handler


def configure_server_logging(log_format: LogFormat = "json", level: str = "INFO") -> dict[str, Any]:
    """:func:`configure_logging`, and the ``uvicorn.run`` options that keep it in force:
    ``uvicorn.run(app, host=..., port=..., **configure_server_logging(fmt, level))``."""
    configure_logging(log_format, level)
    return {"log_config": None, "access_log": False}


QUIET_LOGGERS = ("uvicorn.access", "casbin", "httpx", "httpcore")
"""Loggers held at WARNING: uvicorn's access line repeats ours without the request id; casbin
prints its whole policy at INFO whenever an enforcer loads; httpx logs every outgoing call."""


__all__ = [
    "ACCESS_LOGGER",
    "REQUEST_ID_HEADER",
    "JsonFormatter",
    "RequestIdFilter",
    "TextFormatter",
    "accept_request_id",
    "configure_logging",
    "configure_server_logging",
    "new_request_id",
    "request_id",
]
