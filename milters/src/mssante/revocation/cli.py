"""`mssante-revocation` (also `python3 -m mssante.revocation`): CRLs, learning, the deny-list.

    mssante-revocation run --config FILE          refresh CRLs, probe listed operators, rebuild the map
    mssante-revocation refresh-crls --config FILE
    mssante-revocation learn --config FILE [--seed CERT --cn CN]
    mssante-revocation build --config FILE

Exit codes: 0 done, 1 a CRL was refused or could not be fetched (the old one is kept; the map is
still rebuilt from what verified), 2 usage or configuration error.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from prometheus_client import CollectorRegistry, Gauge, write_to_textfile

from mssante.certcheck.check import load_crl
from mssante.configfile import (
    DEFAULT_CONFIG_PATH,
    ConfigError,
    Problems,
    absolute_path,
    load_document,
    section,
)
from mssante.revocation import crls as crl_mod
from mssante.revocation.denylist import MAP_NAME, revoked, write_map
from mssante.revocation.learned import LearnedStore, probe

log = logging.getLogger("mssante.revocation")
_CA_LABEL = re.compile(r"^[a-z][a-z0-9_]{0,39}$")


@dataclass(frozen=True)
class RevocationSettings:
    dir: Path
    crls: tuple[crl_mod.CrlDownload, ...]
    ca_file: Path
    trustlist_dir: Path
    postfix_config_dir: Path | None
    proxy: str | None = None
    timeout_seconds: float = 30.0
    probe_port: int = 25
    probe: bool = True
    textfile: Path | None = None
    learned_dir: Path | None = None  # default: dir/learned
    deny_list: Path | None = None  # default: dir/ccert_access (Postfix reads hash:<this>)

    @property
    def learned(self) -> Path:
        return self.learned_dir or self.dir / "learned"

    @property
    def map_path(self) -> Path:
        return self.deny_list or self.dir / MAP_NAME


def _optional_path(data: Mapping[str, Any], key: str, problems: Problems) -> Path | None:
    value = data.get(key)
    return _abs(value, f"revocation.{key}", problems) if value else None


def _abs(value: object, where: str, problems: Problems) -> Path | None:
    path = absolute_path(value, where, problems)
    if path is None and value is None:
        problems.add(where, "must be an absolute path")
    return path


def _downloads(raw: object, ca_file: object, problems: Problems) -> tuple[crl_mod.CrlDownload, ...]:
    """The CRL sources; a source without ``issuer`` is checked against ``ca_file`` (the IGC chain)."""
    if not isinstance(raw, list):
        problems.add("revocation.crls", "must be a list of {ca, url, issuer}")
        return ()
    found = []
    for n, item in enumerate(raw):
        where = f"revocation.crls[{n}]"
        if not isinstance(item, Mapping) or not _CA_LABEL.match(str(item.get("ca", ""))):
            problems.add(where, "needs ca: a lower-case label (a-z, 0-9, _), never a certificate name")
            continue
        url = item.get("url")
        issuer = _abs(item.get("issuer") or ca_file, f"{where}.issuer", problems)
        if not isinstance(url, str) or not url.startswith(("http://", "https://", "file://", "/")):
            problems.add(f"{where}.url", "must be an http(s) or file URL, or an absolute path")
        elif issuer is not None:
            found.append(crl_mod.CrlDownload(str(item["ca"]), url.removeprefix("file://"), issuer))
    return tuple(found)


def load_settings(path: Path) -> RevocationSettings:
    document = load_document(path)
    problems = Problems(str(path))
    data: Mapping[str, Any] = section(document, "revocation", problems)
    trust = section(document, "trustlist", problems)
    out_dir = str(trust.get("out_dir", "/var/lib/mssante/trustlist"))
    ca_file = data.get("ca_file", trust.get("ca_file", "/etc/mssante/tls/igc-sante-chain.pem"))
    postfix_dir = data.get("postfix_config_dir", "/etc/postfix-mssante")
    settings = RevocationSettings(
        dir=_abs(data.get("dir", "/var/lib/mssante/revocation"), "revocation.dir", problems) or Path("/"),
        crls=_downloads(data.get("crls", []), ca_file, problems),
        ca_file=_abs(ca_file, "revocation.ca_file", problems) or Path("/"),
        trustlist_dir=Path(out_dir) / "current",
        postfix_config_dir=_abs(postfix_dir, "revocation.postfix_config_dir", problems)
        if postfix_dir
        else None,
        proxy=data.get("proxy", trust.get("proxy")),
        timeout_seconds=float(data.get("timeout_seconds", 30)),
        probe_port=int(data.get("probe_port", 25)),
        probe=bool(data.get("probe", True)),
        textfile=_optional_path(data, "textfile", problems),
        learned_dir=_optional_path(data, "learned_dir", problems),
        deny_list=_optional_path(data, "deny_list", problems),
    )
    problems.raise_if_any()
    return settings


def refresh_crls(settings: RevocationSettings) -> int:
    failures = 0
    for source in settings.crls:
        result = crl_mod.refresh(source, settings.dir / "crls", settings.proxy, settings.timeout_seconds)
        level = logging.INFO
        if result.outcome in (crl_mod.RefreshOutcome.REFUSED, crl_mod.RefreshOutcome.FETCH_FAILED):
            failures += 1
            level = logging.ERROR
        log.log(level, "crl %s: %s (%s)", source.ca, result.outcome.value, result.detail)
    return failures


def _listed_cns(settings: RevocationSettings) -> set[str]:
    from mssante.trustlist.index import TrustIndex  # noqa: PLC0415

    index = TrustIndex.load(settings.trustlist_dir)
    return {cn for entry in index.entries() if not entry.local for cn in entry.cns}


def learn(settings: RevocationSettings) -> int:
    store, errors = LearnedStore(settings.learned), 0
    for cn in sorted(_listed_cns(settings)):
        try:
            cert = probe(cn, settings.probe_port, settings.ca_file, settings.timeout_seconds)
        except (OSError, ValueError) as exc:
            errors += 1
            log.warning("probe of a listed operator failed: %s", type(exc).__name__)
            continue
        if store.add(cert, cn, "probe"):
            log.info("learned a new certificate for a listed operator")
    return errors


def build(settings: RevocationSettings, registry: CollectorRegistry | None = None) -> int:
    crl_dir = settings.dir / "crls"
    kept = {s.ca: load_crl(s.kept_path(crl_dir)) for s in settings.crls}
    usable: dict[str, x509.CertificateRevocationList] = {ca: c for ca, c in kept.items() if c is not None}
    learned = list(LearnedStore(settings.learned))
    items = revoked(learned, usable)
    write_map(settings.map_path, items, settings.postfix_config_dir)
    try:
        listed = _listed_cns(settings)
    except Exception:
        listed = set()
    if registry is not None:
        _gauge(registry, "learned_certificates", "Certificates learned from listed operators.", len(learned))
        _gauge(registry, "denied_certificates", "Revoked certificates in the deny-list.", len(items))
        peers = sum(1 for item in items if item.learned.cn.casefold() in {c.casefold() for c in listed})
        _gauge(
            registry, "listed_peers_revoked", "Revoked learned certificates whose CN is still listed.", peers
        )
    log.info("deny-list: %d revoked of %d learned certificates", len(items), len(learned))
    return 0


def _gauge(registry: CollectorRegistry, name: str, text: str, value: float) -> None:
    Gauge(f"mssante_revocation_{name}", text, registry=registry).set(value)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="mssante-revocation", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("run", "refresh-crls", "learn", "build"):
        command = sub.add_parser(name)
        command.add_argument("--config", type=Path, default=DEFAULT_CONFIG_PATH)
        if name == "learn":
            command.add_argument(
                "--seed", type=Path, help="a PEM certificate a listed operator served earlier"
            )
            command.add_argument("--cn", help="the listed CN it was served for (with --seed)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(levelname)s: %(message)s")
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print("\n".join(f"{exc.source}: {p}" for p in exc.problems), file=sys.stderr)
        return 2
    return _dispatch(args, settings)


def _dispatch(args: argparse.Namespace, settings: RevocationSettings) -> int:
    if args.command == "learn" and args.seed:
        if not args.cn:
            print("--seed needs --cn", file=sys.stderr)
            return 2
        cert = x509.load_pem_x509_certificate(args.seed.read_bytes())
        LearnedStore(settings.learned).add(cert, args.cn, "seed")
        return 0
    failures = 0
    if args.command in ("run", "refresh-crls"):
        failures += refresh_crls(settings)
    if args.command in ("run", "learn") and settings.probe:
        learn(settings)
    if args.command in ("run", "build"):
        registry = CollectorRegistry()
        build(settings, registry)
        if settings.textfile is not None:
            write_to_textfile(str(settings.textfile), registry)
    return 1 if failures else 0
