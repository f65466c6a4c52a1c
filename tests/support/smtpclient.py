"""An SMTP client for tests (smtplib): every step's reply is recorded so a test asserts per step.

``send(...)`` runs EHLO, optional STARTTLS (client certificate, CA, maximum TLS version), EHLO again,
optional AUTH PLAIN, MAIL, one RCPT per recipient and DATA, and stops at the first step that refuses
(like a real client). Replies are values; only connection failures raise.
"""

from __future__ import annotations

import base64
import smtplib
import ssl
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Reply:
    code: int
    text: str

    @property
    def ok(self) -> bool:
        return 200 <= self.code < 400


@dataclass
class Transcript:
    """What happened, step by step; a step not reached is None (RCPT: missing keys)."""

    banner: Reply | None = None
    ehlo: Reply | None = None
    starttls: Reply | None = None
    tls_error: str | None = None
    tls_version: str | None = None
    ehlo_tls: Reply | None = None
    auth: Reply | None = None
    mail: Reply | None = None
    rcpt: dict[str, Reply] = field(default_factory=dict)
    data: Reply | None = None
    disconnected: str | None = None
    server_cert_cn: str | None = None

    @property
    def delivered(self) -> bool:
        """The server took the message (DATA answered 2xx)."""
        return self.data is not None and self.data.code // 100 == 2

    @property
    def queue_id(self) -> str | None:
        """Postfix's queue id from a "250 2.0.0 Ok: queued as ID" reply."""
        if self.data is None or "queued as " not in self.data.text:
            return None
        return self.data.text.rsplit("queued as ", 1)[1].split()[0]


@dataclass(frozen=True)
class TlsOptions:
    """Client TLS: certificate chain and key to present, CA file to verify the server, version bounds."""

    cert: Path | None = None
    key: Path | None = None
    ca_file: Path | None = None
    server_hostname: str | None = None
    max_version: ssl.TLSVersion | None = None
    min_version: ssl.TLSVersion | None = None

    def context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        if self.ca_file is not None:
            context.load_verify_locations(cafile=str(self.ca_file))
            context.verify_mode = ssl.CERT_REQUIRED
            context.check_hostname = self.server_hostname is not None
        else:
            context.verify_mode = ssl.CERT_NONE
        if self.cert is not None:
            context.load_cert_chain(str(self.cert), str(self.key) if self.key else None)
        with warnings.catch_warnings():  # TLS < 1.2 is deprecated: that is what a downgrade test wants
            warnings.simplefilter("ignore", DeprecationWarning)
            if self.max_version is not None and self.max_version < ssl.TLSVersion.TLSv1_2:
                # Debian's OpenSSL refuses TLS < 1.2 at security level 2: lower it to test a downgrade.
                context.set_ciphers("DEFAULT:@SECLEVEL=0")
                context.minimum_version = ssl.TLSVersion.TLSv1
            if self.min_version is not None:
                context.minimum_version = self.min_version
            if self.max_version is not None:
                context.maximum_version = self.max_version
        return context


def _reply(code: int, text: bytes | str) -> Reply:
    return Reply(code, text.decode("utf-8", "replace") if isinstance(text, bytes) else text)


def _starttls(client: smtplib.SMTP, tls: TlsOptions, transcript: Transcript) -> bool:
    try:
        code, text = client.starttls(context=tls.context())
    except smtplib.SMTPNotSupportedError:
        transcript.tls_error = "STARTTLS not offered"
        return False
    except smtplib.SMTPResponseException as exc:
        transcript.starttls = _reply(exc.smtp_code, exc.smtp_error)
        return False
    except (ssl.SSLError, OSError) as exc:
        transcript.tls_error = f"{type(exc).__name__}: {exc}"
        return False
    transcript.starttls = _reply(code, text)
    sock = client.sock
    if isinstance(sock, ssl.SSLSocket):
        transcript.tls_version = sock.version()
        peer = sock.getpeercert() if tls.ca_file is not None else None
        subject: Any = (peer or {}).get("subject", ())
        names = [pair[1] for rdn in subject for pair in rdn if pair[0] == "commonName"]
        transcript.server_cert_cn = names[-1] if names else None
    transcript.ehlo_tls = _reply(*client.ehlo(client.local_hostname))
    return True


def _auth(client: smtplib.SMTP, login: tuple[str, str], transcript: Transcript) -> bool:
    token = base64.b64encode(f"\0{login[0]}\0{login[1]}".encode()).decode()
    transcript.auth = _reply(*client.docmd("AUTH", f"PLAIN {token}"))
    return transcript.auth.code == 235


def _envelope(
    client: smtplib.SMTP,
    sender: str,
    recipients: Sequence[str],
    message: bytes,
    transcript: Transcript,
    *,
    mail_options: Sequence[str],
) -> None:
    transcript.mail = _reply(*client.mail(sender, list(mail_options)))
    if not transcript.mail.ok:
        return
    for recipient in recipients:
        transcript.rcpt[recipient] = _reply(*client.rcpt(recipient))
    if not any(reply.ok for reply in transcript.rcpt.values()):
        return
    try:
        transcript.data = _reply(*client.data(message))
    except smtplib.SMTPDataError as exc:
        transcript.data = _reply(exc.smtp_code, exc.smtp_error)


def send(
    host: str,
    port: int,
    *,
    sender: str,
    recipients: Sequence[str],
    message: bytes | str,
    helo: str = "client.test",
    starttls: bool = True,
    tls: TlsOptions | None = None,
    auth: tuple[str, str] | None = None,
    source_address: str | None = None,
    mail_options: Sequence[str] = (),
    timeout: float = 30,
) -> Transcript:
    """One SMTP transaction; see the module docstring. ``source_address`` binds the client side."""
    transcript = Transcript()
    body = message.encode() if isinstance(message, str) else message
    client = smtplib.SMTP(local_hostname=helo, timeout=timeout, source_address=(source_address or "", 0))
    try:
        transcript.banner = _reply(*client.connect(host, port))
        # smtplib's SNI / hostname check uses the host given to the constructor, not to connect().
        client._host = (tls.server_hostname if tls else None) or host  # type: ignore[attr-defined]
        transcript.ehlo = _reply(*client.ehlo(helo))
        proceed = transcript.banner.code == 220 and transcript.ehlo.ok
        if proceed and starttls:
            proceed = _starttls(client, tls or TlsOptions(), transcript)
        if proceed and auth is not None:
            proceed = _auth(client, auth, transcript)
        if proceed:
            _envelope(client, sender, recipients, body, transcript, mail_options=mail_options)
    except smtplib.SMTPServerDisconnected as exc:
        transcript.disconnected = str(exc)
    try:
        client.quit()
    except (smtplib.SMTPException, OSError):
        pass
    finally:
        client.close()
    return transcript


def message(sender: str, recipient: str, subject: str = "test", body: str = "Hello.\r\n") -> bytes:
    """A minimal RFC 5322 message with CRLF line ends."""
    lines = [
        f"From: <{sender}>",
        f"To: <{recipient}>",
        f"Subject: {subject}",
        f"Message-ID: {make_msgid(domain='test')}",
        f"Date: {formatdate()}",
        "",
    ]
    return ("\r\n".join(lines) + "\r\n" + body).encode()
