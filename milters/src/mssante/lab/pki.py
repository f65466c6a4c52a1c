"""A test PKI shaped like IGC-Santé, for the lab and the tests (docs/test-pki.md).

``ensure_pki(directory)`` is idempotent: every file keeps its name; a file is kept while it is present,
consistent with its issuer and key, and valid for more than ``RENEW_BEFORE``; otherwise it is
regenerated (keys are reused, so a rerun is fast). Validity is always relative to now.

Command line: ``python3 -m mssante.lab.pki --dir DIR [--json]``.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from mssante.lab import x509util as xu
from mssante.lab.x509util import Profile, Subject

CA_DAYS = 3650
LEAF_DAYS = 397
CRL_DAYS = 7
RENEW_BEFORE = timedelta(days=30)
CRL_RENEW_BEFORE = timedelta(days=1)
ANS = "AGENCE DU NUMERIQUE EN SANTE (TEST)"
IGC_UNIT = "IGC-SANTE TEST"


@dataclass(frozen=True)
class Authority:
    """A certification authority: its certificate, key and current CRL."""

    name: str
    cn: str
    cert: Path
    key: Path
    crl: Path


@dataclass(frozen=True)
class Leaf:
    """An end-entity certificate; ``fullchain`` is the leaf followed by its issuing CA."""

    name: str
    cn: str
    domain: str | None
    issuer: str
    cert: Path
    key: Path
    fullchain: Path
    email: str | None = None


@dataclass(frozen=True)
class Pki:
    """Every file of the test PKI; ``changed`` names the files this run wrote."""

    directory: Path
    root: Authority
    intermediate: Authority  # organisations: servers, applications, trust-list signer
    personal_ca: Authority  # personnes: CPS-like personal certificates
    foreign_ca: Authority  # outside IGC-Santé: issues the impostor
    chain: Path  # intermediate + root: smtpd_tls_CAfile / smtp_tls_CAfile
    personal_chain: Path  # personal CA + root
    hospital: Leaf
    peer: Leaf
    other: Leaf
    dpi: Leaf
    personal: Leaf
    personal2: Leaf
    trustlist_signer: Leaf
    trustlist_other: Leaf
    expired: Leaf
    revoked: Leaf
    impostor: Leaf
    changed: tuple[str, ...] = ()

    @property
    def operators(self) -> dict[str, Leaf]:
        """The three operators' valid server certificates, by name."""
        return {"hospital": self.hospital, "peer": self.peer, "other": self.other}

    def to_json(self) -> dict[str, Any]:
        def encode(value: Any) -> Any:
            if isinstance(value, Path):
                return str(value)
            if isinstance(value, dict):
                return {key: encode(item) for key, item in value.items()}
            if isinstance(value, list | tuple):
                return [encode(item) for item in value]
            return value

        return dict(encode(asdict(self)))


@dataclass(frozen=True)
class _CaSpec:
    name: str
    subject: Subject
    issuer: str | None
    path_length: int | None


@dataclass(frozen=True)
class _LeafSpec:
    name: str
    subject: Subject
    issuer: str
    profile: Profile
    domain: str | None = None
    email: str | None = None
    expired: bool = False
    revoked: bool = False


_CAS = (
    _CaSpec("root", Subject("TEST AC RACINE IGC-SANTE", ANS, IGC_UNIT), None, 1),
    _CaSpec("intermediate", Subject("TEST AC IGC-SANTE ORGANISATIONS", ANS, IGC_UNIT), "root", 0),
    _CaSpec("personal_ca", Subject("TEST AC IGC-SANTE PERSONNES", ANS, IGC_UNIT), "root", 0),
    _CaSpec("foreign_ca", Subject("TEST AC ETRANGERE", "FOREIGN TRUST SERVICES (TEST)"), None, 0),
)

_HOSPITAL = ("HOPITAL A (TEST)", "1000000001", "hopital-a.mssante.test")
_PEER = ("CLINIQUE B (TEST)", "1000000002", "clinique-b.mssante.test")
_OTHER = ("LABO C (TEST)", "1000000003", "labo-c.mssante.test")


def _operator(name: str, cn: str, org: tuple[str, str, str], issuer: str = "intermediate") -> _LeafSpec:
    return _LeafSpec(name, Subject(cn, org[0], org[1]), issuer, Profile.SERVER, org[2])


