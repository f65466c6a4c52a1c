"""End-to-end: MSSanté authentication on a real Dovecot configured by the mssante_dovecot templates.

Requirements: TLS-1, TLS-3, TLS-5, AUTH-1, AUTH-2, AUTH-4 (docs/dovecot.md). Every refusal has a control
made with the same client that succeeds when the one condition under test is met.
"""

from __future__ import annotations

import imaplib
import smtplib
import ssl
import uuid
import warnings
from collections.abc import Iterator

import pytest
from tests.e2e.test_dovecot_harness import (
    DOMAIN,
    ORDINARY_PASSWORD,
    ORDINARY_USER,
    PERSON,
    PERSON_PASSWORD,
    DovecotHost,
    client_context,
    imap_starttls,
    make_token,
    running_host,
    sasl_plain,
    shared_pki,
    xoauth2,
)


@pytest.fixture(scope="module")
def dovecot_host() -> Iterator[DovecotHost]:
    with running_host(shared_pki()) as host:
        yield host


TOKEN_SIZE = 3500  # bytes: a realistic Pro Santé Connect access token (a signed JWT of several KB)


def _token(host: DovecotHost, sub: str = PERSON, expires_in: float = 600, size: int = TOKEN_SIZE) -> str:
    token = make_token(size)
    host.add_token(token, sub, expires_in)
    return token


def _app_client(host: DovecotHost, *, with_cert: bool, address: str | None = None) -> imaplib.IMAP4:
    pki = host.pki
    context = (
        client_context(pki, cert=pki.dpi.fullchain, key=pki.dpi.key) if with_cert else client_context(pki)
    )
    return imap_starttls(address or host.addresses["app"], context)


def _external(client: imaplib.IMAP4) -> None:
    client.authenticate("EXTERNAL", lambda _challenge: b"")


# --- AUTH-2: application mailboxes log in with their organisation certificate ----------------------


def test_auth2_application_logs_in_with_its_certificate(dovecot_host: DovecotHost) -> None:
    client = _app_client(dovecot_host, with_cert=True)
    _external(client)
    typ, _ = client.select("INBOX")
    assert typ == "OK"
    client.logout()
    dovecot_host.wait_log(f"Login: user=<{dovecot_host.pki.dpi.cn}>, method=EXTERNAL")


def test_auth2_application_without_certificate_refused(dovecot_host: DovecotHost) -> None:
    client = _app_client(dovecot_host, with_cert=False)
    with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        _external(client)
    # Control: the same listener and mechanism with the certificate.
    _external(_app_client(dovecot_host, with_cert=True))


def test_auth2_organisation_certificate_not_accepted_on_personal_listener(dovecot_host: DovecotHost) -> None:
    """One listener per CA set: the personal listener does not trust the organisation CA."""
    client = _app_client(dovecot_host, with_cert=True, address=dovecot_host.addresses["personal"])
    with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        _external(client)


def test_auth2_application_password_refused(dovecot_host: DovecotHost) -> None:
    client = _app_client(dovecot_host, with_cert=False)
    with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        client.login(dovecot_host.pki.dpi.cn, "")


# --- AUTH-1: OAuth 2 bearer tokens ----------------------------------------------------------------


@pytest.mark.parametrize("listener", ["personal", "app"])
def test_auth1_xoauth2_realistic_token_logs_in(dovecot_host: DovecotHost, listener: str) -> None:
    token = _token(dovecot_host)
    assert len(token) >= 3 * 1024
    client = imap_starttls(dovecot_host.addresses[listener], client_context(dovecot_host.pki))
    typ, _ = client.authenticate("XOAUTH2", xoauth2(PERSON, token))
    assert typ == "OK"
    assert client.select("INBOX")[0] == "OK"
    client.logout()


def test_auth1_oauthbearer_logs_in(dovecot_host: DovecotHost) -> None:
    token = _token(dovecot_host)
    payload = f"n,a={PERSON},\x01auth=Bearer {token}\x01\x01".encode()
    client = imap_starttls(dovecot_host.addresses["personal"], client_context(dovecot_host.pki))
    assert client.authenticate("OAUTHBEARER", lambda _challenge: payload)[0] == "OK"


def test_auth1_expired_token_refused(dovecot_host: DovecotHost) -> None:
    expired = _token(dovecot_host, expires_in=-60)
    client = imap_starttls(dovecot_host.addresses["personal"], client_context(dovecot_host.pki))
    with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        client.authenticate("XOAUTH2", xoauth2(PERSON, expired))
    # Control: the same flow with a live token.
    client = imap_starttls(dovecot_host.addresses["personal"], client_context(dovecot_host.pki))
    assert client.authenticate("XOAUTH2", xoauth2(PERSON, _token(dovecot_host)))[0] == "OK"


def test_auth1_token_of_another_person_refused(dovecot_host: DovecotHost) -> None:
    """The token's subject must be the login name (the mailbox table's owner identity)."""
    someone_else = _token(dovecot_host, sub="810009876543")
    client = imap_starttls(dovecot_host.addresses["personal"], client_context(dovecot_host.pki))
    with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        client.authenticate("XOAUTH2", xoauth2(PERSON, someone_else))


