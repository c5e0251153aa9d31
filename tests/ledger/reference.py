"""A naive RFC 6962 reference used only by the tests.

``MTH``, ``PATH`` and ``PROOF`` transcribe the pseudo-code of RFC 6962 section 2.1 (Merkle Tree
Hash), 2.1.1 (Merkle audit paths) and 2.1.2 (Merkle consistency proofs) literally: recursive over
lists of leaf *data*, with list slices for ``D[0:k]`` and ``D[k:n]``. It deliberately imports
nothing from :mod:`controlplane` so that it is an independent oracle.

The only concession to speed is that ``MTH`` memoises on the (tuple of the) list it is given;
that changes no result, it only lets the exhaustive tests call the definition tens of
thousands of times.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def largest_power_of_two_below(n: int) -> int:
    """The ``k`` of RFC 6962: the largest power of two smaller than ``n`` (``n > 1``)."""
    assert n > 1
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def MTH(D: Sequence[bytes]) -> bytes:
    """Merkle Tree Hash of the list of leaf data ``D`` (RFC 6962 section 2.1)."""
    return _mth(tuple(D))


@functools.lru_cache(maxsize=1 << 15)
def _mth(D: tuple[bytes, ...]) -> bytes:
    n = len(D)
    if n == 0:
        return _sha256(b"")
    if n == 1:
        return _sha256(b"\x00" + D[0])
    k = largest_power_of_two_below(n)
    return _sha256(b"\x01" + _mth(D[0:k]) + _mth(D[k:n]))


def leaf_hash(data: bytes) -> bytes:
    """``MTH({d})``: the hash of one leaf."""
    return MTH([data])


def PATH(m: int, D: Sequence[bytes]) -> list[bytes]:
    """Audit path for leaf ``m`` of ``D`` (RFC 6962 section 2.1.1), leaf end first."""
    D = list(D)
    n = len(D)
    assert 0 <= m < n
    if n == 1:
        return []
    k = largest_power_of_two_below(n)
    if m < k:
        return [*PATH(m, D[0:k]), MTH(D[k:n])]
    return [*PATH(m - k, D[k:n]), MTH(D[0:k])]


def PROOF(m: int, D: Sequence[bytes]) -> list[bytes]:
    """Consistency proof from the first ``m`` leaves to all of ``D`` (RFC 6962 section 2.1.2)."""
    D = list(D)
    assert 0 < m <= len(D)
    return SUBPROOF(m, D, True)


def SUBPROOF(m: int, D: Sequence[bytes], b: bool) -> list[bytes]:
    """The RFC's ``SUBPROOF(m, D[n], b)``."""
    D = list(D)
    n = len(D)
    if m == n:
        return [] if b else [MTH(D)]
    k = largest_power_of_two_below(n)
    if m <= k:
        return [*SUBPROOF(m, D[0:k], b), MTH(D[k:n])]
    return [*SUBPROOF(m - k, D[k:n], False), MTH(D[0:k])]


def path_sides(m: int, n: int) -> list[str]:
    """For each element of ``PATH(m, D[n])``, leaf end first: is the sibling ``left`` or
    ``right`` of the path? (The shape of the audit path, independent of the data.)"""
    assert 0 <= m < n
    if n == 1:
        return []
    k = largest_power_of_two_below(n)
    if m < k:
        return [*path_sides(m, k), "right"]
    return [*path_sides(m - k, n - k), "left"]


def proof_shape(m: int, n: int) -> list[str]:
    """The shape of ``PROOF(m, D[n])``, one token per element: ``old`` for the root of the old
    subtree itself (the ``[MTH(D[m])]`` base case), ``left`` / ``right`` for a sibling."""
    assert 0 < m <= n
    return _subproof_shape(m, n, True)


def _subproof_shape(m: int, n: int, b: bool) -> list[str]:
    if m == n:
        return [] if b else ["old"]
    k = largest_power_of_two_below(n)
    if m <= k:
        return [*_subproof_shape(m, k, b), "right"]
    return [*_subproof_shape(m - k, n - k, False), "left"]
