"""Verification of MLflow's webhook deliveries (MLflow 3.x OSS, Standard Webhooks style).

MLflow (``mlflow/webhooks/delivery.py``) POSTs ``{"entity", "action", "timestamp", "data"}``
as JSON with the headers ``X-MLflow-Delivery-Id`` (a UUID), ``X-MLflow-Timestamp`` (Unix
seconds) and ``X-MLflow-Signature: v1,<base64 HMAC-SHA256>``, the HMAC keyed with the
webhook's secret over ``"<delivery id>.<timestamp>.<raw body>"``.

A delivery is accepted only when a secret is configured, the timestamp is within the
tolerance of our clock (replays of old deliveries fail), and one of the ``v1`` signatures
matches in constant time. The body is checked as received, before it is parsed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from controlplane import clock
from controlplane.errors import InvalidInput

SIGNATURE_HEADER = "X-MLflow-Signature"
TIMESTAMP_HEADER = "X-MLflow-Timestamp"
DELIVERY_ID_HEADER = "X-MLflow-Delivery-Id"
SIGNATURE_VERSION = "v1"
MAX_BODY_BYTES = 1024 * 1024


class BadDelivery(Exception):
    """The delivery is not authentic (or not fresh); ``reason`` is for the log only."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Delivery:
    delivery_id: str
    timestamp: int
    event: dict[str, Any]


def sign(secret: str, delivery_id: str, timestamp: str, body: bytes) -> str:
    """The ``X-MLflow-Signature`` value MLflow sends for this delivery."""
    signed = f"{delivery_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret.encode("utf-8"), signed, hashlib.sha256).digest()
    return f"{SIGNATURE_VERSION},{base64.b64encode(digest).decode()}"


def verify(
    secret: str | None, headers: Mapping[str, str], body: bytes, tolerance_seconds: int
) -> Delivery:
    """The verified delivery, or :class:`BadDelivery` (an authentic body that is not a JSON
    object: :class:`InvalidInput`). ``headers`` must look names up case-insensitively."""
    if not secret:
        raise BadDelivery("no webhook secret is configured")
    delivery_id = headers.get(DELIVERY_ID_HEADER) or ""
    timestamp = headers.get(TIMESTAMP_HEADER) or ""
    signature = headers.get(SIGNATURE_HEADER) or ""
    if not delivery_id or not timestamp or not signature:
        raise BadDelivery("missing signature, timestamp or delivery id header")
    if len(delivery_id) > 200 or not timestamp.isdigit() or len(timestamp) > 12:
        raise BadDelivery("malformed delivery id or timestamp")
    age = clock.now().timestamp() - int(timestamp)
    if abs(age) > tolerance_seconds:
        raise BadDelivery(f"timestamp is {age:.0f} s off (tolerance {tolerance_seconds} s)")
    expected = sign(secret, delivery_id, timestamp, body).encode()
    matched = False
    for candidate in signature.split():
        version, _, value = candidate.partition(",")
        if version != SIGNATURE_VERSION:
            continue
        try:
            base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            continue
        # compare_digest over every candidate: no early exit that would time the match
        matched |= hmac.compare_digest(expected, candidate.encode())
    if not matched:
        raise BadDelivery("signature does not match")
    try:
        event = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        raise InvalidInput("the signed delivery is not JSON") from None
    if not isinstance(event, dict):
        raise InvalidInput("the signed delivery is not a JSON object")
    return Delivery(delivery_id, int(timestamp), event)
