"""Delivery tracker metrics (docs/monitoring.md): outcomes, stuck messages, the instance's queue."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge

OUTCOMES = ("delivered", "deferred-then-delivered", "bounced", "expired", "not-queued")


class DeliveryMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.outcomes = Counter(
            "mssante_delivery_outcomes",
            "Terminal delivery outcomes journaled, per recipient.",
            ["outcome"],
            registry=registry,
        )
        for outcome in OUTCOMES:
            self.outcomes.labels(outcome=outcome)
        self.append_errors = Counter(
            "mssante_delivery_journal_errors",
            "Failed appends of delivery records to the journal (they stay pending and are retried).",
            registry=registry,
        )
        self.tls_failures = Counter(
            "mssante_delivery_tls_failures",
            "Delivery attempts to trust-space peers deferred or bounced by a TLS failure"
            " (handshake, certificate verification, name match).",
            registry=registry,
        )
        self.stuck = Gauge(
            "mssante_delivery_stuck_messages",
            "Accepted messages with a recipient still lacking a final outcome after the stuck delay.",
            registry=registry,
        )
        self.pending = Gauge(
            "mssante_delivery_pending_records",
            "Delivery records settled but not yet acknowledged by the journal.",
            registry=registry,
        )
        self.queue_messages = Gauge(
            "mssante_queue_messages", "Messages in the MSSanté instance's queue.", registry=registry
        )
        self.queue_oldest = Gauge(
            "mssante_queue_oldest_message_age_seconds",
            "Age of the oldest message in the MSSanté instance's queue (0 when empty).",
            registry=registry,
        )

    def observe(self, stuck: int, pending: int) -> None:
        self.stuck.set(stuck)
        self.pending.set(pending)

    def observe_queue(self, postfix_config_dir: Path, now: float | None = None) -> None:
        """Count the queue with ``postqueue -j`` (one JSON object per message)."""
        now = time.time() if now is None else now
        out = subprocess.run(
            ["postqueue", "-c", str(postfix_config_dir), "-j"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
        arrivals = [json.loads(line).get("arrival_time", now) for line in out.splitlines() if line.strip()]
        self.queue_messages.set(len(arrivals))
        self.queue_oldest.set(max(0.0, now - min(arrivals)) if arrivals else 0.0)
