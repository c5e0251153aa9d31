"""Properties of :mod:`controlplane.ledger.merkle` against the naive RFC 6962 reference.

Proofs are produced the way the store produces them (ranges -> stored nodes -> fold) from a
node dict built with :func:`merkle.completed_nodes`, compared element by element with the
RFC's ``PATH`` / ``PROOF``, and verified with the RFC 9162 verifiers.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Mapping, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controlplane.ledger import merkle
from controlplane.ledger.errors import LedgerError, MalformedError, ProofError

from .reference import MTH, PATH, PROOF, leaf_hash, path_sides, proof_shape

MAX_SIZE = 300
EXHAUSTIVE_SIZE = 300

sizes = st.integers(1, MAX_SIZE)
seeds = st.binary(max_size=8)
bits = st.integers(0, 8 * merkle.HASH_SIZE - 1)


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def leaf_data(seed: bytes, size: int) -> list[bytes]:
    """``size`` distinct leaves derived from ``seed`` (distinct, so no two subtrees collide)."""
    return [seed + b"/" + index.to_bytes(2, "big") for index in range(size)]


def build_nodes(data: Sequence[bytes]) -> dict[merkle.NodeId, bytes]:
    """Stored nodes as the store builds them: one :func:`merkle.completed_nodes` per append."""
    nodes: dict[merkle.NodeId, bytes] = {}
    for index, item in enumerate(data):
        for node_id, value in merkle.completed_nodes(
            index, merkle.leaf_hash(item), nodes.__getitem__
        ):
            assert node_id not in nodes, f"node {node_id} completed twice"
            nodes[node_id] = value
    return nodes


@functools.cache
def shared_tree() -> tuple[list[bytes], dict[merkle.NodeId, bytes]]:
    """One 300-leaf tree; the perfect nodes of every prefix are a subset of its nodes."""
    data = leaf_data(b"exhaustive", EXHAUSTIVE_SIZE)
    return data, build_nodes(data)


def fetch(ranges: Sequence[merkle.Range], nodes: Mapping[merkle.NodeId, bytes]) -> list[bytes]:
    """Fetch exactly the nodes :func:`merkle.nodes_for` names (as one store query would) and fold.

    Raises if the fold needs a node that ``nodes_for`` did not ask for.
    """
    wanted = merkle.nodes_for(ranges)
    assert len(wanted) == len(set(wanted))
    fetched = {node_id: nodes[node_id] for node_id in wanted}
    return merkle.hashes_for(ranges, fetched)


def flip(value: bytes, bit: int) -> bytes:
    """``value`` with bit ``bit`` (counted over the whole byte string) inverted."""
    mutable = bytearray(value)
    mutable[bit // 8] ^= 1 << (bit % 8)
    return bytes(mutable)


def raises_proof_error(check: Callable[[], None]) -> bool:
    """True if ``check`` raised :class:`ProofError`; any other exception propagates."""
    try:
        check()
    except ProofError:
        return True
    return False


# ---------------------------------------------------------------------------------------------
# The reference itself (sanity: RFC 6962 known answers)
# ---------------------------------------------------------------------------------------------


def test_reference_known_answers() -> None:
    assert MTH([]) == hashlib.sha256(b"").digest() == merkle.EMPTY_ROOT
    assert MTH([b""]) == bytes.fromhex(
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
    )
    a, b, c = (hashlib.sha256(b"\x00" + x).digest() for x in (b"a", b"b", b"c"))
    ab = hashlib.sha256(b"\x01" + a + b).digest()
    assert MTH([b"a", b"b", b"c"]) == hashlib.sha256(b"\x01" + ab + c).digest()
    assert PATH(2, [b"a", b"b", b"c"]) == [ab]
    assert PATH(0, [b"a", b"b", b"c"]) == [b, c]
    assert PROOF(2, [b"a", b"b", b"c"]) == [c]
    assert PROOF(1, [b"a", b"b", b"c"]) == [b, c]
    assert PROOF(3, [b"a", b"b", b"c"]) == []


# ---------------------------------------------------------------------------------------------
# Exhaustive: every index of every size, every pair of sizes, 1..300
# ---------------------------------------------------------------------------------------------


def test_completed_nodes_are_the_perfect_subtrees() -> None:
    data, nodes = shared_tree()
    for (level, index), value in nodes.items():
        width = 1 << level
        assert value == MTH(data[index * width : (index + 1) * width]), (level, index)
    # Every perfect aligned subtree of the 300 leaves is stored, and nothing else.
    expected = {
        (level, index)
        for level in range(EXHAUSTIVE_SIZE.bit_length())
        for index in range(EXHAUSTIVE_SIZE >> level)
    }
    assert set(nodes) == expected


def test_completed_nodes_only_looks_up_left_siblings() -> None:
    asked: list[merkle.NodeId] = []
    nodes: dict[merkle.NodeId, bytes] = {}

    def lookup(node_id: merkle.NodeId) -> bytes:
        asked.append(node_id)
        return nodes[node_id]

    for index in range(64):
        asked.clear()
        produced = merkle.completed_nodes(index, leaf_hash(b"%d" % index), lookup)
        nodes.update(produced)
        assert produced[0] == ((0, index), leaf_hash(b"%d" % index))
        assert all(position % 2 == 0 for _, position in asked)
        # one lookup per trailing one bit of the index
        assert len(asked) == len(produced) - 1 == (index ^ (index + 1)).bit_length() - 1


def test_every_inclusion_proof_exhaustively() -> None:
    data, nodes = shared_tree()
    leaves = [merkle.leaf_hash(item) for item in data]
    for size in range(1, EXHAUSTIVE_SIZE + 1):
        prefix = data[:size]
        root = MTH(prefix)
        assert merkle.range_hash(0, size, nodes) == root
        assert merkle.root_of(leaves[:size]) == root
        for index in range(size):
            ranges = merkle.inclusion_ranges(index, size)
            proof = fetch(ranges, nodes)
            assert proof == PATH(index, prefix), (index, size)
            assert len(merkle.nodes_for(ranges)) <= 2 * size.bit_length()
            merkle.verify_inclusion(index, size, leaves[index], proof, root)


def test_every_consistency_proof_exhaustively() -> None:
    data, nodes = shared_tree()
    roots = [MTH(data[:size]) for size in range(EXHAUSTIVE_SIZE + 1)]
    for second in range(1, EXHAUSTIVE_SIZE + 1):
        prefix = data[:second]
        for first in range(1, second + 1):
            ranges = merkle.consistency_ranges(first, second)
            proof = fetch(ranges, nodes)
            assert proof == PROOF(first, prefix), (first, second)
            assert len(merkle.nodes_for(ranges)) <= 2 * second.bit_length()
            merkle.verify_consistency(first, second, roots[first], roots[second], proof)


# ---------------------------------------------------------------------------------------------
# Hypothesis: sizes 1..300 with arbitrary leaf data
# ---------------------------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(size=sizes, seed=seeds, data=st.data())
def test_inclusion_proof_matches_reference(size: int, seed: bytes, data: st.DataObject) -> None:
    leaves_data = leaf_data(seed, size)
    nodes = build_nodes(leaves_data)
    index = data.draw(st.integers(0, size - 1), label="index")
    proof = fetch(merkle.inclusion_ranges(index, size), nodes)
    assert proof == PATH(index, leaves_data)
    root = MTH(leaves_data)
    merkle.verify_inclusion(index, size, merkle.leaf_hash(leaves_data[index]), proof, root)
    assert merkle.root_from_inclusion_proof(index, size, leaf_hash(leaves_data[index]), proof) == (
        root
    )


@settings(max_examples=150, deadline=None)
@given(size=sizes, seed=seeds, data=st.data())
def test_consistency_proof_matches_reference(size: int, seed: bytes, data: st.DataObject) -> None:
    leaves_data = leaf_data(seed, size)
    nodes = build_nodes(leaves_data)
    first = data.draw(st.integers(1, size), label="first")
    proof = fetch(merkle.consistency_ranges(first, size), nodes)
    assert proof == PROOF(first, leaves_data)
    merkle.verify_consistency(first, size, MTH(leaves_data[:first]), MTH(leaves_data), proof)


@settings(max_examples=100, deadline=None)
@given(size=st.integers(0, MAX_SIZE), seed=seeds)
def test_compact_range_and_root_of_agree_with_reference(size: int, seed: bytes) -> None:
    leaves_data = leaf_data(seed, size)
    compact = merkle.CompactRange()
    assert compact.size == 0
    assert compact.root() == MTH([]) == merkle.EMPTY_ROOT
    for count, item in enumerate(leaves_data, start=1):
        compact.append(merkle.leaf_hash(item))
        assert compact.size == count
        assert compact.root() == MTH(leaves_data[:count])
    assert merkle.root_of(merkle.leaf_hash(item) for item in leaves_data) == MTH(leaves_data)


@settings(max_examples=100, deadline=None)
@given(size=sizes, seed=seeds, data=st.data())
def test_range_hash_is_the_mth_of_the_range(size: int, seed: bytes, data: st.DataObject) -> None:
    leaves_data = leaf_data(seed, size)
    nodes = build_nodes(leaves_data)
    assert merkle.range_hash(0, size, nodes) == MTH(leaves_data)
    frontier = {node_id: nodes[node_id] for node_id in merkle.frontier_nodes(size)}
    assert merkle.range_hash(0, size, frontier) == MTH(leaves_data)
    start = data.draw(st.integers(0, size - 1), label="start")
    end = data.draw(st.integers(start + 1, size), label="end")
    wanted = {node_id: nodes[node_id] for node_id in merkle.range_nodes(start, end)}
    assert merkle.range_hash(start, end, wanted) == MTH(leaves_data[start:end])


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 7, 8, 9, 255, 256, 257])
def test_leaf_and_node_hash_are_rfc6962(size: int) -> None:
    assert merkle.leaf_hash(b"x" * size) == hashlib.sha256(b"\x00" + b"x" * size).digest()
    left, right = bytes([size % 256]) * 32, bytes([(size + 1) % 256]) * 32
    assert merkle.node_hash(left, right) == hashlib.sha256(b"\x01" + left + right).digest()


# ---------------------------------------------------------------------------------------------
# Tampering: every bit matters
# ---------------------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(size=sizes, seed=seeds, data=st.data(), bit=bits)
def test_inclusion_rejects_any_flipped_bit(
    size: int, seed: bytes, data: st.DataObject, bit: int
) -> None:
    leaves_data = leaf_data(seed, size)
    index = data.draw(st.integers(0, size - 1), label="index")
    proof = PATH(index, leaves_data)
    leaf, root = leaf_hash(leaves_data[index]), MTH(leaves_data)
    target = data.draw(st.integers(0, len(proof) + 1), label="target")
    if target < len(proof):
        proof = [flip(item, bit) if at == target else item for at, item in enumerate(proof)]
    elif target == len(proof):
        leaf = flip(leaf, bit)
    else:
        root = flip(root, bit)
    with pytest.raises(ProofError):
        merkle.verify_inclusion(index, size, leaf, proof, root)


@settings(max_examples=200, deadline=None)
@given(size=sizes, seed=seeds, data=st.data(), bit=bits)
def test_consistency_rejects_any_flipped_bit(
    size: int, seed: bytes, data: st.DataObject, bit: int
) -> None:
    leaves_data = leaf_data(seed, size)
    first = data.draw(st.integers(1, size), label="first")
    proof = PROOF(first, leaves_data)
    first_root, second_root = MTH(leaves_data[:first]), MTH(leaves_data)
    target = data.draw(st.integers(0, len(proof) + 1), label="target")
    if target < len(proof):
        proof = [flip(item, bit) if at == target else item for at, item in enumerate(proof)]
    elif target == len(proof):
        first_root = flip(first_root, bit)
    else:
        second_root = flip(second_root, bit)
    with pytest.raises(ProofError):
        merkle.verify_consistency(first, size, first_root, second_root, proof)


@settings(max_examples=100, deadline=None)
@given(size=sizes, seed=seeds, data=st.data(), extra=st.binary(min_size=32, max_size=32))
def test_longer_or_shorter_proofs_are_rejected(
    size: int, seed: bytes, data: st.DataObject, extra: bytes
) -> None:
    leaves_data = leaf_data(seed, size)
    root = MTH(leaves_data)
    index = data.draw(st.integers(0, size - 1), label="index")
    path = PATH(index, leaves_data)
    leaf = leaf_hash(leaves_data[index])
    where = data.draw(st.integers(0, len(path)), label="where")
    with pytest.raises(ProofError):
        merkle.verify_inclusion(index, size, leaf, [*path[:where], extra, *path[where:]], root)
    if path:
        drop = data.draw(st.integers(0, len(path) - 1), label="drop")
        with pytest.raises(ProofError):
            merkle.verify_inclusion(index, size, leaf, path[:drop] + path[drop + 1 :], root)

    first = data.draw(st.integers(1, size), label="first")
    proof, first_root = PROOF(first, leaves_data), MTH(leaves_data[:first])
    where = data.draw(st.integers(0, len(proof)), label="where")
    with pytest.raises(ProofError):
        merkle.verify_consistency(
            first, size, first_root, root, [*proof[:where], extra, *proof[where:]]
        )
    if proof:
        drop = data.draw(st.integers(0, len(proof) - 1), label="drop")
        with pytest.raises(ProofError):
            merkle.verify_consistency(
                first, size, first_root, root, proof[:drop] + proof[drop + 1 :]
            )


@settings(max_examples=100, deadline=None)
@given(size=sizes, seed=seeds, data=st.data(), cut=st.integers(0, 64))
def test_hashes_of_the_wrong_length_are_rejected(
    size: int, seed: bytes, data: st.DataObject, cut: int
) -> None:
    length = cut if cut != merkle.HASH_SIZE else 0
    leaves_data = leaf_data(seed, size)
    root = MTH(leaves_data)
    index = data.draw(st.integers(0, size - 1), label="index")
    path, leaf = PATH(index, leaves_data), leaf_hash(leaves_data[index])

    def resize(value: bytes) -> bytes:
        return (value * 3)[:length]

    with pytest.raises(ProofError):
        merkle.verify_inclusion(index, size, resize(leaf), path, root)
    with pytest.raises(ProofError):
        merkle.verify_inclusion(index, size, leaf, path, resize(root))
    if path:
        with pytest.raises(ProofError):
            merkle.verify_inclusion(index, size, leaf, [*path[:-1], resize(path[-1])], root)
    first = data.draw(st.integers(1, size), label="first")
    proof, first_root = PROOF(first, leaves_data), MTH(leaves_data[:first])
    if proof:
        with pytest.raises(ProofError):
            merkle.verify_consistency(first, size, first_root, root, [resize(proof[0]), *proof[1:]])
        with pytest.raises(ProofError):
            merkle.verify_consistency(first, size, resize(first_root), root, proof)
        with pytest.raises(ProofError):
            merkle.verify_consistency(first, size, first_root, resize(root), proof)


def test_equal_sizes_with_empty_roots_are_rejected() -> None:
    assert raises_proof_error(lambda: merkle.verify_consistency(1, 1, b"", b"", []))


@pytest.mark.parametrize("length", [12, 31, 33])
def test_equal_sizes_compare_roots_as_given(length: int) -> None:
    """The RFC 6962 vector sizes-are-equal-one-and-proof-is-empty accepts equal 12-byte roots:
    with equal sizes there is nothing to hash, only two roots to compare."""
    root = b"\x07" * length
    merkle.verify_consistency(1, 1, root, root, [])
    assert raises_proof_error(lambda: merkle.verify_consistency(1, 1, root, root + b"x", []))


@settings(max_examples=200, deadline=None)
@given(size=sizes, seed=seeds, data=st.data(), delta=st.sampled_from([-1, 1]))
def test_inclusion_with_index_or_size_off_by_one(
    size: int, seed: bytes, data: st.DataObject, delta: int
) -> None:
    """An index off by one never verifies. A size off by one is not bound by the proof itself
    (RFC 9162 hashes no size; the signed checkpoint binds size to root): the same proof and
    root verify for a neighbouring size exactly when that size gives the audit path the same
    shape, and never against the neighbouring tree's own root."""
    leaves_data = leaf_data(seed, size + 1)
    tree, bigger = leaves_data[:size], leaves_data
    index = data.draw(st.integers(0, size - 1), label="index")
    proof, root = PATH(index, tree), MTH(tree)

    other_index = index + delta
    for leaf in {leaf_hash(tree[index]), leaf_hash(leaves_data[max(other_index, 0)])}:
        with pytest.raises(ProofError):
            merkle.verify_inclusion(other_index, size, leaf, proof, root)

    other_size = size + delta
    leaf = leaf_hash(tree[index])
    same_shape = index < other_size and path_sides(index, other_size) == path_sides(index, size)
    verified = not raises_proof_error(
        lambda: merkle.verify_inclusion(index, other_size, leaf, proof, root)
    )
    assert verified == same_shape
    if index < other_size:
        other_root = MTH(bigger[:other_size])
        with pytest.raises(ProofError):
            merkle.verify_inclusion(index, other_size, leaf, proof, other_root)