def test_auth1_unknown_token_refused(dovecot_host: DovecotHost) -> None:
    client = imap_starttls(dovecot_host.addresses["personal"], client_context(dovecot_host.pki))
    with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        client.authenticate("XOAUTH2", xoauth2(PERSON, make_token(TOKEN_SIZE)))


def test_auth1_password_alone_refused(dovecot_host: DovecotHost) -> None:
    """The right transition password without the personal certificate is refused (LOGIN and PLAIN)."""
    pki = dovecot_host.pki
    address = dovecot_host.addresses["personal"]
    for user in (PERSON, f"dr.martin@{DOMAIN}"):
        client = imap_starttls(address, client_context(pki))
        with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
            client.login(user, PERSON_PASSWORD)
        client = imap_starttls(address, client_context(pki))
        with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
            client.authenticate("PLAIN", sasl_plain(user, PERSON_PASSWORD))
    # Control: transition mode, the same password with the personal certificate.
    context = client_context(pki, cert=pki.personal.fullchain, key=pki.personal.key)
    client = imap_starttls(address, context)
    assert client.login(PERSON, PERSON_PASSWORD)[0] == "OK"


def test_auth1_personal_certificate_alone_logs_in_on_personal_listener(dovecot_host: DovecotHost) -> None:
    """A CPS-like personal certificate (its CN is the owner identity) is a strong means by itself."""
    pki = dovecot_host.pki
    context = client_context(pki, cert=pki.personal.fullchain, key=pki.personal.key)
    client = imap_starttls(dovecot_host.addresses["personal"], context)
    _external(client)
    assert client.select("INBOX")[0] == "OK"
    dovecot_host.wait_log(f"Login: user=<{PERSON}>, method=EXTERNAL")
    # Control: the same certificate on the application listener (another CA set) is refused.
    client = imap_starttls(dovecot_host.addresses["app"], context)
    with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        _external(client)


def test_auth1_transition_mode_wrong_password_refused(dovecot_host: DovecotHost) -> None:
    pki = dovecot_host.pki
    context = client_context(pki, cert=pki.personal.fullchain, key=pki.personal.key)
    client = imap_starttls(dovecot_host.addresses["personal"], context)
    with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        client.login(PERSON, "not-the-password")


# --- AUTH-4: the natural person is logged with each login -----------------------------------------


def test_auth4_login_log_names_the_person_or_certificate(dovecot_host: DovecotHost) -> None:
    token = _token(dovecot_host)
    client = imap_starttls(dovecot_host.addresses["personal"], client_context(dovecot_host.pki))
    client.authenticate("XOAUTH2", xoauth2(PERSON, token))
    client.logout()
    dovecot_host.wait_log(f"Login: user=<{PERSON}>, method=XOAUTH2")
    _external(_app_client(dovecot_host, with_cert=True))
    dovecot_host.wait_log(f"Login: user=<{dovecot_host.pki.dpi.cn}>, method=EXTERNAL")


# --- TLS-1 and TLS-5 ------------------------------------------------------------------------------


