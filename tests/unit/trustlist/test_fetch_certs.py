"""CA bundles (PEM and the published PKCS#7 form) and the HTTPS client context (TRUST-2, TRUST-3)."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, pkcs7

from mssante.trustlist import certs, fetch
from mssante.trustlist.settings import Settings

from .helpers import pki


def igc_certs() -> list[x509.Certificate]:
    return certs.load_bundle(pki().chain)


@pytest.mark.parametrize("encoding", [Encoding.PEM, Encoding.DER])
def test_trust2_pkcs7_bundle_loaded(tmp_path: Path, encoding: Encoding) -> None:
    bundle = tmp_path / "Chaine_de_certification-IGC-Sante.p7b"
    bundle.write_bytes(pkcs7.serialize_certificates(igc_certs(), encoding))
    loaded = certs.load_bundle(bundle)
    assert {c.subject for c in loaded} == {c.subject for c in igc_certs()}


def test_trust2_pem_bundle_and_garbage(tmp_path: Path) -> None:
    assert len(igc_certs()) == 2
    garbage = tmp_path / "garbage.pem"
    garbage.write_bytes(b"not a certificate")
    with pytest.raises(certs.CertificateError):
        certs.load_bundle(garbage)


def test_trust2_tls_context_trusts_the_bundle_only(tmp_path: Path) -> None:
    bundle = tmp_path / "igc.p7b"
    bundle.write_bytes(pkcs7.serialize_certificates(igc_certs(), Encoding.DER))
    context = fetch.tls_context(Settings(ca_file=bundle))
    subjects = sorted(dict(x[0] for x in cert["subject"])["commonName"] for cert in context.get_ca_certs())
    assert subjects == sorted(
        c.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value for c in igc_certs()
    )
    assert context.verify_mode is ssl.CERT_REQUIRED and context.check_hostname
    assert context.minimum_version is ssl.TLSVersion.TLSv1_2


def test_trust2_no_context_without_a_bundle() -> None:
    with pytest.raises(fetch.FetchError):
        fetch.tls_context(Settings())


def test_trust2_redirect_to_plain_http_refused() -> None:
    handler = fetch._HttpsOnlyRedirect()
    with pytest.raises(fetch.FetchError):
        handler.redirect_request(None, None, 302, "Found", {}, "http://example.test/list.xml")


def test_trust3_chain_checks() -> None:
    anchors = igc_certs()
    signer = x509.load_pem_x509_certificate(pki().trustlist_signer.cert.read_bytes())
    path = certs.verify_chain(signer, [], anchors)
    assert path[0] == signer and len(path) == 2
    # With only the root as anchor, the intermediate must be supplied (as KeyInfo may carry it).
    root = [c for c in anchors if c.subject == c.issuer]
    intermediate = [c for c in anchors if c.subject != c.issuer]
    with pytest.raises(certs.CertificateError):
        certs.verify_chain(signer, [], root)
    assert len(certs.verify_chain(signer, intermediate, root)) == 3
    foreign = certs.load_bundle(pki().foreign_ca.cert)
    with pytest.raises(certs.CertificateError, match="does not chain"):
        certs.verify_chain(signer, [], foreign)


def test_trust3_signer_pin_forms() -> None:
    signer = x509.load_pem_x509_certificate(pki().trustlist_signer.cert.read_bytes())
    assert certs.matches_signer(signer, "Signataire Liste Blanche TEST")
    assert certs.matches_signer(signer, "cn=signataire liste blanche test")
    assert certs.matches_signer(signer, signer.subject.rfc4514_string())
    assert not certs.matches_signer(signer, "Autre Signataire TEST")
    assert not certs.matches_signer(signer, "CN=Signataire Liste Blanche TEST,O=Autre,C=FR")
    # A CA certificate never signs a list, even one of the configured chain.
    with pytest.raises(certs.CertificateError):
        certs.check_signing_usage(igc_certs()[0])
