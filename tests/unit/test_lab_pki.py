"""The test PKI (docs/test-pki.md): idempotent, relative validity, IGC-Santé-like chains (TLS-3, TLS-4)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from mssante.lab import x509util as xu
from mssante.lab.pki import Pki, ensure_pki


@pytest.fixture
def built(pki: Pki) -> Pki:
    """The session's test PKI (tests/conftest.py), as every other test uses it."""
    return pki


def _seeded(pki: Pki, directory: Path) -> Path:
    """A copy of the session's PKI: keys are reused, so regeneration tests need no key generation."""
    shutil.copytree(pki.directory, directory, ignore=shutil.ignore_patterns(".lock"), dirs_exist_ok=True)
    return directory


def _verify(ca_file: Path, cert: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["openssl", "verify", *extra, "-CAfile", str(ca_file), str(cert)],
        capture_output=True,
        text=True,
        check=False,
    )


def _snapshot(directory: Path) -> dict[str, tuple[int, bytes]]:
    return {
        str(path.relative_to(directory)): (path.stat().st_mtime_ns, path.read_bytes())
        for path in sorted(directory.rglob("*"))
        if path.is_file() and path.name != ".lock"
    }


def _load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_second_run_keeps_every_file(tmp_path: Path) -> None:
    first = ensure_pki(tmp_path)
    before = _snapshot(tmp_path)
    second = ensure_pki(tmp_path)
    assert first.changed, "the first run writes the files"
    assert second.changed == ()
    assert _snapshot(tmp_path) == before
    assert second.to_json() == {**first.to_json(), "changed": []}


def test_expiring_certificate_is_regenerated_with_its_key(built: Pki, tmp_path: Path) -> None:
    pki = ensure_pki(_seeded(built, tmp_path))
    assert pki.changed == ()
    issuer_key = serialization.load_pem_private_key(pki.intermediate.key.read_bytes(), None)
    leaf_key = serialization.load_pem_private_key(pki.hospital.key.read_bytes(), None)
    assert isinstance(issuer_key, rsa.RSAPrivateKey)
    assert isinstance(leaf_key, rsa.RSAPrivateKey)
    now = datetime.now(UTC)
    old = _load(pki.hospital.cert)
    expiring = xu.make_leaf(
        xu.Subject(pki.hospital.cn, "HOPITAL A (TEST)", "1000000001"),
        leaf_key,
        (_load(pki.intermediate.cert), issuer_key),
        (now - timedelta(days=300), now + timedelta(days=2)),
        xu.Profile.SERVER,
    )
    pki.hospital.cert.write_bytes(xu.pem(expiring))
    again = ensure_pki(tmp_path)
    renewed = _load(pki.hospital.cert)
    assert again.changed == ("certs/hospital.pem", "certs/hospital.fullchain.pem")
    assert xu.not_after(renewed) > now + timedelta(days=300)
    assert renewed.public_key().public_numbers() == old.public_key().public_numbers()  # type: ignore[union-attr]
    assert _verify(pki.chain, pki.hospital.cert).returncode == 0


def test_everything_expired_later_is_regenerated_and_consistent(built: Pki, tmp_path: Path) -> None:
    _seeded(built, tmp_path)
    later = datetime.now(UTC) + timedelta(days=400)
    pki = ensure_pki(tmp_path, now=later)
    assert "certs/peer.pem" in pki.changed
    assert "crl/igc-organisations.crl.pem" in pki.changed
    assert "ca/igc-root.pem" not in pki.changed
    assert xu.not_after(_load(pki.peer.cert)) > later + timedelta(days=300)
    assert xu.not_after(_load(pki.expired.cert)) < later


def test_broken_intermediate_reissues_its_whole_branch(built: Pki, tmp_path: Path) -> None:
    pki = ensure_pki(_seeded(built, tmp_path))
    pki.intermediate.key.unlink()
    again = ensure_pki(tmp_path)
    assert {
        "ca/igc-organisations.pem",
        "certs/peer.pem",
        "chain.pem",
        "crl/igc-organisations.crl.pem",
    } <= set(again.changed)
    assert "certs/personal.pem" not in again.changed
    assert _verify(again.chain, again.peer.cert).returncode == 0


