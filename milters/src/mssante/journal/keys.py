"""Key files: generation at install, loading, and the key history a verifier follows.

A key in force at tree size S is the one introduced by the last ``key`` record with seq < S. A
rotation appends a ``key`` record (seq j) naming the new key; the checkpoint of size j + 1 is signed
by the old key *and* the new one (the hand-over), and every later checkpoint by the new key only.
So a history rewritten and re-signed with a newer key fails: its older checkpoints are not signed by
the key that was in force at their size, and the hand-over still needs the old key.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from mssante.journal.note import NoteError, SignerKey, VerifierKey
from mssante.journal.store import write_atomic


class KeyFileError(Exception):
    """A key file that is missing, unreadable, too open or malformed."""


def generate(signing_key: Path, public_key: Path, name: str, *, overwrite: bool = False) -> SignerKey:
    """Create the private key (mode 0600) and the public key file; refuse to overwrite by default."""
    if signing_key.exists() and not overwrite:
        raise KeyFileError(f"{signing_key} exists; refusing to overwrite a journal key")
    key = SignerKey.generate(name)
    signing_key.parent.mkdir(parents=True, exist_ok=True)
    public_key.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(signing_key, (key.encode() + "\n").encode(), mode=0o600)
    os.chmod(signing_key, 0o600)
    write_public(public_key, key.verifier)
    return key


def write_public(path: Path, key: VerifierKey) -> None:
    write_atomic(path, (key.encode() + "\n").encode(), mode=0o644)


def load_signer(path: Path) -> SignerKey:
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyFileError(f"cannot read the signing key {path}: {exc}") from exc
    if mode & 0o077:
        raise KeyFileError(f"{path} is readable by others (mode {mode & 0o777:o}); it must be 0600")
    try:
        return SignerKey.decode(text)
    except NoteError as exc:
        raise KeyFileError(f"{path}: {exc}") from exc


def load_verifier(path: Path) -> VerifierKey:
    try:
        return VerifierKey.decode(path.read_text(encoding="ascii"))
    except (OSError, UnicodeDecodeError, NoteError) as exc:
        raise KeyFileError(f"cannot use the public key {path}: {exc}") from exc


@dataclass(frozen=True)
class KeyEpoch:
    """A key and the leaf index of the ``key`` record that introduced it."""

    seq: int
    key: VerifierKey


def key_in_force(epochs: list[KeyEpoch], size: int) -> KeyEpoch | None:
    """The key that must sign a checkpoint of ``size`` (epochs sorted by seq)."""
    current = None
    for epoch in epochs:
        if epoch.seq < size:
            current = epoch
    return current
