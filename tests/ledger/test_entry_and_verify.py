"""Ledger entries, the hash chain, and whole-ledger verification against signed checkpoints."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
import rfc8785
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from controlplane.ledger import (
    GENESIS_HASH,
    ChainVerifier,
    Checkpoint,
    Entry,
    MalformedError,
    NoteVerifier,
    compute_entry_hash,
    format_timestamp,
    verify_ledger,
)

from .reference import MTH

# ---------------------------------------------------------------------------------------------
# Entries
# ---------------------------------------------------------------------------------------------

KNOWN_FIELDS: dict[str, Any] = {
    "seq": 0,
    "timestamp": "2024-01-02T03:04:05.678901Z",
    "actor": "alice",
    "action": "artifact.registered",
    "subject": {"kind": "model", "name": "m", "version": "1"},
    "payload": {"digest": "sha256:ab", "size": 10},
    "prev_hash": GENESIS_HASH,
}
# RFC 8785 by hand: keys sorted, no whitespace.
KNOWN_CANONICAL = (
    b'{"action":"artifact.registered","actor":"alice",'
    b'"payload":{"digest":"sha256:ab","size":10},'
    b'"prev_hash":"' + b"0" * 64 + b'","seq":0,'
    b'"subject":{"kind":"model","name":"m","version":"1"},'
    b'"timestamp":"2024-01-02T03:04:05.678901Z"}'
)


def independent_entry_hash(served: dict[str, Any]) -> str:
    """What any client computes: SHA-256 of the JCS of the served object minus entry_hash."""
    body = {name: value for name, value in served.items() if name != "entry_hash"}
    return hashlib.sha256(rfc8785.dumps(body)).hexdigest()


def test_genesis_hash_is_64_zeros() -> None:
    assert GENESIS_HASH == "0" * 64


def test_known_answer_entry_hash() -> None:
    entry = Entry.create(**KNOWN_FIELDS)
    assert rfc8785.dumps(entry.hashed_fields()) == KNOWN_CANONICAL
    assert entry.entry_hash == hashlib.sha256(KNOWN_CANONICAL).hexdigest()
    assert entry.prev_hash == "0" * 64
    assert entry.hash_is_valid()
    assert entry.leaf_input == hashlib.sha256(KNOWN_CANONICAL).digest()
    assert list(entry.to_dict()) == [*KNOWN_FIELDS, "entry_hash"]
    # compute_entry_hash ignores anything that is not a hashed field
    assert compute_entry_hash({**KNOWN_FIELDS, "entry_hash": "x", "extra": 1}) == entry.entry_hash


def test_timestamps_are_one_spelling_in_utc() -> None:
    moment = datetime(2024, 1, 2, 5, 4, 5, 678901, tzinfo=timezone(timedelta(hours=2)))
    assert format_timestamp(moment) == "2024-01-02T03:04:05.678901Z"
    assert format_timestamp(datetime(2024, 1, 2, tzinfo=UTC)) == "2024-01-02T00:00:00.000000Z"
    entry = Entry.create(**{**KNOWN_FIELDS, "timestamp": moment})
    assert entry == Entry.create(**KNOWN_FIELDS)
    with pytest.raises(MalformedError):
        format_timestamp(datetime(2024, 1, 2))


json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**53) + 1, 2**53 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=10,
)
json_objects = st.dictionaries(st.text(max_size=8), json_values, max_size=4)
actions = st.from_regex(r"\A[a-z][a-z0-9_]{0,8}(\.[a-z][a-z0-9_]{0,8}){1,2}\Z")
hex64 = st.binary(min_size=32, max_size=32).map(bytes.hex)
moments = st.datetimes(
    min_value=datetime(1001, 1, 1),
    max_value=datetime(9998, 12, 31),
    timezones=st.sampled_from(
        [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(-timedelta(hours=8))]
    ),
)


@settings(max_examples=150, deadline=None)
@given(
    seq=st.integers(0, 2**53 - 1),
    moment=moments,
    actor=st.text(min_size=1, max_size=20),
    action=actions,
    subject=json_objects,
    payload=json_objects,
    prev_hash=hex64,
)
def test_entry_round_trip_and_independent_hash(
    seq: int,
    moment: datetime,
    actor: str,
    action: str,
    subject: dict[str, Any],
    payload: dict[str, Any],
    prev_hash: str,
) -> None:
    entry = Entry.create(
        seq=seq,
        timestamp=moment,
        actor=actor,
        action=action,
        subject=subject,
        payload=payload,
        prev_hash=prev_hash,
    )
    served = entry.to_dict()
    assert served["entry_hash"] == independent_entry_hash(served)
    assert entry.hash_is_valid()
    assert Entry.from_dict(served) == entry
    # As served over HTTP: through JSON text and back.
    over_the_wire = json.loads(json.dumps(served, ensure_ascii=False))
    assert Entry.from_dict(over_the_wire) == entry
    assert independent_entry_hash(over_the_wire) == entry.entry_hash
    assert entry.leaf_input == bytes.fromhex(entry.entry_hash)
    # Extra keys are ignored by from_dict (the served hash covers only the hashed fields).
    assert Entry.from_dict({**served, "links": {"self": "/x"}}) == entry


def test_from_dict_keeps_an_untrusted_entry_hash() -> None:
    served = Entry.create(**KNOWN_FIELDS).to_dict()
    forged = Entry.from_dict({**served, "entry_hash": "ab" * 32})
    assert forged.entry_hash == "ab" * 32
    assert not forged.hash_is_valid()
    edited = Entry.from_dict({**served, "actor": "mallory"})
    assert not edited.hash_is_valid()


MALFORMED_FIELDS: list[tuple[str, Any]] = [
    ("seq", -1),
    ("seq", True),
    ("seq", "0"),
    ("seq", 1.0),
    ("seq", None),
    ("timestamp", "2024-01-02 03:04:05Z"),
    ("timestamp", "2024-01-02T03:04:05+00:00"),
    ("timestamp", "yesterday"),
    ("timestamp", ""),
    ("timestamp", 1704164645),
    ("actor", ""),
    ("actor", None),
    ("actor", 7),
    ("action", "registered"),
    ("action", "Artifact.registered"),
    ("action", "artifact..registered"),
    ("action", "artifact.registered."),
    ("action", "artifact.Registered"),
    ("action", "1artifact.registered"),
    ("action", ""),
    ("action", None),
    ("subject", []),
    ("subject", "model"),
    ("subject", None),
    ("payload", []),
    ("payload", None),
    ("payload", "{}"),
    ("prev_hash", "0" * 63),
    ("prev_hash", "0" * 65),
    ("prev_hash", "A" * 64),
    ("prev_hash", "g" * 64),
    ("prev_hash", None),
]


@pytest.mark.parametrize(("name", "value"), MALFORMED_FIELDS, ids=lambda v: repr(v)[:24])
def test_malformed_fields_are_rejected(name: str, value: Any) -> None:
    # create() is typed (timestamp: datetime | str, subject/payload: Mapping) and only
    # validates values of those types; from_dict() takes anything parsed from JSON.
    typed_for_create = not (
        (name == "timestamp" and not isinstance(value, str)) or name in ("subject", "payload")
    )
    if typed_for_create:
        with pytest.raises(MalformedError):
            Entry.create(**{**KNOWN_FIELDS, name: value})
    served = Entry.create(**KNOWN_FIELDS).to_dict()
    with pytest.raises(MalformedError):
        Entry.from_dict({**served, name: value})


@pytest.mark.parametrize(
    "payload",
    [
        {"n": 2**53},
        {"n": -(2**53)},
        {"n": 2**64},
        {"x": math.nan},
        {"x": math.inf},
        {"x": object()},
    ],
    ids=["2**53", "-2**53", "2**64", "nan", "inf", "object"],
)
def test_values_jcs_cannot_represent_are_rejected(payload: dict[str, Any]) -> None:
    with pytest.raises(MalformedError):
        Entry.create(**{**KNOWN_FIELDS, "payload": payload})


@pytest.mark.parametrize("entry_hash", ["", "0" * 63, "F" * 64, "z" * 64, None, 5])
def test_malformed_entry_hash_is_rejected(entry_hash: Any) -> None:
    served = Entry.create(**KNOWN_FIELDS).to_dict()
    with pytest.raises(MalformedError):
        Entry.from_dict({**served, "entry_hash": entry_hash})


@pytest.mark.parametrize("missing", [*KNOWN_FIELDS, "entry_hash"])
def test_missing_fields_are_rejected(missing: str) -> None:
    served = Entry.create(**KNOWN_FIELDS).to_dict()
    del served[missing]
    with pytest.raises(MalformedError, match=missing):
        Entry.from_dict(served)


def test_naive_datetime_is_rejected() -> None:
    with pytest.raises(MalformedError):
        Entry.create(**{**KNOWN_FIELDS, "timestamp": datetime(2024, 1, 2)})


@pytest.mark.parametrize("name", ["timestamp", "action", "prev_hash", "entry_hash"])
def test_trailing_newline_is_malformed(name: str) -> None:
    served = Entry.create(**KNOWN_FIELDS).to_dict()
    with pytest.raises(MalformedError):
        Entry.from_dict({**served, name: served[name] + "\n"})


# ---------------------------------------------------------------------------------------------
# Chains, checkpoints and verify_ledger
# ---------------------------------------------------------------------------------------------

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
KEY_NAME = "controlplane.test/log"
VERIFIER = NoteVerifier.from_public_key(KEY_NAME, KEY.public_key())
ORIGIN = "controlplane.test/ledger"
BASE_TIME = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
ACTIONS = ("artifact.registered", "promotion.requested", "promotion.approved")

Served = list[dict[str, Any]]


def build_chain(size: int, salt: str = "", start: Sequence[Entry] = ()) -> list[Entry]:
    """A valid chain of ``size`` entries, continuing ``start`` if given."""
    entries = list(start)
    while len(entries) < size:
        seq = len(entries)
        entries.append(
            Entry.create(
                seq=seq,
                timestamp=BASE_TIME + timedelta(seconds=seq),
                actor=f"user-{seq % 3}",
                action=ACTIONS[seq % len(ACTIONS)],
                subject={"kind": "model", "name": f"model-{seq}", "version": str(seq % 5)},
                payload={"n": seq, "salt": salt},
                prev_hash=entries[-1].entry_hash if entries else GENESIS_HASH,
            )
        )
    return entries


def serve(entries: Sequence[Entry]) -> Served:
    return [entry.to_dict() for entry in entries]


def reference_root(served: Served) -> bytes:
    """RFC 6962 root over the entries' raw entry_hash values, by the naive reference."""
    return MTH([bytes.fromhex(item["entry_hash"]) for item in served])


