"""Typed domain errors, mapped once to problem+json (API) and to exit codes (CLI)."""

from __future__ import annotations

from typing import Any


class ControlPlaneError(Exception):
    """Base of every error a person may see. ``status`` doubles as the HTTP status."""

    status = 400
    title = "Bad request"
    code = "bad-request"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra


class InvalidInput(ControlPlaneError):
    status = 422
    title = "Invalid input"
    code = "invalid-input"


class NotFound(ControlPlaneError):
    status = 404
    title = "Not found"
    code = "not-found"


class Conflict(ControlPlaneError):
    status = 409
    title = "Conflict"
    code = "conflict"


class Unauthenticated(ControlPlaneError):
    status = 401
    title = "Unauthenticated"
    code = "unauthenticated"


class Forbidden(ControlPlaneError):
    status = 403
    title = "Forbidden"
    code = "forbidden"


class PayloadTooLarge(ControlPlaneError):
    status = 413
    title = "Payload too large"
    code = "payload-too-large"
