"""The stage chain of one SMTP connection: policy, tagging, journal and metrics (no pymilter here).

The adapter translates each callback into one method call of :class:`Conversation` and maps the
returned :class:`Decision` to a milter reply. Exceptions are bugs or I/O failures: the adapter
counts them and answers 451.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

from mssante.mdn import parse_receipt
from mssante.milter import records, tagging
from mssante.milter.journal import Aggregator, JournalSink, JournalUnavailable
from mssante.milter.message import Message
from mssante.milter.metrics import Metrics
from mssante.milter.policy import (
    Ports,
    Session,
    Views,
    decide_body,
    decide_mail,
    decide_rcpt,
    direction_of,
    is_identified,
)
from mssante.milter.reasons import CONTINUE, Action, Decision, Direction, Reason, accept, refuse, tempfail

Macros = Callable[[str], str | None]
LOG = logging.getLogger("mssante.milter")
SETTINGS_HINT = "check the milter_*_macros of postfix_settings.yml"


@dataclass
class Services:
    """What every conversation shares: configuration, live views, journal and metrics."""

    ports: Ports
    views: Callable[[], Views]
    journal: JournalSink
    aggregator: Aggregator
    metrics: Metrics
    host_id: str
    clock: Callable[[], float] = time.monotonic


@dataclass(frozen=True)
class EomResult:
    """End-of-message answer plus the header changes to apply before it."""

    decision: Decision
    remove: tuple[tuple[str, int], ...] = ()
    add: tuple[tuple[str, str], ...] = ()


def _macro(macros: Macros, name: str) -> str | None:
    value = macros("{" + name + "}" if len(name) > 1 else name)
    return value if value else None


@dataclass
class Conversation:
    """State and decisions of one SMTP connection."""

    services: Services
    session: Session = field(default_factory=lambda: Session(port=None))
    message: Message | None = None

    @property
    def direction(self) -> Direction:
        return direction_of(self.session.port, self.services.ports)

    @contextmanager
    def timed(self, stage: str) -> Iterator[None]:
        start = self.services.clock()
        try:
            yield
        finally:
            self.services.metrics.observe(stage, self.services.clock() - start)

    def _missing(self, macro: str, stage: str) -> None:
        self.services.metrics.missing(macro)
        LOG.warning("expected Postfix macro {%s} did not arrive at %s: %s", macro, stage, SETTINGS_HINT)

    def connect(self, client_address: str, macros: Macros) -> Decision:
        port = _macro(macros, "daemon_port")
        if port is None:
            self._missing("daemon_port", "connect")
        self.session = Session(
            port=int(port) if port and port.isdigit() else None, client_address=client_address
        )
        return CONTINUE

    def _read_client_macros(self, macros: Macros) -> None:
        s = self.session
        self.session = replace(
            s,
            tls_version=_macro(macros, "tls_version") or s.tls_version,
            tls_cipher=_macro(macros, "cipher") or s.tls_cipher,
            peer_cn=_macro(macros, "cert_subject") or s.peer_cn,
            peer_issuer=_macro(macros, "cert_issuer") or s.peer_issuer,
            auth_identity=_macro(macros, "auth_authen") or s.auth_identity,
        )

    def helo(self, macros: Macros) -> Decision:
        self._read_client_macros(macros)
        return CONTINUE

    def mail(self, sender: str, macros: Macros) -> Decision:
        self.message = None
        self._read_client_macros(macros)
        if self.session.tls_version is None and self.session.port is not None:
            self._missing("tls_version", "MAIL")
        try:
            views = self.services.views()
        except Exception:
            LOG.exception("trust list or mailbox table unavailable")
            self.services.metrics.error("trustlist")
            return self._fail(tempfail(Reason.TRUSTLIST_UNAVAILABLE))
        decision = decide_mail(self.session, sender, views, self.services.ports)
        if decision.action is not Action.CONTINUE:
            return self._refusal(decision, sender, [])
        self.message = Message(sender=sender, views=views)
        return CONTINUE

    def rcpt(self, recipient: str, macros: Macros) -> Decision:
        message = self.message
        if message is None:
            return self._fail(tempfail(Reason.INTERNAL_ERROR))
        if _macro(macros, "rcpt_mailer") == "error":
            reply = " ".join(v for v in (_macro(macros, "rcpt_host"), _macro(macros, "rcpt_addr")) if v)
            self._refusal(refuse(Reason.REJECTED_BY_MTA), message.sender, [recipient], reply)
            return CONTINUE
        decision = decide_rcpt(self.session, recipient, message.views, self.services.ports)
        if decision.action is not Action.CONTINUE:
            return self._refusal(decision, message.sender, [recipient])
        message.accepted.append(recipient)
        return CONTINUE

    def data(self, macros: Macros) -> Decision:
        if self.message is not None:
            self.message.queue_id = _macro(macros, "i") or self.message.queue_id
        return CONTINUE

    def header(self, name: str, value: str) -> Decision:
        if self.message is not None:
            self.message.add_header(name, value)
        return CONTINUE

    def body(self, chunk: bytes) -> Decision:
        if self.message is not None:
            self.message.body.feed(chunk)
            self.message.keep_for_receipt(chunk)
        return CONTINUE

    def eom(self, macros: Macros) -> EomResult:
        message, self.message = self.message, None
        if message is None:
            return EomResult(self._fail(tempfail(Reason.INTERNAL_ERROR)))
        message.queue_id = _macro(macros, "i") or message.queue_id
        if message.queue_id is None:
            self._missing("i", "end of message")
            return EomResult(self._fail(tempfail(Reason.MISSING_MACRO)))
        body = decide_body(message.body.longest)
        if body.action is not Action.CONTINUE:
            return EomResult(self._refusal(body, message.sender, message.accepted, message=message))
        decision = accept()
        try:
            with self.timed("journal"):
                result = self.services.journal.append(
                    records.accepted(self.session, self.direction, message, decision)
                )
        except JournalUnavailable:
            LOG.exception("journal append failed for an accepted message")
            self.services.metrics.error("journal")
            return EomResult(self._fail(tempfail(Reason.JOURNAL_UNAVAILABLE)))
        self.services.metrics.decision(self.direction, decision)
        self._journal_receipt(message)
        adds = tagging.additions(result.record_id, self.services.host_id, self.direction.value, "accepted")
        return EomResult(decision, tagging.removals(message.headers), adds)

    def _journal_receipt(self, message: Message) -> None:
        """An accepted read receipt gets an `mdn` record too (MSG-3); the message is journaled already."""
        raw = message.receipt_bytes()
        receipt = parse_receipt(raw) if raw is not None else None
        if receipt is None:
            return
        try:
            with self.timed("journal"):
                self.services.journal.append(records.mdn(message, receipt))
        except JournalUnavailable:  # the accepted record holds; only the receipt's link is missing
            LOG.exception("journal append failed for a read receipt")
            self.services.metrics.error("journal")

    def abort(self) -> None:
        self.message = None

    def _fail(self, decision: Decision) -> Decision:
        self.services.metrics.decision(self.direction, decision)
        return decision

    def _refusal(
        self,
        decision: Decision,
        sender: str | None,
        rcpts: list[str],
        reply: str | None = None,
        message: Message | None = None,
    ) -> Decision:
        """Journal (identified client) or aggregate (anonymous) a refusal; the reply quotes it."""
        if decision.action is Action.TEMPFAIL:
            return self._fail(decision)
        if is_identified(self.session):
            record = records.refused(
                session=self.session,
                direction=self.direction,
                sender=sender,
                rcpts=rcpts,
                decision=decision,
                message=message,
                reply=reply,
            )
            try:
                with self.timed("journal"):
                    result = self.services.journal.append(record)
            except JournalUnavailable:
                LOG.exception("journal append failed for a refusal")
                self.services.metrics.error("journal")
                return self._fail(tempfail(Reason.JOURNAL_UNAVAILABLE))
            reference = f"journal ref {result.record_id}"
        else:
            reference = self.services.aggregator.count(decision.reason)
            self.services.metrics.aggregated.labels(reason=decision.reason.value).inc()
        self.services.metrics.decision(self.direction, decision)
        return decision.with_reference(reference)
