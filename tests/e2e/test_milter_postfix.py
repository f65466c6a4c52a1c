"""The real milter process behind a real MSSanté-style Postfix instance, with the test PKI (issue 4).

TRUST-6 (peers), TRUST-7 (outbound), AUTH-2/AUTH-3 (identity and sender ownership), MSG-2..4
(headers and content byte for byte, forged tagging stripped), TRACE-1 (journal records). Every
refusal is sent next to its control, which differs by the one fact the check is about.
"""

from __future__ import annotations

import hashlib
import signal
import urllib.request
from collections.abc import Iterator
from email.utils import make_msgid

import pytest
from tests.milter.harness import write_trustlist
from tests.milter.lab import MilterLab, start_lab, stop_lab, trust_index
from tests.support.common import wait_until

from mssante.journal.digest import body_sha256_of_message
from mssante.lab.pki import Pki


@pytest.fixture(scope="module")
def lab(pki: Pki) -> Iterator[MilterLab]:
    instance = start_lab(pki)
    try:
        yield instance
    finally:
        stop_lab(instance)


def message(sender: str, rcpt: str, extra: bytes = b"", body: bytes = b"Bonjour.\r\n") -> tuple[str, bytes]:
    msgid = make_msgid(domain="test")
    head = f"From: <{sender}>\r\nTo: <{rcpt}>\r\nSubject: compte rendu\r\nMessage-ID: {msgid}\r\n".encode()
    return msgid, head + extra + b"\r\n" + body


def accepted_record(lab: MilterLab, queue_id: str | None) -> dict[str, object]:
    [record] = [r for r in lab.records() if r.get("queue_id") == queue_id and r["type"] == "accepted"]
    return record


def test_trust6_listed_peer_with_its_cn_accepted_and_its_bounce_too(lab: MilterLab) -> None:
    """TRUST-6, TRACE-1: the listed CN of the sender's domain gets in; so does its null-sender bounce."""
    pki = lab.pki
    for sender in (f"dr.durand@{lab.peer}", ""):
        msgid, raw = message(sender or f"mailer-daemon@{lab.peer}", f"dr.martin@{lab.local}")
        t = lab.send(lab.peer_port, sender, [f"dr.martin@{lab.local}"], raw, cert=pki.peer)
        assert t.delivered, t
        [got] = lab.sink.wait_for(1) and wait_until(lambda m=msgid: lab.received(m), 20, "delivery")
        record = accepted_record(lab, t.queue_id)
        assert record["peer_cn"] == pki.peer.cn and record["direction"] == "inbound"
        assert record["tls_version"] in ("TLSv1.2", "TLSv1.3")
        assert f"X-MSSante-Trace: {record['record_id']}; host=test-hospital".encode() in got.data


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("no-certificate", "peer-cert-missing"),
        ("foreign-ca-impostor", "peer-cert-missing"),
        ("listed-cn-of-another-domain", "peer-cn-not-listed-for-domain"),
        ("unlisted-sender-domain", "sender-domain-not-listed"),
    ],
)
def test_trust6_peer_refusals_with_control(lab: MilterLab, case: str, reason: str) -> None:
    """TRUST-6: each refusal names its reason; the control changes only the fact under test."""
    pki = lab.pki
    good_sender, rcpt = f"dr.durand@{lab.peer}", f"dr.martin@{lab.local}"
    refused, control = {
        "no-certificate": ((good_sender, None), (good_sender, pki.peer)),
        "foreign-ca-impostor": ((good_sender, pki.impostor), (good_sender, pki.peer)),
        "listed-cn-of-another-domain": ((good_sender, pki.other), (f"dr.x@{lab.other}", pki.other)),
        "unlisted-sender-domain": (("dr.x@unlisted.example", pki.peer), (good_sender, pki.peer)),
    }[case]
    _, raw = message(refused[0], rcpt)
    t = lab.send(lab.peer_port, refused[0], [rcpt], raw, cert=refused[1])
    assert t.mail is not None and t.mail.code == 550, t
    assert t.mail.text.startswith("5.7.1 ") and f"(reason {reason};" in t.mail.text
    assert not t.delivered
    msgid, raw = message(control[0], rcpt)
    t = lab.send(lab.peer_port, control[0], [rcpt], raw, cert=control[1])
    assert t.delivered, t
    wait_until(lambda: lab.received(msgid), 20, "control delivery")


