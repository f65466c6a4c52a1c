"""Certificates: loading the configured CA bundle and checking a signer's chain and pin (TRUST-3).

cryptography 38 (the host runtime) has no path-validation API, so the chain is checked here:
each certificate must be signed by the next, every issuer must be a CA, every certificate must be
valid now, and the path must end at a certificate of the configured bundle.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.serialization import pkcs7

from mssante.trustlist import dn as dnlib

MAX_CHAIN = 8


class CertificateError(Exception):
    """A certificate problem; the message is meant for the operator."""


_PEM_BLOCK = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL)


def _load_pem_certificates(data: bytes) -> list[x509.Certificate]:
    """Every PEM certificate of ``data`` (``x509.load_pem_x509_certificates`` is cryptography >= 39)."""
    return [x509.load_pem_x509_certificate(block) for block in _PEM_BLOCK.findall(data)]


def load_bundle(path: Path | str) -> list[x509.Certificate]:
    """Load every certificate of a PEM file, a DER certificate or a PKCS#7 bundle (.p7b)."""
    data = Path(path).read_bytes()
    loaders = (
        _load_pem_certificates if b"-----BEGIN CERTIFICATE" in data else None,
        pkcs7.load_pem_pkcs7_certificates if b"-----BEGIN PKCS7" in data else None,
        pkcs7.load_der_pkcs7_certificates,
        lambda raw: [x509.load_der_x509_certificate(raw)],
    )
    for loader in loaders:
        if loader is None:
            continue
        try:
            certs = list(loader(data))
        except ValueError:
            continue
        if certs:
            return certs
    raise CertificateError(f"{path}: no certificate found (expected PEM, DER or PKCS#7)")


def bundle_pem(certs: Sequence[x509.Certificate]) -> str:
    """The certificates as concatenated PEM text (for ``ssl`` ``cadata``)."""
    return "".join(c.public_bytes(serialization.Encoding.PEM).decode("ascii") for c in certs)


def _not_before(cert: x509.Certificate) -> datetime:
    value: datetime | None = getattr(cert, "not_valid_before_utc", None)  # cryptography >= 42
    return value if value is not None else cert.not_valid_before.replace(tzinfo=UTC)


def _not_after(cert: x509.Certificate) -> datetime:
    value: datetime | None = getattr(cert, "not_valid_after_utc", None)  # cryptography >= 42
    return value if value is not None else cert.not_valid_after.replace(tzinfo=UTC)


def signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """True when ``issuer``'s key verifies ``cert``'s signature and the names chain."""
    if cert.issuer != issuer.subject:
        return False
    key = issuer.public_key()
    algorithm = cert.signature_hash_algorithm
    try:
        if isinstance(key, rsa.RSAPublicKey) and algorithm is not None:
            key.verify(cert.signature, cert.tbs_certificate_bytes, padding.PKCS1v15(), algorithm)
        elif isinstance(key, ec.EllipticCurvePublicKey) and algorithm is not None:
            key.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(algorithm))
        elif isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
            key.verify(cert.signature, cert.tbs_certificate_bytes)
        else:
            return False
    except InvalidSignature:
        return False
    return True


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return False
    return constraints.ca


def _check_time(cert: x509.Certificate, now: datetime, role: str) -> None:
    subject = cert.subject.rfc4514_string()
    if now > _not_after(cert):
        raise CertificateError(f"{role} certificate {subject!r} expired on {_not_after(cert):%Y-%m-%d}")
    if now < _not_before(cert):
        raise CertificateError(
            f"{role} certificate {subject!r} is not valid before {_not_before(cert):%Y-%m-%d}"
        )


def verify_chain(
    leaf: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
    anchors: Sequence[x509.Certificate],
    now: datetime | None = None,
) -> list[x509.Certificate]:
    """Return the path from ``leaf`` to an anchor, or raise :class:`CertificateError`."""
    moment = now or datetime.now(UTC)
    _check_time(leaf, moment, "signer")
    path = [leaf]
    current = leaf
    for _ in range(MAX_CHAIN):
        anchor = next((a for a in anchors if signed_by(current, a)), None)
        if anchor is not None and _is_ca(anchor):
            _check_time(anchor, moment, "CA")
            return [*path, anchor]
        issuer = next((c for c in intermediates if c != current and signed_by(current, c)), None)
        if issuer is None or not _is_ca(issuer):
            break
        _check_time(issuer, moment, "intermediate CA")
        path.append(issuer)
        current = issuer
    raise CertificateError(
        f"signer certificate {leaf.subject.rfc4514_string()!r} does not chain to the configured CA"
    )


def matches_signer(cert: x509.Certificate, pinned: str) -> bool:
    """True when ``cert``'s subject is the pinned signer: a full RFC 4514 DN, or a CN alone.

    ``pinned`` without ``=`` is a bare CN; ``CN=value`` alone also compares the CN only; any other
    DN must equal the whole subject (RDN order kept, values compared case-insensitively).
    """
    subject = dnlib.from_x509_name(cert.subject)
    text = pinned.strip()
    if "=" not in text:
        wanted = text.casefold()
        return any(cn.casefold() == wanted for cn in dnlib.common_names(subject))
    parsed = dnlib.parse_dn(text)
    if len(parsed) == 1 and len(parsed[0]) == 1 and parsed[0][0][0] == "CN":
        wanted = parsed[0][0][1].casefold()
        return any(cn.casefold() == wanted for cn in dnlib.common_names(subject))
    return dnlib.same_dn(parsed, subject)


def check_signing_usage(cert: x509.Certificate) -> None:
    """Refuse a certificate whose key usage forbids signatures, or that is a CA."""
    if _is_ca(cert):
        raise CertificateError("the signing certificate is a CA certificate")
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return
    if not (usage.digital_signature or usage.content_commitment):
        raise CertificateError("the signing certificate's key usage does not allow signatures")