_LEAVES = (
    _operator("hospital", "mx.hopital-a.test", _HOSPITAL),
    _operator("peer", "mx.clinique-b.test", _PEER),
    _operator("other", "mx.labo-c.test", _OTHER),
    _LeafSpec(
        "dpi",
        Subject("dpi.hopital-a.test", *_HOSPITAL[:2]),
        "intermediate",
        Profile.APPLICATION,
        _HOSPITAL[2],
    ),
    _LeafSpec(
        "personal",
        Subject("810001234567", _HOSPITAL[0]),
        "personal_ca",
        Profile.PERSONAL,
        _HOSPITAL[2],
        email="dr.martin@hopital-a.mssante.test",
    ),
    _LeafSpec(
        "personal2",
        Subject("810009876543", _PEER[0]),
        "personal_ca",
        Profile.PERSONAL,
        _PEER[2],
        email="dr.durand@clinique-b.mssante.test",
    ),
    _LeafSpec(
        "trustlist_signer", Subject("Signataire Liste Blanche TEST", ANS), "intermediate", Profile.SIGNER
    ),
    _LeafSpec("trustlist_other", Subject("Autre Signataire TEST", ANS), "intermediate", Profile.SIGNER),
    _LeafSpec(
        "expired",
        Subject("mx2.clinique-b.test", *_PEER[:2]),
        "intermediate",
        Profile.SERVER,
        _PEER[2],
        expired=True,
    ),
    _LeafSpec(
        "revoked",
        Subject("mx.clinique-b.test", *_PEER[:2]),
        "intermediate",
        Profile.SERVER,
        _PEER[2],
        revoked=True,
    ),
    _operator("impostor", "mx.clinique-b.test", _PEER, issuer="foreign_ca"),
)

_CA_FILES = {
    "root": "igc-root",
    "intermediate": "igc-organisations",
    "personal_ca": "igc-personnes",
    "foreign_ca": "foreign-root",
}

_Issuer = tuple[x509.Certificate, rsa.RSAPrivateKey]


class _Run:
    """One pass of ``ensure_pki``: the time reference, the issuers built so far, the files written."""

    def __init__(self, directory: Path, now: datetime) -> None:
        self.directory = directory
        self.now = now
        self.issuers: dict[str, _Issuer] = {}
        self.changed: list[str] = []

    def write(self, path: Path, data: bytes) -> None:
        xu.write_atomic(path, data)
        self.changed.append(str(path.relative_to(self.directory)))

    def write_if_different(self, path: Path, data: bytes) -> None:
        if xu.write_if_different(path, data):
            self.changed.append(str(path.relative_to(self.directory)))

    def key(self, path: Path) -> tuple[rsa.RSAPrivateKey, bool]:
        key, generated = xu.ensure_key(path)
        if generated:
            self.changed.append(str(path.relative_to(self.directory)))
        return key, generated

    def window(self, days: int) -> tuple[datetime, datetime]:
        return self.now - xu.CLOCK_SKEW, self.now + timedelta(days=days)

    def keep(
        self, cert: x509.Certificate | None, key: rsa.RSAPrivateKey, issuer: x509.Certificate | None
    ) -> bool:
        """Whether an existing certificate still fits its key and issuer and is valid long enough."""
        if cert is None or not xu.same_key(cert, key):
            return False
        if not xu.signed_by(cert, issuer if issuer is not None else cert):
            return False
        return xu.not_after(cert) > self.now + RENEW_BEFORE


def _ensure_ca(run: _Run, spec: _CaSpec) -> Authority:
    base = run.directory / "ca" / _CA_FILES[spec.name]
    cert_path, key_path = base.with_suffix(".pem"), base.with_suffix(".key")
    key, generated = run.key(key_path)
    issuer = run.issuers[spec.issuer] if spec.issuer is not None else None
    cert = xu.load_cert(cert_path)
    fits = cert is not None and cert.subject == spec.subject.name()
    if generated or not fits or not run.keep(cert, key, issuer[0] if issuer else None):
        cert = xu.make_ca(spec.subject, key, issuer, run.window(CA_DAYS), spec.path_length)
        run.write(cert_path, xu.pem(cert))
    assert cert is not None
    run.issuers[spec.name] = (cert, key)
    crl_path = run.directory / "crl" / f"{_CA_FILES[spec.name]}.crl.pem"
    return Authority(spec.name, spec.subject.cn, cert_path, key_path, crl_path)