def test_auth3_authenticated_user_sending_as_another_mailbox_refused(lab: MilterLab) -> None:
    """AUTH-3: sec1 may send as secretariat@ (control) but not as dr.martin@; journaled with its login."""
    rcpt = f"dr.durand@{lab.peer}"
    _, raw = message(f"dr.martin@{lab.local}", rcpt)
    t = lab.send(lab.submission_port, f"dr.martin@{lab.local}", [rcpt], raw, login="sec1")
    assert t.auth is not None and t.auth.code == 235
    assert t.mail is not None and t.mail.code == 550 and "(reason sender-not-owned;" in t.mail.text
    ref = t.mail.text.split("journal ref ")[1].rstrip(")")
    [record] = [r for r in lab.records() if r["record_id"] == ref]
    assert (record["type"], record["auth_identity"]) == ("refused", "sec1")
    msgid, raw = message(f"secretariat@{lab.local}", rcpt)
    t = lab.send(lab.submission_port, f"secretariat@{lab.local}", [rcpt], raw, login="sec1")
    assert t.delivered, t
    wait_until(lambda: lab.received(msgid), 20, "control delivery")


def test_auth2_application_certificate_sends_as_its_mailbox_only(lab: MilterLab) -> None:
    """AUTH-2: the DPI's certificate CN is bound to dpi@ in the mailbox table."""
    rcpt = f"dr.durand@{lab.peer}"
    _, raw = message(f"dr.martin@{lab.local}", rcpt)
    t = lab.send(lab.submission_port, f"dr.martin@{lab.local}", [rcpt], raw, cert=lab.pki.dpi)
    assert t.mail is not None and t.mail.code == 550 and "(reason sender-not-owned;" in t.mail.text
    _, raw = message(f"dpi@{lab.local}", rcpt)
    t = lab.send(lab.submission_port, f"dpi@{lab.local}", [rcpt], raw, cert=lab.pki.dpi)
    assert t.delivered, t
    assert accepted_record(lab, t.queue_id)["peer_cn"] == lab.pki.dpi.cn


def test_trust7_internet_recipient_refused_mixed_list_loses_only_it(lab: MilterLab) -> None:
    """TRUST-7: an internet recipient is refused at RCPT with its reason; the listed ones still go."""
    good = [f"dr.durand@{lab.peer}", f"dr.x@{lab.other}"]
    rcpts = [good[0], "someone@gmail.com", good[1]]
    msgid, raw = message(f"dr.martin@{lab.local}", good[0])
    t = lab.send(lab.submission_port, f"dr.martin@{lab.local}", rcpts, raw, login="dr.martin")
    bad = t.rcpt["someone@gmail.com"]
    assert bad.code == 550 and "(reason recipient-not-in-trust-space;" in bad.text
    assert all(t.rcpt[r].code == 250 for r in good)  # the control: listed recipients in the same list
    assert t.delivered
    got = wait_until(lambda: lab.received(msgid), 20, "delivery")
    assert sorted(r for m in got for r in m.rcpt_tos) == sorted(good)
    record = accepted_record(lab, t.queue_id)
    assert [r["address"] for r in record["rcpts"]] == good  # type: ignore[index]


def test_trace1_recipient_rejected_by_postfix_is_journaled(lab: MilterLab) -> None:
    """TRACE-1: Postfix's own recipient rejection (SMFIP_RCPT_REJ) gets a refused record."""
    rcpt = f"nobody@{lab.local}"
    _, raw = message(f"dr.durand@{lab.peer}", rcpt)
    t = lab.send(
        lab.peer_port, f"dr.durand@{lab.peer}", [rcpt, f"dr.martin@{lab.local}"], raw, cert=lab.pki.peer
    )
    assert t.rcpt[rcpt].code == 550 and t.delivered
    [record] = [r for r in lab.records() if r.get("reason") == "rejected-by-mta"]
    assert record["rcpts"] == [{"address": rcpt, "status": "refused"}]
    assert "5.1.1" in str(record["reply"])


