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

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.milter.harness import write_mailboxes, write_trustlist
from tests.milter.lab import ENV, HOST_PYTHON, MilterLab, start_lab, stop_lab
from tests.support.common import make_base_dir, remove_base_dir, wait_until
from tests.support.smtpclient import TlsOptions, Transcript, send

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
    tls = TlsOptions(ca_file=lab.pki.chain)
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
    "8bit-headers": "Subject: Compte rendu opératoire\r\nX-Note: \xff\xfe raw\r\n\r\nCorps\r\n".encode(
        "latin-1"
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
    sender, victim = f"dr.durand@{lab.peer}", f"secretariat@{lab.local}"
    data = (
        head(sender, f"dr.martin@{lab.local}", outer) + b"Subject: outer\r\n\r\nlegit" + ending
        + f"MAIL FROM:<{sender}>\r\nRCPT TO:<{victim}>\r\nDATA\r\n".encode()
        + head(sender, victim, smuggled) + b"Subject: smuggled\r\n\r\nx\r\n.\r\n"
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


# ---- addresses: look-alike domains, IDN, quoted local parts, case, trailing dots -------------------
def refused_reason(lab: MilterLab, rcpt: str) -> object:
    [record] = [
        r for r in journal(lab, "refused") if r.get("rcpts") == [{"address": rcpt, "status": "refused"}]
    ]
    return record["reason"]


def test_trust7_lookalike_recipients_refused_listed_forms_accepted(lab: MilterLab) -> None:
    """TRUST-7: suffix, prefix, subdomain and label tricks around a trust-space name are refused per
    recipient; the same name in upper case or with a trailing dot (the same domain) is accepted."""
    p = lab.peer
    lookalikes = [
        f"a@{p}.evil.example", f"a@evil{p}", f"a@evil-{p}", f"a@sub.{p}", f"a@xn--{p}",
        f"a@{p.replace('.', '-', 1)}", f"a@{p.split('.')[0]}.mssante.test.evil", "a@[127.0.0.1]",
        "a@hôpital-x.mssante.test", "a@xn--hpital-x-v2a.mssante.test",
    ]  # fmt: skip
    not_names = [f"a@{p}\u3002evil"]  # an ideographic full stop: not a valid IDNA 2008 name at all
    listed = [f"b@{p.upper()}", f"c@{p}.", f'"d"@{p}', f"e@{p.capitalize()}"]
    msgid = make_msgid(domain="bad.test")
    t = outbound(
        lab, lookalikes + not_names + listed, head(f"dr.martin@{lab.local}", "x", msgid) + b"\r\nb\r\n",
        utf8=True,
    )  # fmt: skip
    for rcpt in lookalikes:
        assert t.rcpt[rcpt].code == 550 and "(reason recipient-not-in-trust-space;" in t.rcpt[rcpt].text, rcpt
        assert refused_reason(lab, rcpt) == "recipient-not-in-trust-space"
    for rcpt in not_names:
        assert t.rcpt[rcpt].code == 550 and "(reason bad-address;" in t.rcpt[rcpt].text, rcpt
    assert all(t.rcpt[r].code == 250 for r in listed), t
    assert t.delivered, t
    [record] = [r for r in journal(lab, "accepted") if r.get("queue_id") == t.queue_id]
    assert len(record["rcpts"]) == len(listed)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("sender_of", "code", "reason"),
    [
        (lambda lab: f"x@{lab.peer}.evil.example", 550, "sender-domain-not-listed"),
        (lambda lab: f"x@EVIL{lab.peer}", 550, "sender-domain-not-listed"),
        (lambda lab: f"x@{lab.other}", 550, "peer-cn-not-listed-for-domain"),
        (lambda lab: f"x@{lab.local}", 550, "sender-domain-local"),
        (lambda lab: f"x@{lab.local.upper()}.", 550, "sender-domain-local"),
        (lambda lab: f'"x y"@{lab.peer}', 550, "bad-address"),
        (lambda lab: f"x@{lab.peer.upper()}", 250, None),
        (lambda lab: f"x@{lab.peer}.", 250, None),
    ],
    ids=["suffix", "prefix-case", "other-listed-domain", "local", "local-case-dot", "quoted-space",
         "control-case", "control-trailing-dot"],
)  # fmt: skip
def test_trust6_lookalike_senders_from_a_verified_peer(lab: MilterLab, sender_of, code: int, reason) -> None:  # type: ignore[no-untyped-def]
    """TRUST-6: the peer's certificate only vouches for its own domain, however the name is spelled."""
    sender = sender_of(lab)
    msgid = make_msgid(domain="bad.test")
    t = inbound(lab, head(sender, f"dr.martin@{lab.local}", msgid) + b"\r\nb\r\n", sender=sender)
    assert t.mail is not None and t.mail.code == code, t
    if reason is None:
        assert t.delivered, t
        return
    assert f"(reason {reason};" in t.mail.text
    ref = t.mail.text.split("journal ref ")[1].rstrip(")")
    [record] = [r for r in lab.records() if r["record_id"] == ref]
    assert record["type"] == "refused" and record["reason"] == reason


@pytest.mark.parametrize(
    ("rcpt_of", "code", "reason"),
    [
        (lambda lab: f'"dr.martin"@{lab.local}', 550, "recipient-unknown"),  # local parts match exactly
        (lambda lab: f"DR.MARTIN@{lab.local}", 550, "recipient-unknown"),
        (lambda lab: f"nobody@{lab.local}", 550, "rejected-by-mta"),  # Postfix's own 5.1.1, journaled
        (lambda lab: f"dr.martin@{lab.peer}", 554, "rejected-by-mta"),  # Postfix: relay access denied
        (lambda lab: f"dr.martin@{lab.local.upper()}", 250, None),
        (lambda lab: f"dr.martin@{lab.local}.", 250, None),
    ],
    ids=["quoted-local", "local-case", "unknown", "not-local", "control-domain-case", "control-trailing-dot"],
)
def test_trust6_local_recipient_spellings(lab: MilterLab, rcpt_of, code: int, reason) -> None:  # type: ignore[no-untyped-def]
    """TRUST-6: inbound mail reaches existing local mailboxes only, compared as documented."""
    rcpt = rcpt_of(lab)
    msgid = make_msgid(domain="bad.test")
    t = inbound(lab, head(f"dr.durand@{lab.peer}", rcpt, msgid) + b"\r\nb\r\n", rcpts=[rcpt])
    assert t.rcpt[rcpt].code == code, t
    if reason is None:
        assert t.delivered, t
        return
    if reason != "rejected-by-mta":
        assert f"(reason {reason};" in t.rcpt[rcpt].text
    wait_until(lambda: refused_reason(lab, rcpt) == reason, 10, f"refused record with reason {reason}")


def test_trace1_thousand_recipients_one_record_all_delivered(lab: MilterLab) -> None:
    """TRACE-1: 1,000 recipients (Postfix's smtpd_recipient_limit) in one accepted record, all delivered;
    the 1,001st is deferred by Postfix."""
    rcpts = [f"r{n}@{lab.peer}" for n in range(1001)]
    msgid = make_msgid(domain="bad.test")
    t = outbound(lab, rcpts, head(f"dr.martin@{lab.local}", rcpts[0], msgid) + b"Subject: many\r\n\r\nb\r\n")
    assert all(t.rcpt[r].code == 250 for r in rcpts[:1000]), t.rcpt[rcpts[0]]
    assert t.rcpt[rcpts[1000]].code == 452, t.rcpt[rcpts[1000]]
    assert t.delivered, t
    [record] = [r for r in journal(lab, "accepted") if r.get("queue_id") == t.queue_id]
    assert sorted(r["address"] for r in record["rcpts"]) == sorted(rcpts[:1000])  # type: ignore[union-attr]

    def all_there() -> bool:
        return sum(len(m.rcpt_tos) for m in lab.received(msgid)) >= 1000

    wait_until(all_there, 60, "1,000 recipients at the sink")


# ---- the same questions against the pure policy core, with hypothesis ----------------------------------
PEER, OTHER, LOCAL = "clinique-b.mssante.test", "centre-c.mssante.test", "hopital-a.mssante.test"
PEER_CN = "mx.clinique-b.test"
PORTS = Ports(peer=25, submission=587)


@pytest.fixture(scope="module")
def views() -> Iterator[Views]:
    base = make_base_dir("bad-input-views")
    try:
        domains = {
            PEER: {"u_label": PEER, "cns": [PEER_CN], "dns": [], "local": False},
            OTHER: {"u_label": OTHER, "cns": ["mx.centre-c.test"], "dns": [], "local": False},
            LOCAL: {"u_label": LOCAL, "cns": [], "dns": [], "local": True},
        }
        index = {
            "schema": 1,
            "generated": "2026-11-20T06:00:00Z",
            "source_sha256": "0" * 64,
            "domains": domains,
        }
        link = write_trustlist(base / "trustlist", index)
        boxes = {
            "schema": 1,
            "mailboxes": [{"address": f"dr.martin@{LOCAL}", "type": "PER", "owners": ["dr.martin"]}],
        }
        write_mailboxes(base / "mailboxes.json", boxes)
        yield Views(TrustIndex.load(link), mailboxes.load(base / "mailboxes.json"))
    finally:
        remove_base_dir(base)


def spelled(name: str, prefix: str, suffix: str, flips: list[bool], trailing_dot: bool) -> str:
    cased = "".join(
        c.upper() if flip else c for c, flip in zip(name, flips + [False] * len(name), strict=False)
    )
    return prefix + cased + suffix + ("." if trailing_dot else "")


def effective(domain: str) -> str:
    """What the domain is, as DNS sees it: case-insensitive, one trailing dot is the root."""
    return (domain[:-1] if domain.endswith(".") else domain).lower()


AFFIX = st.text(alphabet="ab-.0", max_size=3)
SPELLING = st.tuples(
    st.sampled_from([PEER, OTHER, LOCAL]), AFFIX, AFFIX, st.lists(st.booleans(), max_size=30), st.booleans()
)
OUTBOUND = Session(port=587, tls_version="TLSv1.3", auth_identity="dr.martin")
INBOUND = Session(port=25, tls_version="TLSv1.3", peer_cn=PEER_CN)


@settings(max_examples=300, deadline=None)
@given(SPELLING)
def test_trust7_property_recipient_in_trust_space_iff_it_is_a_listed_domain(views: Views, spelling) -> None:  # type: ignore[no-untyped-def]
    """TRUST-7: a submitted recipient passes iff its domain IS a listed one (case, root dot); any
    prefix, suffix or inserted label makes it a different domain, refused."""
    domain = spelled(*spelling)
    decision = decide_rcpt(OUTBOUND, f"a@{domain}", views, PORTS)
    if effective(domain) in (PEER, OTHER):
        assert decision.action is Action.CONTINUE, domain
    elif effective(domain) == LOCAL:
        assert decision.reason.value == "recipient-unknown", domain  # local domain, no such mailbox
    else:
        assert decision.action is Action.REFUSE, domain


@settings(max_examples=300, deadline=None)
@given(SPELLING)
def test_trust6_property_peer_certificate_vouches_for_its_domain_only(views: Views, spelling) -> None:  # type: ignore[no-untyped-def]
    """TRUST-6: a verified peer's mail passes MAIL iff the sender's domain is the one listing its CN."""
    domain = spelled(*spelling)
    decision = decide_mail(INBOUND, f"x@{domain}", views, PORTS)
    assert (decision.action is Action.CONTINUE) == (effective(domain) == PEER), (domain, decision)


UNICODE_LOOKALIKES = [
    PEER.replace(".", "\u3002"),  # ideographic full stop
    PEER.replace(".", "\uff0e", 1),  # fullwidth full stop
    "\uff43" + PEER[1:],  # fullwidth c
    PEER + "\u200b",  # zero-width space
    PEER[:3] + "\u00ad" + PEER[3:],  # soft hyphen (mapped to nothing)
]


@pytest.mark.parametrize("domain", UNICODE_LOOKALIKES, ids=ascii)
def test_trust7_unicode_lookalike_recipient_refused(views: Views, domain: str) -> None:
    """TRUST-7: a name that only maps to a listed one (UTS46) is not the name Postfix routes: it is not
    a valid IDNA 2008 name, so it is refused as a bad address, never taken for the listed domain."""
    decision = decide_rcpt(OUTBOUND, f"a@{domain}", views, PORTS)
    assert (decision.action, decision.reason.value) == (Action.REFUSE, "bad-address"), decision
    control = decide_rcpt(OUTBOUND, f"a@{PEER}", views, PORTS)
    assert control.action is not Action.REFUSE, control


# ---- afterwards --------------------------------------------------------------------------------------
def test_trace2_after_the_corpus_milter_answers_and_journal_verifies(lab: MilterLab) -> None:
    """TRACE-2: after the whole corpus the milter still answers and the journal verifies."""
    msgid = make_msgid(domain="bad.test")
    raw = head(f"dr.durand@{lab.peer}", f"dr.martin@{lab.local}", msgid) + b"Subject: after\r\n\r\nok\r\n"
    delivered_intact(lab, inbound(lab, raw), msgid, raw)
    assert lab.process is not None and lab.process.poll() is None
    lab.stop_journal()  # a last checkpoint covering every record
    try:
        verify = subprocess.run(
            [HOST_PYTHON, "-m", "mssante.journal", "verify", "--dir", str(lab.base / "journal"), "--json"],
            env=ENV, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert verify.returncode == 0, verify.stdout + verify.stderr
        assert json.loads(verify.stdout)
    finally:
        lab.start_journal()
