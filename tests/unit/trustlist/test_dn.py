"""RFC 4514 DN parsing used for DNCertificatOperateur and the pinned signer (TRUST-4, TRUST-3)."""

from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID
from hypothesis import given
from hypothesis import strategies as st

from mssante.trustlist import dn as dnlib
from mssante.trustlist.dn import DnError, common_names, format_dn, from_x509_name, parse_dn, same_dn

SAMPLE_DN = "CN=mx1.chu-exemple.fr,OU=1000000001,O=CHU EXEMPLE,ST=Rhone (69),C=FR"


def test_trust4_sample_dn_parses_in_written_order() -> None:
    parsed = parse_dn(SAMPLE_DN)
    assert parsed == (
        (("CN", "mx1.chu-exemple.fr"),),
        (("OU", "1000000001"),),
        (("O", "CHU EXEMPLE"),),
        (("ST", "Rhone (69)"),),
        (("C", "FR"),),
    )
    assert common_names(parsed) == ["mx1.chu-exemple.fr"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (r"CN=mx.a.fr,O=CHU\, Exemple,C=FR", "CHU, Exemple"),
        (r"CN=mx.a.fr,O=CHU\2C Exemple,C=FR", "CHU, Exemple"),
        (r"CN=mx.a.fr,O=H\C3\B4pital,C=FR", "Hôpital"),
        (r"CN=mx.a.fr,O=A\+B\;C\<D\>E\=F\"G\\H,C=FR", 'A+B;C<D>E=F"G\\H'),
        (r"CN=mx.a.fr,o=\ lead and trail\ ,C=FR", " lead and trail "),
    ],
)
def test_trust4_escaped_values(text: str, expected: str) -> None:
    parsed = parse_dn(text)
    assert parsed[1] == (("O", expected),)
    assert parse_dn(format_dn(parsed)) == parsed


def test_multivalued_rdn_and_oid_types() -> None:
    parsed = parse_dn("CN=a+OU=b,2.5.4.10=Org,OID.2.5.4.6=FR")
    assert parsed == ((("CN", "a"), ("OU", "b")), (("O", "Org"),), (("C", "FR"),))


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "not a dn",
        "CN=",
        "CN=a,,O=b",
        "CN=a,O",
        "=x",
        "1CN=a",
        "CN=a\\",
        "CN=a\\zz",
        'CN="q"',
        "CN=a;b",
        "CN=a,O=<b>",
        "CN=#zz",
    ],
)
def test_trust4_invalid_dn_refused(text: str) -> None:
    with pytest.raises(DnError):
        parse_dn(text)


ATTRS = st.sampled_from(["CN", "O", "OU", "C", "ST", "L"])
VALUES = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=30)


@given(st.lists(st.lists(st.tuples(ATTRS, VALUES), min_size=1, max_size=3), min_size=1, max_size=6))
def test_trust4_format_parse_round_trip(rdns: list[list[tuple[str, str]]]) -> None:
    dn = tuple(tuple(rdn) for rdn in rdns)
    assert parse_dn(format_dn(dn)) == dn


OIDS = {
    "CN": NameOID.COMMON_NAME,
    "O": NameOID.ORGANIZATION_NAME,
    "OU": NameOID.ORGANIZATIONAL_UNIT_NAME,
    "ST": NameOID.STATE_OR_PROVINCE_NAME,
    "L": NameOID.LOCALITY_NAME,
}


SHORT_VALUES = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=16)


@given(st.lists(st.tuples(st.sampled_from(sorted(OIDS)), SHORT_VALUES), min_size=1, max_size=6))
def test_trust4_agrees_with_cryptography_serialisation(pairs: list[tuple[str, str]]) -> None:
    # cryptography writes the RFC 4514 string of a certificate name; our parser must read it back.
    name = x509.Name([x509.NameAttribute(OIDS[attr], value) for attr, value in pairs])
    parsed = parse_dn(name.rfc4514_string())
    assert parsed == from_x509_name(name)
    assert same_dn(parsed, from_x509_name(name))


@given(st.text(alphabet="CNOU=, .-ab1é", max_size=40))
def test_trust4_fast_path_agrees_with_general_parser(text: str) -> None:
    try:
        fast = parse_dn(text)
    except DnError:
        fast = None
    try:
        general = dnlib._parse_general(text) if text.strip() else None
    except DnError:
        general = None
    assert fast == general
