"""Ledger entries and the hash chain.

``entry_hash = SHA-256(RFC 8785 canonical JSON of every field but entry_hash)`` and the first
entry's ``prev_hash`` is 64 zeros. An entry as served by the API is exactly :meth:`Entry.to_dict`,
so any client can recompute the hash with a JCS library and SHA-256 alone.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from controlplane.ledger.canonical import canonical_json, sha256_hex
from controlplane.ledger.errors import MalformedError

GENESIS_HASH = "0" * 64
"""``prev_hash`` of the entry with ``seq`` 0."""

SYSTEM_ACTOR = "system"
"""The actor of entries the server makes on its own (expiries, alerts, detected tampering);
no principal may take the name."""

HASHED_FIELDS = ("seq", "timestamp", "actor", "action", "subject", "payload", "prev_hash")

_HEX64 = re.compile(r"[0-9a-f]{64}")
_ACTION = re.compile(r"[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+")
_TIMESTAMP = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?Z")


def format_timestamp(moment: datetime) -> str:
    """RFC 3339 in UTC with microseconds and a ``Z``: one spelling, so hashes are stable."""
    if moment.tzinfo is None:
        raise MalformedError("timestamps must be timezone-aware")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def is_hex64(value: object) -> bool:
    """True for a lowercase hex SHA-256 digest."""
    return isinstance(value, str) and bool(_HEX64.fullmatch(value))


MAX_DEPTH = 64
"""Deepest nesting of objects and arrays an entry may hold (JSON tools have limits too)."""


def nesting_depth(value: Any, limit: int = MAX_DEPTH) -> int:
    """Depth of nested objects/arrays, counting stops once ``limit`` is exceeded."""
    depth, level = 0, [value]
    while level and depth <= limit:
        children: list[Any] = []
        for item in level:
            if isinstance(item, dict):
                children.extend(item.values())
            elif isinstance(item, list | tuple):
                children.extend(item)
        if not children and not any(isinstance(i, dict | list | tuple) for i in level):
            break
        depth += 1
        level = children
    return depth


def _check_fields(fields: Mapping[str, Any]) -> None:
    seq = fields["seq"]
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
        raise MalformedError(f"seq must be a non-negative integer, got {seq!r}")
    if not isinstance(fields["timestamp"], str) or not _TIMESTAMP.fullmatch(fields["timestamp"]):
        raise MalformedError(f"timestamp must be RFC 3339 UTC, got {fields['timestamp']!r}")
    if not isinstance(fields["actor"], str) or not fields["actor"]:
        raise MalformedError("actor must be a non-empty string")
    if not isinstance(fields["action"], str) or not _ACTION.fullmatch(fields["action"]):
        raise MalformedError(f"action must look like 'noun.verb', got {fields['action']!r}")
    if not isinstance(fields["subject"], dict):
        raise MalformedError("subject must be an object")
    if not isinstance(fields["payload"], dict):
        raise MalformedError("payload must be an object")
    for name in ("subject", "payload"):
        if nesting_depth(fields[name]) > MAX_DEPTH:
            raise MalformedError(f"{name} is nested deeper than {MAX_DEPTH} levels")
    if not is_hex64(fields["prev_hash"]):
        raise MalformedError("prev_hash must be 64 lowercase hex characters")


def compute_entry_hash(fields: Mapping[str, Any]) -> str:
    """Hash of the canonical JSON of the hashed fields (any extra key is ignored)."""
    return sha256_hex(canonical_json({name: fields[name] for name in HASHED_FIELDS}))


@dataclass(frozen=True, slots=True)
class Entry:
    """One immutable ledger entry. Construct with :meth:`create` or :meth:`from_dict`."""

    seq: int
    timestamp: str
    actor: str
    action: str
    subject: dict[str, Any]
    payload: dict[str, Any] = field(default_factory=dict)
    prev_hash: str = GENESIS_HASH
    entry_hash: str = ""

    @classmethod
    def create(
        cls,
        *,
        seq: int,
        timestamp: datetime | str,
        actor: str,
        action: str,
        subject: Mapping[str, Any],
        payload: Mapping[str, Any],
        prev_hash: str,
    ) -> Entry:
        """Build the next entry of a chain and compute its hash."""
        fields: dict[str, Any] = {
            "seq": seq,
            "timestamp": timestamp if isinstance(timestamp, str) else format_timestamp(timestamp),
            "actor": actor,
            "action": action,
            "subject": dict(subject) if isinstance(subject, Mapping) else subject,
            "payload": dict(payload) if isinstance(payload, Mapping) else payload,
            "prev_hash": prev_hash,
        }
        _check_fields(fields)
        return cls(**fields, entry_hash=compute_entry_hash(fields))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Entry:
        """Parse a served or exported entry *without* trusting its ``entry_hash``.

        The stored hash is kept as given; :meth:`hash_is_valid` tells whether it matches.
        """
        missing = [name for name in (*HASHED_FIELDS, "entry_hash") if name not in data]
        if missing:
            raise MalformedError(f"entry is missing fields: {', '.join(missing)}")
        fields = {name: data[name] for name in HASHED_FIELDS}
        _check_fields(fields)
        if not is_hex64(data["entry_hash"]):
            raise MalformedError("entry_hash must be 64 lowercase hex characters")
        return cls(**fields, entry_hash=data["entry_hash"])

    def hashed_fields(self) -> dict[str, Any]:
        """The object whose canonical JSON is hashed."""
        return {name: getattr(self, name) for name in HASHED_FIELDS}

    def to_dict(self) -> dict[str, Any]:
        """The entry as served: the hashed object plus its ``entry_hash``."""
        return {**self.hashed_fields(), "entry_hash": self.entry_hash}

    def hash_is_valid(self) -> bool:
        """True when ``entry_hash`` is the hash of the other fields."""
        return compute_entry_hash(self.hashed_fields()) == self.entry_hash

    @property
    def leaf_input(self) -> bytes:
        """The bytes that become this entry's Merkle leaf: the raw ``entry_hash``."""
        return bytes.fromhex(self.entry_hash)
