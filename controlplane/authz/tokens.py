"""Bearer tokens: shown once, stored only as a SHA-256 hash."""

from __future__ import annotations

import hashlib
import hmac
import secrets

TOKEN_PREFIX = "cpt_"


def new_token() -> tuple[str, str]:
    """Return ``(token id, secret token)``. The id is public and goes into the ledger."""
    return f"tok_{secrets.token_hex(8)}", TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def same_hash(a: str, b: str) -> bool:
    """Constant-time comparison of two token hashes."""
    return hmac.compare_digest(a.encode(), b.encode())
