"""A bad-input corpus through the real chain (issue 10): nothing crashes, every decision stays right.

The process-test lab (``tests.milter.lab``): real Postfix from postfix_settings.yml, the real milter
and journal owner on /usr/bin/python3, the test PKI, an aiosmtpd sink. Each case asserts the reply
codes a client sees and the journal's reason; malformed content that Postfix lets through is accepted,
journaled and delivered byte for byte (MSG-2: never altered), while framing attacks (bare LF, SMTP
smuggling) are refused by Postfix and smuggle nothing. Afterwards the milter still answers and
``mssante-journal verify`` passes. Look-alike domains are also checked against the pure policy core
with hypothesis (TRUST-6, TRUST-7).
"""

from __future__ import annotations

import json
import re
import socket
import ssl
import subprocess
from collections.abc import Iterator
from email.utils import make_msgid
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.milter.harness import write_mailboxes, write_trustlist
from tests.milter.lab import ENV, HOST_PYTHON, MilterLab, mailbox_table, start_lab, stop_lab, trust_index
from tests.support.common import make_base_dir, remove_base_dir, wait_until
from tests.support.smtpclient import Transcript, send

from mssante import mailboxes
from mssante.journal.digest import body_sha256_of_message
from mssante.lab.pki import Pki
from mssante.milter.policy import Ports, Session, Views, decide_mail, decide_rcpt
from mssante.milter.reasons import Action
from mssante.trustlist.index import TrustIndex


@pytest.fixture(scope="module")
def lab(pki: Pki) -> Iterator[MilterLab]:
    instance = start_lab(pki)
    try:
        yield instance
    finally:
        stop_lab(instance)


def head(sender: str, rcpt: str, msgid: str, extra: bytes = b"") -> bytes:
    return f"From: <{sender}>\r\nTo: <{rcpt}>\r\nMessage-ID: {msgid}\r\n".encode() + extra


def inbound(lab: MilterLab, message: bytes, sender: str = "", rcpts: list[str] | None = None) -> Transcript:
    """From the verified peer (its listed certificate) to the local mailbox, unless told otherwise."""
    sender = sender or f"dr.durand@{lab.peer}"
    return lab.send(lab.peer_port, sender, rcpts or [f"dr.martin@{lab.local}"], message, cert=lab.pki.peer)


def outbound(lab: MilterLab, rcpts: list[str], message: bytes, utf8: bool = False) -> Transcript:
    """From the authenticated owner of dr.martin@ on the submission port."""
    pki = lab.pki
    from tests.support.smtpclient import TlsOptions

    tls = TlsOptions(ca_file=pki.chain)
    return send(
        lab.address, lab.submission_port, sender=f"dr.martin@{lab.local}", recipients=rcpts,
        message=message, tls=tls, auth=("dr.martin", "secret-martin"),
        mail_options=("SMTPUTF8",) if utf8 else (),
    )  # fmt: skip


def journal(lab: MilterLab, kind: str) -> list[dict[str, object]]:
    return [r for r in lab.records() if r["type"] == kind]


def delivered_intact(lab: MilterLab, t: Transcript, msgid: str, raw: bytes) -> None:
    """Accepted, journaled with the body digest of what was sent, delivered with that very body."""
    assert t.delivered, t
    [record] = [r for r in journal(lab, "accepted") if r.get("queue_id") == t.queue_id]
    assert record["reason"] == "accepted"
    [got] = wait_until(lambda: lab.received(msgid), 20, "delivery at the sink")
    assert record["body_sha256"] == body_sha256_of_message(raw)
    assert body_sha256_of_message(got.data) == record["body_sha256"]


# ---- content that Postfix lets through: accepted, journaled, delivered unaltered (MSG-2) ---------------
CONTENT = {
    "malformed-mime": (
        b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="unterminated\r\n\r\n'
        b"--unterminated\r\nContent-Type: text/plain; charset=\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        b"@@@ not base64 ===\r\n--other\r\n\r\nno closing boundary\r\n"
    ),
    "nested-mime-without-boundary": (
        b"MIME-Version: 1.0\r\nContent-Type: multipart/alternative\r\n\r\n--\r\n--\r\n"
    ),
    "8bit-headers": "Subject: Compte rendu opératoire — urgent\r\nX-Note: \xff\xfe raw\r\n\r\nCorps\r\n".encode(
        "latin-1", "replace"
    ),
    "utf8-headers": "Subject: Résultats d'analyses ✓\r\n\r\nCorps éèà\r\n".encode(),
    "rfc2047-headers": (
        b"Subject: =?utf-8?q?Compte_rendu_op=C3=A9ratoire?= =?iso-8859-1?b?6SDg?=\r\n"
        b"X-Broken: =?utf-8?q?unterminated =?bogus?x?zz?= =?utf-8?b?////?=\r\n\r\nCorps\r\n"
    ),
    "nul-bytes": b"Subject: nul\r\n\r\nbefore\x00after\r\n\x00\x00\r\n",
    "huge-headers": b"".join(f"X-Filler-{n}: {'x' * 900}\r\n\t{'y' * 900}\r\n".encode() for n in range(40))
    + b"Subject: huge\r\n\r\nBody\r\n",
    "long-folded-header": b"References: "
    + b"\r\n ".join(b"<%d@ref.test>" % n for n in range(3000))
    + b"\r\n\r\nB\r\n",
    "dot-lines": b"Subject: dots\r\n\r\n.\r\n..\r\n. leading\r\n",
    "no-body": b"Subject: empty\r\n",
}


