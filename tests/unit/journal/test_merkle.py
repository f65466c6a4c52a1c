"""RFC 6962 Merkle tree against a naive reference, and every single-bit tamper of proofs (TRACE-2)."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mssante.journal.merkle import (
    CompactRange,
    ProofError,
    ProofSizeError,
    RootMismatchError,
    TreeHashes,
    leaf_hash,
    node_hash,
    range_nodes,
    root_hash,
    verify_consistency,
    verify_inclusion,
)


def reference_root(data: list[bytes]) -> bytes:
    """RFC 6962 MTH, written straight from the RFC's definition."""
    if not data:
        return hashlib.sha256(b"").digest()
    if len(data) == 1:
        return hashlib.sha256(b"\x00" + data[0]).digest()
    k = 1
    while k * 2 < len(data):
        k *= 2
    return hashlib.sha256(b"\x01" + reference_root(data[:k]) + reference_root(data[k:])).digest()


def leaves(n: int) -> list[bytes]:
    return [f"leaf {i}".encode() for i in range(n)]


def test_trace2_known_vector() -> None:
    """The RFC 6962 empty-tree and one-leaf roots."""
    assert root_hash([]).hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert root_hash([leaf_hash(b"")]).hex() == (
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
    )


@settings(max_examples=60, deadline=None)
@given(size=st.integers(0, 70))
def test_trace2_root_matches_reference(size: int) -> None:
    data = leaves(size)
    assert root_hash(leaf_hash(d) for d in data) == reference_root(data)


@settings(max_examples=80, deadline=None)
@given(st.data())
def test_trace2_inclusion_proofs_verify(data: st.DataObject) -> None:
    size = data.draw(st.integers(1, 80))
    index = data.draw(st.integers(0, size - 1))
    items = leaves(size)
    hashes = TreeHashes([leaf_hash(d) for d in items])
    proof = hashes.inclusion_proof(index, size)
    verify_inclusion(index, size, leaf_hash(items[index]), proof, reference_root(items))
    with pytest.raises(ProofError):  # control: another leaf does not verify at that place
        verify_inclusion(index, size, leaf_hash(b"other"), proof, reference_root(items))


@settings(max_examples=80, deadline=None)
@given(st.data())
def test_trace2_consistency_proofs_verify(data: st.DataObject) -> None:
    second = data.draw(st.integers(1, 80))
    first = data.draw(st.integers(0, second))
    items = leaves(second)
    hashes = TreeHashes([leaf_hash(d) for d in items])
    proof = hashes.consistency_proof(first, second)
    verify_consistency(first, second, reference_root(items[:first]), reference_root(items), proof)
    if 0 < first < second:  # control: a forked second tree is not consistent
        forked = [*items[: first - 1], b"forked", *items[first:]]
        with pytest.raises(ProofError):
            verify_consistency(first, second, reference_root(items[:first]), reference_root(forked), proof)


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_trace3_purged_prefix_still_proves(data: st.DataObject) -> None:
    """TRACE-3: the compact range kept at a purge boundary is enough for proofs of what remains."""
    size = data.draw(st.integers(2, 70))
    boundary = data.draw(st.integers(1, size - 1))
    index = data.draw(st.integers(boundary, size - 1))
    items = leaves(size)
    full = TreeHashes([leaf_hash(d) for d in items])
    base = {(s, lv): full.subtree(s, s + (1 << lv)) for s, lv in range_nodes(0, boundary)}
    purged = TreeHashes([leaf_hash(d) for d in items[boundary:]], boundary, base)
    verify_inclusion(
        index, size, leaf_hash(items[index]), purged.inclusion_proof(index, size), reference_root(items)
    )
    proof = purged.consistency_proof(boundary, size)
    verify_consistency(boundary, size, reference_root(items[:boundary]), reference_root(items), proof)


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_trace2_range_of_compact_ranges_gives_root(data: st.DataObject) -> None:
    size = data.draw(st.integers(0, 70))
    first = data.draw(st.integers(0, size))
    end = data.draw(st.integers(first, size))
    items = leaves(size)
    full = TreeHashes([leaf_hash(d) for d in items])
    compact = CompactRange()
    for s, lv in range_nodes(0, first):
        compact.append_node(lv, full.subtree(s, s + (1 << lv)))
    for d in items[first:end]:
        compact.append(leaf_hash(d))
    for s, lv in range_nodes(end, size):
        compact.append_node(lv, full.subtree(s, s + (1 << lv)))
    assert compact.root() == reference_root(items)


def _flip(blob: bytes, bit: int) -> bytes:
    return bytes(b ^ (1 << (bit % 8)) if i == bit // 8 else b for i, b in enumerate(blob))


def test_trace2_every_bit_flip_in_an_inclusion_proof_is_caught() -> None:
    items = leaves(11)
    hashes = TreeHashes([leaf_hash(d) for d in items])
    root = reference_root(items)
    proof = hashes.inclusion_proof(6, 11)
    verify_inclusion(6, 11, leaf_hash(items[6]), proof, root)  # control
    for position in range(len(proof)):
        for bit in range(256):
            tampered = list(proof)
            tampered[position] = _flip(proof[position], bit)
            with pytest.raises(RootMismatchError) as caught:
                verify_inclusion(6, 11, leaf_hash(items[6]), tampered, root)
            assert caught.value.expected == root and caught.value.computed != root
    for bit in range(256):  # the root itself
        with pytest.raises(RootMismatchError):
            verify_inclusion(6, 11, leaf_hash(items[6]), proof, _flip(root, bit))


def test_trace2_every_bit_flip_in_a_consistency_proof_is_caught() -> None:
    items = leaves(13)
    hashes = TreeHashes([leaf_hash(d) for d in items])
    root1, root2 = reference_root(items[:6]), reference_root(items)
    proof = hashes.consistency_proof(6, 13)
    verify_consistency(6, 13, root1, root2, proof)
    for position in range(len(proof)):
        for bit in range(256):
            tampered = list(proof)
            tampered[position] = _flip(proof[position], bit)
            with pytest.raises(RootMismatchError):
                verify_consistency(6, 13, root1, root2, tampered)


def test_trace2_wrong_proof_sizes_are_named() -> None:
    items = leaves(8)
    hashes = TreeHashes([leaf_hash(d) for d in items])
    proof = hashes.inclusion_proof(3, 8)
    with pytest.raises(ProofSizeError) as caught:
        verify_inclusion(3, 8, leaf_hash(items[3]), proof[:-1], reference_root(items))
    assert (caught.value.expected, caught.value.got) == (3, 2)
    with pytest.raises(ProofSizeError):
        verify_consistency(3, 8, reference_root(items[:3]), reference_root(items), [])


def test_trace2_node_hash_is_domain_separated() -> None:
    left, right = leaf_hash(b"a"), leaf_hash(b"b")
    assert node_hash(left, right) != leaf_hash(left + right)
