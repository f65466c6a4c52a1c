#!/usr/bin/env python3
"""Standalone verifier of an MSSanté journal export (needs Python 3.11+ and `cryptography` only).

    python3 verify_bundle.py BUNDLE [--public-key KEY] [--eml FILE ...] [--proof FILE ...]

BUNDLE is the export directory or .zip. The script checks that the signed checkpoint is signed by
the journal key, that the exported records are exactly the leaves first..end-1 of the Merkle tree
(RFC 6962) that the checkpoint signs, and, with --eml, finds the record of a delivered message by
its body digest. With --proof it checks a proof written by `mssante-journal prove`.
Exit status: 0 verified, 1 verification failed, 2 usage error.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import sys
import zipfile
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey


class Failed(Exception):
    """The bundle does not verify."""


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def parse_key(text: str) -> tuple[str, bytes, bytes]:
    """A C2SP verifier key "<name>+<key id hex>+<base64(0x01 || public key)>"."""
    name, kid, raw64 = text.strip().split("+", 2)
    raw = base64.b64decode(raw64)
    if len(raw) != 33 or raw[0] != 1:
        raise Failed("the public key is not an Ed25519 verifier key")
    if hashlib.sha256(name.encode() + b"\n" + raw).digest()[:4].hex() != kid:
        raise Failed("the public key's id does not match the key")
    return name, bytes.fromhex(kid), raw[1:]


def open_checkpoint(text: str, key: str) -> tuple[str, int, bytes]:
    """Check the signed note against ``key``; return (origin, tree size, root hash)."""
    name, kid, public = parse_key(key)
    body, sep, sigs = text.rpartition("\n\n")
    if not sep:
        raise Failed("the checkpoint is not a signed note")
    body += "\n"
    for line in sigs.rstrip("\n").split("\n"):
        signer, _, blob64 = line.removeprefix("\u2014 ").partition(" ")
        blob = base64.b64decode(blob64)
        if signer == name and blob[:4] == kid:
            try:
                Ed25519PublicKey.from_public_bytes(public).verify(blob[4:], body.encode())
            except InvalidSignature:
                continue
            lines = body.split("\n")
            return lines[0], int(lines[1]), base64.b64decode(lines[2])
    raise Failed("the checkpoint carries no valid signature by this public key")


def root_from_range(left: list[Any], leaves: list[bytes], right: list[Any]) -> bytes:
    """Root of the tree from the compact range before, the leaves, and the compact range after."""
    stack: list[tuple[int, int, bytes]] = []
    end = 0

    def push(level: int, digest: bytes) -> None:
        nonlocal end
        start = end
        end += 1 << level
        while stack and (start >> level) & 1 and stack[-1][:2] == (start - (1 << level), level):
            digest = node_hash(stack.pop()[2], digest)
            start, level = start - (1 << level), level + 1
        stack.append((start, level, digest))

    for start, level, digest in left:
        if start != end:
            raise Failed("the range proof does not start at leaf 0")
        push(level, bytes.fromhex(digest))
    for leaf in leaves:
        push(0, leaf)
    for start, level, digest in right:
        if start != end:
            raise Failed("the range proof after the records is not contiguous")
        push(level, bytes.fromhex(digest))
    root = stack[-1][2] if stack else hashlib.sha256(b"").digest()
    for _, _, digest in reversed(stack[:-1]):
        root = node_hash(digest, root)
    return root


def read_bundle(path: Path) -> dict[str, bytes]:
    if path.is_dir():
        return {p.name: p.read_bytes() for p in path.iterdir() if p.is_file()}
    with zipfile.ZipFile(path) as archive:
        return {Path(n).name: archive.read(n) for n in archive.namelist() if not n.endswith("/")}


def verify_bundle(files: dict[str, bytes], key: str) -> list[dict[str, Any]]:
    origin, size, root = open_checkpoint(files["checkpoint.note"].decode(), key)
    proof = json.loads(files["range.json"])
    lines = files["records.jsonl"].split(b"\n")[:-1]
    records, leaves = [], []
    for offset, data in enumerate(lines):
        record = json.loads(data)
        if record.get("seq") != proof["first"] + offset:
            raise Failed(
                f"record {proof['first'] + offset}: found seq {record.get('seq')} (missing or moved)"
            )
        records.append(record)
        leaves.append(leaf_hash(data))
    if proof["first"] + len(leaves) != proof["end"] or proof["size"] != size:
        raise Failed("the records do not cover the announced range")
    computed = root_from_range(proof["left"], leaves, proof["right"])
    if computed != root:
        raise Failed(f"root mismatch: the checkpoint signs {root.hex()}, the records give {computed.hex()}")
    print(f"OK: records {proof['first']}..{proof['end'] - 1} are exactly those of {origin} at size {size}")
    return records


def verify_proof(text: bytes, key: str) -> None:
    """Check a proof (or a list of proofs) written by `mssante-journal prove`."""
    loaded = json.loads(text)
    for proof in loaded if isinstance(loaded, list) else [loaded]:
        verify_one_proof(proof, key)


def verify_one_proof(proof: dict[str, Any], key: str) -> None:
    _, size, root = open_checkpoint(proof["checkpoint"], key)
    index, digest = proof["index"], leaf_hash(proof["record"].encode())
    if size != proof["tree_size"] or index >= size:
        raise Failed("the proof is not for the tree its checkpoint signs")
    fn, sn = index, size - 1
    for sibling in (bytes.fromhex(h) for h in proof["proof"]):
        if sn == 0:
            raise Failed("the inclusion proof is too long")
        if fn & 1 or fn == sn:
            digest = node_hash(sibling, digest)
            while not fn & 1 and fn:
                fn, sn = fn >> 1, sn >> 1
        else:
            digest = node_hash(digest, sibling)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0 or digest != root:
        raise Failed(f"record {index} is not in the signed tree (root {digest.hex()} != {root.hex()})")
    print(
        f"OK: record {index} ({json.loads(proof['record'])['time']}) is in the signed journal of size {size}"
    )


def eml_body_sha256(message: bytes) -> str:
    """The journal's body digest: SHA-256 of the body after the blank line, CRLF line endings."""
    data = message.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")
    _, sep, body = data.partition(b"\r\n\r\n")
    return hashlib.sha256(body if sep else b"").hexdigest()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bundle", type=Path, nargs="?", default=Path(__file__).resolve().parent)
    parser.add_argument("--public-key", help="the journal public key (text or a file); default: the bundle's")
    parser.add_argument("--eml", type=Path, action="append", default=[], help="a delivered message to find")
    parser.add_argument("--proof", type=Path, action="append", default=[], help="a proof from `prove`")
    args = parser.parse_args(argv)
    try:
        files = read_bundle(args.bundle)
        key = args.public_key or files.get("public-key.txt", b"").decode()
        if args.public_key and Path(args.public_key).is_file():
            key = Path(args.public_key).read_text()
        if not args.public_key:
            print("note: using the public key shipped in the bundle; compare its fingerprint with yours:")
        print("public key fingerprint:", hashlib.sha256(parse_key(key)[2]).hexdigest())
        records = verify_bundle(files, key) if "records.jsonl" in files or not args.proof else []
        for proof in args.proof:
            verify_proof(proof.read_bytes(), key)
        for eml in args.eml:
            digest = eml_body_sha256(eml.read_bytes())
            found = [r for r in records if r.get("body_sha256") == digest]
            print(f"{eml}: body sha256 {digest}: {len(found)} record(s)")
            for record in found:
                print("  ", json.dumps(record, ensure_ascii=False, sort_keys=True))
            if not found:
                return 1
    except (Failed, KeyError, ValueError, OSError, zipfile.BadZipFile) as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
