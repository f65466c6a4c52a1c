"""Parse the MSSanté Postfix instance's log into delivery events (TRACE-1, TRACE-2).

Only the lines that tell a message's fate matter here; everything else parses to ``None``.
The parser is pure: one line in, one event (or nothing) out.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

# "Nov 25 18:20:01 host postfix-mssante/smtp[123]: text" (postlogd and syslog) or an RFC 3339 stamp.
_LINE = re.compile(
    r"^(?:\w{3} +\d{1,2} \d\d:\d\d:\d\d|\d{4}-\d\d-\d\dT[\d:.]+(?:Z|[+-]\d\d:?\d\d)?) +\S+ +"
    r"(?P<program>[\w.-]+)/(?P<service>[\w./-]+)\[(?P<pid>\d+)\]: +(?P<text>.*)$"
)
# Short (hex) and long (enable_long_queue_ids: base-52 time, 'z', inode) queue ids.
_QID = r"(?P<qid>[0-9A-Za-z]{6,24})"
_RCPT_STATUS = re.compile(
    _QID + r": to=<(?P<rcpt>[^>]*)>,(?: orig_to=<[^>]*>,)? relay=(?P<relay>[^,]+),"
    r"(?: conn_use=\d+,)? delay=(?P<delay>[\d.]+), delays=[\d./]+, dsn=(?P<dsn>\d\.\d{1,3}\.\d{1,3}),"
    r" status=(?P<status>sent|deferred|bounced|expired|undeliverable|deliverable)\b(?: \((?P<reason>.*)\))?"
)
_QUEUED = re.compile(_QID + r": from=<(?P<sender>[^>]*)>, size=\d+, nrcpt=\d+ \(queue active\)")
_EXPIRED = re.compile(_QID + r": from=<[^>]*>, status=expired, returned to sender")
_REMOVED = re.compile(_QID + r": removed$")
_MESSAGE_ID = re.compile(_QID + r": message-id=(?P<message_id>\S*)")
_MILTER_REJECT = re.compile(_QID + r": milter-reject: END-OF-MESSAGE ")
# cleanup's content inspection (header_checks, body_checks, milter_header_checks) refusing or dropping
# the message; after our milter's yes only milter_header_checks (on the headers it added) can do so.
_CONTENT_REJECT = re.compile(_QID + r": (?:milter-header-)?(?:reject|discard): (?:header|body) ")
_TLS = re.compile(
    r"^(?P<trust>Verified|Trusted|Untrusted|Anonymous) TLS connection established to "
    r"(?P<peer>[^ ]+): (?P<version>TLSv[\d.]+) with cipher (?P<cipher>\S+)"
)


class Kind(enum.Enum):
    """What a log line says about a message."""

    QUEUED = "queued"  # qmgr took it into the active queue
    RCPT = "rcpt"  # one recipient's attempt: sent, deferred, bounced, expired
    EXPIRED = "expired"  # qmgr gave up: the remaining recipients expire
    REMOVED = "removed"  # the queue file is gone: no more news about this message
    MESSAGE_ID = "message-id"
    MILTER_REJECT = "milter-reject"  # refused at end of message after all (a later milter)
    CONTENT_REJECT = "content-reject"  # cleanup's header/body checks refused or discarded it
    TLS = "tls"  # an outbound TLS session of an smtp process (no queue id)


@dataclass(frozen=True)
class Event:
    kind: Kind
    pid: int
    service: str
    queue_id: str = ""
    recipient: str = ""
    status: str = ""
    relay: str = ""
    dsn: str = ""
    delay_seconds: float = 0.0
    reason: str = ""  # the text in parentheses after status=..., e.g. the next hop's reply
    message_id: str = ""
    tls_trust: str = ""
    tls_version: str = ""
    tls_cipher: str = ""


def parse_line(line: str, program: str | None = None) -> Event | None:
    """Return the event a log line carries, or ``None`` when it carries none we track.

    ``program`` restricts parsing to one Postfix instance's ``syslog_name`` (e.g. ``postfix-mssante``).
    """
    head = _LINE.match(line.rstrip("\r\n"))
    if head is None or (program is not None and head["program"] != program):
        return None
    text, pid, service = head["text"], int(head["pid"]), head["service"]
    if m := _RCPT_STATUS.match(text):
        return Event(
            Kind.RCPT,
            pid,
            service,
            queue_id=m["qid"],
            recipient=m["rcpt"],
            status=m["status"],
            relay=m["relay"],
            dsn=m["dsn"],
            delay_seconds=float(m["delay"]),
            reason=m["reason"] or "",
        )
    for kind, pattern in _SIMPLE:
        if m := pattern.match(text):
            message_id = m["message_id"] if kind is Kind.MESSAGE_ID else ""
            return Event(kind, pid, service, queue_id=m["qid"], message_id=message_id)
    if m := _TLS.match(text):
        return Event(
            Kind.TLS, pid, service, tls_trust=m["trust"], tls_version=m["version"], tls_cipher=m["cipher"]
        )
    return None


_SIMPLE: tuple[tuple[Kind, re.Pattern[str]], ...] = (
    (Kind.QUEUED, _QUEUED),
    (Kind.EXPIRED, _EXPIRED),
    (Kind.REMOVED, _REMOVED),
    (Kind.MESSAGE_ID, _MESSAGE_ID),
    (Kind.MILTER_REJECT, _MILTER_REJECT),
    (Kind.CONTENT_REJECT, _CONTENT_REJECT),
)

# Postfix smtp(8) deferral and bounce texts of a TLS failure with the next hop: no STARTTLS or a failed
# handshake, a certificate chain not trusted, a name (CN/SAN) that does not match the policy.
_TLS_FAILURE = re.compile(
    r"TLS is required, but|Cannot start TLS|TLS handshake|while performing the (?:initial )?TLS"
    r"|Server certificate not (?:trusted|verified)|certificate verif\w* fail|hostname not verified"
    r"|[Pp]eer certificate|SSL_(?:connect|accept) error",
)


def is_tls_failure(event: Event) -> bool:
    """Whether a deferral or bounce of an outbound SMTP delivery is due to TLS (not a refusal)."""
    return (
        event.kind is Kind.RCPT
        and event.status in ("deferred", "bounced")
        and event.service.rpartition("/")[2] == "smtp"
        and bool(_TLS_FAILURE.search(event.reason))
    )
