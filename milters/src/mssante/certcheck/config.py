"""The ``certcheck`` section of ``/etc/mssante/mssante.yml``, read into a frozen dataclass.

```yaml
certcheck:
  certificates:                 # kind -> PEM file (a bundle: its first certificate to expire counts)
    operator: /etc/mssante/tls/operator.pem
    igc_chain: /etc/mssante/tls/igc-sante-chain.pem
    trustlist_ca: /etc/mssante/tls/igc-sante-chain.pem
    personal_chain: /etc/mssante/tls/personal-chain.pem
  crls:                         # one entry per CA whose CRL is used
    - ca: igc_sante_org         # metric label value: lower-case slug, never a certificate name
      crl: /var/lib/mssante/crl/igc_sante_org.crl   # PEM or DER
      issuer: /etc/mssante/tls/igc-sante-chain.pem  # file holding the CA certificate (default: igc_chain)
  textfile: /var/lib/prometheus/node-exporter/mssante_certcheck.prom
  listen: null                  # or 127.0.0.1:9743: serve the page instead of writing the file
  interval_seconds: 3600        # re-check period when listening
```
"""

from __future__ import annotations

import enum
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mssante.configfile import Problems, load_document, section

# A CA label value: a short slug chosen by the operator. No dot, '@', '=', ',' or space can pass,
# so a domain, an address or a distinguished name can never become a label value.
CA_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
DEFAULT_INTERVAL_SECONDS = 3600


class CertificateKind(enum.Enum):
    """The closed set of the ``certificate`` label (metric catalogue)."""

    OPERATOR = "operator"
    IGC_CHAIN = "igc_chain"
    TRUSTLIST_CA = "trustlist_ca"
    PERSONAL_CHAIN = "personal_chain"


@dataclass(frozen=True)
class CrlSource:
    """One CA's CRL: its label, the CRL file and the file holding the CA certificate."""

    ca: str
    crl: Path
    issuer: Path


@dataclass(frozen=True)
class Listen:
    host: str
    port: int


@dataclass(frozen=True)
class CertcheckConfig:
    certificates: tuple[tuple[CertificateKind, Path], ...]
    crls: tuple[CrlSource, ...]
    textfile: Path | None = None
    listen: Listen | None = None
    interval_seconds: int = DEFAULT_INTERVAL_SECONDS


def parse_listen(value: str) -> Listen:
    """``127.0.0.1:9743`` or ``[::1]:9743`` into a :class:`Listen`; ValueError when malformed."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not port_text.isdigit():
        raise ValueError(f"{value!r} is not HOST:PORT")
    host = host.removeprefix("[").removesuffix("]")
    ipaddress.ip_address(host)
    port = int(port_text)
    if not 0 < port < 65536:
        raise ValueError(f"port {port} is out of range")
    return Listen(host, port)


def _certificates(raw: Any, problems: Problems) -> tuple[tuple[CertificateKind, Path], ...]:
    if raw is None:
        return ()
    if not isinstance(raw, Mapping):
        problems.add("certcheck.certificates", "must be a mapping of kind to file")
        return ()
    known = {kind.value: kind for kind in CertificateKind}
    result = []
    for name, path in raw.items():
        if name not in known:
            problems.add("certcheck.certificates", f"{name!r} is not one of {sorted(known)}")
        elif path is None:
            continue
        elif not isinstance(path, str) or not path:
            problems.add(f"certcheck.certificates.{name}", "must be a file path")
        else:
            result.append((known[name], Path(path)))
    return tuple(sorted(result, key=lambda item: item[0].value))


def _crl(index: int, raw: Any, default_issuer: Path | None, problems: Problems) -> CrlSource | None:
    where = f"certcheck.crls[{index}]"
    if not isinstance(raw, Mapping):
        problems.add(where, "must be a mapping with ca, crl and issuer")
        return None
    ca, crl, issuer = raw.get("ca"), raw.get("crl"), raw.get("issuer")
    ok = True
    if not isinstance(ca, str) or not CA_NAME.match(ca):
        problems.add(f"{where}.ca", "must be a lower-case slug ([a-z][a-z0-9_]*, at most 40 characters)")
        ok = False
    if not isinstance(crl, str) or not crl:
        problems.add(f"{where}.crl", "must be a file path")
        ok = False
    if issuer is None and default_issuer is not None:
        issuer = str(default_issuer)
    if not isinstance(issuer, str) or not issuer:
        problems.add(f"{where}.issuer", "must be a file path (no igc_chain certificate to default to)")
        ok = False
    if not ok:
        return None
    return CrlSource(str(ca), Path(str(crl)), Path(str(issuer)))


def _crls(raw: Any, default_issuer: Path | None, problems: Problems) -> tuple[CrlSource, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        problems.add("certcheck.crls", "must be a list")
        return ()
    sources = [_crl(i, item, default_issuer, problems) for i, item in enumerate(raw)]
    result = tuple(source for source in sources if source is not None)
    names = [source.ca for source in result]
    for name in sorted({n for n in names if names.count(n) > 1}):
        problems.add("certcheck.crls", f"ca {name!r} appears more than once")
    return tuple(sorted(result, key=lambda source: source.ca))


def _interval(raw: Any, problems: Problems) -> int:
    if raw is None:
        return DEFAULT_INTERVAL_SECONDS
    if isinstance(raw, bool) or not isinstance(raw, int) or raw < 1:
        problems.add("certcheck.interval_seconds", "must be a positive integer")
        return DEFAULT_INTERVAL_SECONDS
    return raw


def _listen(raw: Any, problems: Problems) -> Listen | None:
    if raw is None:
        return None
    try:
        return parse_listen(str(raw))
    except ValueError as exc:
        problems.add("certcheck.listen", f"must be IP:PORT ({exc})")
        return None


def from_section(data: Mapping[str, Any], problems: Problems) -> CertcheckConfig:
    """Build the configuration from a ``certcheck`` mapping, adding every problem to ``problems``."""
    certificates = _certificates(data.get("certificates"), problems)
    chain = dict(certificates).get(CertificateKind.IGC_CHAIN)
    crls = _crls(data.get("crls"), chain, problems)
    textfile = data.get("textfile")
    if textfile is not None and (not isinstance(textfile, str) or not textfile.endswith(".prom")):
        problems.add("certcheck.textfile", "must be a path ending in .prom (node_exporter reads only those)")
        textfile = None
    listen = _listen(data.get("listen"), problems)
    if not certificates and not crls:
        problems.add("certcheck", "names no certificate and no CRL: nothing to check")
    return CertcheckConfig(
        certificates=certificates,
        crls=crls,
        textfile=Path(textfile) if textfile else None,
        listen=listen,
        interval_seconds=_interval(data.get("interval_seconds"), problems),
    )


def load(path: Path | str) -> CertcheckConfig:
    """Read the ``certcheck`` section of the configuration file; ConfigError lists every problem."""
    document = load_document(path)
    problems = Problems(str(path))
    config = from_section(section(document, "certcheck", problems), problems)
    problems.raise_if_any()
    return config