@pytest.mark.parametrize("listener", ["app", "personal"])
def test_tls1_tls11_refused_on_mssante_listeners(dovecot_host: DovecotHost, listener: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        legacy = client_context(dovecot_host.pki, tls_max=ssl.TLSVersion.TLSv1_1)
    with pytest.raises((ssl.SSLError, OSError)):
        imap_starttls(dovecot_host.addresses[listener], legacy)
    # Control: the same TLS 1.1 client is accepted by the ordinary (legacy) listener, so the test
    # would notice an MSSanté listener accepting TLS 1.1 ...
    imap_starttls(dovecot_host.addresses["ordinary"], legacy).logout()
    # ... and TLS 1.2 is accepted by the MSSanté listener.
    modern = client_context(dovecot_host.pki, tls_max=ssl.TLSVersion.TLSv1_2)
    imap_starttls(dovecot_host.addresses[listener], modern).logout()


def test_tls3_server_presents_the_igc_sante_certificate(dovecot_host: DovecotHost) -> None:
    client = imap_starttls(dovecot_host.addresses["personal"], client_context(dovecot_host.pki))
    der = client.sock.getpeercert(binary_form=True)  # type: ignore[attr-defined]
    assert der == ssl.PEM_cert_to_DER_cert(dovecot_host.pki.hospital.cert.read_text())


@pytest.mark.parametrize("listener", ["app", "personal"])
def test_tls5_authentication_before_starttls_refused(dovecot_host: DovecotHost, listener: str) -> None:
    token = _token(dovecot_host)
    client = imaplib.IMAP4(dovecot_host.addresses[listener], 143, timeout=20)
    assert "LOGINDISABLED" in client.capabilities
    with pytest.raises(imaplib.IMAP4.error):
        client.authenticate("XOAUTH2", xoauth2(PERSON, token))
    client.shutdown()
    # Control: the same client after STARTTLS.
    client = imaplib.IMAP4(dovecot_host.addresses[listener], 143, timeout=20)
    client.starttls(ssl_context=client_context(dovecot_host.pki))
    assert client.authenticate("XOAUTH2", xoauth2(PERSON, token))[0] == "OK"


def test_tls5_implicit_tls_on_993(dovecot_host: DovecotHost) -> None:
    pki = dovecot_host.pki
    context = client_context(pki, cert=pki.dpi.fullchain, key=pki.dpi.key)
    client = imaplib.IMAP4_SSL(dovecot_host.addresses["app"], 993, ssl_context=context, timeout=20)
    _external(client)
    assert client.select("INBOX")[0] == "OK"


# --- Ordinary users see no change -----------------------------------------------------------------


def test_ordinary_user_password_login_unchanged(dovecot_host: DovecotHost) -> None:
    client = imap_starttls(dovecot_host.addresses["ordinary"], client_context(dovecot_host.pki))
    assert client.login(ORDINARY_USER, ORDINARY_PASSWORD)[0] == "OK"
    assert client.select("INBOX")[0] == "OK"


def test_ordinary_user_cannot_use_oauth(dovecot_host: DovecotHost) -> None:
    """The OAuth passdb answers MSSanté names only: a token never opens an ordinary mailbox."""
    token = _token(dovecot_host, sub=ORDINARY_USER)
    client = imap_starttls(dovecot_host.addresses["ordinary"], client_context(dovecot_host.pki))
    with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        client.authenticate("XOAUTH2", xoauth2(ORDINARY_USER, token))


# --- LMTP delivery from the MSSanté Postfix instance (Sieve: test_dovecot_sieve.py) -----------------


def test_lmtp_delivery_fetched_over_imap_with_its_tags(dovecot_host: DovecotHost) -> None:
    marker = uuid.uuid4().hex
    message = (
        f"From: <dr.durand@clinique-b.mssante.test>\r\nTo: <dr.martin@{DOMAIN}>\r\n"
        f"Subject: test {marker}\r\nX-MSSante-Trust: verified; peer=mx.clinique-b.test\r\n\r\nBonjour\r\n"
    ).encode()
    with smtplib.LMTP(dovecot_host.variables["mssante_dovecot_lmtp_socket"]) as lmtp:
        refused = lmtp.sendmail("dr.durand@clinique-b.mssante.test", [f"dr.martin@{DOMAIN}"], message)
    assert refused == {}
    client = imap_starttls(dovecot_host.addresses["personal"], client_context(dovecot_host.pki))
    client.authenticate("XOAUTH2", xoauth2(PERSON, _token(dovecot_host)))
    client.select("INBOX")
    typ, found = client.search(None, "SUBJECT", marker)
    assert typ == "OK" and found[0], "the delivered message is not in the MSSanté mailbox"
    _, data = client.fetch(found[0].split()[-1], "(BODY.PEEK[HEADER.FIELDS (X-MSSANTE-TRUST)])")
    assert b"X-MSSante-Trust: verified; peer=mx.clinique-b.test" in data[0][1]  # type: ignore[index]


# --- ORG mailboxes: owners open them through the shared namespace, logged in as themselves (AUTH-4) ---


@pytest.mark.parametrize("local_part", ["secretariat", "cabinet"])  # an ORG and a CAB (practice) mailbox
def test_auth4_owner_opens_org_mailbox_as_themselves(dovecot_host: DovecotHost, local_part: str) -> None:
    org = f"{local_part}@{DOMAIN}"
    marker = uuid.uuid4().hex
    with smtplib.LMTP(dovecot_host.variables["mssante_dovecot_lmtp_socket"]) as lmtp:
        assert (
            lmtp.sendmail("a@clinique-b.mssante.test", [org], f"Subject: {marker}\r\n\r\nx\r\n".encode())
            == {}
        )
    client = imap_starttls(dovecot_host.addresses["personal"], client_context(dovecot_host.pki))
    client.authenticate("XOAUTH2", xoauth2(PERSON, _token(dovecot_host)))
    _, listed = client.list("shared/", "*")
    assert any(f"shared/{org}".encode() in line for line in listed if isinstance(line, bytes)), listed
    assert client.select(f'"shared/{org}/INBOX"')[0] == "OK"
    assert client.search(None, "SUBJECT", marker)[1][0]
    client.logout()
    dovecot_host.wait_log(f"Login: user=<{PERSON}>, method=XOAUTH2")


def test_auth4_org_mailbox_closed_to_non_owners(dovecot_host: DovecotHost) -> None:
    org = f"secretariat@{DOMAIN}"
    client = _app_client(dovecot_host, with_cert=True)  # the application is not an owner of the ORG box
    _external(client)
    assert client.select(f'"shared/{org}/INBOX"')[0] == "NO"
    # The ordinary user has no shared namespace at all.
    client = imap_starttls(dovecot_host.addresses["ordinary"], client_context(dovecot_host.pki))
    client.login(ORDINARY_USER, ORDINARY_PASSWORD)
    assert client.select(f'"shared/{org}/INBOX"')[0] == "NO"
