"""Message digests recorded in the journal, computed the same way by the milter and by an auditor.

``body_sha256``: SHA-256 of the message body exactly as the milter receives it, i.e. the bytes
after the blank line that ends the header block, with every line ending as CRLF and dot-stuffing
already removed (SMTP's ``..`` at a line start is a single ``.``). A delivered ``.eml`` file holds
the same body, possibly with LF line endings: :func:`body_sha256_of_message` normalises them to
CRLF. ``headers_sha256``: SHA-256 of the received header block (each header line CRLF-terminated),
informational only, since relays add headers.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable


def to_crlf(data: bytes) -> bytes:
    """Every line ending (LF, CR or CRLF) as CRLF."""
    return data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")


def body_sha256(chunks: Iterable[bytes]) -> str:
    """Hex SHA-256 of the body chunks as the milter receives them (already CRLF, dot-unstuffed)."""
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)
    return digest.hexdigest()


def split_message(message: bytes) -> tuple[bytes, bytes]:
    """(header block, body) of a whole message in CRLF form."""
    data = to_crlf(message)
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return data, b""
    return head + b"\r\n", body


def body_sha256_of_message(message: bytes) -> str:
    """The journal's body digest recomputed from a delivered copy (an .eml file)."""
    return hashlib.sha256(split_message(message)[1]).hexdigest()


def headers_sha256(header_lines: Iterable[tuple[str, str]]) -> str:
    """Hex SHA-256 of ``Name: value`` CRLF lines, in order (the milter's header callback)."""
    digest = hashlib.sha256()
    for name, value in header_lines:
        digest.update(f"{name}: {value}\r\n".encode("utf-8", "surrogateescape"))
    return digest.hexdigest()