@settings(max_examples=200, deadline=None)
@given(size=sizes, seed=seeds, data=st.data(), delta=st.sampled_from([-1, 1]))
def test_consistency_with_a_size_off_by_one(
    size: int, seed: bytes, data: st.DataObject, delta: int
) -> None:
    """The first size is bound by the first root: off by one never verifies. The second size,
    like an inclusion proof's tree size, verifies exactly when the proof keeps its shape."""
    leaves_data = leaf_data(seed, size + 1)
    tree = leaves_data[:size]
    first = data.draw(st.integers(1, size), label="first")
    proof, first_root, second_root = PROOF(first, tree), MTH(tree[:first]), MTH(tree)

    with pytest.raises(ProofError):
        merkle.verify_consistency(first + delta, size, first_root, second_root, proof)

    other = size + delta
    same_shape = first <= other and proof_shape(first, other) == proof_shape(first, size)
    verified = not raises_proof_error(
        lambda: merkle.verify_consistency(first, other, first_root, second_root, proof)
    )
    assert verified == same_shape
    if first < other:
        with pytest.raises(ProofError):
            merkle.verify_consistency(first, other, first_root, MTH(leaves_data[:other]), proof)


def test_swapped_roots_and_empty_trees_are_rejected() -> None:
    data, _ = shared_tree()
    roots = [MTH(data[:size]) for size in range(9)]
    with pytest.raises(ProofError):
        merkle.verify_consistency(3, 7, roots[7], roots[3], PROOF(3, data[:7]))
    with pytest.raises(ProofError):
        merkle.verify_consistency(0, 0, merkle.EMPTY_ROOT, merkle.EMPTY_ROOT, [])
    with pytest.raises(ProofError):
        merkle.verify_consistency(0, 5, merkle.EMPTY_ROOT, roots[5], PROOF(1, data[:5]))
    with pytest.raises(ProofError):
        merkle.verify_consistency(5, 3, roots[5], roots[3], [])
    with pytest.raises(ProofError):
        merkle.verify_consistency(4, 4, roots[4], roots[4], [roots[4]])
    with pytest.raises(ProofError):
        merkle.verify_inclusion(0, 0, leaf_hash(data[0]), [], merkle.EMPTY_ROOT)
    with pytest.raises(ProofError):
        merkle.verify_inclusion(-1, 4, leaf_hash(data[0]), PATH(0, data[:4]), roots[4])
    with pytest.raises(ProofError):
        merkle.verify_inclusion(4, 4, leaf_hash(data[3]), PATH(3, data[:4]), roots[4])


# ---------------------------------------------------------------------------------------------
# Malformed requests to the range functions
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda: merkle.split_point(1), id="split-1"),
        pytest.param(lambda: merkle.split_point(0), id="split-0"),
        pytest.param(lambda: merkle.inclusion_ranges(3, 3), id="inclusion-index-eq-size"),
        pytest.param(lambda: merkle.inclusion_ranges(-1, 3), id="inclusion-negative"),
        pytest.param(lambda: merkle.inclusion_ranges(0, 0), id="inclusion-empty"),
        pytest.param(lambda: merkle.consistency_ranges(0, 3), id="consistency-from-empty"),
        pytest.param(lambda: merkle.consistency_ranges(4, 3), id="consistency-shrinking"),
        pytest.param(lambda: merkle.range_nodes(3, 3), id="range-empty"),
        pytest.param(lambda: merkle.range_nodes(-1, 3), id="range-negative"),
        pytest.param(lambda: merkle.range_hash(0, 3, {}), id="range-hash-missing-node"),
    ],
)
def test_malformed_requests_raise_malformed_error(call: Callable[[], object]) -> None:
    with pytest.raises(MalformedError):
        call()
    assert issubclass(MalformedError, LedgerError)
