"""X.509 building blocks for the test PKI: keys, certificates and CRLs, written atomically.

Works with cryptography 38 (Debian 12, the host runtime) and current releases: only APIs present
in both are used, and the naive/aware datetime difference is bridged here.
"""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import cast

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

KEY_BITS = 2048
CLOCK_SKEW = timedelta(hours=1)


class Profile(enum.Enum):
    """What a leaf certificate is for; decides its key usage, extended key usage and SAN."""

    SERVER = "server"  # operator MTA: serverAuth + clientAuth, SAN dNSName = CN
    APPLICATION = "application"  # application mailbox: clientAuth, SAN dNSName = CN
    PERSONAL = "personal"  # CPS-like personal certificate: clientAuth + emailProtection, SAN email
    SIGNER = "signer"  # trust-list signing: digitalSignature + nonRepudiation, no EKU


@dataclass(frozen=True)
class Subject:
    """The distinguished name of a certificate, in IGC-Santé's shape (C, O, OU, CN)."""

    cn: str
    organisation: str
    unit: str | None = None

    def name(self) -> x509.Name:
        attributes = [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "FR"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, self.organisation),
        ]
        if self.unit is not None:
            attributes.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, self.unit))
        attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, self.cn))
        return x509.Name(attributes)


def utcnow() -> datetime:
    return datetime.now(UTC)


def not_after(cert: x509.Certificate) -> datetime:
    """The end of validity as an aware UTC datetime, on old and new cryptography."""
    value = getattr(cert, "not_valid_after_utc", None)
    if value is None:
        value = cert.not_valid_after.replace(tzinfo=UTC)
    return cast(datetime, value)


def next_update(crl: x509.CertificateRevocationList) -> datetime | None:
    value = getattr(crl, "next_update_utc", None)
    if value is None and crl.next_update is not None:
        value = crl.next_update.replace(tzinfo=UTC)
    return cast("datetime | None", value)


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename, with ``mode``."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
        os.fchmod(fd, mode)
    finally:
        os.close(fd)
    tmp.replace(path)


def write_if_different(path: Path, data: bytes) -> bool:
    """Write ``data`` unless the file already holds exactly it; True when written."""
    try:
        if path.read_bytes() == data:
            return False
    except OSError:
        pass
    write_atomic(path, data)
    return True


def _load_key(path: Path) -> object:
    try:
        data = path.read_bytes()
    except OSError:
        return None
    try:  # cryptography >= 39: skip the slow RSA consistency check on keys we wrote ourselves
        return serialization.load_pem_private_key(data, None, unsafe_skip_rsa_key_validation=True)
    except TypeError:
        pass
    except ValueError:
        return None
    try:
        return serialization.load_pem_private_key(data, None)
    except (ValueError, TypeError):
        return None


def ensure_key(path: Path) -> tuple[rsa.RSAPrivateKey, bool]:
    """Load the RSA key at ``path`` when usable, else generate and store one; True when generated."""
    key = _load_key(path)
    if isinstance(key, rsa.RSAPrivateKey) and key.key_size == KEY_BITS:
        return key, False
    key = rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    write_atomic(path, pem, 0o600)
    return key, True


def load_cert(path: Path) -> x509.Certificate | None:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError):
        return None


def load_crl(path: Path) -> x509.CertificateRevocationList | None:
    try:
        return x509.load_pem_x509_crl(path.read_bytes())
    except (OSError, ValueError):
        return None


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _rsa_public(cert: x509.Certificate) -> rsa.RSAPublicKey:
    public = cert.public_key()
    if not isinstance(public, rsa.RSAPublicKey):
        raise TypeError("the test PKI only uses RSA keys")
    return public


def signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """True when ``issuer``'s name and key issued ``cert``."""
    algorithm = cert.signature_hash_algorithm
    if cert.issuer != issuer.subject or algorithm is None:
        return False
    try:
        _rsa_public(issuer).verify(cert.signature, cert.tbs_certificate_bytes, padding.PKCS1v15(), algorithm)
    except InvalidSignature:
        return False
    return True


