"""`mssante-delivery`: close the loop from acceptance to delivery (TRACE-1, TRACE-2).

One poll: read the journal's new records (accepted messages; our own delivery records, to drop a
pending one that already landed), read the MSSanté instance's new log lines, settle outcomes, save
the intent (position, tracker state, records to append) atomically, then append through the journal
owner. A crash at any point neither loses an outcome nor journals one twice.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from mssante.delivery.follow import LogFollower, Position
from mssante.delivery.journal_tail import JournalTail, TailPosition
from mssante.delivery.metrics import DeliveryMetrics
from mssante.delivery.parse import Event, is_tls_failure, parse_line
from mssante.delivery.tracker import Accepted, Tracker

log = logging.getLogger(__name__)
STATE_SCHEMA = 1
MAX_LINES_PER_POLL = 20_000
MAX_PENDING = 50_000


class JournalSink(Protocol):
    def append(self, record: dict[str, Any]) -> object: ...


@dataclass(frozen=True)
class DeliverySettings:
    log_file: Path
    state_file: Path
    journal_dir: Path
    journal_socket: Path
    syslog_name: str = "postfix-mssante"
    postfix_config_dir: Path | None = None
    poll_seconds: float = 1.0
    not_queued_after_seconds: float = 600.0
    stuck_after_seconds: float = 3600.0
    metrics_listen: str | None = "127.0.0.1:9743"


def _key(record: dict[str, Any]) -> tuple[str, str, str]:
    return (str(record.get("queue_id")), str(record.get("rcpt")), str(record.get("outcome")))


def _accepted(record: dict[str, Any]) -> Accepted | None:
    rcpts = record.get("rcpts")
    if record.get("type") != "accepted" or not record.get("queue_id") or not isinstance(rcpts, list):
        return None
    addresses = tuple(
        str(r["address"]) for r in rcpts if isinstance(r, dict) and r.get("status", "accepted") == "accepted"
    )
    message_id = record.get("message_id")
    return Accepted(
        str(record["queue_id"]), addresses, time.time(), message_id if isinstance(message_id, str) else ""
    )


class DeliveryDaemon:
    def __init__(self, settings: DeliverySettings, journal: JournalSink, metrics: DeliveryMetrics) -> None:
        self.settings = settings
        self.journal = journal
        self.metrics = metrics
        self.tracker = Tracker(settings.not_queued_after_seconds)
        self.pending: list[dict[str, Any]] = []
        self._last_tls_failure: tuple[int, str] | None = None
        state = self._load_state()
        self.tracker.load_json(state.get("tracker", {}))
        self.pending = list(state.get("pending", []))
        self.tail = JournalTail(settings.journal_dir, TailPosition.from_json(state.get("journal")))
        self.follower = LogFollower(settings.log_file, Position.from_json(state.get("log")))
        if not state:
            # First start: follow what happens from now on; history before the tracker existed is
            # not guessed at (a message whose log lines are gone would look "not queued").
            self.tail.skip_to_end()
            self.follower.skip_to_end()

    # -- state --------------------------------------------------------------------------------
    def _load_state(self) -> dict[str, Any]:
        try:
            data = json.loads(self.settings.state_file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        if not isinstance(data, dict) or data.get("schema") != STATE_SCHEMA:
            raise ValueError(
                f"{self.settings.state_file}: not a delivery tracker state (schema {STATE_SCHEMA})"
            )
        return data

    def _save_state(self) -> None:
        state = {
            "schema": STATE_SCHEMA,
            "log": self.follower.position.to_json(),
            "journal": self.tail.position.to_json(),
            "tracker": self.tracker.to_json(),
            "pending": self.pending,
        }
        path = self.settings.state_file
        tmp = path.with_name(path.name + ".tmp")
        with tmp.open("w", encoding="utf-8") as handle:
            json.dump(state, handle, separators=(",", ":"))
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    # -- one poll -----------------------------------------------------------------------------
    def step(self, now: float | None = None) -> int:
        """Run one poll; return how many delivery records reached the journal."""
        now = time.time() if now is None else now
        self._read_journal()
        # Sweep only once caught up with the log: a queue id still unseen was really never queued.
        if len(self.pending) < MAX_PENDING and self._read_log():
            self.pending += self.tracker.sweep(now)
        self._save_state()
        written = self._flush()
        self.metrics.observe(
            self.tracker.open_messages(now, self.settings.stuck_after_seconds), len(self.pending)
        )
        return written

    def _read_journal(self) -> None:
        landed: set[tuple[str, str, str]] = set()
        for record in self.tail.records():
            if (accepted := _accepted(record)) is not None:
                self.tracker.accept(accepted)
            elif record.get("type") == "delivery":
                landed.add(_key(record))
        if landed:
            self.pending = [r for r in self.pending if _key(r) not in landed]

    def _read_log(self) -> bool:
        """Feed the new log lines to the tracker; whether the end of the log was reached."""
        for count, (line, _) in enumerate(self.follower.lines(), 1):
            event = parse_line(line, self.settings.syslog_name)
            if event is not None:
                self._count_tls_failure(event)
                self.pending += self.tracker.feed(event)
            if count >= MAX_LINES_PER_POLL:
                return False
        return True

    def _count_tls_failure(self, event: Event) -> None:
        """One failed attempt per smtp process and message (it logs one line per recipient)."""
        if is_tls_failure(event) and self._last_tls_failure != (event.pid, event.queue_id):
            self._last_tls_failure = (event.pid, event.queue_id)
            self.metrics.tls_failures.inc()

    def _flush(self) -> int:
        written = 0
        while self.pending:
            record = self.pending[0]
            try:
                self.journal.append(record)
            except Exception as exc:  # the journal owner is down or refused: keep it pending
                log.warning("journal append failed, %d delivery records pending: %s", len(self.pending), exc)
                self.metrics.append_errors.inc()
                break
            self.pending.pop(0)
            self.metrics.outcomes.labels(outcome=record["outcome"]).inc()
            written += 1
        if written:
            self._save_state()
        return written

    def run(self, stop: threading.Event, queue_every: float = 30.0) -> None:
        next_queue_count = 0.0
        while not stop.is_set():
            try:
                self.step()
                if self.settings.postfix_config_dir and time.monotonic() >= next_queue_count:
                    next_queue_count = time.monotonic() + queue_every
                    self.metrics.observe_queue(self.settings.postfix_config_dir)
            except (OSError, subprocess.SubprocessError) as exc:
                log.error("delivery tracker poll failed: %s", exc)
            stop.wait(self.settings.poll_seconds)
