"""Which checkpoint key may sign which tree size, as :class:`KeyHistory` reads the ledger."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from controlplane.ledger.checkpoint import NoteVerifier
from controlplane.ledger.verify import KeyHistory, VerificationReport

ORIGIN = "test.controlplane/ledger"


def _verifier() -> str:
    return str(NoteVerifier.from_public_key(ORIGIN, Ed25519PrivateKey.generate().public_key()))


def _key_entry(seq: int, action: str, verifier: str) -> dict[str, object]:
    return {"seq": seq, "action": action, "payload": {"verifier": verifier}}


def test_windows_follow_the_rotation_entries() -> None:
    first, second, third = _verifier(), _verifier(), _verifier()
    history, report = KeyHistory(), VerificationReport()
    for entry in (
        _key_entry(0, "server_key.registered", first),
        _key_entry(3, "artifact.registered", second),  # not a key entry: ignored
        _key_entry(5, "server_key.rotated", second),
        _key_entry(9, "server_key.registered", second),  # announced again: still current
        _key_entry(12, "server_key.rotated", third),
    ):
        history(entry, report)
    assert report.ok
    assert history.window(first) == [(1, 5)]
    assert history.window(second) == [(6, 12)]
    assert history.window(third) == [(13, None)]
    good = [(1, {first}), (5, {first}), (6, {second}), (12, {second}), (40, {third})]
    history.check(good, report)
    assert report.ok, report.problems
    # a retired key after its retirement, a new key before its registration, an unknown key
    history.check([(6, {first}), (5, {second}), (13, {_verifier()})], report)
    assert len(report.problems) == 3
    assert "retired at seq 5" in report.problems[1]  # sorted by size: 5, 6, 13
    assert "no server_key entry" in report.problems[2]
    # a second signature by the current key makes a checkpoint acceptable
    ok = VerificationReport()
    history.check([(20, {first, third})], ok)
    assert ok.ok


def test_a_malformed_key_entry_is_reported() -> None:
    history, report = KeyHistory(), VerificationReport()
    history(_key_entry(0, "server_key.registered", "not-a-key"), report)
    assert report.first_bad_seq == 0 and history.keys == []
