"""From log events to one terminal `delivery` outcome per accepted recipient (TRACE-1, TRACE-2).

Pure state machine: the daemon feeds it the journal's new `accepted` records and the log's events,
and journals what it returns. Its state is plain JSON so that it survives restarts.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from mssante.delivery.parse import Event, Kind


class Outcome(enum.Enum):
    """Terminal outcomes of one recipient (design.md, "The journal")."""

    DELIVERED = "delivered"
    DEFERRED_THEN_DELIVERED = "deferred-then-delivered"
    BOUNCED = "bounced"
    EXPIRED = "expired"
    NOT_QUEUED = "not-queued"


@dataclass(frozen=True)
class Accepted:
    """What the tracker needs of an `accepted` journal record."""

    queue_id: str
    recipients: tuple[str, ...]
    time: float
    message_id: str = ""


@dataclass
class _Message:
    recipients: list[str]
    accepted_at: float
    queued: bool = False
    deferrals: dict[str, int] = field(default_factory=dict)
    done: list[str] = field(default_factory=list)
    message_id: str = ""  # copied to the delivery records, so that `prove --message-id` finds them

    def open_recipients(self) -> list[str]:
        return [r for r in self.recipients if r not in self.done]


@dataclass
class _Tls:
    version: str
    cipher: str
    trust: str


class Tracker:
    """Follows every message the journal accepted until each of its recipients has an outcome."""

    def __init__(self, not_queued_after: float = 600.0) -> None:
        self.not_queued_after = not_queued_after
        self._messages: dict[str, _Message] = {}
        self._tls_by_pid: dict[int, _Tls] = {}

    # -- inputs ---------------------------------------------------------------------------------
    def accept(self, accepted: Accepted) -> None:
        if accepted.queue_id and accepted.queue_id not in self._messages:
            self._messages[accepted.queue_id] = _Message(
                list(accepted.recipients), accepted.time, message_id=accepted.message_id
            )

    def feed(self, event: Event) -> list[dict[str, Any]]:
        """Apply one log event; return the delivery records it settles."""
        if event.kind is Kind.TLS:
            self._tls_by_pid[event.pid] = _Tls(event.tls_version, event.tls_cipher, event.tls_trust)
            return []
        message = self._messages.get(event.queue_id)
        if message is None:  # not an accepted MSSanté message (e.g. a bounce Postfix generated)
            return []
        if event.kind is Kind.QUEUED:
            message.queued = True
        elif event.kind is Kind.RCPT:
            return self._on_recipient(event, message)
        elif event.kind is Kind.EXPIRED:
            return self._settle_all(event.queue_id, message, Outcome.EXPIRED)
        elif event.kind in (Kind.MILTER_REJECT, Kind.CONTENT_REJECT):
            return self._settle_all(event.queue_id, message, Outcome.NOT_QUEUED)
        elif event.kind is Kind.REMOVED and not message.open_recipients():
            del self._messages[event.queue_id]
        return []

    def sweep(self, now: float) -> list[dict[str, Any]]:
        """Accepted messages that Postfix never queued: `not-queued` once the grace time is over."""
        records: list[dict[str, Any]] = []
        for queue_id, message in list(self._messages.items()):
            if not message.queued and now - message.accepted_at >= self.not_queued_after:
                records += self._settle_all(queue_id, message, Outcome.NOT_QUEUED)
        return records

    # -- observations ---------------------------------------------------------------------------
    def open_messages(self, now: float, older_than: float) -> int:
        """Accepted messages with a recipient still lacking an outcome after ``older_than`` seconds."""
        return sum(
            1 for m in self._messages.values() if m.open_recipients() and now - m.accepted_at >= older_than
        )

    # -- transitions ----------------------------------------------------------------------------
    def _on_recipient(self, event: Event, message: _Message) -> list[dict[str, Any]]:
        rcpt = event.recipient
        if rcpt not in message.recipients or rcpt in message.done:
            return []
        message.queued = True
        if event.status == "deferred":
            message.deferrals[rcpt] = message.deferrals.get(rcpt, 0) + 1
            return []
        if event.status == "sent":
            deferred = message.deferrals.get(rcpt, 0) > 0
            outcome = Outcome.DEFERRED_THEN_DELIVERED if deferred else Outcome.DELIVERED
        elif event.status == "expired":
            outcome = Outcome.EXPIRED
        elif event.status == "bounced":
            outcome = Outcome.BOUNCED
        else:  # address verification probes (deliverable/undeliverable) settle nothing
            return []
        return [self._settle(event.queue_id, message, rcpt, outcome, event)]

    def _settle_all(self, queue_id: str, message: _Message, outcome: Outcome) -> list[dict[str, Any]]:
        return [self._settle(queue_id, message, rcpt, outcome, None) for rcpt in message.open_recipients()]

    def _settle(
        self, queue_id: str, message: _Message, rcpt: str, outcome: Outcome, event: Event | None
    ) -> dict[str, Any]:
        message.done.append(rcpt)
        record: dict[str, Any] = {
            "type": "delivery",
            "queue_id": queue_id,
            "rcpt": rcpt,
            "outcome": outcome.value,
        }
        if message.message_id:
            record["message_id"] = message.message_id
        if event is not None:
            record.update(relay=event.relay, dsn=event.dsn, delay_seconds=event.delay_seconds)
            tls = self._tls_by_pid.get(event.pid)
            if tls is not None:
                record.update(tls_version=tls.version, tls_cipher=tls.cipher)
        if not message.open_recipients():
            self._messages.pop(queue_id, None)
        return record

    # -- persistence ----------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {
            qid: {
                "recipients": m.recipients,
                "accepted_at": m.accepted_at,
                "queued": m.queued,
                "deferrals": m.deferrals,
                "done": m.done,
                "message_id": m.message_id,
            }
            for qid, m in self._messages.items()
        }

    def load_json(self, data: dict[str, Any]) -> None:
        self._messages = {qid: _Message(**fields) for qid, fields in data.items()}

    def known(self) -> Iterable[str]:
        return self._messages.keys()
