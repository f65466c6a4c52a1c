"""XML-DSig verification of the trust list with the test PKI (TRUST-3)."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest

from mssante.trustlist import pipeline
from mssante.trustlist.model import Outcome, Refusal
from mssante.trustlist.settings import Settings

from .helpers import (
    SIGNER_CN,
    build_list,
    foreign_signer,
    pki,
    sample_bytes,
    sign,
    sign_with,
    signed_sample,
    synthetic_entries,
)

EVIL = (
    b"<Domaine><Nom>evil.mssante.fr</Nom>"
    b"<DNCertificatOperateur>CN=mx.evil.example,C=FR</DNCertificatOperateur></Domaine>"
)


def settings(signer: str = SIGNER_CN, **changes: object) -> Settings:
    return Settings(ca_file=pki().chain, signer=signer, **changes)  # type: ignore[arg-type]


def refused(data: bytes, signer: str = SIGNER_CN, **changes: object) -> str:
    with pytest.raises(Refusal) as caught:
        pipeline.read_list(data, settings(signer, **changes))
    assert caught.value.outcome is Outcome.REFUSED_SIGNATURE, caught.value.message
    return caught.value.message


@pytest.fixture(scope="module")
def signed() -> bytes:
    return signed_sample()


def test_trust3_signed_list_accepted(signed: bytes) -> None:
    trust_list = pipeline.read_list(signed, settings())
    assert len(trust_list.domains) == 6
    assert trust_list.signer is not None and "CN=Signataire Liste Blanche TEST" in trust_list.signer


@pytest.mark.parametrize(
    "pinned",
    [
        SIGNER_CN,
        "signataire liste blanche test",
        f"CN={SIGNER_CN}",
        f"CN={SIGNER_CN},O=AGENCE DU NUMERIQUE EN SANTE (TEST),C=FR",
    ],
)
def test_trust3_pin_by_cn_or_full_dn(signed: bytes, pinned: str) -> None:
    assert pipeline.read_list(signed, settings(pinned)).signer is not None


def test_trust3_full_dn_pin_must_match_whole_subject(signed: bytes) -> None:
    assert "not the pinned" in refused(signed, f"CN={SIGNER_CN},O=AUTRE ORGANISME,C=FR")


def test_trust3_unsigned_list_refused_by_default() -> None:
    assert "not signed" in refused(sample_bytes())
    # Control: the same list is accepted when signatures are explicitly not required.
    relaxed = Settings(require_signature=False)
    assert len(pipeline.read_list(sample_bytes(), relaxed).domains) == 6


def test_trust3_allow_unsigned_still_refuses_a_bad_signature(signed: bytes) -> None:
    tampered = signed.replace(b"<Nom>medecin.mssante.fr", b"<Nom>medecin.mssante.fx")
    assert "verification failed" in refused(tampered, require_signature=False)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (b"<Nom>medecin.mssante.fr", b"<Nom>medecin.mssante.fx"),
        (b"<Nom>patient.mssante.fr", b"<Nom>Patient.mssante.fr"),
        (b"CN=mx.patient-operateur.example", b"CN=mx.attacker.example"),
        (b"<ListeDomaines>", b"<ListeDomaines>" + EVIL),
        (b"</ListeDomaines>", EVIL + b"</ListeDomaines>"),
        (b"2026-11-20T06:00:00Z", b"2026-11-21T06:00:00Z"),
    ],
    ids=["altered-name", "altered-case", "altered-dn", "added-first", "added-last", "altered-date"],
)
def test_trust3_tampered_list_refused(signed: bytes, old: bytes, new: bytes) -> None:
    assert old in signed
    assert "verification failed" in refused(signed.replace(old, new, 1))


def _flip_signature_value(data: bytes) -> bytes:
    match = re.search(rb"<ds:SignatureValue>([^<]+)</ds:SignatureValue>", data)
    assert match is not None
    raw = bytearray(base64.b64decode(match.group(1)))
    raw[len(raw) // 2] ^= 0x01
    return data.replace(match.group(1), base64.b64encode(bytes(raw)))


def test_trust3_changed_signature_value_refused(signed: bytes) -> None:
    assert "verification failed" in refused(_flip_signature_value(signed))


def test_trust3_foreign_signed_refused(tmp_path: Path) -> None:
    # Same subject as the pinned signer, issued by a CA outside the configured bundle.
    key, cert = foreign_signer(tmp_path)
    data = sign(sample_bytes(), key, [cert])
    assert "does not chain to the configured CA" in refused(data)
    # Control: the same certificate is accepted when its CA is the configured one.
    trusting_foreign = Settings(ca_file=pki().foreign_ca.cert, signer=SIGNER_CN)
    assert pipeline.read_list(data, trusting_foreign).signer is not None


def test_trust3_impostor_from_foreign_ca_refused() -> None:
    data = sign_with(sample_bytes(), "impostor")
    assert "does not chain" in refused(data, pki().impostor.cn)


def test_trust3_wrong_signer_of_same_ca_refused() -> None:
    data = sign_with(sample_bytes(), "trustlist_other")
    assert "not the pinned trust-list signer" in refused(data)
    # Control: that certificate is valid, only the pin refuses it.
    assert pipeline.read_list(data, settings(pki().trustlist_other.cn)).signer is not None


def test_trust3_expired_signer_refused() -> None:
    expired = pki().expired
    data = sign_with(sample_bytes(), "expired")
    assert "expired" in refused(data, expired.cn)


def test_trust3_signer_with_chain_in_key_info_accepted() -> None:
    leaf = pki().trustlist_signer
    data = sign(sample_bytes(), leaf.key, [leaf.cert, pki().intermediate.cert])
    assert pipeline.read_list(data, settings()).signer is not None


def test_trust3_only_the_verified_tree_is_read(signed: bytes) -> None:
    # Content after the Signature (outside what it covers) makes the shape invalid.
    moved = signed.replace(
        b"</ListeBlancheMSSante>", b"<ListeDomaines>" + EVIL + b"</ListeDomaines></ListeBlancheMSSante>"
    )
    assert "last child" in refused(moved)


def _signature_block(data: bytes) -> bytes:
    match = re.search(rb"<ds:Signature .*</ds:Signature>", data, re.DOTALL)
    assert match is not None
    return match.group(0)


def test_trust3_two_signatures_refused(signed: bytes) -> None:
    block = _signature_block(signed)
    doubled = signed.replace(b"<ListeDomaines>", block + b"<ListeDomaines>", 1)
    assert "exactly one Signature" in refused(doubled)


def test_trust3_signature_not_last_child_refused(signed: bytes) -> None:
    block = _signature_block(signed)
    moved = signed.replace(block, b"").replace(b"<ListeDomaines>", block + b"<ListeDomaines>", 1)
    assert "last child" in refused(moved)


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (b'URI=""', b'URI="#x"', "Reference URI"),
        (b"xmldsig-more#rsa-sha256", b"xmldsig#rsa-sha1", "signature method"),
        (b"xmlenc#sha256", b"xmldsig#sha1", "digest method"),
        (
            b'<ds:CanonicalizationMethod Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"',
            b'<ds:CanonicalizationMethod Algorithm="http://www.w3.org/TR/2001/REC-xml-c14n-20010315"',
            "canonicalization",
        ),
        (
            b'<ds:Transform Algorithm="http://www.w3.org/2000/09/xmldsig#enveloped-signature"/>',
            b'<ds:Transform Algorithm="http://www.w3.org/2000/09/xmldsig#enveloped-signature"/>'
            b'<ds:Transform Algorithm="http://www.w3.org/TR/1999/REC-xpath-19991116"/>',
            "transforms",
        ),
        (
            b'<ds:Transform Algorithm="http://www.w3.org/2000/09/xmldsig#enveloped-signature"/>',
            b"",
            "enveloped-signature transform is missing",
        ),
        (b"</ds:Signature>", b"<ds:Object>x</ds:Object></ds:Signature>", "ds:Object"),
        (
            b"<ds:KeyInfo>",
            b'<ds:KeyInfo><ds:RetrievalMethod URI="http://127.0.0.1:9/key"/>',
            "RetrievalMethod",
        ),
    ],
)
def test_trust3_other_signature_profiles_refused(
    signed: bytes, old: bytes, new: bytes, expected: str
) -> None:
    assert old in signed
    assert expected in refused(signed.replace(old, new, 1))


def test_trust3_key_info_without_certificate_refused(signed: bytes) -> None:
    stripped = re.sub(rb"<ds:X509Certificate>[^<]+</ds:X509Certificate>", b"", signed)
    assert "X509Certificate" in refused(stripped)


def test_trust3_large_signed_list_verifies() -> None:
    data = sign_with(build_list(synthetic_entries(500)))
    assert len(pipeline.read_list(data, settings()).domains) == 400
