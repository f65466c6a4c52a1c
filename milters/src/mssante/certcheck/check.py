"""Check certificates and CRLs; results are values (dataclasses and enums), never exceptions.

Works with cryptography 38 (Debian 12) and current releases: bundles are split by hand (no
``load_pem_x509_certificates`` before 39) and naive/aware datetimes are bridged here.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509

from mssante.certcheck.config import CertcheckConfig, CertificateKind, CrlSource

PEM_CERTIFICATE = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL)
# A CRL whose thisUpdate is this far in the future is not trusted (clock skew allowance).
CLOCK_SKEW = timedelta(minutes=5)


class CrlState(enum.Enum):
    """Outcome of one CRL check; only VALID gives ``mssante_crl_valid 1``."""

    VALID = "valid"
    EXPIRED = "expired"  # now is past nextUpdate
    NOT_YET_VALID = "not_yet_valid"  # thisUpdate in the future
    NO_NEXT_UPDATE = "no_next_update"
    BAD_SIGNATURE = "bad_signature"  # no certificate in the issuer file signed it
    UNREADABLE = "unreadable"  # CRL file missing or not a CRL
    ISSUER_UNREADABLE = "issuer_unreadable"  # no certificate in the issuer file

    @property
    def trusted(self) -> bool:
        """True when the signature verified, so the CRL's dates may be reported."""
        return self in {CrlState.VALID, CrlState.EXPIRED, CrlState.NOT_YET_VALID, CrlState.NO_NEXT_UPDATE}


@dataclass(frozen=True)
class CertificateStatus:
    kind: CertificateKind
    not_after: datetime | None  # the first to expire in the file; None when unreadable
    count: int  # certificates found in the file


@dataclass(frozen=True)
class CrlStatus:
    ca: str
    state: CrlState
    next_update: datetime | None  # only when the signature verified
    refreshed: datetime | None  # file modification time, only when the signature verified


@dataclass(frozen=True)
class Report:
    checked_at: datetime
    certificates: tuple[CertificateStatus, ...]
    crls: tuple[CrlStatus, ...]

    @property
    def problems(self) -> list[str]:
        """Human lines naming each problem by kind or CA label (no certificate names)."""
        lines = [f"certificate {c.kind.value}: unreadable" for c in self.certificates if c.not_after is None]
        lines += [f"crl {c.ca}: {c.state.value}" for c in self.crls if c.state is not CrlState.VALID]
        return lines


def _utc(value: Any) -> datetime:
    """Aware UTC datetime from cryptography's naive (38) or aware (42+) values."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)  # type: ignore[no-any-return]
    return value.astimezone(UTC)  # type: ignore[no-any-return]


def _cert_not_after(cert: x509.Certificate) -> datetime:
    return _utc(getattr(cert, "not_valid_after_utc", None) or cert.not_valid_after)


def _crl_dates(crl: x509.CertificateRevocationList) -> tuple[datetime, datetime | None]:
    this_update = getattr(crl, "last_update_utc", None) or crl.last_update
    next_update = getattr(crl, "next_update_utc", None) or crl.next_update
    return _utc(this_update), (_utc(next_update) if next_update is not None else None)


def load_certificates(path: Path) -> list[x509.Certificate]:
    """Every certificate in a PEM file (bundle or single) or a DER file; [] when none can be read."""
    try:
        data = path.read_bytes()
    except OSError:
        return []
    blocks = PEM_CERTIFICATE.findall(data)
    certs = []
    try:
        if blocks:
            certs = [x509.load_pem_x509_certificate(block) for block in blocks]
        else:
            certs = [x509.load_der_x509_certificate(data)]
    except ValueError:
        return []
    return certs


def load_crl(path: Path) -> x509.CertificateRevocationList | None:
    try:
        data = path.read_bytes()
    except OSError:
        return None
    try:
        if b"-----BEGIN X509 CRL-----" in data:
            return x509.load_pem_x509_crl(data)
        return x509.load_der_x509_crl(data)
    except ValueError:
        return None


def check_certificate(kind: CertificateKind, path: Path) -> CertificateStatus:
    certs = load_certificates(path)
    if not certs:
        return CertificateStatus(kind, None, 0)
    return CertificateStatus(kind, min(_cert_not_after(cert) for cert in certs), len(certs))


def _signed_by_any(crl: x509.CertificateRevocationList, issuers: list[x509.Certificate]) -> bool:
    for issuer in issuers:
        if issuer.subject != crl.issuer:
            continue
        try:
            if crl.is_signature_valid(issuer.public_key()):  # type: ignore[arg-type]
                return True
        except (TypeError, ValueError):
            continue
    return False


def _date_state(crl: x509.CertificateRevocationList, now: datetime) -> tuple[CrlState, datetime | None]:
    this_update, next_update = _crl_dates(crl)
    if next_update is None:
        return CrlState.NO_NEXT_UPDATE, None
    if this_update > now + CLOCK_SKEW:
        return CrlState.NOT_YET_VALID, next_update
    if now >= next_update:
        return CrlState.EXPIRED, next_update
    return CrlState.VALID, next_update


def check_crl(source: CrlSource, now: datetime) -> CrlStatus:
    """Verify one CRL: readable, signed by a certificate of its issuer file, within its dates."""
    issuers = load_certificates(source.issuer)
    if not issuers:
        return CrlStatus(source.ca, CrlState.ISSUER_UNREADABLE, None, None)
    crl = load_crl(source.crl)
    if crl is None:
        return CrlStatus(source.ca, CrlState.UNREADABLE, None, None)
    if not _signed_by_any(crl, issuers):
        return CrlStatus(source.ca, CrlState.BAD_SIGNATURE, None, None)
    state, next_update = _date_state(crl, now)
    try:
        refreshed = datetime.fromtimestamp(int(source.crl.stat().st_mtime), UTC)
    except OSError:
        return CrlStatus(source.ca, CrlState.UNREADABLE, None, None)
    return CrlStatus(source.ca, state, next_update, refreshed)


def run_checks(config: CertcheckConfig, now: datetime | None = None) -> Report:
    """Check every configured certificate file and CRL at ``now`` (default: the current time)."""
    moment = (now or datetime.now(UTC)).replace(microsecond=0)
    return Report(
        checked_at=moment,
        certificates=tuple(check_certificate(kind, path) for kind, path in config.certificates),
        crls=tuple(check_crl(source, moment) for source in config.crls),
    )
