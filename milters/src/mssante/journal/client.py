"""Client for writers (milter, delivery tracker, admin commands): append through the owner's socket.

Thread-safe: each thread keeps its own connection (the pymilter adapter runs one thread per SMTP
connection). Every failure raises :class:`JournalUnavailable`, so a caller has one thing to catch
(the milter then answers 4xx).
"""

from __future__ import annotations

import select
import socket
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mssante.journal.protocol import AppendResult, ProtocolError, receive, send

__all__ = ["AppendResult", "JournalClient", "JournalUnavailable"]


class JournalUnavailable(Exception):
    """The journal did not durably accept the request (down, refused, timed out, invalid record)."""


def _closed_by_peer(sock: socket.socket) -> bool:
    """Whether the server closed this idle connection (readable means EOF or error), without blocking."""
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))


class JournalClient:
    def __init__(self, socket_path: Path | str, timeout: float = 5.0) -> None:
        self.socket_path = str(socket_path)
        self.timeout = timeout
        self._local = threading.local()

    def append(self, record: Mapping[str, object]) -> AppendResult:
        """Append ``record``; returns once it is on disk. Raises JournalUnavailable otherwise."""
        reply = self.request("append", record=dict(record))
        try:
            return AppendResult(str(reply["record_id"]), int(reply["index"]), str(reply["time"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise JournalUnavailable(f"malformed reply: {reply!r}") from exc

    def request(self, op: str, **arguments: Any) -> dict[str, Any]:
        """Send one request and return the (successful) reply."""
        sock = self._connection()
        try:
            send(sock, {"op": op, **arguments})
            reply = receive(sock)
        except (OSError, ProtocolError) as exc:
            self.close()
            raise JournalUnavailable(f"journal at {self.socket_path}: {exc}") from exc
        if reply is None:
            self.close()
            raise JournalUnavailable(f"journal at {self.socket_path} closed the connection")
        if not reply.get("ok"):
            raise JournalUnavailable(str(reply.get("error", "refused")))
        return reply

    def _connection(self) -> socket.socket:
        sock: socket.socket | None = getattr(self._local, "sock", None)
        if sock is not None and _closed_by_peer(sock):
            self.close()  # the server closed it (restart): a fresh one, nothing was sent on it
            sock = None
        if sock is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(self.timeout)
            try:
                sock.connect(self.socket_path)
            except OSError as exc:
                sock.close()
                raise JournalUnavailable(
                    f"cannot connect to the journal at {self.socket_path}: {exc}"
                ) from exc
            self._local.sock = sock
        return sock

    def close(self) -> None:
        """Close this thread's connection (others keep theirs)."""
        sock = getattr(self._local, "sock", None)
        if sock is not None:
            sock.close()
            self._local.sock = None
