# -*- coding: utf-8 -*-
"""Read-only observations of a mail server for the MSSanté audit (standard library only).

Everything here only reads: `postconf` queries (never `postfix check`, which creates directories),
`doveconf`, `postmap -q`, files, and TLS/SMTP/IMAP sessions that end before any mail is sent.
It runs on the audited host through Ansible, which may not have the appliance's Python package yet.
"""

from __future__ import annotations

import imaplib
import json
import os
import re
import smtplib
import socket
import ssl
import subprocess
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional

TIMEOUT = 10.0
# TLS 1.2 suites outside TLS-2's list (no forward secrecy, or CBC): a listener must refuse each.
WEAK_TLS12_CIPHERS = ("AES128-SHA", "AES256-GCM-SHA384", "ECDHE-RSA-AES128-SHA", "ECDHE-RSA-AES256-SHA384")


def run(argv: List[str]) -> Optional[str]:
    """Standard output of a read-only command, or None when it cannot run or fails."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def postconf(config_dir: str, names: List[str], expand: bool = True) -> Dict[str, str]:
    """Current values (defaults included) of ``names``; empty when the instance is absent."""
    if not os.path.isfile(os.path.join(config_dir, "main.cf")):
        return {}
    out = run(["postconf", "-c", config_dir] + (["-x"] if expand else []) + names) or ""
    values = {}
    for line in out.splitlines():
        name, sep, value = line.partition(" = ")
        if sep:
            values[name.strip()] = value.strip()
        elif line.endswith(" ="):
            values[line[:-2].strip()] = ""
    return values


@dataclass
class Service:
    """One master.cf service: its endpoint, type, command and its -o overrides."""

    endpoint: str
    kind: str
    command: str
    options: Dict[str, str] = field(default_factory=dict)

    @property
    def port(self) -> Optional[int]:
        tail = self.endpoint.rpartition(":")[2]
        named = {"smtp": 25, "submission": 587, "smtps": 465, "submissions": 465}
        return int(tail) if tail.isdigit() else named.get(tail)

    def host(self, inet_interfaces: str = "") -> str:
        """The address to reach: the one in the service name, else the instance's first interface."""
        host = self.endpoint.rpartition(":")[0] if ":" in self.endpoint else ""
        if host:
            return host.strip("[]")
        first = inet_interfaces.replace(",", " ").split()[:1]
        if first and first[0] not in ("all", "loopback-only", "localhost"):
            return first[0].strip("[]")
        return "127.0.0.1"


def master_services(config_dir: str) -> List[Service]:
    if not os.path.isfile(os.path.join(config_dir, "master.cf")):
        return []
    services = {}
    for line in (run(["postconf", "-c", config_dir, "-M"]) or "").splitlines():
        fields = line.split()
        if len(fields) >= 8:
            key = fields[0] + "/" + fields[1]
            services[key] = Service(fields[0], fields[1], fields[7])
    for line in (run(["postconf", "-c", config_dir, "-P"]) or "").splitlines():
        match = re.match(r"^(\S+)/(\S+)/(\S+) = (.*)$", line)
        if match and match.group(1) + "/" + match.group(2) in services:
            services[match.group(1) + "/" + match.group(2)].options[match.group(3)] = match.group(4)
    return list(services.values())


@dataclass
class TlsProbe:
    """What a client saw of one listener: the session, or why there was none."""

    connected: bool = False
    greeting_code: int = 0  # SMTP: the reply to EHLO (a 4xx here means the service fails closed)
    before_tls: List[str] = field(default_factory=list)  # capabilities offered before STARTTLS
    mail_before_tls: int = 0  # SMTP: the reply code to MAIL FROM:<> before STARTTLS (then RSET)
    after_tls: List[str] = field(default_factory=list)  # capabilities offered after it
    version: str = ""
    cipher: str = ""
    cert_der_hex: str = ""
    error: str = ""


def _context(version: Optional[ssl.TLSVersion], ciphers: Optional[str]) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the chain is judged from the certificate, not by the handshake
    if version is not None:
        context.minimum_version = version
        context.maximum_version = version
        # So that the server, not this client's OpenSSL policy, decides about old versions.
        context.set_ciphers((ciphers or "DEFAULT") + ":@SECLEVEL=0")
    elif ciphers:
        context.set_ciphers(ciphers + ":@SECLEVEL=0")
    return context


