"""Ed25519 keys and checkpoints in the C2SP signed-note / tlog-checkpoint text formats.

Key ID = first 4 bytes of SHA-256(name || "\\n" || 0x01 || public key). A verifier key is written
``<name>+<key id hex>+<base64(0x01 || public key)>``; a private key
``PRIVATE+KEY+<name>+<key id hex>+<base64(0x01 || seed)>``. A checkpoint body is the origin line,
the tree size, the base64 root hash and one extension line ``time <UTC>``; the signature lines
follow a blank line: ``— <name> <base64(key id || signature)>``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

ALG_ED25519 = b"\x01"
SIG_PREFIX = "\u2014 "
_NAME = re.compile(r"[^\s+]+\Z")


class NoteError(Exception):
    """A key, note or checkpoint that is malformed or whose signature does not verify."""


def key_id(name: str, public: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + ALG_ED25519 + public).digest()[:4]


@dataclass(frozen=True)
class VerifierKey:
    name: str
    public: bytes

    @property
    def key_id(self) -> bytes:
        return key_id(self.name, self.public)

    def encode(self) -> str:
        return f"{self.name}+{self.key_id.hex()}+{base64.b64encode(ALG_ED25519 + self.public).decode()}"

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the raw public key, hex: what people compare by voice or on paper."""
        return hashlib.sha256(self.public).hexdigest()

    @classmethod
    def decode(cls, text: str) -> VerifierKey:
        parts = text.strip().split("+", 2)
        if len(parts) != 3 or not _NAME.match(parts[0]):
            raise NoteError("verifier key is not <name>+<id>+<key>")
        raw = _b64(parts[2])
        if len(raw) != 33 or raw[:1] != ALG_ED25519:
            raise NoteError("verifier key is not an Ed25519 key")
        key = cls(parts[0], raw[1:])
        if parts[1] != key.key_id.hex():
            raise NoteError("verifier key id does not match the key")
        return key

    def verify(self, message: bytes, signature: bytes) -> bool:
        try:
            Ed25519PublicKey.from_public_bytes(self.public).verify(signature, message)
        except InvalidSignature:
            return False
        return True


@dataclass(frozen=True)
class SignerKey:
    name: str
    seed: bytes

    @classmethod
    def generate(cls, name: str) -> SignerKey:
        if not _NAME.match(name):
            raise NoteError(f"key name {name!r} must not contain spaces or '+'")
        raw = Ed25519PrivateKey.generate().private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        return cls(name, raw)

    @property
    def verifier(self) -> VerifierKey:
        private = Ed25519PrivateKey.from_private_bytes(self.seed)
        return VerifierKey(self.name, private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))

    def encode(self) -> str:
        kid = self.verifier.key_id.hex()
        return f"PRIVATE+KEY+{self.name}+{kid}+{base64.b64encode(ALG_ED25519 + self.seed).decode()}"

    @classmethod
    def decode(cls, text: str) -> SignerKey:
        parts = text.strip().split("+", 4)
        if len(parts) != 5 or parts[:2] != ["PRIVATE", "KEY"]:
            raise NoteError("private key is not PRIVATE+KEY+<name>+<id>+<key>")
        raw = _b64(parts[4])
        if len(raw) != 33 or raw[:1] != ALG_ED25519:
            raise NoteError("private key is not an Ed25519 key")
        key = cls(parts[2], raw[1:])
        if key.verifier.key_id.hex() != parts[3]:
            raise NoteError("private key id does not match the key")
        return key

    def sign(self, message: bytes) -> bytes:
        return Ed25519PrivateKey.from_private_bytes(self.seed).sign(message)


def _b64(text: str) -> bytes:
    """Strict base64: the canonical encoding only (no stray padding bits, so no silent bit flips)."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise NoteError(f"invalid base64: {text[:20]!r}") from exc
    if base64.b64encode(raw).decode() != text:
        raise NoteError(f"non-canonical base64: {text[:20]!r}")
    return raw


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes
    time: str

    def body(self) -> str:
        return f"{self.origin}\n{self.size}\n{base64.b64encode(self.root).decode()}\ntime {self.time}\n"

    @classmethod
    def parse_body(cls, body: str) -> Checkpoint:
        lines = body.split("\n")
        if len(lines) < 4 or lines[-1] != "" or not lines[1].isdigit():
            raise NoteError("checkpoint body is not origin, size, root hash")
        if lines[1] != str(int(lines[1])):
            raise NoteError("checkpoint size has leading zeros")
        root = _b64(lines[2])
        if len(root) != 32:
            raise NoteError("checkpoint root hash is not 32 bytes")
        times = [line[5:] for line in lines[3:-1] if line.startswith("time ")]
        return cls(lines[0], int(lines[1]), root, times[0] if times else "")


@dataclass(frozen=True)
class SignedCheckpoint:
    checkpoint: Checkpoint
    text: str
    signatures: tuple[tuple[str, bytes, bytes], ...]  # (name, key id, signature)

    def signed_by(self, key: VerifierKey) -> bool:
        body = self.checkpoint.body().encode()
        return any(
            name == key.name and kid == key.key_id and key.verify(body, sig)
            for name, kid, sig in self.signatures
        )


def sign_checkpoint(checkpoint: Checkpoint, *signers: SignerKey) -> str:
    body = checkpoint.body()
    lines = []
    for signer in signers:
        blob = signer.verifier.key_id + signer.sign(body.encode())
        lines.append(f"{SIG_PREFIX}{signer.name} {base64.b64encode(blob).decode()}\n")
    return body + "\n" + "".join(lines)


def parse_checkpoint(text: str) -> SignedCheckpoint:
    """Split a signed note into its checkpoint and signature lines (signatures not yet checked)."""
    body, sep, sigblock = text.rpartition("\n\n")
    if not sep or not sigblock.endswith("\n"):
        raise NoteError("not a signed note (no blank line before signatures)")
    checkpoint = Checkpoint.parse_body(body + "\n")
    if checkpoint.body() != body + "\n":
        raise NoteError("checkpoint body is not in canonical form")
    signatures = []
    for line in sigblock[:-1].split("\n"):
        if not line.startswith(SIG_PREFIX):
            raise NoteError(f"malformed signature line {line[:40]!r}")
        name, _, blob64 = line[len(SIG_PREFIX) :].partition(" ")
        blob = _b64(blob64)
        if len(blob) != 4 + 64:
            raise NoteError("signature is not an Ed25519 signature")
        signatures.append((name, blob[:4], blob[4:]))
    return SignedCheckpoint(checkpoint, text, tuple(signatures))
