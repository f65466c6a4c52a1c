"""A next-hop SMTP sink (aiosmtpd ``Controller``) that captures every envelope and its raw bytes.

Optionally offers STARTTLS with a server certificate from the test PKI and asks for (or requires) a
client certificate verified against a CA file; each message records the TLS facts of its session.
"""

from __future__ import annotations

import ssl
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from tests.support.common import wait_until


@dataclass(frozen=True)
class Received:
    """One message as the sink got it; ``data`` is the raw DATA (dot-unstuffed, CRLF line ends)."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes
    peer: tuple[str, int]
    helo: str | None
    tls_version: str | None
    cipher: str | None
    client_cert_cn: str | None  # CN of the client certificate, present only when it verified
    mail_options: tuple[str, ...]


def _cn(peercert: Any) -> str | None:
    for rdn in (peercert or {}).get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None


@dataclass
class _Handler:
    sink: Sink

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        reply = self.sink.rcpt_replies.get(address)
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        tls: Any = session.ssl or {}
        ssl_object = tls.get("ssl_object") if isinstance(tls, dict) else None
        cipher = ssl_object.cipher() if ssl_object is not None else None
        message = Received(
            mail_from=str(envelope.mail_from),
            rcpt_tos=tuple(envelope.rcpt_tos),
            data=bytes(envelope.original_content or b""),
            peer=tuple(session.peer),  # type: ignore[arg-type]
            helo=session.host_name,
            tls_version=ssl_object.version() if ssl_object is not None else None,
            cipher=cipher[0] if cipher else None,
            client_cert_cn=_cn(ssl_object.getpeercert()) if ssl_object is not None else None,
            mail_options=tuple(envelope.mail_options),
        )
        with self.sink.lock:
            self.sink.messages.append(message)
        return self.sink.data_reply


@dataclass
class Sink:
    """An SMTP server on ``address:port`` that stores what it receives in ``messages``.

    ``tls_cert``/``tls_key``: offer STARTTLS with this certificate chain. ``client_ca``: ask for a
    client certificate verified against this CA file (``require_client_cert``: refuse the handshake
    without one). ``rcpt_replies`` and ``data_reply`` let a test script refusals or deferrals.
    """

    address: str
    port: int
    tls_cert: Path | None = None
    tls_key: Path | None = None
    client_ca: Path | None = None
    require_client_cert: bool = False
    require_starttls: bool = False
    hostname: str = "sink.test"
    messages: list[Received] = field(default_factory=list)
    rcpt_replies: dict[str, str] = field(default_factory=dict)
    data_reply: str = "250 2.0.0 OK: queued by sink"
    lock: threading.Lock = field(default_factory=threading.Lock)
    _controller: Controller | None = None

    def _tls_context(self) -> ssl.SSLContext | None:
        if self.tls_cert is None:
            return None
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(self.tls_cert), str(self.tls_key) if self.tls_key else None)
        if self.client_ca is not None:
            context.load_verify_locations(cafile=str(self.client_ca))
            context.verify_mode = ssl.CERT_REQUIRED if self.require_client_cert else ssl.CERT_OPTIONAL
        return context

    def start(self) -> Sink:
        self._controller = Controller(
            _Handler(self),
            hostname=self.address,
            port=self.port,
            server_hostname=self.hostname,
            tls_context=self._tls_context(),
            require_starttls=self.require_starttls,
            decode_data=False,
            enable_SMTPUTF8=True,
            ready_timeout=10,
        )
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def wait_for(self, count: int = 1, timeout: float = 30) -> list[Received]:
        """Wait until at least ``count`` messages arrived; all messages so far."""

        def enough() -> list[Received] | None:
            with self.lock:
                return list(self.messages) if len(self.messages) >= count else None

        return wait_until(enough, timeout, f"{count} message(s) at the sink {self.hostport}")

    @property
    def hostport(self) -> str:
        """``[address]:port`` for a Postfix relayhost or transport next hop."""
        return f"[{self.address}]:{self.port}"
