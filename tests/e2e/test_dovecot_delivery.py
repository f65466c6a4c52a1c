"""End-to-end: a message accepted by the milter arrives in the MSSanté mailbox through LMTP and is fetched
over IMAP with its tags (issue 7; MSG-2, TRACE-1, AUTH-1).

The real chain: a peer operator sends over mutual TLS to the MSSanté-style Postfix of tests/milter/lab.py
with the real milter process and journal; Postfix delivers the local domain over LMTP to the socket of a
real Dovecot configured by the mssante_dovecot templates; the mailbox's owner fetches the message over
IMAP with an OAuth token. The tags the milter added (trace id = the journal record, verdict) are in the
fetched copy, and the body is the one the journal digested.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from email.utils import make_msgid

import pytest
from tests.e2e.test_dovecot_harness import (
    PERSON,
    WAIT_SECONDS,
    DovecotHost,
    client_context,
    imap_starttls,
    make_token,
    running_host,
    shared_pki,
    xoauth2,
)
from tests.milter.lab import MilterLab, start_lab, stop_lab

from mssante.journal.digest import body_sha256_of_message


@pytest.fixture(scope="module")
def chain() -> Iterator[tuple[MilterLab, DovecotHost]]:
    pki = shared_pki()
    with running_host(pki) as host:
        lab = start_lab(pki)
        try:
            sink = f"smtp:{lab.sink.hostport}"
            lmtp = f"lmtp:unix:{host.variables['mssante_dovecot_lmtp_socket']}"
            transport = lab.postfix.write_map("transport", {lab.local: lmtp, lab.peer: sink, lab.other: sink})
            lab.postfix.postconf({"transport_maps": transport})
            lab.postfix.reload()
            yield lab, host
        finally:
            stop_lab(lab)


def _fetch(host: DovecotHost, msgid: str) -> bytes:
    """The message with ``msgid`` from the owner's INBOX over IMAP (XOAUTH2), waiting for delivery."""
    token = make_token(3500)
    host.add_token(token, PERSON, 600)
    client = imap_starttls(host.addresses["personal"], client_context(host.pki))
    assert client.authenticate("XOAUTH2", xoauth2(PERSON, token))[0] == "OK"
    deadline = time.monotonic() + WAIT_SECONDS
    try:
        while time.monotonic() < deadline:
            client.select("INBOX")
            _, found = client.search(None, "HEADER", "Message-ID", msgid.strip("<>"))
            if found[0]:
                _, data = client.fetch(found[0].split()[-1], "(BODY.PEEK[])")
                return data[0][1]  # type: ignore[index,return-value]
            time.sleep(0.1)
    finally:
        client.logout()
    raise AssertionError(f"{msgid} never reached the MSSanté mailbox:\n{host.log[-3000:]}")


def test_msg2_accepted_message_delivered_by_lmtp_fetched_over_imap_with_its_tags(
    chain: tuple[MilterLab, DovecotHost],
) -> None:
    lab, host = chain
    rcpt = f"dr.martin@{lab.local}"
    msgid = make_msgid(domain="clinique-b.test")
    marker = uuid.uuid4().hex
    raw = (
        f"From: <dr.durand@{lab.peer}>\r\nTo: <{rcpt}>\r\nSubject: compte rendu {marker}\r\n"
        f"Message-ID: {msgid}\r\n\r\nBonjour.\r\n"
    ).encode()
    sent = lab.send(lab.peer_port, f"dr.durand@{lab.peer}", [rcpt], raw, cert=lab.pki.peer)
    assert sent.delivered, sent
    fetched = _fetch(host, msgid)
    [record] = [r for r in lab.records() if r.get("queue_id") == sent.queue_id and r["type"] == "accepted"]
    assert f"X-MSSante-Trace: {record['record_id']}; host=test-hospital".encode() in fetched
    assert b"X-MSSante-Verdict:" in fetched
    # The body the owner reads is the body the journal digested (nothing folded or converted on the way).
    assert body_sha256_of_message(fetched) == record["body_sha256"]
    # The local domain went to Dovecot, not to the lab's sink.
    assert not lab.received(msgid)