def sign_checkpoints(
    served: Served, sizes: Sequence[int], key: Ed25519PrivateKey = KEY
) -> list[str]:
    return [
        Checkpoint(ORIGIN, size, reference_root(served[:size])).sign(KEY_NAME, key)
        for size in sorted(sizes)
    ]


def verify(served: Served, notes: Sequence[str], pinned: dict[int, bytes] | None = None) -> Any:
    return verify_ledger(served, notes, [VERIFIER], ORIGIN, pinned)


def flip_hex(value: str) -> str:
    return ("1" if value[0] == "0" else "0") + value[1:]


def chain_and_checkpoints(
    data: st.DataObject, min_size: int = 1, include_last: bool = False
) -> tuple[Served, list[int], list[str]]:
    size = data.draw(st.integers(min_size, 60), label="size")
    served = serve(build_chain(size))
    sizes = data.draw(st.sets(st.integers(1, size), max_size=4), label="checkpoint sizes")
    if include_last:
        sizes.add(size)
    return served, sorted(sizes), sign_checkpoints(served, sorted(sizes))


@settings(max_examples=50, deadline=None)
@given(data=st.data())
def test_an_honest_ledger_verifies(data: st.DataObject) -> None:
    served, sizes, notes = chain_and_checkpoints(data)
    report = verify(served, notes)
    assert report.ok, report.problems
    assert report.first_bad_seq is None
    assert report.size == len(served)
    assert report.root_hash == reference_root(served).hex()
    assert report.last_entry_hash == served[-1]["entry_hash"]
    assert report.checkpoints_verified == len(sizes)
    assert report.to_dict()["ok"] is True
    # Pinning the very roots the server signed changes nothing.
    pinned = {size: reference_root(served[:size]) for size in sizes}
    assert verify(served, notes, pinned).ok


