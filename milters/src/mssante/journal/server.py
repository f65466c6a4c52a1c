"""The journal owner process: a unix socket for writers, group commit, periodic checkpoints, metrics.

Connection threads validate and queue requests; one committer thread takes everything queued,
appends it with one write and one fsync (group commit), then answers each waiting writer. Appends
are therefore ordered and never interleave, and a reply means the record is on disk.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import queue
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from mssante.journal.owner import Journal
from mssante.journal.protocol import AppendResult, ProtocolError, receive, send
from mssante.journal.records import RecordError, RecordType, check_fields

log = logging.getLogger(__name__)
MAX_BATCH = 4096
GATHER_SECONDS = 0.002  # longest wait for requests already read but not yet queued


@dataclass
class _Job:
    op: str
    payload: dict[str, Any]
    future: Future[dict[str, Any]] = field(default_factory=Future)


class _VerifyStatus(Collector):
    """Gauges read, at scrape time, from the periodic self-verification's result file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            status = json.loads(self.path.read_text(encoding="utf-8"))
            when, ok = float(status["time"]), 1.0 if status["ok"] else 0.0
        except (OSError, ValueError, KeyError, TypeError):
            when, ok = 0.0, 0.0
        yield GaugeMetricFamily(
            "mssante_journal_verify_last_run_timestamp_seconds", "End of the last self-verification", when
        )
        yield GaugeMetricFamily("mssante_journal_verify_ok", "1 if the last self-verification passed", ok)


class Metrics:
    def __init__(self, registry: CollectorRegistry, journal: Journal) -> None:
        self.records = Counter("mssante_journal_records", "Records appended", ["type"], registry=registry)
        for rtype in RecordType:
            self.records.labels(rtype.value)
        self.errors = Counter("mssante_journal_append_errors", "Appends not done", registry=registry)
        self.commit = Histogram(
            "mssante_journal_commit_duration_seconds",
            "One group commit including fsync",
            registry=registry,
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
        )
        size = Gauge("mssante_journal_tree_size", "Records in the Merkle tree", registry=registry)
        size.set_function(lambda: journal.size)
        last = Gauge(
            "mssante_journal_last_checkpoint_timestamp_seconds",
            "Time of the last checkpoint",
            registry=registry,
        )
        last.set_function(lambda: journal.last_checkpoint_time)
        registry.register(_VerifyStatus(journal.settings.verify_status_file))


