"""Opening and checking a contract envelope: pure, no database, shared by the server's
registration, the job check and the offline auditor, so all three judge a signature alike.

A contract envelope carries exactly one signature (the data owner's). Signature problems are
told apart because they mean different things to an auditor: a key id nobody registered for
the owner (``unknown_key``), a registered key whose signature does not verify (``forged``: the
payload was altered or the signature made up), and a valid signature by a key revoked since
(``key_revoked``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from controlplane.contracts import statement as st
from controlplane.crypto.dsse import EnvelopeError, pae, parse_envelope
from controlplane.errors import InvalidInput

MAX_ENVELOPE_BYTES = 1024 * 1024


@dataclass(frozen=True)
class Opened:
    """An envelope's parts and its statement, *not yet* checked against any key."""

    payload: bytes
    key_id: str
    signature: bytes
    statement: st.ContractStatement


class SignatureProblem(Exception):
    """The envelope is well formed but its signature cannot be trusted."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def open_envelope(envelope: Any) -> Opened:
    """Structure and statement checks; raises :class:`InvalidInput` with a clear message."""
    try:
        payload_type, payload, signatures = parse_envelope(envelope)
    except EnvelopeError as exc:
        raise InvalidInput(f"not a DSSE envelope: {exc}") from None
    if payload_type != st.PAYLOAD_TYPE:
        raise InvalidInput(
            f"envelope payloadType is {payload_type!r}; a contract is {st.PAYLOAD_TYPE}"
        )
    if len(payload) > MAX_ENVELOPE_BYTES:
        raise InvalidInput(f"the contract statement exceeds {MAX_ENVELOPE_BYTES} bytes")
    unknown = sorted(set(envelope) - {"payload", "payloadType", "signatures"})
    if unknown:
        raise InvalidInput(f"unknown envelope field {unknown[0]!r}")
    if len(signatures) != 1:
        raise InvalidInput(
            f"a contract envelope carries exactly one signature (the owner's), not "
            f"{len(signatures)}"
        )
    key_id, signature = signatures[0]
    statement = st.parse_payload(payload, now=None)
    return Opened(payload, key_id, signature, statement)


def check_signature(
    opened: Opened,
    owner_keys: Mapping[str, Ed25519PublicKey],
    revoked: Mapping[str, str] | None = None,
) -> None:
    """Raise :class:`SignatureProblem` unless the owner's registered, unrevoked key signed it.

    ``owner_keys``: key id -> public key of every key the owner ever registered;
    ``revoked``: key id -> when, for those of them revoked since.
    """
    owner = opened.statement.owner
    short = opened.key_id[:16]
    key = owner_keys.get(opened.key_id)
    if key is None:
        raise SignatureProblem(
            "unknown_key", f"the contract is not signed by a registered key of its owner {owner}"
        )
    try:
        key.verify(opened.signature, pae(st.PAYLOAD_TYPE, opened.payload))
    except InvalidSignature:
        raise SignatureProblem(
            "forged_signature",
            f"the signature by key {short} does not verify: the contract was altered or forged",
        ) from None
    when = (revoked or {}).get(opened.key_id)
    if when is not None:
        raise SignatureProblem(
            "key_revoked", f"the contract is signed with key {short} of {owner}, revoked {when}"
        )
