"""RFC 6962 / RFC 9162 Merkle tree: hashing, compact ranges, proofs and their verification.

The verification functions follow the shape of transparency-dev ``proof/verify.go``: they return
nothing on success and raise a typed :class:`ProofError` carrying the expected and computed values.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(data: bytes) -> bytes:
    """SHA-256(0x00 || data)."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || left || right)."""
    return hashlib.sha256(b"\x01" + left + right).digest()


class ProofError(Exception):
    """A proof, root or tree size that does not verify."""


class RootMismatchError(ProofError):
    """The root computed from the data differs from the one that was expected (e.g. signed)."""

    def __init__(self, expected: bytes, computed: bytes) -> None:
        self.expected = expected
        self.computed = computed
        super().__init__(f"root mismatch: expected {expected.hex()}, computed {computed.hex()}")


class ProofSizeError(ProofError):
    """A proof with the wrong number of hashes for the tree sizes involved."""

    def __init__(self, expected: int, got: int) -> None:
        self.expected = expected
        self.got = got
        super().__init__(f"wrong proof size: expected {expected} hashes, got {got}")


class IndexError_(ProofError):
    """A leaf index or tree size outside the tree."""


def _largest_power_below(n: int) -> int:
    """The largest power of two strictly smaller than ``n`` (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def range_nodes(begin: int, end: int) -> list[tuple[int, int]]:
    """The compact-range decomposition of [begin, end): (start, level) of each perfect subtree."""
    nodes = []
    while begin < end:
        level = (begin & -begin).bit_length() - 1 if begin else (end - begin).bit_length() - 1
        while begin + (1 << level) > end:
            level -= 1
        nodes.append((begin, level))
        begin += 1 << level
    return nodes


@dataclass
class CompactRange:
    """The perfect-subtree hashes covering [begin, end), merged as leaves or nodes are appended."""

    begin: int = 0
    end: int = 0
    nodes: list[tuple[int, int, bytes]] = field(default_factory=list)  # (start, level, hash)

    def append(self, leaf: bytes) -> None:
        """Append one leaf hash at position ``end``."""
        if self.begin:
            self.append_node(0, leaf)
            return
        position = count = self.end  # from leaf 0, the stack mirrors the binary digits of ``end``
        self.end += 1
        level = 0
        nodes = self.nodes
        while count & 1:
            leaf = hashlib.sha256(b"\x01" + nodes.pop()[2] + leaf).digest()
            count >>= 1
            level += 1
        nodes.append((position >> level << level, level, leaf))

    def append_node(self, level: int, digest: bytes) -> None:
        """Append the hash of the perfect subtree of 2**level leaves starting at ``end``."""
        start = self.end
        if start % (1 << level):
            raise ProofError(f"subtree of level {level} cannot start at {start}")
        self.end += 1 << level
        while self.nodes and (start >> level) & 1:
            top_start, top_level, top_hash = self.nodes[-1]
            if top_level != level or top_start != start - (1 << level):
                break
            self.nodes.pop()
            digest = node_hash(top_hash, digest)
            start, level = top_start, level + 1
        self.nodes.append((start, level, digest))

    def root(self) -> bytes:
        """The RFC 6962 root of [begin, end) (meaningful when begin is 0)."""
        if not self.nodes:
            return EMPTY_ROOT
        digest = self.nodes[-1][2]
        for _, _, left in reversed(self.nodes[:-1]):
            digest = node_hash(left, digest)
        return digest

    def hashes(self) -> list[bytes]:
        return [digest for _, _, digest in self.nodes]


def root_hash(leaves: Iterable[bytes]) -> bytes:
    """The root of the tree whose leaf hashes are ``leaves``."""
    compact = CompactRange()
    for leaf in leaves:
        compact.append(leaf)
    return compact.root()


class TreeHashes:
    """Subtree hashes of a tree from its leaf hashes, optionally after a purged prefix.

    ``base`` maps (start, level) to the hash of a purged perfect subtree (the compact range kept
    at the purge boundary); ``leaves`` are the leaf hashes from ``offset`` on.
    """

    def __init__(
        self, leaves: Sequence[bytes], offset: int = 0, base: dict[tuple[int, int], bytes] | None = None
    ) -> None:
        self.leaves = leaves
        self.offset = offset
        self.base = base or {}
        self.size = offset + len(leaves)

    def subtree(self, begin: int, end: int) -> bytes:
        """The RFC 6962 hash of leaves [begin, end)."""
        count = end - begin
        if count & (count - 1) == 0 and (key := (begin, count.bit_length() - 1)) in self.base:
            return self.base[key]
        if count == 1:
            if begin < self.offset:
                raise ProofError(f"leaf {begin} was purged and is not covered by the kept range")
            return self.leaves[begin - self.offset]
        split = _largest_power_below(count)
        return node_hash(self.subtree(begin, begin + split), self.subtree(begin + split, end))

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        """RFC 6962 PATH(index, D[0:size])."""
        if not 0 <= index < size <= self.size:
            raise IndexError_(f"leaf {index} is not in a tree of size {size}")
        proof: list[bytes] = []
        begin, end = 0, size
        while end - begin > 1:
            split = begin + _largest_power_below(end - begin)
            if index < split:
                proof.append(self.subtree(split, end))
                end = split
            else:
                proof.append(self.subtree(begin, split))
                begin = split
        return proof[::-1]

    def consistency_proof(self, first: int, second: int) -> list[bytes]:
        """RFC 6962 PROOF(first, D[0:second])."""
        if not 0 <= first <= second <= self.size:
            raise IndexError_(f"cannot prove {first} against {second} (tree size {self.size})")
        if first in (0, second):
            return []
        return self._subproof(first, 0, second, True)

    def _subproof(self, m: int, begin: int, end: int, complete: bool) -> list[bytes]:
        if m == end - begin:
            return [] if complete else [self.subtree(begin, end)]
        split = _largest_power_below(end - begin)
        if m <= split:
            return [*self._subproof(m, begin, begin + split, complete), self.subtree(begin + split, end)]
        return [*self._subproof(m - split, begin + split, end, False), self.subtree(begin, begin + split)]


def _inner_split(index: int, size: int) -> tuple[int, int]:
    """Number of proof hashes below and above the point where the path leaves the right border."""
    inner = (index ^ (size - 1)).bit_length()
    border = bin(index >> inner).count("1")
    return inner, border


def _chain(seed: bytes, proof: Sequence[bytes], index: int, pick: Callable[[int], bool]) -> bytes:
    for i, sibling in enumerate(proof):
        if pick(i):
            seed = node_hash(sibling, seed) if (index >> i) & 1 else node_hash(seed, sibling)
    return seed


def root_from_inclusion_proof(index: int, size: int, leaf: bytes, proof: Sequence[bytes]) -> bytes:
    """The root implied by an inclusion proof (raises on an impossible index or proof size)."""
    if index >= size or index < 0:
        raise IndexError_(f"index {index} is beyond tree size {size}")
    inner, border = _inner_split(index, size)
    if len(proof) != inner + border:
        raise ProofSizeError(inner + border, len(proof))
    digest = _chain(leaf, proof[:inner], index, lambda _i: True)
    for sibling in proof[inner:]:
        digest = node_hash(sibling, digest)
    return digest


def verify_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes], root: bytes) -> None:
    """Check that ``leaf`` is at ``index`` in the tree of ``size`` leaves whose root is ``root``."""
    computed = root_from_inclusion_proof(index, size, leaf, proof)
    if computed != root:
        raise RootMismatchError(root, computed)


def verify_consistency(size1: int, size2: int, root1: bytes, root2: bytes, proof: Sequence[bytes]) -> None:
    """Check that the tree (size2, root2) extends the tree (size1, root1)."""
    if size2 < size1:
        raise IndexError_(f"size2 ({size2}) < size1 ({size1})")
    if size1 == size2:
        if proof:
            raise ProofSizeError(0, len(proof))
        if root1 != root2:
            raise RootMismatchError(root1, root2)
        return
    if size1 == 0:
        if proof:
            raise ProofSizeError(0, len(proof))
        return
    inner, border = _inner_split(size1 - 1, size2)
    shift = (size1 & -size1).bit_length() - 1
    inner -= shift
    seed, start = (root1, 0) if size1 == 1 << shift else (proof[0] if proof else b"", 1)
    if len(proof) != start + inner + border:
        raise ProofSizeError(start + inner + border, len(proof))
    rest = proof[start:]
    mask = (size1 - 1) >> shift
    first = _chain(seed, rest[:inner], mask, lambda i: (mask >> i) & 1 == 1)
    for sibling in rest[inner:]:
        first = node_hash(sibling, first)
    if first != root1:
        raise RootMismatchError(root1, first)
    second = _chain(seed, rest[:inner], mask, lambda _i: True)
    for sibling in rest[inner:]:
        second = node_hash(sibling, second)
    if second != root2:
        raise RootMismatchError(root2, second)