def test_msg2_msg4_forged_tags_stripped_mss_headers_and_content_byte_for_byte(lab: MilterLab) -> None:
    """MSG-2, MSG-3, MSG-4: our headers are replaced; X-MSS-*, an MDN and IHE_XDM pass unchanged."""
    mss = (
        b"X-MSS-NIL:  1\r\n"
        b"X-MSS-CODECDA: 11488-4^^^^urn:oid:1.2.250.1.213.1.1.4.12\r\n"
        b"x-mss-ins: O\r\n"
        b"X-MSS-MES: FIN\r\n"
    )
    forged_before = b"X-MSSante-Trace: forged-1; host=elsewhere\r\nX-MSSante-Verdict: pass; forged\r\n"
    forged_after = b"x-mssante-trace: forged-2\r\n"
    mime = (
        b"MIME-Version: 1.0\r\n"
        b'Content-Type: multipart/report; report-type=disposition-notification; boundary="b1"\r\n'
    )
    body = (
        b"--b1\r\nContent-Type: text/plain\r\n\r\nAccuse de lecture.\r\n"
        b"--b1\r\nContent-Type: message/disposition-notification\r\n\r\n"
        b"Final-Recipient: rfc822; dr.martin@x\r\nDisposition: manual-action/MDN-sent-manually; displayed\r\n"
        b"--b1\r\nContent-Type: application/zip; name=IHE_XDM.ZIP\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n"
        b"UEsDBBQAAAAIAAAAIQBsb3JlbSBpcHN1bSBkb2xvciBzaXQgYW1ldA==\r\n--b1--\r\n"
        b".a line that SMTP dot-stuffs\r\n"
    )
    extra = forged_before + mss + forged_after + mime  # forged copies around the X-MSS-* block
    msgid, raw = message(f"dr.durand@{lab.peer}", f"dr.martin@{lab.local}", extra, body)
    t = lab.send(lab.peer_port, f"dr.durand@{lab.peer}", [f"dr.martin@{lab.local}"], raw, cert=lab.pki.peer)
    assert t.delivered, t
    [got] = wait_until(lambda: lab.received(msgid), 20, "delivery")
    head, _, received_body = got.data.partition(b"\r\n\r\n")
    assert b"forged" not in head
    assert head.count(b"X-MSSante-Trace:") == 1 and head.count(b"X-MSSante-Verdict:") == 1
    assert mss in got.data  # the X-MSS-* block, byte for byte and in order
    assert received_body == body
    record = accepted_record(lab, t.queue_id)
    assert record["body_sha256"] == hashlib.sha256(body).hexdigest()
    assert record["body_sha256"] == body_sha256_of_message(got.data)  # an auditor's recomputation


def test_metrics_endpoint_counts_without_personal_data(lab: MilterLab) -> None:
    url = f"http://{lab.address}:{lab.metrics_port}/metrics"
    page = urllib.request.urlopen(url, timeout=10).read().decode()
    assert 'mssante_milter_decisions_total{decision="accept",direction="inbound",reason="accepted"}' in page
    assert "mssante_trustlist_domains 2.0" in page and "mssante_mailboxes 3.0" in page
    for needle in (lab.local, lab.peer, lab.pki.peer.cn, "dr.martin", "sec1"):
        assert needle not in page


def test_fail_closed_milter_down_postfix_answers_4xx_and_accepts_nothing(lab: MilterLab) -> None:
    """Fail closed (default_action=tempfail): with the milter killed nothing is accepted; control after."""
    sender, rcpt = f"dr.durand@{lab.peer}", f"dr.martin@{lab.local}"
    lab.stop_milter(signal.SIGKILL)
    try:
        msgid, raw = message(sender, rcpt)
        t = lab.send(lab.peer_port, sender, [rcpt], raw, cert=lab.pki.peer)
        steps = [t.starttls, t.mail, *t.rcpt.values(), t.data]
        codes = [s.code for s in steps if s is not None]
        assert not t.delivered and codes and codes[-1] // 100 == 4, t  # Postfix defers (STARTTLS: 454)
        assert lab.postfix.queue_ids() == []
    finally:
        lab.start_milter()
    msgid, raw = message(sender, rcpt)
    t = lab.send(lab.peer_port, sender, [rcpt], raw, cert=lab.pki.peer)
    assert t.delivered, t
    wait_until(lambda: lab.received(msgid), 20, "control delivery")


def test_trace1_anonymous_refusals_journaled_as_one_aggregate_per_window(lab: MilterLab) -> None:
    """TRACE-1: refusals of clients without a verified certificate become one refused-aggregate record.

    The lab's window is an hour: the record is written when the milter stops (SIGTERM), not per attempt.
    """
    sender, rcpt = f"dr.durand@{lab.peer}", f"dr.martin@{lab.local}"
    for _ in range(3):
        _, raw = message(sender, rcpt)
        t = lab.send(lab.peer_port, sender, [rcpt], raw, cert=lab.pki.impostor)
        assert t.mail is not None and t.mail.code == 550 and "journal aggregate" in t.mail.text

    def aggregates() -> list[dict[str, object]]:
        return [r for r in lab.records() if r["type"] == "refused-aggregate"]

    assert aggregates() == []  # nothing journaled one by one
    lab.stop_milter(signal.SIGTERM)
    lab.start_milter()
    [record] = aggregates()
    assert (record["reason"], record["count"]) == ("peer-cert-missing", 3)
    assert not [r for r in lab.records() if r["type"] == "refused" and r.get("reason") == "peer-cert-missing"]


