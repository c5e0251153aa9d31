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
    if canonical_json(data) != payload:
        raise ValueError("the signed payload is not canonical JSON")
    if data.get("decision") not in DECISIONS:
        raise ValueError("decision must be approve or reject")
    artifact = data.get("artifact")
    if not isinstance(artifact, dict):
        raise ValueError("the statement names no artifact")
    return data
