"""The sign-off statement: what an approver signs, byte for byte.

The statement is RFC 8785 canonical JSON inside a DSSE envelope, signed on the approver's
machine. It binds the request, the exact artifact version and digest, the target stage, the
decision and the time, so it can be re-verified years later without trusting the server.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from controlplane.crypto.dsse import sign_envelope
from controlplane.ledger.canonical import canonical_json
from controlplane.ledger.entry import format_timestamp
from controlplane.ledger.errors import MalformedError

PAYLOAD_TYPE = "application/vnd.controlplane.signoff+json"
STATEMENT_TYPE = "https://controlplane.dev/attestations/signoff/v1"
DECISIONS = ("approve", "reject")


def statement(
    request: dict[str, Any], signer: str, decision: str, comment: str, signed_at: datetime
) -> dict[str, Any]:
    """The statement for ``request`` (as served by the API) signed by ``signer``."""
    return {
        "_type": STATEMENT_TYPE,
        "request_id": request["id"],
        "project": request["project"],
        "artifact": {
            "kind": request["kind"],
            "name": request["name"],
            "version": request["version"],
            "digest": request["digest"],
        },
        "target_stage": request["target_stage"],
        "decision": decision,
        "comment": comment,
        "signer": signer,
        "signed_at": format_timestamp(signed_at),
    }


def sign(statement_: dict[str, Any], key: Ed25519PrivateKey) -> dict[str, Any]:
    """A DSSE envelope over the canonical statement."""
    return sign_envelope(PAYLOAD_TYPE, canonical_json(statement_), key)


def parse(payload: bytes) -> dict[str, Any]:
    """The statement inside a verified envelope; raises ValueError if it is not one."""
    try:
        data = json.loads(payload)
    except ValueError:
        raise ValueError("the signed payload is not JSON") from None
    if not isinstance(data, dict) or data.get("_type") != STATEMENT_TYPE:
        raise ValueError("the signed payload is not a controlplane sign-off statement")
    try:
        canonical = canonical_json(data)
    except MalformedError:  # NaN, infinities, integers beyond 2**53 - 1
        raise ValueError("the signed payload holds values canonical JSON cannot carry") from None
    if canonical != payload:
        raise ValueError("the signed payload is not canonical JSON")
    if data.get("decision") not in DECISIONS:
        raise ValueError("decision must be approve or reject")
    artifact = data.get("artifact")
    if not isinstance(artifact, dict):
        raise ValueError("the statement names no artifact")
    return data


def signed_time(value: Any, max_length: int = 40) -> datetime:
    """The statement's ``signed_at`` as an aware datetime; raises ValueError otherwise.

    A time without a zone is refused rather than guessed: it cannot be compared with the
    server's clock, and a guess would move the replay window by the signer's UTC offset.
    """
    if not isinstance(value, str) or not value or len(value) > max_length:
        raise ValueError("signed_at must be an RFC 3339 time with a time zone")
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"signed_at {value!r} is not an RFC 3339 time") from None
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"signed_at {value!r} has no time zone")
    return moment
