"""Download each IGC-Santé CA's CRL, verify it against the CA, keep it only when it is good and newer."""

from __future__ import annotations

import enum
import tempfile
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509

from mssante.certcheck.check import CrlState, check_crl, load_crl
from mssante.certcheck.config import CrlSource

MAX_CRL_BYTES = 64 * 1024 * 1024


class RefreshOutcome(enum.Enum):
    UPDATED = "updated"
    UNCHANGED = "unchanged"  # same or older than the CRL already kept
    REFUSED = "refused"  # did not verify against its CA, or outside its dates: the old one is kept
    FETCH_FAILED = "fetch_failed"


@dataclass(frozen=True)
class CrlDownload:
    """One CA's CRL: a label (closed, chosen by the operator), where to get it, who must have signed it."""

    ca: str
    url: str
    issuer: Path

    def kept_path(self, crl_dir: Path) -> Path:
        return crl_dir / f"{self.ca}.crl"


@dataclass(frozen=True)
class Refresh:
    ca: str
    outcome: RefreshOutcome
    detail: str


def _fetch(url: str, proxy: str | None, timeout: float) -> bytes:
    if url.startswith("/"):
        return Path(url).read_bytes()[:MAX_CRL_BYTES]
    handlers: list[urllib.request.BaseHandler] = [
        urllib.request.ProxyHandler({"http": proxy, "https": proxy} if proxy else {})
    ]
    opener = urllib.request.build_opener(*handlers)
    with opener.open(url, timeout=timeout) as response:
        data: bytes = response.read(MAX_CRL_BYTES + 1)
    if len(data) > MAX_CRL_BYTES:
        raise ValueError(f"larger than {MAX_CRL_BYTES} bytes")
    return data


def _this_update(crl: x509.CertificateRevocationList) -> datetime:
    value: datetime = getattr(crl, "last_update_utc", None) or crl.last_update  # cryptography < 42
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def refresh(
    source: CrlDownload,
    crl_dir: Path,
    proxy: str | None = None,
    timeout: float = 30.0,
    now: datetime | None = None,
) -> Refresh:
    """Fetch, verify and (when good and newer) atomically replace the kept CRL of one CA."""
    now = now or datetime.now(UTC)
    try:
        data = _fetch(source.url, proxy, timeout)
    except (OSError, ValueError) as exc:
        return Refresh(source.ca, RefreshOutcome.FETCH_FAILED, str(exc))
    crl_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=crl_dir, prefix=f".{source.ca}.", delete=False) as tmp:
        tmp.write(data)
    staged = Path(tmp.name)
    try:
        status = check_crl(CrlSource(source.ca, staged, source.issuer), now)
        if status.state is not CrlState.VALID:
            return Refresh(source.ca, RefreshOutcome.REFUSED, status.state.value)
        kept, new = load_crl(source.kept_path(crl_dir)), load_crl(staged)
        assert new is not None  # check_crl read it
        if kept is not None and _this_update(kept) >= _this_update(new):
            return Refresh(source.ca, RefreshOutcome.UNCHANGED, "not newer than the kept CRL")
        staged.chmod(0o644)
        staged.replace(source.kept_path(crl_dir))
        return Refresh(source.ca, RefreshOutcome.UPDATED, f"{len(list(new))} revoked")
    finally:
        staged.unlink(missing_ok=True)
