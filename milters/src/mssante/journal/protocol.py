"""The writers' protocol on the owner's unix socket: length-prefixed JSON frames.

Each frame is a 4-byte big-endian length followed by that many bytes of UTF-8 JSON. A request is
``{"op": "append", "record": {...}}`` (or ``checkpoint``, ``rotate-key``, ``purge``, ``status``);
the reply ``{"ok": true, ...}`` or ``{"ok": false, "error": "..."}``. An ``append`` reply comes only
after the record is on disk (fsync).
"""

from __future__ import annotations

import json
import socket
import struct
from dataclasses import dataclass
from typing import Any

MAX_FRAME = 1 << 20
_HEADER = struct.Struct(">I")


class ProtocolError(Exception):
    """A frame that is too large, truncated or not a JSON object."""


@dataclass(frozen=True)
class AppendResult:
    """Where a record went: ``record_id`` ("<host_id>:<index>") is what people quote."""

    record_id: str
    index: int
    time: str


def send(sock: socket.socket, message: dict[str, Any]) -> None:
    data = json.dumps(message, separators=(",", ":")).encode("utf-8")
    if len(data) > MAX_FRAME:
        raise ProtocolError(f"frame of {len(data)} bytes exceeds {MAX_FRAME}")
    sock.sendall(_HEADER.pack(len(data)) + data)


def _read(sock: socket.socket, count: int) -> bytes:
    chunks, missing = [], count
    while missing:
        chunk = sock.recv(missing)
        if not chunk:
            raise ProtocolError("connection closed in the middle of a frame")
        chunks.append(chunk)
        missing -= len(chunk)
    return b"".join(chunks)


def receive(sock: socket.socket) -> dict[str, Any] | None:
    """The next message, or None when the peer closed the connection between frames."""
    first = sock.recv(_HEADER.size)
    if not first:
        return None
    header = first + _read(sock, _HEADER.size - len(first)) if len(first) < _HEADER.size else first
    (length,) = _HEADER.unpack(header)
    if length > MAX_FRAME:
        raise ProtocolError(f"frame of {length} bytes exceeds {MAX_FRAME}")
    try:
        message = json.loads(_read(sock, length).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(f"not JSON: {exc}") from exc
    if not isinstance(message, dict):
        raise ProtocolError("not a JSON object")
    return message
