"""End-to-end: submission through a real Postfix using the MSSanté Dovecot's SASL socket, delivery into
the MSSanté mailbox over LMTP, and the message fetched over IMAP (AUTH-1, TLS-5).

Postfix here plays the MSSanté instance's submission service with the settings the mssante_postfix role
must carry for OAuth (docs/dovecot.md, "What the Postfix instance must set"): Dovecot SASL on the socket
this role creates, AUTH only after STARTTLS, and ``line_length_limit`` raised so that a realistic
XOAUTH2 line (a 3.5 KB token is a 4.7 KB base64 line) is not cut.
"""

from __future__ import annotations

import base64
import smtplib
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from tests.e2e.test_dovecot_harness import (
    DOMAIN,
    PERSON,
    DovecotHost,
    client_context,
    imap_starttls,
    make_token,
    running_host,
    shared_pki,
    xoauth2,
)
from tests.support.postfix import smtpd_tls_settings

TOKEN_SIZE = 3500
SUBMISSION_OAUTH_LINE_LIMIT = "16384"


@pytest.fixture(scope="module")
def dovecot_host() -> Iterator[DovecotHost]:
    with running_host(shared_pki()) as host:
        yield host


def _submission_settings(host: DovecotHost, line_limit: str = SUBMISSION_OAUTH_LINE_LIMIT) -> dict[str, str]:
    pki = host.pki
    return {
        **smtpd_tls_settings(pki.hospital.fullchain, pki.hospital.key, pki.chain, ask_ccert=False),
        "smtpd_sasl_auth_enable": "yes",
        "smtpd_sasl_type": "dovecot",
        "smtpd_sasl_path": host.variables["mssante_dovecot_auth_socket"],
        "smtpd_tls_auth_only": "yes",
        "smtpd_sasl_security_options": "noanonymous",
        "smtpd_sasl_tls_security_options": "noanonymous",
        "line_length_limit": line_limit,
        "smtpd_recipient_restrictions": "permit_sasl_authenticated, reject",
        "virtual_mailbox_domains": DOMAIN,
        "virtual_mailbox_maps": f"static:{DOMAIN}",
        "virtual_transport": f"lmtp:unix:{host.variables['mssante_dovecot_lmtp_socket']}",
    }


def _token(host: DovecotHost, expires_in: float = 600) -> str:
    token = make_token(TOKEN_SIZE)
    host.add_token(token, PERSON, expires_in)
    return token


def _connect(postfix: Any, host: DovecotHost) -> smtplib.SMTP:
    client = smtplib.SMTP(postfix.address, postfix.port, timeout=30)
    client.ehlo("client.test")
    client.starttls(context=client_context(host.pki))
    client.ehlo("client.test")
    return client


def _xoauth2_line(token: str) -> str:
    return base64.b64encode(f"user={PERSON}\x01auth=Bearer {token}\x01\x01".encode()).decode()


def test_auth1_xoauth2_submission_delivered_and_fetched(
    dovecot_host: DovecotHost, postfix_factory: Any
) -> None:
    postfix = postfix_factory("submission", settings=_submission_settings(dovecot_host), start=True)
    token = _token(dovecot_host)
    client = _connect(postfix, dovecot_host)
    assert "XOAUTH2" in client.esmtp_features.get("auth", "")
    code, _ = client.docmd("AUTH", f"XOAUTH2 {_xoauth2_line(token)}")
    assert code == 235
    marker = uuid.uuid4().hex
    message = (
        f"From: <dr.martin@{DOMAIN}>\r\nTo: <dr.martin@{DOMAIN}>\r\nSubject: {marker}\r\n\r\nBonjour\r\n"
    )
    client.sendmail(f"dr.martin@{DOMAIN}", [f"dr.martin@{DOMAIN}"], message.encode())
    client.quit()
    # Postfix reports the owner identity as the SASL user ({auth_authen}, the mailbox table's owners).
    postfix.wait_log(rf"sasl_method=XOAUTH2, sasl_username={PERSON}\b")
    postfix.wait_log(r"status=sent")
    imap = imap_starttls(dovecot_host.addresses["personal"], client_context(dovecot_host.pki))
    imap.authenticate("XOAUTH2", xoauth2(PERSON, _token(dovecot_host)))
    imap.select("INBOX")
    typ, found = imap.search(None, "SUBJECT", marker)
    assert typ == "OK" and found[0]


def test_auth1_expired_token_refused_on_submission(dovecot_host: DovecotHost, postfix_factory: Any) -> None:
    postfix = postfix_factory("submission", settings=_submission_settings(dovecot_host), start=True)
    client = _connect(postfix, dovecot_host)
    code, _ = client.docmd("AUTH", f"XOAUTH2 {_xoauth2_line(_token(dovecot_host, expires_in=-60))}")
    assert code != 235
    client.close()
    # Control: a live token on the same server.
    client = _connect(postfix, dovecot_host)
    assert client.docmd("AUTH", f"XOAUTH2 {_xoauth2_line(_token(dovecot_host))}")[0] == 235


def test_auth1_default_line_length_limit_cuts_realistic_tokens(
    dovecot_host: DovecotHost, postfix_factory: Any
) -> None:
    """Why the Postfix instance must raise line_length_limit: with Postfix's default (2048) the same
    valid token fails; the control above (16384) succeeds."""
    postfix = postfix_factory("submission", settings=_submission_settings(dovecot_host, "2048"), start=True)
    client = _connect(postfix, dovecot_host)
    code, _ = client.docmd("AUTH", f"XOAUTH2 {_xoauth2_line(_token(dovecot_host))}")
    assert code != 235


def test_tls5_auth_before_starttls_refused_on_submission(
    dovecot_host: DovecotHost, postfix_factory: Any
) -> None:
    postfix = postfix_factory("submission", settings=_submission_settings(dovecot_host), start=True)
    token = _token(dovecot_host)
    client = smtplib.SMTP(postfix.address, postfix.port, timeout=30)
    client.ehlo("client.test")
    assert "auth" not in client.esmtp_features
    code, _ = client.docmd("AUTH", f"XOAUTH2 {_xoauth2_line(token)}")
    assert code in (503, 530)  # 530 5.7.0 Must issue a STARTTLS command first
    client.close()
    # Control: the same token after STARTTLS.
    client = _connect(postfix, dovecot_host)
    assert client.docmd("AUTH", f"XOAUTH2 {_xoauth2_line(token)}")[0] == 235


def test_auth1_password_alone_refused_on_submission(dovecot_host: DovecotHost, postfix_factory: Any) -> None:
    postfix = postfix_factory("submission", settings=_submission_settings(dovecot_host), start=True)
    client = _connect(postfix, dovecot_host)
    plain = base64.b64encode(f"\0{PERSON}\0transition-secret".encode()).decode()
    assert client.docmd("AUTH", f"PLAIN {plain}")[0] != 235
