"""The key ring both offline auditors judge signatures by, on its own.

Random register/revoke sequences (colliding key ids, revocations before registration, twice,
or naming another principal) are compared after every entry with a model that reads the whole
prefix at once: a key belongs to whoever registered its id first, and is revoked by the first
revocation of that id after that.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from controlplane.crypto.keys import key_id, public_key_b64
from controlplane.governance.keyring import InvalidKeyEntry, KeyRing, Moment

PRINCIPALS = ("alice", "bob", "carol")
PUBLIC_KEYS = [Ed25519PrivateKey.generate().public_key() for _ in range(4)]
KEY_IDS = [key_id(k) for k in PUBLIC_KEYS]


@dataclass(frozen=True)
class Op:
    action: str  # "registered" or "revoked"
    principal: str
    key: int  # index into PUBLIC_KEYS


ops = st.lists(
    st.builds(
        Op,
        st.sampled_from(["registered", "revoked"]),
        st.sampled_from(PRINCIPALS),
        st.integers(0, len(PUBLIC_KEYS) - 1),
    ),
    max_size=25,
)


def stamp(seq: int) -> str:
    return f"2026-12-01T10:{seq // 60:02d}:{seq % 60:02d}.000000Z"


def entry(seq: int, op: Op) -> dict[str, Any]:
    """A ``signing_key.*`` entry as the server writes it (subject: the key's principal)."""
    payload: dict[str, Any] = {"key_id": KEY_IDS[op.key]}
    if op.action == "registered":
        payload.update(public_key=public_key_b64(PUBLIC_KEYS[op.key]), name="laptop")
    else:
        payload["reason"] = "rotated"
    return {
        "seq": seq,
        "timestamp": stamp(seq),
        "actor": op.principal,
        "action": f"signing_key.{op.action}",
        "subject": {"kind": "principal", "name": op.principal},
        "payload": payload,
    }


def model(prefix: list[Op]) -> dict[str, tuple[str, int, int | None]]:
    """Key id -> (owner, registered seq, revoked seq) after ``prefix``, read all at once."""
    found = {}
    for index in range(len(PUBLIC_KEYS)):
        registered = [
            s for s, op in enumerate(prefix) if op.key == index and op.action == "registered"
        ]
        if not registered:
            continue
        first = registered[0]
        revoked = [
            s
            for s, op in enumerate(prefix)
            if op.key == index and op.action == "revoked" and s > first
        ]
        found[KEY_IDS[index]] = (prefix[first].principal, first, revoked[0] if revoked else None)
    return found


@settings(max_examples=300, deadline=None)
@given(ops)
def test_the_ring_agrees_with_the_model_after_every_entry(sequence: list[Op]) -> None:
    ring = KeyRing()
    for seq, op in enumerate(sequence):
        ring.feed(entry(seq, op))
        expected = model(sequence[: seq + 1])
        for kid in KEY_IDS:
            key = ring.key(kid)
            if kid not in expected:
                assert key is None
                continue
            owner, registered, revoked = expected[kid]
            assert key is not None
            assert (key.key_id, key.owner) == (kid, owner)
            assert key.public_key == PUBLIC_KEYS[KEY_IDS.index(kid)]
            assert key.registered == Moment(registered, stamp(registered))
            assert key.revoked == (None if revoked is None else Moment(revoked, stamp(revoked)))
        for principal in PRINCIPALS:
            owned = {kid for kid, (owner, _, _) in expected.items() if owner == principal}
            usable = {kid for kid in owned if expected[kid][2] is None}
            assert set(ring.keys_of(principal)) == owned
            assert set(ring.usable_keys(principal)) == usable
            for kid, public_key in ring.usable_keys(principal).items():
                assert public_key == PUBLIC_KEYS[KEY_IDS.index(kid)]


def test_a_revoked_key_is_kept_with_when_it_was_revoked() -> None:
    ring = KeyRing()
    ring.feed(entry(3, Op("registered", "alice", 0)))
    assert set(ring.usable_keys("alice")) == {KEY_IDS[0]}
    ring.feed(entry(7, Op("revoked", "alice", 0)))
    assert ring.usable_keys("alice") == {}
    (key,) = ring.keys_of("alice").values()
    assert key.registered == Moment(3, stamp(3))
    assert key.revoked == Moment(7, stamp(7))
    assert ring.keys_of("bob") == {} and ring.usable_keys("bob") == {}


def test_keys_of_is_a_copy() -> None:
    ring = KeyRing()
    ring.feed(entry(0, Op("registered", "alice", 0)))
    ring.keys_of("alice").clear()
    assert set(ring.keys_of("alice")) == {KEY_IDS[0]}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"public_key": "not base64!"}, "not an Ed25519 key"),
        ({"public_key": "AAAA"}, "not an Ed25519 key"),  # base64, but 3 bytes
        ({"public_key": None}, "not an Ed25519 key"),
        ({"key_id": None}, "has no key_id"),
        ({"key_id": KEY_IDS[1]}, "key_id is not its key's id"),  # another key's id
    ],
)
def test_a_registration_without_a_usable_key_raises_and_registers_nothing(
    change: dict[str, Any], message: str
) -> None:
    bad = entry(0, Op("registered", "alice", 0))
    bad["payload"].update(change)
    bad["payload"] = {k: v for k, v in bad["payload"].items() if v is not None}
    ring = KeyRing()
    with pytest.raises(InvalidKeyEntry, match=message):
        ring.feed(bad)
    assert ring.keys_of("alice") == {} and ring.key(KEY_IDS[0]) is None
    ring.feed(entry(1, Op("registered", "alice", 0)))  # a good one after it still counts
    assert set(ring.usable_keys("alice")) == {KEY_IDS[0]}


@pytest.mark.parametrize(
    "odd",
    [
        {"action": "promotion.signed_off"},
        {"action": "server_key.registered"},
        {"payload": "not an object"},
        {"subject": None},
    ],
)
def test_other_and_shapeless_entries_are_ignored(odd: dict[str, Any]) -> None:
    ring = KeyRing()
    ring.feed({**entry(0, Op("registered", "alice", 0)), **odd})
    assert ring.key(KEY_IDS[0]) is None


@pytest.mark.parametrize(
    ("seq", "timestamp", "expected"),
    [
        (4, "2026-12-01T10:00:00Z", Moment(4, "2026-12-01T10:00:00Z")),
        ("4", 17, Moment(None, None)),
        (True, None, Moment(None, None)),
    ],
)
def test_a_moment_keeps_only_a_well_formed_seq_and_timestamp(
    seq: Any, timestamp: Any, expected: Moment
) -> None:
    assert Moment.of({"seq": seq, "timestamp": timestamp}) == expected