def _keep_leaf(run: _Run, spec: _LeafSpec, cert: x509.Certificate | None, key: rsa.RSAPrivateKey) -> bool:
    if cert is None or cert.subject != spec.subject.name():
        return False
    if xu.extended_key_usage(cert) != xu.profile_eku(spec.profile):
        return False
    issuer = run.issuers[spec.issuer][0]
    if spec.expired:
        still_expired = xu.not_after(cert) < run.now
        return still_expired and xu.same_key(cert, key) and xu.signed_by(cert, issuer)
    return run.keep(cert, key, issuer)


def _ensure_leaf(run: _Run, spec: _LeafSpec) -> tuple[Leaf, x509.Certificate]:
    base = run.directory / "certs" / spec.name.replace("_", "-")
    cert_path, key_path = base.with_suffix(".pem"), base.with_suffix(".key")
    fullchain = base.with_name(base.name + ".fullchain.pem")
    key, generated = run.key(key_path)
    cert = xu.load_cert(cert_path)
    if generated or not _keep_leaf(run, spec, cert, key):
        window = run.window(LEAF_DAYS)
        if spec.expired:
            window = (run.now - timedelta(days=400), run.now - timedelta(days=30))
        cert = xu.make_leaf(
            spec.subject, key, run.issuers[spec.issuer], window, spec.profile, email=spec.email
        )
        run.write(cert_path, xu.pem(cert))
    assert cert is not None
    run.write_if_different(fullchain, xu.pem(cert) + xu.pem(run.issuers[spec.issuer][0]))
    leaf = Leaf(
        spec.name, spec.subject.cn, spec.domain, spec.issuer, cert_path, key_path, fullchain, spec.email
    )
    return leaf, cert


def _ensure_crl(run: _Run, authority: Authority, revoked: list[x509.Certificate]) -> None:
    issuer = run.issuers[authority.name]
    wanted = frozenset(cert.serial_number for cert in revoked)
    crl = xu.load_crl(authority.crl)
    if crl is not None and xu.crl_signed_by(crl, issuer[0]) and xu.crl_serials(crl) == wanted:
        update = xu.next_update(crl)
        if update is not None and update > run.now + CRL_RENEW_BEFORE:
            return
    entries = [(cert.serial_number, run.now - xu.CLOCK_SKEW) for cert in revoked]
    crl = xu.make_crl(issuer, entries, run.window(CRL_DAYS))
    run.write(authority.crl, xu.crl_pem(crl))


@contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """Serialise concurrent runs on one directory (several test runs may share it)."""
    with open(directory / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_pki(directory: Path, now: datetime | None = None) -> Pki:
    """Create or refresh the test PKI under ``directory`` and describe it (see the module docstring)."""
    directory = Path(directory).absolute()
    for sub in ("", "ca", "crl", "certs"):
        (directory / sub).mkdir(mode=0o755, parents=True, exist_ok=True)
    with _locked(directory):
        run = _Run(directory, now if now is not None else xu.utcnow())
        authorities = {spec.name: _ensure_ca(run, spec) for spec in _CAS}
        leaves: dict[str, Leaf] = {}
        revoked: dict[str, list[x509.Certificate]] = {name: [] for name in authorities}
        for spec in _LEAVES:
            leaves[spec.name], cert = _ensure_leaf(run, spec)
            if spec.revoked:
                revoked[spec.issuer].append(cert)
        for name, authority in authorities.items():
            _ensure_crl(run, authority, revoked[name])
        root = xu.pem(run.issuers["root"][0])
        chain, personal_chain = directory / "chain.pem", directory / "personal-chain.pem"
        run.write_if_different(chain, xu.pem(run.issuers["intermediate"][0]) + root)
        run.write_if_different(personal_chain, xu.pem(run.issuers["personal_ca"][0]) + root)
    return Pki(
        directory=directory,
        chain=chain,
        personal_chain=personal_chain,
        changed=tuple(run.changed),
        **authorities,  # type: ignore[arg-type]
        **leaves,  # type: ignore[arg-type]
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m mssante.lab.pki", description=__doc__.splitlines()[0])
    parser.add_argument("--dir", required=True, type=Path, help="directory holding the PKI (created)")
    parser.add_argument("--json", action="store_true", help="print the JSON description of every file")
    args = parser.parse_args(argv)
    pki = ensure_pki(args.dir)
    if args.json:
        json.dump(pki.to_json(), sys.stdout, indent=2, sort_keys=True)
        sys.stdout.write("\n")
    else:
        state = f"{len(pki.changed)} file(s) written" if pki.changed else "unchanged"
        sys.stdout.write(f"test PKI in {pki.directory}: {state}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
