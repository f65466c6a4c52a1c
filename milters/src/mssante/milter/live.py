"""Live views of the trust list and the mailbox table, reloaded by watching files (never SIGHUP).

Each transaction takes one :class:`Views` snapshot at MAIL FROM and keeps it until its end, so a
reload never changes a decision in flight. A file that fails to load keeps the last good table.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from mssante import mailboxes
from mssante.mailboxes import MailboxTable
from mssante.milter.metrics import Metrics
from mssante.milter.policy import Views
from mssante.trustlist.index import IndexWatcher, TrustIndex

LOG = logging.getLogger("mssante.milter")


class MailboxWatcher:
    """Reloads the mailbox table when the file's identity (inode, size, mtime) changes."""

    def __init__(
        self,
        path: Path,
        interval: float,
        on_error: Callable[[Exception], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self.interval = interval
        self.on_error = on_error
        self.clock = clock
        self._lock = threading.Lock()
        self._token: tuple[int, int, int] | None = None
        self._checked: float | None = None
        self._table: MailboxTable | None = None

    def _refresh(self) -> None:
        try:
            stat = os.stat(self.path)
            token = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
            if token == self._token and self._table is not None:
                return
            table = mailboxes.load(self.path)
        except (OSError, mailboxes.MailboxTableError) as exc:
            self.on_error(exc)
            return
        if self._table is not None:
            LOG.info("mailbox table reloaded: %d mailboxes", len(table))
        self._table, self._token = table, token

    def get(self) -> MailboxTable:
        now = self.clock()
        with self._lock:
            if self._checked is None or now - self._checked >= self.interval:
                self._checked = now
                self._refresh()
            table = self._table
        if table is None:
            raise RuntimeError(f"no usable mailbox table at {self.path}")
        return table


class LiveViews:
    """Hands out consistent :class:`Views` snapshots and keeps the mailbox gauge current."""

    def __init__(self, trustlist_dir: Path, mailboxes_file: Path, interval: float, metrics: Metrics) -> None:
        self.metrics = metrics
        self.trust = IndexWatcher(
            trustlist_dir, interval_ms=int(interval * 1000), on_failure=self._trust_failed
        )
        self.boxes = MailboxWatcher(mailboxes_file, interval, self._boxes_failed)

    def _trust_failed(self, exc: Exception) -> None:
        LOG.error("trust list index not loaded (keeping the last good one): %s", exc)
        self.metrics.error("trustlist")

    def _boxes_failed(self, exc: Exception) -> None:
        LOG.error("mailbox table not loaded (keeping the last good one): %s", exc)
        self.metrics.error("mailboxes")

    def index(self) -> TrustIndex:
        return self.trust.get()

    def __call__(self) -> Views:
        table = self.boxes.get()
        self.metrics.mailboxes.set(len(table))
        return Views(trust=self.trust.get(), mailboxes=table)