def probe_smtp(host: str, port: int, version: Optional[ssl.TLSVersion] = None, ciphers: Optional[str] = None) -> TlsProbe:
    """EHLO, STARTTLS, EHLO, QUIT: no MAIL command, nothing is queued."""
    result = TlsProbe()
    try:
        with smtplib.SMTP(host, port, timeout=TIMEOUT) as client:
            result.connected = True
            result.greeting_code = client.ehlo("mssante-audit.invalid")[0]
            if result.greeting_code >= 400:
                result.error = "EHLO answered %d" % result.greeting_code
                return result
            result.before_tls = sorted(client.esmtp_features)
            if version is None:
                result.mail_before_tls = client.mail("<>")[0]
                client.rset()
            if "starttls" not in client.esmtp_features:
                result.error = "no STARTTLS"
                return result
            client.starttls(context=_context(version, ciphers))
            _record_session(result, client.sock)
            client.ehlo("mssante-audit.invalid")
            result.after_tls = sorted(
                "auth " + client.esmtp_features["auth"] if k == "auth" else k for k in client.esmtp_features
            )
    except (OSError, smtplib.SMTPException, ssl.SSLError) as exc:
        result.error = type(exc).__name__ + ": " + str(exc)[:200]
    return result


def probe_imap(host: str, port: int, implicit: bool, version: Optional[ssl.TLSVersion] = None,
               ciphers: Optional[str] = None) -> TlsProbe:
    """CAPABILITY, STARTTLS (or implicit TLS), CAPABILITY, LOGOUT: no login is attempted."""
    result = TlsProbe()
    try:
        if implicit:
            client: imaplib.IMAP4 = imaplib.IMAP4_SSL(host, port, ssl_context=_context(version, ciphers),
                                                      timeout=TIMEOUT)
            result.connected = True
        else:
            client = imaplib.IMAP4(host, port, timeout=TIMEOUT)
            result.connected = True
            result.before_tls = sorted(client.capabilities)
            client.starttls(ssl_context=_context(version, ciphers))
        _record_session(result, client.sock)
        result.after_tls = sorted(client.capabilities)
        client.logout()
    except (OSError, imaplib.IMAP4.error, ssl.SSLError) as exc:
        result.error = type(exc).__name__ + ": " + str(exc)[:200]
    return result


def _record_session(result: TlsProbe, sock: Any) -> None:
    if isinstance(sock, ssl.SSLSocket):
        result.version = sock.version() or ""
        result.cipher = (sock.cipher() or ("",))[0]
        result.cert_der_hex = (sock.getpeercert(binary_form=True) or b"").hex()


def probe_listener(protocol: str, host: str, port: int) -> Dict[str, Any]:
    """The default session, a TLS 1.1 attempt, a TLS 1.2 attempt, and one per weak TLS 1.2 suite."""

    def one(version: Optional[ssl.TLSVersion] = None, ciphers: Optional[str] = None) -> Dict[str, Any]:
        if protocol in ("imap", "imaps"):
            return asdict(probe_imap(host, port, protocol == "imaps", version, ciphers))
        return asdict(probe_smtp(host, port, version, ciphers))

    return {
        "protocol": protocol,
        "host": host,
        "port": port,
        "default": one(),
        "tls1_1": one(ssl.TLSVersion.TLSv1_1),
        "tls1_2": one(ssl.TLSVersion.TLSv1_2),
        "weak": {name: one(ssl.TLSVersion.TLSv1_2, name) for name in WEAK_TLS12_CIPHERS},
    }


def certificate_facts(der_hex: str, chain: str) -> Dict[str, Any]:
    """Key size, signature algorithm and chain verification of a served certificate (openssl, stdin only)."""
    pem = ssl.DER_cert_to_PEM_cert(bytes.fromhex(der_hex))
    text = _openssl(["x509", "-noout", "-text"], pem) or ""
    bits = re.search(r"Public-Key: \((\d+) bit\)", text)
    algorithm = re.search(r"Signature Algorithm: (\S+)", text)
    verified = _openssl(["verify", "-CAfile", chain], pem) if chain and os.path.isfile(chain) else None
    return {
        "key_bits": int(bits.group(1)) if bits else 0,
        "rsa": "rsaEncryption" in text,
        "signature": algorithm.group(1) if algorithm else "",
        "verified": bool(verified and verified.strip().endswith("OK")),
    }


def _openssl(args: List[str], stdin: str) -> Optional[str]:
    try:
        done = subprocess.run(["openssl"] + args, input=stdin, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def read_json(path: str) -> Optional[Any]:
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def read_text(path: str) -> Optional[str]:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read()
    except OSError:
        return None


def reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=TIMEOUT):
            return True
    except OSError:
        return False
