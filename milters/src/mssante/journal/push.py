"""Pushing checkpoints off the host, so that the host alone cannot rewrite history (TRACE-2).

Each destination is a :class:`Pusher`. A failed push is logged and counted, never fatal: the
checkpoint is already on disk, and the next one supersedes it.
"""

from __future__ import annotations

import logging
import syslog
import urllib.request
from pathlib import Path
from typing import Protocol

from mssante.journal.store import write_atomic

log = logging.getLogger(__name__)


class Pusher(Protocol):
    def push(self, size: int, text: str) -> None: ...


class DirectoryPusher:
    """Copies each checkpoint into a directory (e.g. an NFS or removable mount off the host)."""

    def __init__(self, directory: Path, origin: str) -> None:
        self.directory = directory
        self.prefix = origin.replace("/", "_")

    def push(self, size: int, text: str) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            write_atomic(self.directory / f"{self.prefix}.{size:020d}.note", text.encode())
        except OSError as exc:
            log.error("journal: cannot push checkpoint %d to %s: %s", size, self.directory, exc)


class SyslogPusher:
    """Sends each checkpoint to syslog (one line, the note's newlines as ' | '), for a SIEM."""

    def push(self, size: int, text: str) -> None:
        syslog.syslog(syslog.LOG_INFO, "mssante-journal checkpoint " + text.rstrip("\n").replace("\n", " | "))


class HttpPusher:
    """POSTs each checkpoint (text/plain) to an HTTP endpoint."""

    def __init__(self, url: str, timeout: float = 5.0) -> None:
        self.url = url
        self.timeout = timeout

    def push(self, size: int, text: str) -> None:
        request = urllib.request.Request(  # noqa: S310 - the URL scheme is checked by the config loader
            self.url, data=text.encode(), headers={"Content-Type": "text/plain; charset=utf-8"}, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout):  # noqa: S310
                pass
        except OSError as exc:
            log.error("journal: cannot push checkpoint %d to %s: %s", size, self.url, exc)
