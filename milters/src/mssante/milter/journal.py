"""The milter's side of the journal: a :class:`JournalSink` and the aggregation of anonymous refusals.

The journal owner process holds the log; the milter appends through ``mssante.journal.client``
(:class:`ClientJournal`). Every append is durable when it returns; a failure raises
:class:`JournalUnavailable` and the milter answers 451 (fail closed). :class:`FileJournal` is a
durable stand-in (one JSON line per record, fsync before returning) for sites and tests without
the journal owner.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from mssante.journal import client
from mssante.journal.records import check_fields
from mssante.milter.reasons import Reason


class JournalUnavailable(Exception):
    """The journal could not make a record durable."""


@dataclass(frozen=True)
class AppendResult:
    record_id: str
    index: int
    time: Any = None


class JournalSink(Protocol):
    def append(self, record: Mapping[str, Any]) -> AppendResult: ...


class ClientJournal:
    """Adapter to the journal owner's client (``mssante.journal.client.JournalClient``)."""

    def __init__(self, socket_path: str) -> None:
        self._client = client.JournalClient(socket_path)

    def append(self, record: Mapping[str, Any]) -> AppendResult:
        try:
            result = self._client.append(record)
        except (client.JournalUnavailable, OSError) as exc:
            raise JournalUnavailable(str(exc)) from exc
        return AppendResult(result.record_id, result.index, result.time)


class FileJournal:
    """Durable stand-in: appends one JSON line per record and fsyncs before returning."""

    def __init__(self, path: Path | str, prefix: str = "r") -> None:
        self.path = Path(path)
        self.prefix = prefix
        self._lock = threading.Lock()
        try:
            with self.path.open("rb") as handle:
                self._count = sum(1 for _ in handle)
        except FileNotFoundError:
            self._count = 0

    def append(self, record: Mapping[str, Any]) -> AppendResult:
        problems = check_fields(record)
        if problems:  # the journal owner refuses such a record too
            raise JournalUnavailable("invalid record: " + "; ".join(problems))
        with self._lock:
            index = self._count
            record_id = f"{self.prefix}-{index:08d}"
            stored = {k: v for k, v in record.items() if v is not None}
            line = json.dumps({"record_id": record_id, "index": index, **stored}, sort_keys=True)
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
                try:
                    os.write(fd, line.encode("utf-8") + b"\n")
                    os.fsync(fd)
                finally:
                    os.close(fd)
            except OSError as exc:
                raise JournalUnavailable(f"{self.path}: {exc.strerror or exc}") from exc
            self._count += 1
            return AppendResult(record_id, index)


def iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Aggregator:
    """Counts refusals of unauthenticated clients per time window and reason; never one fsync each.

    ``count`` only adds to memory; ``flush`` (called by a timer and at shutdown) appends one
    ``refused-aggregate`` record per (window, reason) whose window has ended, and keeps the counts
    for a later attempt when the journal is unavailable. Windows are aligned on multiples of the
    window length; a flush at shutdown ends the current window early (``window_end`` = now), so
    several records may share a window start: their counts add up.
    """

    def __init__(self, sink: JournalSink, window_seconds: float, clock: Callable[[], float]) -> None:
        self.sink = sink
        self.window = window_seconds
        self.clock = clock
        self._lock = threading.Lock()
        self._counts: dict[tuple[float, Reason], int] = {}

    def window_start(self, now: float) -> float:
        return now - (now % self.window)

    def count(self, reason: Reason) -> str:
        """Count one refusal; returns the reference quoted in the SMTP reply."""
        start = self.window_start(self.clock())
        with self._lock:
            key = (start, reason)
            self._counts[key] = self._counts.get(key, 0) + 1
        return f"journal aggregate {iso(start)} {reason.value}"

    def flush(self, force: bool = False) -> int:
        """Append the ended windows (all of them with ``force``); returns how many records."""
        now = self.clock()
        with self._lock:
            ended = (k for k in self._counts if force or k[0] + self.window <= now)
            due = sorted(ended, key=lambda key: (key[0], key[1].value))
            pending = {k: self._counts.pop(k) for k in due}
        items = list(pending.items())
        for written, ((start, reason), count) in enumerate(items):
            record = {
                "type": "refused-aggregate",
                "window_start": iso(start),
                "window_end": iso(min(start + self.window, now)),  # a forced flush ends the window now
                "reason": reason.value,
                "count": count,
            }
            try:
                self.sink.append(record)
            except JournalUnavailable:
                self._restore(items[written:])
                raise
        return len(items)

    def _restore(self, items: list[tuple[tuple[float, Reason], int]]) -> None:
        with self._lock:
            for key, count in items:
                self._counts[key] = self._counts.get(key, 0) + count