@pytest.mark.parametrize("case", sorted(CONTENT))
def test_msg2_odd_content_accepted_journaled_and_delivered_unaltered(lab: MilterLab, case: str) -> None:
    """MSG-2, TRACE-1: odd but deliverable content passes the milter intact and is journaled."""
    msgid = make_msgid(domain="bad.test")
    raw = head(f"dr.durand@{lab.peer}", f"dr.martin@{lab.local}", msgid) + CONTENT[case]
    if b"\r\n\r\n" not in raw:
        raw += b"\r\n"
    delivered_intact(lab, inbound(lab, raw), msgid, raw)


# ---- framing: bare LF and SMTP smuggling (raw socket: smtplib would repair the line ends) -------------
class RawSmtp:
    """A byte-exact SMTP client over STARTTLS with the peer's certificate."""

    def __init__(self, lab: MilterLab) -> None:
        plain = socket.create_connection((lab.address, lab.peer_port), timeout=20)
        self.sock: socket.socket = plain
        self.reader = plain.makefile("rb")
        self.reply()
        self.command(b"EHLO raw.test")
        assert self.command(b"STARTTLS")[0] == 220
        context = ssl.create_default_context(cafile=str(lab.pki.chain))
        context.check_hostname = False
        context.load_cert_chain(str(lab.pki.peer.fullchain), str(lab.pki.peer.key))
        self.sock = context.wrap_socket(plain)
        self.reader = self.sock.makefile("rb")
        self.command(b"EHLO raw.test")

    def reply(self) -> tuple[int, str]:
        lines = []
        while True:
            line = self.reader.readline()
            if not line:
                return 0, "connection closed"
            lines.append(line.decode("utf-8", "replace").rstrip("\r\n"))
            if line[3:4] != b"-":
                return int(line[:3]), "\n".join(lines)

    def command(self, line: bytes) -> tuple[int, str]:
        self.sock.sendall(line + b"\r\n")
        return self.reply()

    def replies_until_closed(self) -> list[tuple[int, str]]:
        """Every further reply (QUIT sent), until the server closes the connection."""
        found = []
        try:
            self.sock.sendall(b"QUIT\r\n")
            while (got := self.reply())[0]:
                found.append(got)
        except OSError:
            pass
        return found

    def close(self) -> None:
        self.sock.close()


def raw_transaction(lab: MilterLab, data: bytes) -> list[tuple[int, str]]:
    """MAIL, RCPT, DATA, then ``data`` as is; every reply from the end of DATA on."""
    client = RawSmtp(lab)
    try:
        assert client.command(f"MAIL FROM:<dr.durand@{lab.peer}>".encode())[0] == 250
        assert client.command(f"RCPT TO:<dr.martin@{lab.local}>".encode())[0] == 250
        assert client.command(b"DATA")[0] == 354
        client.sock.sendall(data)
        return [client.reply(), *client.replies_until_closed()]
    finally:
        client.close()


def test_msg2_bare_lf_refused_by_postfix_crlf_control_accepted(lab: MilterLab) -> None:
    """design.md: smtpd_forbid_bare_newline = reject; a bare LF in DATA is refused, nothing journaled."""
    msgid = make_msgid(domain="bad.test")
    raw = (
        head(f"dr.durand@{lab.peer}", f"dr.martin@{lab.local}", msgid)
        + b"Subject: lf\r\n\r\nbare\nLF\r\n.\r\n"
    )
    replies = raw_transaction(lab, raw)
    assert replies[0][0] // 100 == 5, replies
    control_id = make_msgid(domain="bad.test")
    control = (
        head(f"dr.durand@{lab.peer}", f"dr.martin@{lab.local}", control_id)
        + b"Subject: crlf\r\n\r\nok\r\n.\r\n"
    )
    assert raw_transaction(lab, control)[0][0] == 250
    wait_until(lambda: lab.received(control_id), 20, "the control at the sink")
    assert not lab.received(msgid)
    assert msgid not in {r.get("message_id") for r in journal(lab, "accepted")}


@pytest.mark.parametrize("ending", [b"\n.\r\n", b"\r.\n", b"\n.\n", b"\r.\r\n", b"\r\n.\n"], ids=repr)
def test_trust6_smtp_smuggling_smuggles_nothing(lab: MilterLab, ending: bytes) -> None:
    """TRUST-6: a fake end of data followed by a second transaction (to another mailbox, as the peer)
    never delivers nor journals the smuggled message; the milter still answers afterwards."""
    outer, smuggled = make_msgid(domain="bad.test"), make_msgid(domain="smuggled.test")
    data = (
        head(f"dr.durand@{lab.peer}", f"dr.martin@{lab.local}", outer) + b"Subject: outer\r\n\r\nlegit" + ending
        + f"MAIL FROM:<dr.durand@{lab.peer}>\r\nRCPT TO:<secretariat@{lab.local}>\r\nDATA\r\n".encode()
        + head(f"dr.durand@{lab.peer}", f"secretariat@{lab.local}", smuggled) + b"Subject: smuggled\r\n\r\nx\r\n.\r\n"
    )  # fmt: skip
    replies = raw_transaction(lab, data)
    if re.search(rb"(?<!\r)\n", ending):
        assert replies[0][0] // 100 == 5, replies  # a bare LF: Postfix refuses the whole DATA
    else:
        assert replies[0][0] == 250, replies  # a bare CR ends nothing: one message, the rest is its body
    control_id = make_msgid(domain="bad.test")
    control = (
        head(f"dr.durand@{lab.peer}", f"dr.martin@{lab.local}", control_id) + b"Subject: c\r\n\r\nok\r\n"
    )
    delivered_intact(lab, inbound(lab, control), control_id, control)
    with lab.sink.lock:
        assert not [m for m in lab.sink.messages if f"secretariat@{lab.local}" in m.rcpt_tos]
    ids = {r.get("message_id") for r in journal(lab, "accepted")}
    assert smuggled not in ids
