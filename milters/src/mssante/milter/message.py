"""Per-message state: envelope, snapshot, headers and a streaming view of the body.

The body digest is SHA-256 of the body as the milter sees it (CRLF-terminated lines, dot-unstuffed),
the same bytes a delivered copy gives back; the header digest covers the received header block as
``name: value`` CRLF lines (informational, design.md "The journal").
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from mssante.mdn import MAX_MDN_BYTES, is_mdn_content_type
from mssante.milter.policy import Views


@dataclass
class BodyScan:
    """Streams body chunks: digest, size, and the longest line in octets (CRLF excluded)."""

    digest: hashlib._Hash = field(default_factory=hashlib.sha256)
    size: int = 0
    current: int = 0
    longest: int = 0

    last_cr: bool = False

    def feed(self, chunk: bytes) -> None:
        self.digest.update(chunk)
        self.size += len(chunk)
        start = 0
        while (end := chunk.find(b"\n", start)) >= 0:
            prev_cr = chunk[end - 1] == 13 if end > start else (start == 0 and self.last_cr)
            self.longest = max(self.longest, self.current + end - start - int(prev_cr))
            self.current = 0
            start = end + 1
        if start < len(chunk):
            self.current += len(chunk) - start
            self.last_cr = chunk[-1] == 13
            self.longest = max(self.longest, self.current - int(self.last_cr))


@dataclass
class Message:
    """One transaction, from MAIL FROM to end of message (or abort)."""

    sender: str
    views: Views
    accepted: list[str] = field(default_factory=list)
    queue_id: str | None = None
    message_id: str | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)
    header_digest: hashlib._Hash = field(default_factory=hashlib.sha256)
    header_size: int = 0
    body: BodyScan = field(default_factory=BodyScan)
    receipt_body: bytearray | None = None  # kept only when Content-Type announces an MDN (MSG-3)

    def add_header(self, name: str, value: str) -> None:
        self.headers.append((name, value))
        line = f"{name}: {value}\r\n".encode("utf-8", "surrogateescape")
        self.header_digest.update(line)
        self.header_size += len(line)
        if name.lower() == "message-id" and self.message_id is None:
            self.message_id = value.strip()
        if name.lower() == "content-type" and is_mdn_content_type(value):
            self.receipt_body = bytearray()

    def keep_for_receipt(self, chunk: bytes) -> None:
        """Keep the body of a read receipt, bounded: a larger "receipt" is not parsed at all."""
        if self.receipt_body is None:
            return
        if self.header_size + 2 + len(self.receipt_body) + len(chunk) > MAX_MDN_BYTES:
            self.receipt_body = None
            return
        self.receipt_body += chunk

    def receipt_bytes(self) -> bytes | None:
        """The whole message (headers as received, body) when it may be a read receipt."""
        if self.receipt_body is None:
            return None
        head = "".join(f"{name}: {value}\r\n" for name, value in self.headers)
        return head.encode("utf-8", "surrogateescape") + b"\r\n" + bytes(self.receipt_body)

    @property
    def size(self) -> int:
        """Header block, the blank line and the body, in octets as the milter saw them."""
        return self.header_size + 2 + self.body.size
