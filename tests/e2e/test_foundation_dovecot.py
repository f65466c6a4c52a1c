"""The Dovecot fixture: IMAP over STARTTLS with the test PKI, LMTP delivery, SASL for Postfix (TLS-5)."""

from __future__ import annotations

import imaplib
import smtplib
import ssl

import pytest
from tests.conftest import DovecotFactory, PostfixFactory, SinkFactory
from tests.support.common import random_loopback
from tests.support.dovecot import DovecotInstance, dovecot_settings_for_postfix
from tests.support.postfix import smtpd_tls_settings
from tests.support.smtpclient import TlsOptions, message, send

from mssante.lab.pki import Pki

USER = "dr.martin@hopital-a.mssante.test"
PASSWORD = "test-only-secret"


def _imap(instance: DovecotInstance, pki: Pki) -> imaplib.IMAP4:
    client = imaplib.IMAP4(instance.address, instance.imap_port, timeout=30)
    context = ssl.create_default_context(cafile=str(pki.chain))
    context.check_hostname = False
    client.starttls(context)
    return client


def test_tls5_imap_starttls_login_lmtp_delivery_and_fetch(pki: Pki, dovecot_factory: DovecotFactory) -> None:
    instance = dovecot_factory(users={USER: PASSWORD})
    body = message("dr.durand@clinique-b.mssante.test", USER, subject="lmtp delivery")
    with smtplib.LMTP(instance.address, instance.lmtp_port, timeout=30) as lmtp:
        refused = lmtp.sendmail("dr.durand@clinique-b.mssante.test", [USER], body)
    assert refused == {}
    assert len(instance.maildir_messages(USER)) == 1

    client = _imap(instance, pki)
    try:
        assert client.login(USER, PASSWORD)[0] == "OK"
        assert client.select("INBOX") == ("OK", [b"1"])
        status, data = client.fetch("1", "(BODY.PEEK[])")
        assert status == "OK"
        fetched = data[0][1] if isinstance(data[0], tuple) else b""
        assert b"Subject: lmtp delivery" in fetched
        assert fetched.endswith(b"Hello.\r\n")
    finally:
        client.logout()


def test_tls5_imap_refuses_login_before_tls_and_wrong_password(
    pki: Pki, dovecot_factory: DovecotFactory
) -> None:
    instance = dovecot_factory(users={USER: PASSWORD})
    plain = imaplib.IMAP4(instance.address, instance.imap_port, timeout=30)
    try:
        assert (
            b"LOGINDISABLED" in b" ".join(plain.capabilities_raw())
            if hasattr(plain, "capabilities_raw")
            else True
        )
        with pytest.raises(imaplib.IMAP4.error):
            plain.login(USER, PASSWORD)
    finally:
        plain.shutdown()
    client = _imap(instance, pki)
    try:
        with pytest.raises(imaplib.IMAP4.error):
            client.login(USER, "wrong")
        assert client.login(USER, PASSWORD)[0] == "OK"  # control: the right password works
    finally:
        client.logout()


def test_lmtp_refuses_unknown_recipient(dovecot_factory: DovecotFactory) -> None:
    instance = dovecot_factory(users={USER: PASSWORD})
    with smtplib.LMTP(instance.address, instance.lmtp_port, timeout=30) as lmtp:
        lmtp.ehlo("test")
        lmtp.mail("a@b.test")
        code, _ = lmtp.rcpt("nobody@hopital-a.mssante.test")
        assert code == 550
        code, _ = lmtp.rcpt(USER)
        assert code == 250


@pytest.mark.parametrize("password,accepted", [(PASSWORD, True), ("wrong", False)], ids=["right", "wrong"])
def test_postfix_sasl_through_dovecot_auth_socket(
    pki: Pki,
    dovecot_factory: DovecotFactory,
    postfix_factory: PostfixFactory,
    sink_factory: SinkFactory,
    password: str,
    accepted: bool,
) -> None:
    dovecot = dovecot_factory(users={USER: PASSWORD})
    sink = sink_factory()
    instance = postfix_factory(
        "submission",
        settings={
            **smtpd_tls_settings(pki.hospital.fullchain, pki.hospital.key, pki.chain, ask_ccert=False),
            **dovecot_settings_for_postfix(dovecot),
            "relayhost": sink.hostport,
            "smtpd_relay_restrictions": "permit_sasl_authenticated, reject",
        },
        start=True,
    )
    transcript = send(
        instance.address,
        instance.port,
        sender=USER,
        recipients=["someone@clinique-b.mssante.test"],
        message=message(USER, "someone@clinique-b.mssante.test"),
        tls=TlsOptions(ca_file=pki.chain),
        auth=(USER, password),
        source_address=random_loopback(),
    )
    assert transcript.auth is not None
    if accepted:
        assert transcript.auth.code == 235
        assert transcript.delivered
        assert sink.wait_for(1)[0].mail_from == USER
        instance.wait_log(rf"sasl_method=PLAIN, sasl_username={USER}")
    else:
        assert transcript.auth.code == 535
        assert transcript.mail is None
        assert sink.messages == []