def test_tls3_chain_verifies_operators_and_applications(built: Pki) -> None:
    for leaf in (
        built.hospital,
        built.peer,
        built.other,
        built.dpi,
        built.trustlist_signer,
        built.trustlist_other,
    ):
        result = _verify(built.chain, leaf.cert)
        assert result.returncode == 0, (leaf.name, result.stdout, result.stderr)


def test_tls3_impostor_is_refused_by_the_igc_chain_and_accepted_by_its_own_ca(
    built: Pki, tmp_path: Path
) -> None:
    assert _verify(built.chain, built.impostor.cert).returncode != 0
    both = tmp_path / "both.pem"
    both.write_bytes(built.chain.read_bytes() + built.foreign_ca.cert.read_bytes())
    assert _verify(both, built.impostor.cert).returncode == 0  # control: only the trust anchor differs
    assert built.impostor.cn == built.peer.cn


def test_expired_certificate_fails_verification(built: Pki) -> None:
    result = _verify(built.chain, built.expired.cert)
    assert result.returncode != 0
    assert "expired" in result.stdout + result.stderr
    assert built.expired.domain == "clinique-b.mssante.test"


def test_tls4_revoked_certificate_is_listed_in_the_intermediate_crl(built: Pki) -> None:
    assert built.revoked.cn == built.peer.cn
    assert _verify(built.chain, built.revoked.cert).returncode == 0  # without a CRL check, it verifies
    crl_args = ("-crl_check", "-CRLfile", str(built.intermediate.crl))
    revoked = _verify(built.chain, built.revoked.cert, *crl_args)
    assert revoked.returncode != 0
    assert "revoked" in revoked.stdout + revoked.stderr
    assert _verify(built.chain, built.peer.cert, *crl_args).returncode == 0


def test_crls_exist_for_every_ca_and_expire_within_a_week(built: Pki) -> None:
    now = datetime.now(UTC)
    for authority in (built.root, built.intermediate, built.personal_ca, built.foreign_ca):
        crl = x509.load_pem_x509_crl(authority.crl.read_bytes())
        update = xu.next_update(crl)
        assert update is not None
        assert now + timedelta(days=5) < update < now + timedelta(days=8)


def test_personal_certificates_use_their_own_ca(built: Pki) -> None:
    for leaf in (built.personal, built.personal2):
        assert _verify(built.personal_chain, leaf.cert).returncode == 0
        assert _verify(built.chain, leaf.cert).returncode != 0  # control: a separate CA
        assert leaf.email is not None


def test_tls3_operator_certificates_are_rsa2048_sha256_server_and_client(built: Pki) -> None:
    for leaf in built.operators.values():
        cert = _load(leaf.cert)
        public = cert.public_key()
        assert isinstance(public, rsa.RSAPublicKey)
        assert public.key_size == 2048
        assert isinstance(cert.signature_hash_algorithm, hashes.SHA256)
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert san.get_values_for_type(x509.DNSName) == [leaf.cn]
        assert leaf.fullchain.read_bytes() == leaf.cert.read_bytes() + built.intermediate.cert.read_bytes()
    assert built.operators["hospital"].domain == "hopital-a.mssante.test"


def test_auth2_application_certificate_is_client_only(built: Pki) -> None:
    eku = _load(built.dpi.cert).extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.CLIENT_AUTH}
    assert built.dpi.cn == "dpi.hopital-a.test"


def test_cli_prints_the_json_description(built: Pki) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mssante.lab.pki", "--dir", str(built.directory), "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    described = json.loads(result.stdout)
    assert described["changed"] == []
    assert described["peer"]["cn"] == "mx.clinique-b.test"
    assert Path(described["chain"]).is_file()
    assert Path(described["trustlist_signer"]["cert"]).is_file()
    assert oct(Path(described["hospital"]["key"]).stat().st_mode & 0o777) == "0o600"
