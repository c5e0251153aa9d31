"""DSSE envelopes (https://github.com/secure-systems-lab/dsse) signed with Ed25519.

``PAE(type, body) = "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body`` with byte lengths;
the signature is over the PAE. Envelopes are JSON objects ``{payload, payloadType,
signatures: [{keyid, sig}]}`` with base64 payload and signatures, so standard DSSE tools
verify them too.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from controlplane.crypto.keys import key_id


class EnvelopeError(ValueError):
    """An envelope is malformed or does not verify."""


def pae(payload_type: str, payload: bytes) -> bytes:
    kind = payload_type.encode()
    return b"DSSEv1 %d %b %d %b" % (len(kind), kind, len(payload), payload)


def sign_envelope(payload_type: str, payload: bytes, key: Ed25519PrivateKey) -> dict[str, Any]:
    signature = key.sign(pae(payload_type, payload))
    return {
        "payload": base64.b64encode(payload).decode(),
        "payloadType": payload_type,
        "signatures": [
            {"keyid": key_id(key.public_key()), "sig": base64.b64encode(signature).decode()}
        ],
    }


@dataclass(frozen=True)
class OpenedEnvelope:
    payload_type: str
    payload: bytes
    key_id: str


def parse_envelope(envelope: Any) -> tuple[str, bytes, list[tuple[str, bytes]]]:
    """Structure check: ``(payloadType, payload, [(keyid, signature)])``."""
    if not isinstance(envelope, dict):
        raise EnvelopeError("envelope must be a JSON object")
    payload_type = envelope.get("payloadType")
    if not isinstance(payload_type, str) or not payload_type:
        raise EnvelopeError("envelope has no payloadType")
    try:
        payload = base64.b64decode(str(envelope.get("payload", "")), validate=True)
    except (binascii.Error, ValueError):
        raise EnvelopeError("envelope payload is not base64") from None
    signatures = envelope.get("signatures")
    if not isinstance(signatures, list) or not signatures:
        raise EnvelopeError("envelope has no signatures")
    parsed = []
    for item in signatures:
        if not isinstance(item, dict) or not isinstance(item.get("keyid"), str):
            raise EnvelopeError("every signature needs a keyid")
        try:
            parsed.append((item["keyid"], base64.b64decode(str(item.get("sig")), validate=True)))
        except (binascii.Error, ValueError):
            raise EnvelopeError("signature is not base64") from None
    return payload_type, payload, parsed


def verify_envelope(
    envelope: Any, keys: dict[str, Ed25519PublicKey], payload_type: str
) -> OpenedEnvelope:
    """Verify that one signature is valid by one of ``keys`` (key id -> public key)."""
    kind, payload, signatures = parse_envelope(envelope)
    if kind != payload_type:
        raise EnvelopeError(f"payloadType is {kind!r}, expected {payload_type!r}")
    message = pae(kind, payload)
    for keyid, signature in signatures:
        key = keys.get(keyid)
        if key is None:
            continue
        try:
            key.verify(signature, message)
        except InvalidSignature:
            raise EnvelopeError(f"signature by key {keyid[:16]} does not verify") from None
        return OpenedEnvelope(kind, payload, keyid)
    raise EnvelopeError("no signature by a registered key")
