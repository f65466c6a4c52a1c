"""Keys and checkpoints in the C2SP signed-note / tlog-checkpoint formats (TRACE-2)."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import pytest

from mssante.journal import keys
from mssante.journal.note import (
    Checkpoint,
    NoteError,
    SignerKey,
    VerifierKey,
    parse_checkpoint,
    sign_checkpoint,
)


def test_trace2_checkpoint_text_follows_c2sp() -> None:
    signer = SignerKey.generate("hospital-1")
    text = sign_checkpoint(
        Checkpoint("mssante-journal/hospital-1", 42, b"\x01" * 32, "2026-11-25T18:00:00Z"), signer
    )
    body, signature = text.split("\n\n")
    assert body.split("\n") == [
        "mssante-journal/hospital-1",
        "42",
        base64.b64encode(b"\x01" * 32).decode(),
        "time 2026-11-25T18:00:00Z",
    ]
    assert signature.startswith("\u2014 hospital-1 ") and signature.endswith("\n")
    blob = base64.b64decode(signature.split(" ")[2])
    public = signer.verifier.public
    assert blob[:4] == hashlib.sha256(b"hospital-1\n\x01" + public).digest()[:4]
    note = parse_checkpoint(text)
    assert note.signed_by(signer.verifier)
    assert not note.signed_by(SignerKey.generate("hospital-1").verifier)  # control


def test_trace2_key_strings_round_trip() -> None:
    signer = SignerKey.generate("hospital-1")
    assert SignerKey.decode(signer.encode()) == signer
    assert VerifierKey.decode(signer.verifier.encode()) == signer.verifier
    assert signer.encode().startswith("PRIVATE+KEY+hospital-1+")
    with pytest.raises(NoteError):
        VerifierKey.decode(signer.verifier.encode().replace("hospital-1", "hospital-2"))


def test_trace2_private_key_is_0600_and_refused_when_open(tmp_path: Path) -> None:
    key = keys.generate(tmp_path / "signing.key", tmp_path / "signing.pub", "hospital-1")
    assert (tmp_path / "signing.key").stat().st_mode & 0o777 == 0o600
    assert keys.load_signer(tmp_path / "signing.key") == key
    assert keys.load_verifier(tmp_path / "signing.pub") == key.verifier
    with pytest.raises(keys.KeyFileError, match="refusing to overwrite"):
        keys.generate(tmp_path / "signing.key", tmp_path / "signing.pub", "hospital-1")
    (tmp_path / "signing.key").chmod(0o644)
    with pytest.raises(keys.KeyFileError, match="0600"):
        keys.load_signer(tmp_path / "signing.key")


def test_trace2_non_canonical_base64_is_malformed() -> None:
    """A flip in base64 padding bits would otherwise decode to the same bytes."""
    signer = SignerKey.generate("h")
    text = sign_checkpoint(Checkpoint("o", 1, b"\x00" * 32, "t"), signer)
    root_line = text.split("\n")[2]
    assert root_line.endswith("A=")
    with pytest.raises(NoteError, match="non-canonical"):
        parse_checkpoint(text.replace(root_line, root_line[:-2] + "B="))
