"""RFC 6962 / RFC 9162 Merkle tree hashing, proofs and proof verification.

The tree over leaves ``d[0..n)`` is the one the RFCs define: ``MTH({}) = H()``,
a leaf hashes as ``H(0x00 || d)``, an interior node as ``H(0x01 || left || right)``
and a tree of ``n > 1`` leaves splits at ``k``, the largest power of two below
``n``. The prefixes keep a leaf from ever being passed off as a node.

Proof *generation* follows the recursive PATH and SUBPROOF definitions of RFC 9162
§2.1.3.1 / §2.1.4.1 over a :class:`SubtreeHashes` source, so a store can answer from
cached interior nodes instead of rehashing every leaf. Proof *verification* follows
the iterative algorithms of RFC 9162 §2.1.3.2 / §2.1.4.2 and needs nothing but
hashes: that is what an auditor runs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Protocol

__all__ = [
    "EMPTY_ROOT",
    "CompactRange",
    "SubtreeHashes",
    "consistency_proof",
    "inclusion_proof",
    "leaf_hash",
    "node_hash",
    "root_from_leaf_hashes",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(data: bytes) -> bytes:
    """Return the RFC 6962 leaf hash ``SHA-256(0x00 || data)``."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """Return the RFC 6962 interior node hash ``SHA-256(0x01 || left || right)``."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """Return the largest power of two strictly below ``n`` (``n >= 2``)."""
    return 1 << ((n - 1).bit_length() - 1)


def root_from_leaf_hashes(hashes: Sequence[bytes]) -> bytes:
    """Return the Merkle tree head of the given leaf hashes (``EMPTY_ROOT`` for none).

    Bottom-up pairing that carries an odd last node up unchanged builds exactly
    the RFC tree (the left subtree of every split is perfect), in O(n) hashes.
    """
    if not hashes:
        return EMPTY_ROOT
    level = list(hashes)
    while len(level) > 1:
        nxt = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]


class SubtreeHashes(Protocol):
    """Anything that returns ``MTH(d[start:end])`` for the ranges a proof needs."""

    def subtree(self, start: int, end: int) -> bytes: ...


class ListHashes:
    """A :class:`SubtreeHashes` over an in-memory list of leaf hashes (tests, bundles)."""

    def __init__(self, hashes: Sequence[bytes]):
        self._hashes = hashes

    def subtree(self, start: int, end: int) -> bytes:
        return root_from_leaf_hashes(self._hashes[start:end])


def inclusion_proof(index: int, size: int, source: SubtreeHashes) -> list[bytes]:
    """Return the audit path proving leaf ``index`` is in the tree of ``size`` leaves.

    RFC 9162 §2.1.3.1 PATH(m, D[n]); the path lists siblings from the leaf upwards.
    """
    if not 0 <= index < size:
        raise ValueError(f"leaf index {index} is outside a tree of {size} leaves")

    def path(m: int, start: int, end: int) -> list[bytes]:
        n = end - start
        if n == 1:
            return []
        k = _split(n)
        if m < k:
            return [*path(m, start, start + k), source.subtree(start + k, end)]
        return [*path(m - k, start + k, end), source.subtree(start, start + k)]

    return path(index, 0, size)


def consistency_proof(old_size: int, new_size: int, source: SubtreeHashes) -> list[bytes]:
    """Return the proof that the tree of ``old_size`` leaves is a prefix of ``new_size``.

    RFC 9162 §2.1.4.1 PROOF(m, D[n]) = SUBPROOF(m, D[n], true). An empty proof is
    returned for ``old_size == new_size``; ``old_size == 0`` has nothing to prove.
    """
    if not 0 < old_size <= new_size:
        raise ValueError(f"no consistency proof from size {old_size} to {new_size}")

    def subproof(m: int, start: int, end: int, complete: bool) -> list[bytes]:
        n = end - start
        if m == n:
            return [] if complete else [source.subtree(start, end)]
        k = _split(n)
        if m <= k:
            return [*subproof(m, start, start + k, complete), source.subtree(start + k, end)]
        return [*subproof(m - k, start + k, end, False), source.subtree(start, start + k)]

    return subproof(old_size, 0, new_size, True)


def verify_inclusion(
    *, leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> bool:
    """Return True when ``proof`` shows leaf hash ``leaf`` at ``index`` under ``root``.

    RFC 9162 §2.1.3.2, step by step; any malformed input yields False.
    """
    if not 0 <= index < size or any(len(p) != HASH_SIZE for p in proof):
        return False
    fn, sn = index, size - 1
    r = leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def verify_consistency(
    *,
    old_size: int,
    new_size: int,
    proof: Sequence[bytes],
    old_root: bytes,
    new_root: bytes,
) -> bool:
    """Return True when ``proof`` shows tree ``old_size``/``old_root`` is a prefix of the new one.

    RFC 9162 §2.1.4.2, step by step; any malformed input yields False.
    """
    if not 0 < old_size <= new_size or any(len(p) != HASH_SIZE for p in proof):
        return False
    if old_size == new_size:
        return not proof and old_root == new_root
    if not proof:
        return False
    path = list(proof)
    # A power-of-two old tree is a complete subtree: its root starts the walk.
    if old_size & (old_size - 1) == 0:
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return fr == old_root and sr == new_root and sn == 0


class CompactRange:
    """A streaming tree head: append leaf hashes one by one, ask for the root any time.

    Holds only the O(log n) perfect subtrees on the right edge of the tree.
    ``on_complete(level, index, hash)`` is called for every perfect subtree that
    closes at ``level >= report_level`` (used to check cached interior nodes).
    """

    def __init__(self, *, report_level: int | None = None, on_complete=None):
        self._stack: list[tuple[int, bytes]] = []
        self.size = 0
        self._report_level = report_level
        self._on_complete = on_complete

    def append(self, leaf: bytes) -> None:
        stack = self._stack
        stack.append((0, leaf))
        self.size += 1
        while len(stack) >= 2 and stack[-1][0] == stack[-2][0]:
            level, right = stack.pop()
            _, left = stack.pop()
            merged = node_hash(left, right)
            stack.append((level + 1, merged))
            if self._on_complete is not None and self._report_level == level + 1:
                self._on_complete(level + 1, (self.size >> (level + 1)) - 1, merged)

    def root(self) -> bytes:
        """Return the tree head of the leaves appended so far."""
        if not self._stack:
            return EMPTY_ROOT
        acc = self._stack[-1][1]
        for _, h in reversed(self._stack[:-1]):
            acc = node_hash(h, acc)
        return acc
