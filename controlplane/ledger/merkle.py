"""RFC 6962 Merkle tree hashing, proofs and their verification.

Pure functions over integers and bytes. Proofs are produced in two steps so that storage never
does tree math: :func:`inclusion_ranges` / :func:`consistency_ranges` say which leaf ranges a
proof needs, :func:`range_nodes` says which stored perfect subtrees make up each range (so a
store fetches them in one query, O(log n) rows), and :func:`range_hash` folds them.

A stored node ``(level, index)`` is the hash of the perfect subtree over leaves
``[index * 2**level, (index + 1) * 2**level)``. Verification follows RFC 9162 section 2.1.3.2
and 2.1.4.2 and rejects malformed input (hashes that are not 32 bytes, indices out of range)
before hashing anything.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence

from controlplane.ledger.errors import MalformedError, ProofError, RootMismatchError

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()
"""The root of the empty tree, ``SHA-256()`` per RFC 6962."""

NodeId = tuple[int, int]
"""``(level, index)`` of a perfect, aligned subtree."""
Range = tuple[int, int]
"""``[start, end)`` leaf range whose RFC 6962 hash a proof needs."""


def leaf_hash(data: bytes) -> bytes:
    """RFC 6962 leaf hash: ``SHA-256(0x00 || data)``."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 6962 interior node hash: ``SHA-256(0x01 || left || right)``."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def split_point(n: int) -> int:
    """The largest power of two strictly smaller than ``n`` (``n >= 2``)."""
    if n < 2:
        raise MalformedError(f"cannot split a tree of {n} leaves")
    return 1 << ((n - 1).bit_length() - 1)


def _is_perfect(start: int, end: int) -> bool:
    width = end - start
    return width > 0 and width & (width - 1) == 0 and start % width == 0


# ---------------------------------------------------------------------------------------------
# Building the stored nodes as leaves arrive
# ---------------------------------------------------------------------------------------------


def completed_nodes(
    index: int, leaf: bytes, lookup: Callable[[NodeId], bytes]
) -> list[tuple[NodeId, bytes]]:
    """The perfect subtrees completed by appending leaf hash ``leaf`` at ``index``.

    Returns ``[((0, index), leaf), ...]`` up to the highest node it completes; ``lookup`` is
    asked for the left siblings only (on average one per append).
    """
    out: list[tuple[NodeId, bytes]] = [((0, index), leaf)]
    level, position, current = 0, index, leaf
    while position & 1:
        left = lookup((level, position - 1))
        current = node_hash(left, current)
        level, position = level + 1, position >> 1
        out.append(((level, position), current))
    return out


def frontier_nodes(size: int) -> list[NodeId]:
    """Stored nodes that make up the tree of ``size`` leaves, largest first (its compact range)."""
    return range_nodes(0, size)


# ---------------------------------------------------------------------------------------------
# Proofs as ranges, ranges as stored nodes
# ---------------------------------------------------------------------------------------------