def test_an_empty_ledger_verifies() -> None:
    report = verify([], [])
    assert report.ok
    assert report.size == 0
    assert report.root_hash == MTH([]).hex()
    assert report.last_entry_hash == GENESIS_HASH


ALTERATIONS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "timestamp": lambda item: "1999-12-31T23:59:59.000000Z",
    "actor": lambda item: item["actor"] + "~",
    "action": lambda item: item["action"] + "x",
    "subject": lambda item: {**item["subject"], "tampered": True},
    "payload": lambda item: {**item["payload"], "n": item["payload"]["n"] + 1},
    "prev_hash": lambda item: flip_hex(item["prev_hash"]),
    "entry_hash": lambda item: flip_hex(item["entry_hash"]),
    "seq": lambda item: item["seq"] + 1,
}
MALFORMED_ALTERATIONS: list[tuple[str, Any]] = [
    ("timestamp", "yesterday"),
    ("actor", ""),
    ("action", "Not An Action"),
    ("subject", ["model"]),
    ("payload", None),
    ("prev_hash", "zz"),
    ("entry_hash", "not-a-hash"),
    ("seq", -1),
]


@settings(max_examples=100, deadline=None)
@given(data=st.data(), field=st.sampled_from(sorted(ALTERATIONS)))
def test_an_altered_field_names_its_seq(data: st.DataObject, field: str) -> None:
    served, _, notes = chain_and_checkpoints(data)
    seq = data.draw(st.integers(0, len(served) - 1), label="altered seq")
    altered = {**served[seq], field: ALTERATIONS[field](served[seq])}
    assert altered != served[seq]
    tampered = [*served[:seq], altered, *served[seq + 1 :]]
    report = verify(tampered, notes)
    assert not report.ok
    assert report.first_bad_seq == seq, report.problems
    assert any(problem.startswith(f"seq {seq}: ") for problem in report.problems)