class JournalServer:
    def __init__(
        self, journal: Journal, socket_path: Path, registry: CollectorRegistry | None = None
    ) -> None:
        self.journal = journal
        self.socket_path = socket_path
        self.metrics = Metrics(registry or CollectorRegistry(), journal)
        self.jobs: queue.Queue[_Job | None] = queue.Queue()
        self.broken: str | None = None
        self._listener: socket.socket | None = None
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._arriving = 0  # requests read from a socket and not yet queued
        self._recent: collections.deque[int] = collections.deque([1], maxlen=16)  # recent batch sizes
        self._last_commit = 0.0
        self._handlers: dict[str, Callable[[_Job], dict[str, Any]]] = {
            "checkpoint": lambda job: {"checkpoint": self.journal.checkpoint(force=True)},
            "rotate-key": self._rotate,
            "purge": self._purge,
            "status": lambda job: {
                "size": self.journal.size,
                "checkpoint_size": self.journal.checkpoint_size,
            },
        }

    def start(self) -> None:
        self.socket_path.parent.mkdir(parents=True, exist_ok=True)
        if self.socket_path.exists():
            self.socket_path.unlink()
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(self.socket_path))
        os.chmod(self.socket_path, 0o660)
        listener.listen(128)
        self._listener = listener
        for target in (self._commit_loop, self._accept_loop):
            thread = threading.Thread(target=target, name=f"journal-{target.__name__}", daemon=True)
            thread.start()
            self._threads.append(thread)
        log.info("journal: serving %s, %d records", self.socket_path, self.journal.size)

    def stop(self) -> None:
        """Stop accepting, commit what is queued, write a last checkpoint."""
        self._stopping.set()
        if self._listener is not None:
            self._listener.close()
        self.jobs.put(None)
        self._threads[0].join(timeout=30)
        if self.broken is None:
            self.journal.checkpoint()
        self.journal.close()
        self.socket_path.unlink(missing_ok=True)

    # -- connections -----------------------------------------------------------------------------------
    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stopping.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), name="journal-conn", daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            while True:
                try:
                    message = receive(conn)
                    if message is None:
                        return
                    with self._lock:
                        self._arriving += 1
                    send(conn, self._handle(message))
                except (OSError, ProtocolError) as exc:
                    log.debug("journal: connection dropped: %s", exc)
                    return

    def _handle(self, message: dict[str, Any]) -> dict[str, Any]:
        op = message.get("op")
        problem = self._check_request(op, message)
        job = _Job(str(op), message)
        if problem is None:
            self.jobs.put(job)
        with self._lock:
            self._arriving -= 1
        if problem is not None:
            return self._refuse(problem)
        try:
            return job.future.result(timeout=60)
        except Exception as exc:
            return self._refuse(str(exc))

    def _check_request(self, op: object, message: dict[str, Any]) -> str | None:
        """Why a request is refused before it reaches the committer (None: it goes on)."""
        if op == "append":
            record = message.get("record")
            if not isinstance(record, dict):
                return "append needs a record object"
            if record.get("type") in (RecordType.KEY, RecordType.PURGE):
                return "key and purge records are written by rotate-key and purge only"
            if problems := check_fields(record):
                return "; ".join(problems)
        elif op not in self._handlers:
            return f"unknown op {op!r}"
        if self.broken:
            return f"journal stopped after a write failure: {self.broken}"
        return None

    def _refuse(self, error: str) -> dict[str, Any]:
        self.metrics.errors.inc()
        return {"ok": False, "error": error}

    # -- the committer ---------------------------------------------------------------------------------
    def _commit_loop(self) -> None:
        while True:
            wait = max(0.05, self.journal.settings.checkpoint_interval_seconds / 4)
            try:
                first = self.jobs.get(timeout=wait)
            except queue.Empty:
                first = _Job("tick", {})
            batch = self._gather(first)
            jobs = [job for job in batch if job is not None]
            self._run(jobs)
            if len(jobs) < len(batch):
                return

    def _gather(self, first: _Job | None) -> list[_Job | None]:
        """The first job and those queued (group commit).

        Writers answered by the last commit come back at about the same time: wait for as many as
        the largest of the recent batches held, for at most half the last commit's duration
        (GATHER_SECONDS at most), so that they share the next fsync instead of alternating between
        a batch of one and the rest.
        """
        batch = [first]
        deadline = time.monotonic() + min(GATHER_SECONDS, self._last_commit / 2)
        while len(batch) < MAX_BATCH:
            try:
                batch.append(self.jobs.get_nowait())
                continue
            except queue.Empty:
                pass
            remaining = deadline - time.monotonic()
            if (self._arriving <= 0 and len(batch) >= max(self._recent)) or remaining <= 0:
                break
            try:
                batch.append(self.jobs.get(timeout=remaining))
            except queue.Empty:
                break
        return batch

    def _run(self, jobs: list[_Job]) -> None:
        appends = [job for job in jobs if job.op == "append"]
        try:
            if appends:
                self._commit(appends)
            if self.journal.checkpoint_due():
                self.journal.checkpoint()
        except Exception as exc:
            self._fail(jobs, exc)
            return
        for job in jobs:
            if job.op not in self._handlers:
                continue
            size = self.journal.size
            try:
                job.future.set_result({"ok": True, **self._handlers[job.op](job)})
            except ValueError as exc:  # a bad argument: nothing was written
                job.future.set_exception(exc)
            except Exception as exc:
                if self.journal.size == size and not isinstance(exc, OSError):
                    job.future.set_exception(exc)  # failed before writing anything
                else:
                    self._fail(jobs, exc)
                    return

    def _fail(self, jobs: list[_Job], exc: Exception) -> None:
        """A write failed: the files may hold a partial write, so stop appending until a restart."""
        self.broken = str(exc)
        log.exception("journal: write failed; refusing appends until restart")
        for job in jobs:
            if not job.future.done():
                job.future.set_exception(exc)

    def _commit(self, appends: list[_Job]) -> None:
        started = time.perf_counter()
        results = self.journal.append_batch([job.payload["record"] for job in appends])
        self._last_commit = time.perf_counter() - started
        self._recent.append(len(appends))
        self.metrics.commit.observe(self._last_commit)
        for job, result in zip(appends, results, strict=True):
            if isinstance(result, RecordError):
                job.future.set_result({"ok": False, "error": str(result)})
            else:
                self.metrics.records.labels(job.payload["record"]["type"]).inc()
                job.future.set_result({"ok": True, **_result(result)})

    def _rotate(self, job: _Job) -> dict[str, Any]:
        result = self.journal.rotate_key()
        self.metrics.records.labels(RecordType.KEY.value).inc()
        return _result(result)

    def _purge(self, job: _Job) -> dict[str, Any]:
        days = job.payload.get("older_than_days")
        if not isinstance(days, int) or days < 1:
            raise ValueError("purge needs older_than_days >= 1")
        result = self.journal.purge(days)
        if result is not None:
            self.metrics.records.labels(RecordType.PURGE.value).inc()
        return {"purge": _result(result) if result else None}


def _result(result: AppendResult) -> dict[str, Any]:
    return {"record_id": result.record_id, "index": result.index, "time": result.time}
