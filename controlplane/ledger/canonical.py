"""RFC 8785 canonical JSON: the only serialisation that is ever hashed or signed."""

from __future__ import annotations

import hashlib
from typing import Any

import rfc8785

from controlplane.ledger.errors import MalformedError


def canonical_json(value: Any) -> bytes:
    """Serialise ``value`` per RFC 8785 (JCS).

    Raises :class:`MalformedError` for values JCS cannot represent exactly (NaN, infinities,
    integers beyond 2**53 - 1): callers store those as strings instead.
    """
    try:
        return rfc8785.dumps(value)
    except (rfc8785.CanonicalizationError, TypeError, ValueError) as exc:
        raise MalformedError(f"value cannot be canonicalised: {exc}") from exc


def sha256_hex(data: bytes) -> str:
    """Lowercase hex SHA-256, the one textual hash form used across the project."""
    return hashlib.sha256(data).hexdigest()