@settings(max_examples=60, deadline=None)
@given(data=st.data(), alteration=st.sampled_from([*MALFORMED_ALTERATIONS, ("delete", None)]))
def test_a_malformed_entry_names_its_seq(data: st.DataObject, alteration: tuple[str, Any]) -> None:
    served, _, notes = chain_and_checkpoints(data)
    seq = data.draw(st.integers(0, len(served) - 1), label="malformed seq")
    field, value = alteration
    if field == "delete":
        field = data.draw(st.sampled_from(sorted(served[seq])), label="deleted field")
        altered = {name: item for name, item in served[seq].items() if name != field}
    else:
        altered = {**served[seq], field: value}
    report = verify([*served[:seq], altered, *served[seq + 1 :]], notes)
    assert not report.ok
    assert report.first_bad_seq == seq, report.problems
    assert any("malformed" in problem for problem in report.problems)


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_a_deleted_entry_is_named_by_its_position(data: st.DataObject) -> None:
    served, _, notes = chain_and_checkpoints(data, min_size=2, include_last=True)
    position = data.draw(st.integers(0, len(served) - 1), label="deleted position")
    report = verify([*served[:position], *served[position + 1 :]], notes)
    assert not report.ok
    if position < len(served) - 1:
        assert report.first_bad_seq == position, report.problems
    else:
        # Dropping the newest entry leaves a valid, shorter chain: only the checkpoint knows.
        assert any("truncated" in problem for problem in report.problems)


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_truncation_below_a_checkpoint_is_reported(data: st.DataObject) -> None:
    served, sizes, notes = chain_and_checkpoints(data, include_last=True)
    keep = data.draw(st.integers(0, max(sizes) - 1), label="kept entries")
    report = verify(served[:keep], notes)
    assert not report.ok
    assert report.size == keep
    assert any("truncated" in problem for problem in report.problems), report.problems
    assert report.first_bad_seq is None  # every served entry is fine; the tail is missing
    # Truncating to exactly a checkpoint size with no later checkpoint is not detectable.
    assert verify(served[: max(sizes)], notes).ok


def rewrite_consistently(served: Served, seq: int) -> Served:
    """Edit entry ``seq`` and recompute every hash from there on: a chain that links up."""
    entries = [Entry.from_dict(item) for item in served[:seq]]
    edited = build_chain(len(served), salt="rewritten", start=entries)
    assert edited[seq].entry_hash != served[seq]["entry_hash"]
    return serve(edited)


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_a_consistent_rewrite_is_caught_by_the_checkpoint_root(data: st.DataObject) -> None:
    served, sizes, notes = chain_and_checkpoints(data, include_last=True)
    seq = data.draw(st.integers(0, len(served) - 1), label="rewritten seq")
    rewritten = rewrite_consistently(served, seq)
    chain_only = verify(rewritten, [])
    assert chain_only.ok, "the rewritten chain links up; only checkpoints can catch it"

    report = verify(rewritten, notes)
    assert not report.ok
    last_good = max((size for size in sizes if size <= seq), default=0)
    first_bad_checkpoint = min(size for size in sizes if size > seq)
    assert report.first_bad_seq == last_good
    assert last_good <= seq < first_bad_checkpoint
    assert any(
        "Merkle root" in problem and f"seq {last_good}..{first_bad_checkpoint - 1}" in problem
        for problem in report.problems
    ), report.problems


