"""The trust decision of design.md as pure functions (no I/O, no pymilter).

Inbound (peer port): TLS >= 1.2, a verified peer certificate CN listed for the sender's domain (any
listed CN for a null sender), local recipients only. Outbound (submission port): an authenticated
identity or a known application certificate that owns the sender mailbox (null sender allowed for
read receipts), recipients local or in the trust space. Anything else is refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

from mssante.mailboxes import Mailbox, MailboxTable, split_address
from mssante.milter.reasons import CONTINUE, Decision, Direction, Reason, refuse, tempfail


class TrustView(Protocol):
    """What the policy needs from the compiled trust list (``mssante.trustlist.index.TrustIndex``)."""

    def lookup(self, domain: str) -> object | None: ...

    def cn_listed_for(self, domain: str, cn: str) -> bool: ...

    def any_listed_cn(self, cn: str) -> bool: ...

    def is_local(self, domain: str) -> bool: ...


@dataclass(frozen=True)
class Ports:
    """Listener ports telling the direction (milter config ``peer_port`` and ``submission_port``)."""

    peer: int = 25
    submission: int = 587


@dataclass(frozen=True)
class Views:
    """The snapshot a transaction works with from MAIL to end of message."""

    trust: TrustView
    mailboxes: MailboxTable


@dataclass(frozen=True)
class Session:
    """Facts about the SMTP client, from Postfix's macros (absent means unknown or not verified)."""

    port: int | None
    client_address: str = ""
    tls_version: str | None = None
    tls_cipher: str | None = None
    peer_cn: str | None = None  # {cert_subject}: present only when the certificate verified
    peer_issuer: str | None = None
    auth_identity: str | None = None  # {auth_authen}


_TLS_RE = re.compile(r"^TLSv(\d+)(?:\.(\d+))?$")


def tls_ok(version: str | None) -> bool:
    """True for TLS 1.2 or later (Postfix's ``{tls_version}``, e.g. ``TLSv1.3``)."""
    match = _TLS_RE.match(version or "")
    if match is None:
        return False
    return (int(match.group(1)), int(match.group(2) or 0)) >= (1, 2)


def direction_of(port: int | None, ports: Ports) -> Direction:
    if port == ports.peer:
        return Direction.INBOUND
    if port == ports.submission:
        return Direction.OUTBOUND
    return Direction.UNKNOWN


def is_null_sender(sender: str) -> bool:
    return sender.strip() in ("", "<>")


def is_identified(session: Session) -> bool:
    """An authenticated client or a verified peer: its refusals are journaled one by one."""
    return bool(session.auth_identity or session.peer_cn)


def application_mailboxes(session: Session, views: Views) -> tuple[Mailbox, ...]:
    """Application mailboxes bound to the client's verified certificate CN (AUTH-2)."""
    if not session.peer_cn:
        return ()
    return views.mailboxes.by_cert_cn(session.peer_cn)


def _is_local(domain: str, views: Views) -> bool:
    return views.trust.is_local(domain) or domain in views.mailboxes.domains()


def decide_mail(session: Session, sender: str, views: Views, ports: Ports) -> Decision:
    """The decision at MAIL FROM (whole transaction)."""
    if session.port is None:
        return tempfail(Reason.MISSING_MACRO)
    direction = direction_of(session.port, ports)
    if direction is Direction.UNKNOWN:
        return refuse(Reason.UNKNOWN_LISTENER)
    if not tls_ok(session.tls_version):
        return refuse(Reason.TLS_REQUIRED)
    if direction is Direction.INBOUND:
        return _inbound_mail(session, sender, views)
    return _outbound_mail(session, sender, views)


def _inbound_mail(session: Session, sender: str, views: Views) -> Decision:
    cn = session.peer_cn
    if not cn:
        return refuse(Reason.PEER_CERT_MISSING)
    if is_null_sender(sender):
        return CONTINUE if views.trust.any_listed_cn(cn) else refuse(Reason.PEER_CN_NOT_LISTED)
    return _inbound_sender(cn, sender, views)


def _inbound_sender(cn: str, sender: str, views: Views) -> Decision:
    parts = split_address(sender)
    if parts is None:
        return refuse(Reason.BAD_ADDRESS)
    domain = parts[1]
    if _is_local(domain, views):
        return refuse(Reason.SENDER_DOMAIN_LOCAL)
    if views.trust.lookup(domain) is None:
        return refuse(Reason.SENDER_DOMAIN_NOT_LISTED)
    if not views.trust.cn_listed_for(domain, cn):
        return refuse(Reason.PEER_CN_NOT_LISTED_FOR_DOMAIN)
    return CONTINUE


def _outbound_mail(session: Session, sender: str, views: Views) -> Decision:
    apps = application_mailboxes(session, views)
    identity = session.auth_identity
    if not identity and not apps:
        return refuse(Reason.NOT_AUTHENTICATED)
    if is_null_sender(sender):
        return CONTINUE
    if split_address(sender) is None:
        return refuse(Reason.BAD_ADDRESS)
    box = views.mailboxes.by_address(sender)
    if box is None:
        return refuse(Reason.SENDER_NOT_MAILBOX)
    if (identity and identity in box.owners) or box in apps:
        return CONTINUE
    return refuse(Reason.SENDER_NOT_OWNED)


def decide_rcpt(session: Session, recipient: str, views: Views, ports: Ports) -> Decision:
    """The decision for one RCPT TO (a refusal loses only this recipient)."""
    parts = split_address(recipient)
    if parts is None:
        return refuse(Reason.BAD_ADDRESS)
    local = _is_local(parts[1], views)
    if local and views.mailboxes.by_address(recipient) is None:
        return refuse(Reason.RECIPIENT_UNKNOWN)
    direction = direction_of(session.port, ports)
    if direction is Direction.INBOUND:
        return CONTINUE if local else refuse(Reason.RECIPIENT_NOT_LOCAL)
    if direction is Direction.OUTBOUND:
        if local or views.trust.lookup(parts[1]) is not None:
            return CONTINUE
        return refuse(Reason.RECIPIENT_NOT_IN_TRUST_SPACE)
    return refuse(Reason.UNKNOWN_LISTENER)


def decide_body(longest_line: int, limit: int = 998) -> Decision:
    """Body lines over 998 octets (RFC 5322 2.1.1) are refused rather than folded later."""
    return refuse(Reason.LINE_TOO_LONG) if longest_line > limit else CONTINUE
