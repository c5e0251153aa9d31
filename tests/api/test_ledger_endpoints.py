"""The ledger endpoints, checked with independent code: JCS hashes with ``rfc8785``, Merkle
roots and RFC 9162 proof verification written out here, signatures with ``cryptography``."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Sequence
from typing import Any

import pytest
import rfc8785
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from controlplane.ledger.checkpoint import Checkpoint, NoteVerifier
from controlplane.ledger.errors import LedgerError
from tests.api.conftest import unique
from tests.api.helpers import all_entries, assert_problem, make_principal, model_body, register
from tests.utils.server import LiveServer

MIN_SIZE = 21  # big enough for every shape of small tree, small enough for all pairs

# -- an independent RFC 9162 implementation ------------------------------------------------


def _h(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def leaf_hash(entry_hash_hex: str) -> bytes:
    return _h(b"\x00" + bytes.fromhex(entry_hash_hex))


def mth(leaves: Sequence[bytes]) -> bytes:
    """RFC 9162 section 2.1.1 over already-hashed leaves."""
    n = len(leaves)
    if n == 0:
        return _h(b"")
    if n == 1:
        return leaves[0]
    k = 1
    while k * 2 < n:
        k *= 2
    return _h(b"\x01" + mth(leaves[:k]) + mth(leaves[k:]))


def verify_inclusion(
    index: int, size: int, leaf: bytes, path: Sequence[bytes], root: bytes
) -> bool:
    """RFC 9162 section 2.1.3.2."""
    if index >= size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = _h(b"\x01" + p + r)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = _h(b"\x01" + r + p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def verify_consistency(
    first: int, second: int, first_root: bytes, second_root: bytes, path: Sequence[bytes]
) -> bool:
    """RFC 9162 section 2.1.4.2."""
    if first > second or first < 1:
        return False
    if first == second:
        return not path and first_root == second_root
    proof = list(path)
    if first & (first - 1) == 0:  # an exact power of two
        proof.insert(0, first_root)
    if not proof:
        return False
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = proof[0]
    for c in proof[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = _h(b"\x01" + c + fr)
            sr = _h(b"\x01" + c + sr)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = _h(b"\x01" + sr + c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == first_root and sr == second_root


def _hashes(hexes: list[str]) -> list[bytes]:
    return [bytes.fromhex(h) for h in hexes]


def _verify_note_independently(note: str, verifier_text: str) -> tuple[str, int, bytes]:
    """C2SP signed-note verification with nothing but hashlib and cryptography."""
    name, key_hex, key_b64 = verifier_text.split("+", 2)  # base64 may hold "+"
    raw = base64.b64decode(key_b64)
    assert raw[0] == 0x01 and len(raw) == 33
    assert _h(name.encode() + b"\n" + raw)[:4].hex() == key_hex
    text, _, signatures = note.rpartition("\n\n")
    text += "\n"
    ours = [
        line
        for line in signatures.splitlines()
        if line.startswith(f"\u2014 {name} ")  # em dash, space, key name, space
    ]
    assert len(ours) == 1, note
    blob = base64.b64decode(ours[0].split(" ")[2])
    assert blob[:4].hex() == key_hex
    Ed25519PublicKey.from_public_bytes(raw[1:]).verify(blob[4:], text.encode())
    origin, size, root, *rest = text.split("\n")
    # C2SP allows non-empty extension lines after the root (ours: the ``prev`` link)
    assert rest[-1] == "" and all(rest[:-1]) and len(rest) <= 2, rest
    return origin, int(size), base64.b64decode(root)


# -- fixtures --------------------------------------------------------------------------------


@pytest.fixture
def entries(api: LiveServer) -> list[dict[str, Any]]:
    """The module's ledger, grown to at least MIN_SIZE entries."""
    with api.admin() as admin:
        size = admin.get("/healthz").json()["ledger_size"]
        project = unique("proj")
        for i in range(max(0, MIN_SIZE - size)):
            register(admin, project, "reward_model", "filler", model_body(f"filler-{i}"))
        return all_entries(admin)


def _keys(api: LiveServer) -> list[dict[str, Any]]:
    with api.admin() as admin:
        response = admin.get("/v1/ledger/keys")
    assert response.status_code == 200
    return response.json()["data"]  # type: ignore[no-any-return]


# -- entries ---------------------------------------------------------------------------------