def test_pinned_roots_that_differ_from_served_checkpoints_are_reported() -> None:
    served = serve(build_chain(20))
    notes = sign_checkpoints(served, [5, 10, 20])
    other = hashlib.sha256(b"something else").digest()

    report = verify(served, notes, {10: other})
    assert not report.ok
    assert any("pinned" in problem and "10" in problem for problem in report.problems)

    # A pinned root for a size the server did not sign is checked against the entries.
    assert verify(served, notes, {7: reference_root(served[:7])}).ok
    report = verify(served, notes, {7: other})
    assert not report.ok
    assert any("Merkle root over the first 7 entries" in problem for problem in report.problems)

    # A pinned size beyond what is served means rollback.
    report = verify(served, notes, {25: other})
    assert not report.ok
    assert any("truncated" in problem for problem in report.problems)


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_a_re_signed_rewrite_is_caught_by_pinned_roots(data: st.DataObject) -> None:
    """The server rewrites history at ``seq`` and re-signs every checkpoint: the chain and the
    served checkpoints agree, only the client's pinned roots from earlier remember."""
    served, sizes, _ = chain_and_checkpoints(data, include_last=True)
    seq = data.draw(st.integers(0, len(served) - 1), label="rewritten seq")
    rewritten = rewrite_consistently(served, seq)
    re_signed = sign_checkpoints(rewritten, sizes)
    assert verify(rewritten, re_signed).ok
    pinned = {size: reference_root(served[:size]) for size in sizes}
    report = verify(rewritten, re_signed, pinned)
    assert not report.ok
    assert any("pinned" in problem for problem in report.problems), report.problems


def test_checkpoint_problems_are_reported() -> None:
    served = serve(build_chain(12))
    good = sign_checkpoints(served, [4])

    stranger = Ed25519PrivateKey.from_private_bytes(b"\x09" * 32)
    report = verify(served, [*good, *sign_checkpoints(served, [8], key=stranger)])
    assert not report.ok
    assert report.checkpoints_verified == 1
    assert any("checkpoint rejected" in problem for problem in report.problems)

    foreign = Checkpoint("another/log", 8, reference_root(served[:8])).sign(KEY_NAME, KEY)
    report = verify(served, [*good, foreign])
    assert not report.ok
    assert any("origin" in problem for problem in report.problems)

    forked = Checkpoint(ORIGIN, 4, hashlib.sha256(b"fork").digest()).sign(KEY_NAME, KEY)
    report = verify(served, [*good, forked])
    assert not report.ok
    assert any("split view" in problem for problem in report.problems)

    # A signed checkpoint over a root the entries do not have.
    lying = Checkpoint(ORIGIN, 6, hashlib.sha256(b"lie").digest()).sign(KEY_NAME, KEY)
    report = verify(served, [*good, lying])
    assert not report.ok
    assert report.first_bad_seq == 4


def test_chain_verifier_streams() -> None:
    served = serve(build_chain(9))
    verifier = ChainVerifier({9: reference_root(served)})
    for item in served:
        verifier.feed(item)
    report = verifier.finish()
    assert report.ok
    assert (report.size, report.root_hash) == (9, reference_root(served).hex())


def test_an_uncanonicalisable_entry_is_reported_not_raised() -> None:
    served = serve(build_chain(3))
    served[1] = {**served[1], "payload": {"n": 2**60}}
    report = verify(served, [])
    assert not report.ok
    assert report.first_bad_seq == 1


@pytest.mark.parametrize("junk", [None, 42])
def test_a_non_object_entry_is_reported_not_raised(junk: Any) -> None:
    served: list[Any] = serve(build_chain(3))
    served[1] = junk
    report = verify(served, [])
    assert not report.ok
    assert report.first_bad_seq == 1