def same_key(cert: x509.Certificate, key: rsa.RSAPrivateKey) -> bool:
    return _rsa_public(cert).public_numbers() == key.public_key().public_numbers()


def extended_key_usage(cert: x509.Certificate) -> frozenset[x509.ObjectIdentifier]:
    try:
        return frozenset(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound:
        return frozenset()


def profile_eku(profile: Profile) -> frozenset[x509.ObjectIdentifier]:
    return {
        Profile.SERVER: frozenset({ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}),
        Profile.APPLICATION: frozenset({ExtendedKeyUsageOID.CLIENT_AUTH}),
        Profile.PERSONAL: frozenset({ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.EMAIL_PROTECTION}),
        Profile.SIGNER: frozenset(),
    }[profile]


def _key_usage(*, ca: bool, signer: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=signer,
        key_encipherment=not ca and not signer,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _base_builder(
    subject: x509.Name, key: rsa.RSAPrivateKey, issuer: x509.Name, window: tuple[datetime, datetime]
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(window[0])
        .not_valid_after(window[1])
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )


def make_ca(
    subject: Subject,
    key: rsa.RSAPrivateKey,
    issuer: tuple[x509.Certificate, rsa.RSAPrivateKey] | None,
    window: tuple[datetime, datetime],
    path_length: int | None,
) -> x509.Certificate:
    """A CA certificate; self-signed when ``issuer`` is None."""
    issuer_name = subject.name() if issuer is None else issuer[0].subject
    signing_key = key if issuer is None else issuer[1]
    builder = (
        _base_builder(subject.name(), key, issuer_name, window)
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(_key_usage(ca=True), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signing_key.public_key()), critical=False
        )
    )
    return builder.sign(signing_key, hashes.SHA256())


def make_leaf(
    subject: Subject,
    key: rsa.RSAPrivateKey,
    issuer: tuple[x509.Certificate, rsa.RSAPrivateKey],
    window: tuple[datetime, datetime],
    profile: Profile,
    *,
    email: str | None = None,
) -> x509.Certificate:
    """An end-entity certificate of ``profile`` issued by ``issuer``."""
    builder = (
        _base_builder(subject.name(), key, issuer[0].subject, window)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(ca=False, signer=profile is Profile.SIGNER), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer[1].public_key()), critical=False
        )
    )
    eku = profile_eku(profile)
    if eku:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage(sorted(eku, key=lambda o: o.dotted_string)), False
        )
    names: list[x509.GeneralName] = []
    if profile in (Profile.SERVER, Profile.APPLICATION):
        names.append(x509.DNSName(subject.cn))
    if email is not None:
        names.append(x509.RFC822Name(email))
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(issuer[1], hashes.SHA256())


def make_crl(
    issuer: tuple[x509.Certificate, rsa.RSAPrivateKey],
    revoked: list[tuple[int, datetime]],
    window: tuple[datetime, datetime],
) -> x509.CertificateRevocationList:
    """A CRL of ``issuer`` listing the (serial, revocation date) pairs in ``revoked``."""
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer[0].subject)
        .last_update(window[0])
        .next_update(window[1])
        .add_extension(x509.CRLNumber(int(window[0].timestamp())), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer[1].public_key()), critical=False
        )
    )
    for serial, when in revoked:
        entry = x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(when).build()
        builder = builder.add_revoked_certificate(entry)
    return builder.sign(issuer[1], hashes.SHA256())


def crl_pem(crl: x509.CertificateRevocationList) -> bytes:
    return crl.public_bytes(serialization.Encoding.PEM)


def crl_serials(crl: x509.CertificateRevocationList) -> frozenset[int]:
    return frozenset(entry.serial_number for entry in crl)


def crl_signed_by(crl: x509.CertificateRevocationList, issuer: x509.Certificate) -> bool:
    return crl.issuer == issuer.subject and crl.is_signature_valid(_rsa_public(issuer))