def range_nodes(start: int, end: int) -> list[NodeId]:
    """The stored perfect subtrees whose fold is the RFC 6962 hash of leaves ``[start, end)``."""
    if not 0 <= start < end:
        raise MalformedError(f"empty or negative range [{start}, {end})")
    out: list[NodeId] = []
    stack = [(start, end)]
    while stack:
        lo, hi = stack.pop()
        if _is_perfect(lo, hi):
            width = hi - lo
            out.append((width.bit_length() - 1, lo // width))
        else:
            k = split_point(hi - lo)
            stack.append((lo + k, hi))
            stack.append((lo, lo + k))
    return out


def range_hash(start: int, end: int, nodes: Mapping[NodeId, bytes]) -> bytes:
    """RFC 6962 ``MTH(D[start:end])`` from the stored nodes of :func:`range_nodes`."""
    if _is_perfect(start, end):
        width = end - start
        key = (width.bit_length() - 1, start // width)
        try:
            return nodes[key]
        except KeyError:
            raise MalformedError(f"missing stored node {key}") from None
    k = split_point(end - start)
    return node_hash(range_hash(start, start + k, nodes), range_hash(start + k, end, nodes))


def inclusion_ranges(index: int, size: int) -> list[Range]:
    """Leaf ranges of the RFC 6962 audit path for ``index`` in a tree of ``size``, leaf first."""
    if not 0 <= index < size:
        raise MalformedError(f"leaf index {index} is not below tree size {size}")
    path: list[Range] = []
    lo, hi = 0, size
    while hi - lo > 1:
        k = split_point(hi - lo)
        if index < lo + k:
            path.append((lo + k, hi))
            hi = lo + k
        else:
            path.append((lo, lo + k))
            lo = lo + k
    path.reverse()
    return path


def consistency_ranges(first: int, second: int) -> list[Range]:
    """Leaf ranges of the RFC 6962 consistency proof from ``first`` to ``second`` leaves."""
    if not 0 < first <= second:
        raise MalformedError(f"no consistency proof from size {first} to size {second}")
    path: list[Range] = []
    lo, hi, m, complete = 0, second, first, True
    while m != hi - lo:
        k = split_point(hi - lo)
        if m <= k:
            path.append((lo + k, hi))
            hi = lo + k
        else:
            path.append((lo, lo + k))
            lo, m, complete = lo + k, m - k, False
    if not complete:
        path.append((lo, hi))
    path.reverse()
    return path


def nodes_for(ranges: Iterable[Range]) -> list[NodeId]:
    """Every stored node the given ranges need, without repeats (one query's worth)."""
    seen: dict[NodeId, None] = {}
    for start, end in ranges:
        for node in range_nodes(start, end):
            seen.setdefault(node, None)
    return list(seen)


def hashes_for(ranges: Sequence[Range], nodes: Mapping[NodeId, bytes]) -> list[bytes]:
    """Fold the fetched nodes into one hash per range: the proof itself."""
    return [range_hash(start, end, nodes) for start, end in ranges]


# ---------------------------------------------------------------------------------------------
# Streaming root computation (verifiers, exports, tests)
# ---------------------------------------------------------------------------------------------


class CompactRange:
    """The perfect subtrees of a growing tree: O(log n) memory, O(1) amortised per leaf."""

    __slots__ = ("_stack", "size")

    def __init__(self) -> None:
        self._stack: list[tuple[int, bytes]] = []
        self.size = 0

    def append(self, leaf: bytes) -> None:
        """Add one leaf *hash* (already ``leaf_hash``-ed)."""
        width, current = 1, leaf
        while self._stack and self._stack[-1][0] == width:
            _, left = self._stack.pop()
            current = node_hash(left, current)
            width *= 2
        self._stack.append((width, current))
        self.size += 1

    def root(self) -> bytes:
        """The RFC 6962 root of the leaves appended so far."""
        if not self._stack:
            return EMPTY_ROOT
        current = self._stack[-1][1]
        for _, left in reversed(self._stack[:-1]):
            current = node_hash(left, current)
        return current


def root_of(leaves: Iterable[bytes]) -> bytes:
    """Root of a sequence of leaf hashes."""
    compact = CompactRange()
    for leaf in leaves:
        compact.append(leaf)
    return compact.root()


# ---------------------------------------------------------------------------------------------
# Verification (RFC 9162 section 2.1.3.2 and 2.1.4.2)
# ---------------------------------------------------------------------------------------------


def _check_hash(name: str, value: bytes) -> None:
    if not isinstance(value, bytes | bytearray) or len(value) != HASH_SIZE:
        size = len(value) if isinstance(value, bytes | bytearray) else type(value).__name__
        raise ProofError(f"{name} must be {HASH_SIZE} bytes, got {size}")


def root_from_inclusion_proof(index: int, size: int, leaf: bytes, proof: Sequence[bytes]) -> bytes:
    """The root implied by an inclusion proof; raises :class:`ProofError` if it is malformed."""
    if index < 0 or size < 0:
        raise ProofError("leaf index and tree size must be non-negative")
    if index >= size:
        raise ProofError(f"leaf index {index} is not below tree size {size}")
    _check_hash("leaf hash", leaf)
    for position, item in enumerate(proof):
        _check_hash(f"proof[{position}]", item)
    fn, sn, current = index, size - 1, bytes(leaf)
    for item in proof:
        if sn == 0:
            raise ProofError("inclusion proof is longer than the tree is deep")
        if fn & 1 or fn == sn:
            current = node_hash(item, current)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            current = node_hash(current, item)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("inclusion proof is shorter than the tree is deep")
    return current


def verify_inclusion(
    index: int, size: int, leaf: bytes, proof: Sequence[bytes], root: bytes
) -> None:
    """Check that leaf hash ``leaf`` is at ``index`` of the tree of ``size`` with ``root``."""
    _check_hash("root", root)
    calculated = root_from_inclusion_proof(index, size, leaf, proof)
    if calculated != bytes(root):
        raise RootMismatchError(bytes(root), calculated)


def verify_consistency(
    first: int, second: int, first_root: bytes, second_root: bytes, proof: Sequence[bytes]
) -> None:
    """Check that the tree of ``second`` leaves extends the tree of ``first`` leaves."""
    if first < 0 or second < 0:
        raise ProofError("tree sizes must be non-negative")
    if second < first:
        raise ProofError(f"second size {second} is smaller than first size {first}")
    if first == 0:
        raise ProofError("a consistency proof from the empty tree proves nothing")
    if first == second:
        if proof:
            raise ProofError("sizes are equal but the proof is not empty")
        # Equal roots are compared as given, whatever their length, as the RFC 6962 vectors
        # require (sizes-are-equal-one-and-proof-is-empty); an empty root is never a root.
        if not first_root or not second_root:
            raise ProofError("roots must not be empty")
        if bytes(first_root) != bytes(second_root):
            raise RootMismatchError(bytes(first_root), bytes(second_root))
        return
    if not proof:
        raise ProofError("consistency proof is empty")
    _check_hash("first root", first_root)
    _check_hash("second root", second_root)
    for position, item in enumerate(proof):
        _check_hash(f"proof[{position}]", item)

    path = list(proof)
    if first & (first - 1) == 0:
        path.insert(0, bytes(first_root))
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for item in path[1:]:
        if sn == 0:
            raise ProofError("consistency proof is longer than expected")
        if fn & 1 or fn == sn:
            fr = node_hash(item, fr)
            sr = node_hash(item, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, item)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("consistency proof is shorter than expected")
    if fr != bytes(first_root):
        raise RootMismatchError(bytes(first_root), fr)
    if sr != bytes(second_root):
        raise RootMismatchError(bytes(second_root), sr)
