"""Test helpers: trust lists in the published layout, signed with xmlsec (mssante.lab.trustlist).

Also used by ``tests/bench/bench_trustlist.py`` for the 20,000-entry list.
"""

from __future__ import annotations

import functools
import ipaddress
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mssante.lab.pki import Pki, ensure_pki
from mssante.lab.trustlist import NS, Entry, build_list, sign

REPO = Path(__file__).resolve().parents[3]
# A copy of shared/mssante/listeblanche-sample.xml (the trust list's real layout, fictional entries).
SAMPLE = REPO / "tests" / "data" / "listeblanche-sample.xml"
# The same test PKI as the `pki` fixture (tests/conftest.py).
PKI_DIR = Path(os.environ.get("MSSANTE_TEST_PKI_DIR", REPO / ".cache" / "test-pki"))
SIGNER_CN = "Signataire Liste Blanche TEST"

__all__ = [  # build_list, Entry, NS and sign live in the product (mssante.lab.trustlist)
    "NS",
    "SAMPLE",
    "SIGNER_CN",
    "Entry",
    "build_list",
    "foreign_signer",
    "issue_server_cert",
    "pki",
    "replace_text",
    "sample_bytes",
    "sign",
    "sign_with",
    "signed_sample",
    "synthetic_entries",
]


def sample_bytes() -> bytes:
    """The sample list of shared/ (7 entries, 6 domains, tricky names)."""
    return SAMPLE.read_bytes()


@functools.cache
def pki() -> Pki:
    """The shared test PKI (created once, reused by every test run; described once per process)."""
    return ensure_pki(PKI_DIR)


def synthetic_entries(count: int, prefix: str = "dom") -> list[Entry]:
    """``count`` entries; every fourth domain has a second certificate (two entries, one name)."""
    entries = []
    index = 0
    while len(entries) < count:
        name = f"{prefix}{index}.mssante.fr"
        entries.append(Entry(name, f"CN=mx1.{prefix}{index}.fr,OU={index:010d},O=ETABLISSEMENT {index},C=FR"))
        if index % 4 == 0 and len(entries) < count:
            entries.append(
                Entry(name, f"CN=mx2.{prefix}{index}.fr,OU={index:010d},O=ETABLISSEMENT {index},C=FR")
            )
        index += 1
    return entries


def sign_with(document: bytes, leaf_name: str = "trustlist_signer") -> bytes:
    """Sign with one of the test PKI's leaves (default: the pinned trust-list signer)."""
    leaf = getattr(pki(), leaf_name)
    return sign(document, leaf.key, [leaf.cert])


def signed_sample() -> bytes:
    return sign_with(sample_bytes())


def foreign_signer(directory: Path) -> tuple[Path, Path]:
    """A certificate named like the pinned signer, issued by the foreign CA (key, cert)."""
    authority = pki().foreign_ca
    ca_cert = x509.load_pem_x509_certificate(authority.cert.read_bytes())
    ca_key = serialization.load_pem_private_key(authority.key.read_bytes(), password=None)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = datetime.now(UTC)
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "FR"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "AGENCE DU NUMERIQUE EN SANTE (TEST)"),
            x509.NameAttribute(NameOID.COMMON_NAME, SIGNER_CN),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    key_path, cert_path = directory / "foreign-signer.key", directory / "foreign-signer.pem"
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


def issue_server_cert(directory: Path, authority_name: str, address: str) -> tuple[Path, Path]:
    """A TLS server certificate for IP ``address`` issued by one of the test PKI's CAs (cert, key)."""
    authority = getattr(pki(), authority_name)
    ca_cert = x509.load_pem_x509_certificate(authority.cert.read_bytes())
    ca_key = serialization.load_pem_private_key(authority.key.read_bytes(), password=None)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, address)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(address))]), False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    key_path, cert_path = (
        directory / f"server-{authority_name}.key",
        directory / f"server-{authority_name}.pem",
    )
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    chain = cert.public_bytes(serialization.Encoding.PEM) + authority.cert.read_bytes()
    cert_path.write_bytes(chain)
    return cert_path, key_path


def replace_text(document: bytes, old: bytes, new: bytes, count: int = 1) -> bytes:
    assert old in document, old
    return document.replace(old, new, count)
