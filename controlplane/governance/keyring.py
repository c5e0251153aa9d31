"""Principals' sign-off keys as the ledger tells them, rebuilt entry by entry, pure.

The offline auditors (of sign-offs and of data contracts) both judge a signature by the key its
signer could use at that point of the ledger. They learn the keys the same way, from
``signing_key.registered`` and ``signing_key.revoked`` entries fed in ledger order, so they
share this one ring and judge every key alike.

The ring follows what the server does when it writes and projects those entries: a key id is
registered once (the first registration stands: the server refuses a second one, so a later
one can neither revive a revoked key nor move it to another principal), and a revocation
applies to the key with that id, once (the first revocation stands); a revocation of a key
id nobody registered yet changes nothing. Being fed in order, the ring answers "as of the
entries fed so far", which is exactly the point of the ledger an auditor is checking.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from controlplane.crypto.keys import key_id, public_key_from_b64

REGISTERED = "signing_key.registered"
REVOKED = "signing_key.revoked"


class InvalidKeyEntry(ValueError):
    """A ``signing_key.registered`` entry registers no usable key (no key id, not Ed25519)."""


@dataclass(frozen=True)
class Moment:
    """Where in the ledger something happened: the entry's seq and its timestamp, as recorded
    (``None`` where the entry does not carry a well-formed one)."""

    seq: int | None
    at: str | None

    @classmethod
    def of(cls, entry: Mapping[str, Any]) -> Moment:
        seq, at = entry.get("seq"), entry.get("timestamp")
        return cls(
            seq if isinstance(seq, int) and not isinstance(seq, bool) else None,
            at if isinstance(at, str) else None,
        )


@dataclass(frozen=True)
class RingKey:
    """One registered key, and its revocation if it has one (``revoked is None``: usable)."""

    key_id: str
    owner: str
    public_key: Ed25519PublicKey
    registered: Moment
    revoked: Moment | None = None


class KeyRing:
    """Every principal's sign-off keys, fed ledger entries in order (others are ignored)."""

    def __init__(self) -> None:
        self._by_owner: dict[str, dict[str, RingKey]] = {}
        self._owner_of: dict[str, str] = {}  # key id -> the principal that registered it

    def feed(self, entry: Mapping[str, Any]) -> None:
        """Learn from one entry; raises :class:`InvalidKeyEntry` for a registration that
        registers no usable key (it is ignored; whether that is a problem is the caller's)."""
        action = entry.get("action")
        payload = entry.get("payload")
        subject = entry.get("subject")
        if not isinstance(payload, dict) or not isinstance(subject, dict):
            return
        if action == REGISTERED:
            self._register(str(subject.get("name")), payload, Moment.of(entry))
        elif action == REVOKED:
            self._revoke(str(payload.get("key_id")), Moment.of(entry))

    def _register(self, owner: str, payload: dict[str, Any], when: Moment) -> None:
        try:
            public_key = public_key_from_b64(str(payload.get("public_key")))
        except (ValueError, TypeError):
            raise InvalidKeyEntry("registered sign-off key is not an Ed25519 key") from None
        if "key_id" not in payload:
            raise InvalidKeyEntry("registered sign-off key has no key_id")
        kid = str(payload["key_id"])
        if kid != key_id(public_key):  # the server derives it; a ledger saying otherwise lies
            raise InvalidKeyEntry("registered sign-off key's key_id is not its key's id")
        if kid in self._owner_of:
            return
        self._owner_of[kid] = owner
        self._by_owner.setdefault(owner, {})[kid] = RingKey(kid, owner, public_key, when)

    def _revoke(self, kid: str, when: Moment) -> None:
        key = self.key(kid)
        if key is not None and key.revoked is None:
            self._by_owner[key.owner][kid] = dataclasses.replace(key, revoked=when)

    def key(self, kid: str) -> RingKey | None:
        """The key registered under ``kid``, revoked or not; ``None`` if nobody registered it."""
        owner = self._owner_of.get(kid)
        return None if owner is None else self._by_owner[owner][kid]

    def keys_of(self, owner: str) -> dict[str, RingKey]:
        """Every key ``owner`` registered so far (key id -> key), the revoked ones too."""
        return dict(self._by_owner.get(owner, {}))

    def usable_keys(self, owner: str) -> dict[str, Ed25519PublicKey]:
        """Key id -> public key of every key ``owner`` may sign with now: registered, and not
        revoked."""
        return {
            kid: key.public_key
            for kid, key in self._by_owner.get(owner, {}).items()
            if key.revoked is None
        }
