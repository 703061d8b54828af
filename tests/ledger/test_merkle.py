"""RFC 6962 / 9162 Merkle hashing and proofs, cross-checked three ways:

1. published test vectors (Certificate Transparency reference data over the
   eight inputs "", 00, 10, 2021, 3031, 40414243, 5051..57, 6061..6f);
2. a naive reference written straight from the RFC 9162 §2.1 definitions
   (MTH, PATH, SUBPROOF) in this file;
3. property tests: every generated proof verifies, and any altered proof,
   index, size or root does not.
"""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clinical_mlops.ledger.merkle import (
    EMPTY_ROOT,
    CompactRange,
    ListHashes,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    root_from_leaf_hashes,
    verify_consistency,
    verify_inclusion,
)

INPUTS = [
    bytes.fromhex(h)
    for h in [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ]
]
ROOTS = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
INCLUSION = [  # (leaf index, tree size, audit path)
    (
        0,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        5,
        8,
        [
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (
        1,
        5,
        [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
]
CONSISTENCY = [  # (old size, new size, proof)
    (1, 1, []),
    (
        1,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        5,
        [
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
]
LEAVES = [leaf_hash(d) for d in INPUTS]


# -- a naive reference, written from RFC 9162 §2.1 definitions -----------------------------
def _h(b: bytes) -> bytes:
    return hashlib.sha256(b).digest()


def ref_mth(data: list[bytes]) -> bytes:
    n = len(data)
    if n == 0:
        return _h(b"")
    if n == 1:
        return _h(b"\x00" + data[0])
    k = 1
    while k * 2 < n:
        k *= 2
    return _h(b"\x01" + ref_mth(data[:k]) + ref_mth(data[k:]))


def ref_path(m: int, data: list[bytes]) -> list[bytes]:
    n = len(data)
    if n == 1:
        return []
    k = 1
    while k * 2 < n:
        k *= 2
    if m < k:
        return [*ref_path(m, data[:k]), ref_mth(data[k:])]
    return [*ref_path(m - k, data[k:]), ref_mth(data[:k])]


def ref_subproof(m: int, data: list[bytes], b: bool) -> list[bytes]:
    n = len(data)
    if m == n:
        return [] if b else [ref_mth(data)]
    k = 1
    while k * 2 < n:
        k *= 2
    if m <= k:
        return [*ref_subproof(m, data[:k], b), ref_mth(data[k:])]
    return [*ref_subproof(m - k, data[k:], False), ref_mth(data[:k])]


def hexes(hs: list[bytes]) -> list[str]:
    return [h.hex() for h in hs]


# -- published vectors ---------------------------------------------------------------------
def test_empty_root_is_sha256_of_nothing():
    assert EMPTY_ROOT.hex() == ROOTS[0]
    assert root_from_leaf_hashes([]) == EMPTY_ROOT


@pytest.mark.parametrize("size", range(0, 9))
def test_roots_match_published_vectors(size):
    assert root_from_leaf_hashes(LEAVES[:size]).hex() == ROOTS[size]
    tree = CompactRange()
    for leaf in LEAVES[:size]:
        tree.append(leaf)
    assert tree.root().hex() == ROOTS[size]


@pytest.mark.parametrize(("index", "size", "path"), INCLUSION)
def test_inclusion_proofs_match_published_vectors(index, size, path):
    proof = inclusion_proof(index, size, ListHashes(LEAVES[:size]))
    assert hexes(proof) == path
    assert verify_inclusion(
        leaf=LEAVES[index], index=index, size=size, proof=proof, root=bytes.fromhex(ROOTS[size])
    )


@pytest.mark.parametrize(("old", "new", "path"), CONSISTENCY)
def test_consistency_proofs_match_published_vectors(old, new, path):
    proof = consistency_proof(old, new, ListHashes(LEAVES[:new]))
    assert hexes(proof) == path
    assert verify_consistency(
        old_size=old,
        new_size=new,
        proof=proof,
        old_root=bytes.fromhex(ROOTS[old]),
        new_root=bytes.fromhex(ROOTS[new]),
    )


# -- against the naive RFC reference, every shape up to 40 leaves --------------------------
DATA = [bytes([i, i * 7 % 256]) for i in range(40)]
DATA_LEAVES = [leaf_hash(d) for d in DATA]


@pytest.mark.parametrize("size", range(1, 41))
def test_proofs_equal_rfc_reference_for_every_index(size):
    source = ListHashes(DATA_LEAVES[:size])
    root = ref_mth(DATA[:size])
    assert root_from_leaf_hashes(DATA_LEAVES[:size]) == root
    for m in range(size):
        proof = inclusion_proof(m, size, source)
        assert proof == ref_path(m, DATA[:size])
        assert verify_inclusion(leaf=DATA_LEAVES[m], index=m, size=size, proof=proof, root=root)
    for old in range(1, size + 1):
        proof = consistency_proof(old, size, source)
        assert proof == ref_subproof(old, DATA[:size], True)
        assert verify_consistency(
            old_size=old, new_size=size, proof=proof, old_root=ref_mth(DATA[:old]), new_root=root
        )


# -- what must not verify ------------------------------------------------------------------
POOL = [leaf_hash(bytes([i, 9])) for i in range(130)]


@settings(max_examples=300, deadline=None)
@given(size=st.integers(2, 64), data=st.data())
def test_altered_inclusion_proofs_fail(size, data):
    leaves = POOL[:size]
    index = data.draw(st.integers(0, size - 1))
    root = root_from_leaf_hashes(leaves)
    proof = inclusion_proof(index, size, ListHashes(leaves))
    leaf = leaves[index]
    assert verify_inclusion(leaf=leaf, index=index, size=size, proof=proof, root=root)
    which = data.draw(st.sampled_from(["proof", "index", "size", "root", "leaf", "drop", "add"]))
    if which == "proof":
        i = data.draw(st.integers(0, len(proof) - 1))
        proof = [*proof[:i], bytes([proof[i][0] ^ 1]) + proof[i][1:], *proof[i + 1 :]]
    elif which == "index":
        index = data.draw(st.integers(0, size - 1).filter(lambda j: j != index))
    elif which == "size":
        # A different size comes with that tree's true root (as a signed checkpoint would).
        size = data.draw(st.integers(index + 1, 128).filter(lambda s: s != size))
        root = root_from_leaf_hashes(POOL[:size])
    elif which == "root":
        root = bytes([root[0] ^ 0x80]) + root[1:]
    elif which == "leaf":
        leaf = leaf_hash(b"forged")
    elif which == "drop":
        proof = proof[:-1]
    else:
        proof = [*proof, EMPTY_ROOT]
    assert not verify_inclusion(leaf=leaf, index=index, size=size, proof=proof, root=root)


@settings(max_examples=200, deadline=None)
@given(new=st.integers(2, 70), data=st.data())
def test_altered_consistency_proofs_fail(new, data):
    leaves = [leaf_hash(bytes([i, 3])) for i in range(new)]
    old = data.draw(st.integers(1, new - 1))
    source = ListHashes(leaves)
    proof = consistency_proof(old, new, source)
    old_root, new_root = source.subtree(0, old), source.subtree(0, new)
    assert verify_consistency(
        old_size=old, new_size=new, proof=proof, old_root=old_root, new_root=new_root
    )
    which = data.draw(st.sampled_from(["proof", "old_root", "new_root", "old_size", "empty"]))
    if which == "proof":
        i = data.draw(st.integers(0, len(proof) - 1))
        proof = [*proof[:i], bytes([proof[i][0] ^ 1]) + proof[i][1:], *proof[i + 1 :]]
    elif which == "old_root":
        old_root = leaf_hash(b"other history")
    elif which == "new_root":
        new_root = leaf_hash(b"forked")
    elif which == "old_size":
        old = data.draw(st.integers(1, new - 1).filter(lambda m: m != old))
    else:
        proof = []
    assert not verify_consistency(
        old_size=old, new_size=new, proof=proof, old_root=old_root, new_root=new_root
    )


def test_compact_range_reports_completed_chunks():
    seen = []
    tree = CompactRange(report_level=2, on_complete=lambda lvl, idx, h: seen.append((idx, h)))
    for leaf in DATA_LEAVES[:13]:
        tree.append(leaf)
    assert [i for i, _ in seen] == [0, 1, 2]
    assert seen[1][1] == root_from_leaf_hashes(DATA_LEAVES[4:8])