def test_trace2_journal_down_defers_the_message_and_accepts_nothing(lab: MilterLab) -> None:
    """Fail closed: without a durable accepted record the message is deferred (451); control after."""
    sender, rcpt = f"dr.durand@{lab.peer}", f"dr.martin@{lab.local}"
    lab.stop_journal()
    try:
        msgid, raw = message(sender, rcpt)
        t = lab.send(lab.peer_port, sender, [rcpt], raw, cert=lab.pki.peer)
        assert t.data is not None and t.data.code == 451 and "(reason journal-unavailable" in t.data.text, t
        assert lab.postfix.queue_ids() == [] and not lab.received(msgid)
    finally:
        lab.start_journal()
    msgid, raw = message(sender, rcpt)
    t = lab.send(lab.peer_port, sender, [rcpt], raw, cert=lab.pki.peer)
    assert t.delivered, t


def test_trust8_trust_list_switch_picked_up_without_restart(lab: MilterLab) -> None:
    """TRUST-8: a new generation without the peer's domain applies to the next transaction; no restart."""
    sender, rcpt = f"dr.durand@{lab.peer}", f"dr.martin@{lab.local}"
    index = trust_index(lab.pki)
    shrunk = {**index, "domains": {k: v for k, v in index["domains"].items() if k != lab.peer}}
    pid = lab.process.pid if lab.process else None
    write_trustlist(lab.base / "trustlist", shrunk, generation="gen-2")
    try:

        def refused() -> bool:
            _, raw = message(sender, rcpt)
            t = lab.send(lab.peer_port, sender, [rcpt], raw, cert=lab.pki.peer)
            return t.mail is not None and "(reason sender-domain-not-listed;" in t.mail.text

        assert wait_until(refused, 20, "the new trust list in use")
    finally:
        write_trustlist(lab.base / "trustlist", index, generation="gen-3")
    _, raw = message(sender, rcpt)
    wait_until(lambda: lab.send(lab.peer_port, sender, [rcpt], raw, cert=lab.pki.peer).delivered, 20, "back")
    assert lab.process is not None and lab.process.pid == pid


def test_milter_on_inet_socket(pki: Pki) -> None:
    """The optional inet socket: same decisions (and data() is defined, so Postfix never stalls)."""
    lab = start_lab(pki, inet=True)
    try:
        sender, rcpt = f"dr.durand@{lab.peer}", f"dr.martin@{lab.local}"
        msgid, raw = message(sender, rcpt)
        assert lab.send(lab.peer_port, sender, [rcpt], raw, cert=lab.pki.peer).delivered
        wait_until(lambda: lab.received(msgid), 20, "delivery")
        _, raw = message(sender, rcpt)
        t = lab.send(lab.peer_port, sender, [rcpt], raw, cert=lab.pki.other)
        assert t.mail is not None and "(reason peer-cn-not-listed-for-domain;" in t.mail.text
    finally:
        stop_lab(lab)


def test_body_line_over_998_octets_refused_not_folded(lab: MilterLab) -> None:
    """Design: a 999-octet body line is refused (550 5.6.0) rather than folded later; 998 passes."""
    sender, rcpt = f"dr.durand@{lab.peer}", f"dr.martin@{lab.local}"
    _, raw = message(sender, rcpt, body=b"a" * 999 + b"\r\n")
    t = lab.send(lab.peer_port, sender, [rcpt], raw, cert=lab.pki.peer)
    assert t.data is not None and t.data.code == 550 and t.data.text.startswith("5.6.0"), t
    assert "(reason line-too-long;" in t.data.text
    msgid, raw = message(sender, rcpt, body=b"a" * 998 + b"\r\n")
    assert lab.send(lab.peer_port, sender, [rcpt], raw, cert=lab.pki.peer).delivered
    [got] = wait_until(lambda: lab.received(msgid), 20, "control delivery")
    assert b"a" * 998 + b"\r\n" in got.data
