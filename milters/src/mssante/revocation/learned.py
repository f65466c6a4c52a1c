"""The certificates listed operators were seen serving: learned by a STARTTLS probe, or seeded.

Stored one PEM file per certificate, named by its SHA-256 fingerprint, with a small JSON index
(the CN it was learned for, when it was first and last seen, and how).
"""

from __future__ import annotations

import json
import os
import smtplib
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

INDEX = "learned.json"


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 fingerprint as Postfix writes it (``smtpd_tls_fingerprint_digest = sha256``)."""
    return ":".join(f"{b:02X}" for b in cert.fingerprint(hashes.SHA256()))


@dataclass(frozen=True)
class Learned:
    fingerprint: str
    cn: str
    source: str  # "probe" or "seed"
    first_seen: str
    last_seen: str
    path: Path


class LearnedStore:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _index(self) -> dict[str, dict[str, Any]]:
        try:
            data = json.loads((self.directory / INDEX).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        return data if isinstance(data, dict) else {}

    def add(self, cert: x509.Certificate, cn: str, source: str, now: datetime | None = None) -> bool:
        """Remember ``cert`` as served for ``cn``; return True when it was not known yet."""
        stamp = (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
        fp = fingerprint(cert)
        index = self._index()
        known = fp in index
        entry = index.setdefault(fp, {"cn": cn, "source": source, "first_seen": stamp})
        entry["last_seen"] = stamp
        self.directory.mkdir(parents=True, exist_ok=True)
        pem_path = self.directory / (fp.replace(":", "").lower() + ".pem")
        if not pem_path.exists():
            pem_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        tmp = self.directory / (INDEX + ".tmp")
        tmp.write_text(json.dumps(index, indent=1, sort_keys=True), encoding="utf-8")
        self._owned_like_directory(pem_path, tmp)
        tmp.replace(self.directory / INDEX)
        return not known

    def _owned_like_directory(self, *paths: Path) -> None:
        """Run as root (an operator seeding by hand, the lab), leave the files to the job's user."""
        if os.geteuid() != 0:
            return
        owner = self.directory.stat()
        for path in paths:
            os.chown(path, owner.st_uid, owner.st_gid)

    def __iter__(self) -> Iterator[tuple[Learned, x509.Certificate]]:
        for fp, entry in sorted(self._index().items()):
            path = self.directory / (fp.replace(":", "").lower() + ".pem")
            try:
                cert = x509.load_pem_x509_certificate(path.read_bytes())
            except (OSError, ValueError):
                continue
            yield (
                Learned(fp, entry["cn"], entry["source"], entry["first_seen"], entry["last_seen"], path),
                cert,
            )


def probe(host: str, port: int, ca_file: Path, timeout: float) -> x509.Certificate:
    """The certificate ``host`` serves after STARTTLS, verified against ``ca_file`` (the IGC chain).

    The chain is verified (an unrelated certificate teaches nothing) but not the revocation status,
    which is what the deny-list decides. The name is matched against the CN by the caller.
    """
    context = ssl.create_default_context(cafile=str(ca_file))
    context.check_hostname = False
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    with smtplib.SMTP(host, port, timeout=timeout) as client:
        client.ehlo("mssante-revocation-probe")
        client.starttls(context=context)
        der = client.sock.getpeercert(binary_form=True) if isinstance(client.sock, ssl.SSLSocket) else None
        if not der:
            raise ssl.SSLError("no peer certificate")
        return x509.load_der_x509_certificate(der)