def test_every_entry_hash_recomputes_with_jcs(
    api: LiveServer, entries: list[dict[str, Any]]
) -> None:
    assert [e["seq"] for e in entries] == list(range(len(entries)))
    previous = "0" * 64
    for entry in entries:
        assert set(entry) == {
            "seq",
            "timestamp",
            "actor",
            "action",
            "subject",
            "payload",
            "prev_hash",
            "entry_hash",
        }
        hashed = {k: v for k, v in entry.items() if k != "entry_hash"}
        assert hashlib.sha256(rfc8785.dumps(hashed)).hexdigest() == entry["entry_hash"]
        assert entry["prev_hash"] == previous
        assert entry["timestamp"].endswith("Z")
        previous = entry["entry_hash"]
    assert entries[0]["action"] == "server_key.registered"
    with api.admin() as admin:
        for entry in (entries[0], entries[len(entries) // 2], entries[-1]):
            assert admin.get(f"/v1/ledger/entries/{entry['seq']}").json() == entry


def test_paging_with_next_start(api: LiveServer, entries: list[dict[str, Any]]) -> None:
    with api.admin() as admin:
        for limit in (1, 3, 7, len(entries)):
            pages: list[dict[str, Any]] = []
            start: int | None = 0
            while start is not None:
                page = admin.get("/v1/ledger/entries", params={"start": start, "limit": limit})
                body = page.json()
                assert body["count"] == len(body["data"]) <= limit
                pages.extend(body["data"])
                start = body["next_start"]
                if start is not None:
                    assert start == body["data"][-1]["seq"] + 1
            assert pages[: len(entries)] == entries
        tail = admin.get("/v1/ledger/entries", params={"start": len(entries) - 2}).json()
        assert [e["seq"] for e in tail["data"]][:2] == [len(entries) - 2, len(entries) - 1]
        beyond = admin.get("/v1/ledger/entries", params={"start": 10**9}).json()
        assert beyond == {"data": [], "count": 0, "next_start": None}


def test_filters(api: LiveServer) -> None:
    who = unique("carol")
    project = unique("proj")
    token = make_principal(api, who, [("engineer", project)])
    with api.client(token) as carol:
        register(
            carol,
            project,
            "dataset",
            "d",
            {"content": '{"prompt":"p","chosen":"a","rejected":"b"}'},
        )
        register(carol, project, "reward_model", "rm", model_body(who))
        register(carol, project, "reward_model", "rm", model_body(who + "2"))
        assert carol.post("/v1/principals", json={"id": unique("x")}).status_code == 403
    with api.admin() as admin:
        by_actor = all_entries(admin, actor=who)
        assert [e["action"] for e in by_actor] == ["artifact.version_registered"] * 3 + [
            "access.denied"
        ]
        about_her = all_entries(admin, name=who)
        assert [e["action"] for e in about_her] == [
            "principal.created",
            "role.granted",
            "token.issued",
        ]
        assert all(e["subject"]["kind"] == "principal" for e in about_her)
        in_project = all_entries(admin, project=project)
        assert [e["subject"]["name"] for e in in_project] == ["d", "rm", "rm"]
        models = all_entries(admin, project=project, kind="reward_model")
        assert [e["subject"]["version"] for e in models] == [1, 2]
        assert all_entries(admin, project=project, kind="reward_model", name="d") == []
        grants = all_entries(admin, action="role.granted", name=who)
        assert [e["payload"] for e in grants] == [{"role": "engineer", "project": project}]
        assert all_entries(admin, actor=who, action="access.denied")[0]["payload"] == {
            "object": "principals",
            "action": "manage",
        }
        # a filter pages like the unfiltered list
        first = admin.get("/v1/ledger/entries", params={"actor": who, "limit": 2}).json()
        assert first["count"] == 2 and first["next_start"] is not None
        rest = admin.get(
            "/v1/ledger/entries", params={"actor": who, "start": first["next_start"]}
        ).json()
        assert first["data"] + rest["data"] == by_actor
        assert all_entries(admin, actor=unique("nobody")) == []


# -- checkpoints and keys --------------------------------------------------------------------


def test_checkpoint_is_a_signed_note_over_the_tree(
    api: LiveServer, entries: list[dict[str, Any]]
) -> None:
    keys = _keys(api)
    assert keys, "no signing key"
    verifiers = [NoteVerifier.parse(k["verifier"]) for k in keys]
    with api.admin() as admin:
        checkpoint = admin.get("/v1/ledger/checkpoint").json()
        size = admin.get("/healthz").json()["ledger_size"]
    assert {"note", "tree_size", "root_hash", "origin", "key_id"} <= set(checkpoint)
    assert checkpoint["tree_size"] == size >= len(entries)
    opened = Checkpoint.open(checkpoint["note"], verifiers)
    assert opened.origin == checkpoint["origin"] == "test.controlplane/ledger"
    assert opened.size == checkpoint["tree_size"]
    assert opened.root_hash.hex() == checkpoint["root_hash"]
    assert checkpoint["key_id"] in {v.key_id_hex for v in verifiers}
    # the same note, checked without our code
    key = next(k for k in keys if k["retired_seq"] is None)
    origin, note_size, root = _verify_note_independently(checkpoint["note"], key["verifier"])
    assert (origin, note_size, root.hex()) == (
        checkpoint["origin"],
        checkpoint["tree_size"],
        checkpoint["root_hash"],
    )
    # and the root is the Merkle tree hash of the entries
    with api.admin() as admin:
        current = all_entries(admin)[: checkpoint["tree_size"]]
    assert mth([leaf_hash(e["entry_hash"]) for e in current]).hex() == checkpoint["root_hash"]
    # a tampered note does not verify
    lines = checkpoint["note"].split("\n")
    lines[1] = str(checkpoint["tree_size"] + 1)
    with pytest.raises(LedgerError):
        Checkpoint.open("\n".join(lines), verifiers)


def test_keys_are_note_verifiers(api: LiveServer) -> None:
    with api.admin() as admin:
        body = admin.get("/v1/ledger/keys").json()
        registered = all_entries(admin, action="server_key.registered")
    assert body["origin"] == "test.controlplane/ledger"
    assert body["count"] == len(body["data"]) == len(registered) >= 1
    for key, entry in zip(body["data"], registered, strict=True):
        verifier = NoteVerifier.parse(key["verifier"])
        assert verifier.name == key["note_name"] == body["origin"]
        assert key["registered_seq"] == entry["seq"]
        assert key["verifier"] == entry["payload"]["verifier"]
        assert key["public_key"] == entry["payload"]["public_key"]


def test_every_kept_checkpoint_verifies(api: LiveServer, entries: list[dict[str, Any]]) -> None:
    verifiers = [NoteVerifier.parse(k["verifier"]) for k in _keys(api)]
    leaves = [leaf_hash(e["entry_hash"]) for e in entries]
    with api.admin() as admin:
        listed = admin.get("/v1/ledger/checkpoints", params={"limit": 1000}).json()["data"]
        later = admin.get("/v1/ledger/checkpoints", params={"start": 10, "limit": 3}).json()
    sizes = [c["tree_size"] for c in listed]
    assert sizes == sorted(set(sizes)) and sizes[0] >= 1
    for checkpoint in listed:
        opened = Checkpoint.open(checkpoint["note"], verifiers)
        assert opened.size == checkpoint["tree_size"]
        if opened.size <= len(leaves):
            assert opened.root_hash == mth(leaves[: opened.size])
    assert [c["tree_size"] for c in later["data"]] == [s for s in sizes if s >= 10][:3]


def test_checkpoint_sample_is_bounded(api: LiveServer, entries: list[dict[str, Any]]) -> None:
    with api.admin() as admin:
        every = admin.get("/v1/ledger/checkpoints", params={"limit": 1000}).json()["data"]
        sample = admin.get("/v1/ledger/checkpoints", params={"sample": 5}).json()["data"]
    assert len(every) > 10
    assert sample[-1]["tree_size"] == every[-1]["tree_size"]
    assert 1 <= len(sample) <= 10, [c["tree_size"] for c in sample]


# -- proofs ----------------------------------------------------------------------------------


def test_inclusion_proof_for_every_seq(api: LiveServer, entries: list[dict[str, Any]]) -> None:
    leaves = [leaf_hash(e["entry_hash"]) for e in entries]
    n = len(leaves)
    with api.admin() as admin:
        # every seq at the full size, and every (seq, size) pair in the first sizes
        pairs = [(seq, n) for seq in range(n)]
        pairs += [(seq, size) for size in range(1, 10) for seq in range(size)]
        for seq, size in pairs:
            proof = admin.get(
                "/v1/ledger/proofs/inclusion", params={"seq": seq, "tree_size": size}
            ).json()
            assert (proof["leaf_index"], proof["tree_size"]) == (seq, size)
            assert proof["leaf_hash"] == leaves[seq].hex()
            root = mth(leaves[:size])
            assert proof["root_hash"] == root.hex()
            path = _hashes(proof["hashes"])
            assert verify_inclusion(seq, size, leaves[seq], path, root), (seq, size)
            if path:  # the verifier is not vacuous
                broken = [*path[:-1], _h(path[-1])]
                assert not verify_inclusion(seq, size, leaves[seq], broken, root)
        # without tree_size: the latest checkpoint's size
        latest = admin.get("/v1/ledger/checkpoint").json()
        proof = admin.get("/v1/ledger/proofs/inclusion", params={"seq": 0}).json()
        assert proof["tree_size"] == latest["tree_size"]
        assert proof["root_hash"] == latest["root_hash"]


def test_consistency_proof_for_all_pairs(api: LiveServer, entries: list[dict[str, Any]]) -> None:
    leaves = [leaf_hash(e["entry_hash"]) for e in entries]
    n = len(leaves)
    with api.admin() as admin:
        # all pairs among the first sizes, and every first size against the full tree
        pairs = [(m, k) for k in range(1, 13) for m in range(1, k + 1)]
        pairs += [(m, n) for m in range(1, n + 1)]
        for first, second in pairs:
            proof = admin.get(
                "/v1/ledger/proofs/consistency", params={"first": first, "second": second}
            ).json()
            first_root, second_root = mth(leaves[:first]), mth(leaves[:second])
            assert (proof["first"], proof["second"]) == (first, second)
            assert proof["first_root"] == first_root.hex()
            assert proof["second_root"] == second_root.hex()
            path = _hashes(proof["hashes"])
            assert verify_consistency(first, second, first_root, second_root, path), (
                first,
                second,
            )
            if path:
                broken = [_h(path[0]), *path[1:]]
                assert not verify_consistency(first, second, first_root, second_root, broken)
        latest = admin.get("/v1/ledger/checkpoint").json()
        proof = admin.get("/v1/ledger/proofs/consistency", params={"first": 3}).json()
        assert proof["second"] == latest["tree_size"]
        assert proof["second_root"] == latest["root_hash"]


def test_bad_proof_parameters_are_422(api: LiveServer, entries: list[dict[str, Any]]) -> None:
    with api.admin() as admin:
        size = admin.get("/healthz").json()["ledger_size"]
        for params in (
            {"seq": size, "tree_size": size},
            {"seq": 5, "tree_size": 5},
            {"seq": 0, "tree_size": size + 1},
            {"seq": size},
            {"seq": -1},
            {"seq": 0, "tree_size": 0},
            {"seq": 0, "tree_size": -3},
            {"seq": "one"},
            {},
        ):
            assert_problem(admin.get("/v1/ledger/proofs/inclusion", params=params), 422)
        for params in (
            {"first": 5, "second": 4},
            {"first": size + 1},
            {"first": 1, "second": size + 1},
            {"first": 0, "second": 3},
            {"first": -1, "second": 3},
            {"first": 2, "second": -1},
            {"first": "x"},
            {},
        ):
            assert_problem(admin.get("/v1/ledger/proofs/consistency", params=params), 422)
        for params in ({"start": -1}, {"limit": 0}, {"limit": 1001}, {"sample": 0}):
            assert_problem(admin.get("/v1/ledger/checkpoints", params=params), 422)
        assert_problem(admin.get("/v1/ledger/entries/-1"), 422)


# -- export ----------------------------------------------------------------------------------


def test_export_bundle(api: LiveServer, entries: list[dict[str, Any]]) -> None:
    with api.admin() as admin:
        response = admin.get("/v1/ledger/export")
        current = all_entries(admin)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert "attachment" in response.headers["content-disposition"]
    bundle = json.loads(response.content)
    assert bundle["format"] == "controlplane-audit-bundle/v1"
    assert bundle["origin"] == "test.controlplane/ledger"
    assert bundle["exported_at"].endswith("Z")
    assert len(bundle["entries"]) == bundle["tree_size"] >= len(entries)
    assert bundle["entries"] == current[: bundle["tree_size"]]
    verifiers = [NoteVerifier.parse(k) for k in bundle["keys"]]
    assert {str(v) for v in verifiers} == {k["verifier"] for k in _keys(api)}
    leaves = [leaf_hash(e["entry_hash"]) for e in bundle["entries"]]
    sizes = []
    for note in bundle["checkpoints"]:
        opened = Checkpoint.open(note, verifiers)
        assert opened.root_hash == mth(leaves[: opened.size])
        sizes.append(opened.size)
    assert sizes == sorted(sizes) and sizes[-1] == bundle["tree_size"]
    previous = "0" * 64
    for entry in bundle["entries"]:
        hashed = {k: v for k, v in entry.items() if k != "entry_hash"}
        assert hashlib.sha256(rfc8785.dumps(hashed)).hexdigest() == entry["entry_hash"]
        assert entry["prev_hash"] == previous
        previous = entry["entry_hash"]
