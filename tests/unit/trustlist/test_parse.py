"""Parsing the published layout and refusing hostile or broken XML (TRUST-1, TRUST-4, TRUST-5)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from lxml import etree

from mssante.trustlist import parse
from mssante.trustlist.model import Outcome, Refusal

from .helpers import NS, Entry, build_list, sample_bytes


def parsed(data: bytes) -> parse.TrustList:
    return parse.extract(parse.parse_document(data), None)


def refusal(data: bytes, max_bytes: int = parse.DEFAULT_MAX_BYTES) -> str:
    with pytest.raises(Refusal) as caught:
        parse.extract(parse.parse_document(data, max_bytes), None)
    assert caught.value.outcome is Outcome.REFUSED_PARSE
    return caught.value.message


def test_trust1_sample_layout_parsed() -> None:
    trust_list = parsed(sample_bytes())
    assert trust_list.entries == 7
    assert sorted(trust_list.domains) == [
        "chu-exemple.mssante.fr",
        "medecin.mssante.fr",
        "patient.mssante.fr",
        "pharmacie-centrale.mssante.fr",
        "uc-clinique.mssante.fr",
        "xn--hpital-sud-rbb.mssante.fr",
    ]
    assert trust_list.generated == datetime(2026, 11, 20, 6, 0, tzinfo=UTC)


def test_trust4_one_domain_gathers_every_certificate() -> None:
    chu = parsed(sample_bytes()).domains["chu-exemple.mssante.fr"]
    assert chu.cns == ["mx1.chu-exemple.fr", "mx2.chu-exemple.fr"]
    assert [c.dn for c in chu.certificates] == [
        "CN=mx1.chu-exemple.fr,OU=1000000001,O=CHU EXEMPLE,ST=Rhone (69),C=FR",
        "CN=mx2.chu-exemple.fr,OU=1000000001,O=CHU EXEMPLE,ST=Rhone (69),C=FR",
    ]


def test_trust5_upper_case_name_folded() -> None:
    domain = parsed(sample_bytes()).domains["uc-clinique.mssante.fr"]
    assert domain.u_label == "uc-clinique.mssante.fr"
    assert domain.cns == ["relais.clinique-exemple.fr"]


def test_trust5_idn_kept_as_u_label_and_a_label() -> None:
    domain = parsed(sample_bytes()).domains["xn--hpital-sud-rbb.mssante.fr"]
    assert domain.u_label == "hôpital-sud.mssante.fr"
    assert domain.a_label == "xn--hpital-sud-rbb.mssante.fr"


def test_trust5_names_in_other_cases_and_forms_merge() -> None:
    data = build_list(
        [
            Entry("Hôpital-Sud.MSSante.fr", "CN=a.fr,C=FR"),
            Entry("XN--HPITAL-SUD-RBB.mssante.fr", "CN=b.fr,C=FR"),
            Entry(" chu.mssante.fr \n", "CN=c.fr,C=FR"),
            Entry("CHU.mssante.fr", "CN=c.fr,C=FR"),  # same (domain, DN) again: one certificate
        ]
    )
    trust_list = parsed(data)
    assert sorted(trust_list.domains) == ["chu.mssante.fr", "xn--hpital-sud-rbb.mssante.fr"]
    assert trust_list.domains["xn--hpital-sud-rbb.mssante.fr"].cns == ["a.fr", "b.fr"]
    assert trust_list.domains["chu.mssante.fr"].cns == ["c.fr"]
    assert trust_list.entries == 4


def test_trust5_contacts_not_kept() -> None:
    # Contacts (with their trailing newline) are personal data the compiled list does not need.
    trust_list = parsed(sample_bytes())
    text = repr(trust_list)
    assert "support@chu-exemple.fr" not in text and "04 00 00 00" not in text


def test_trust4_escaped_comma_in_dn_accepted() -> None:
    data = build_list([Entry("a.mssante.fr", r"CN=mx.a.fr,O=CHU\, Exemple,C=FR")])
    assert parsed(data).domains["a.mssante.fr"].certificates[0].dn == r"CN=mx.a.fr,O=CHU\, Exemple,C=FR"


def test_comment_inside_a_name_cannot_cut_it() -> None:
    # Comments are not covered by exclusive c14n: one inserted in <Nom> must not change the name.
    data = sample_bytes().replace(b"<Nom>medecin.mssante.fr", b"<Nom>medecin<!-- x --><?pi y?>.mssante.fr")
    assert "medecin.mssante.fr" in parsed(data).domains
    assert "medecin" not in parsed(data).domains


XXE = b"""<?xml version="1.0"?>
<!DOCTYPE ListeBlancheMSSante [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<ListeBlancheMSSante xmlns="https://listeblanche.mssante.fr/schema">
<DateDeGeneration>2026-11-20T06:00:00Z</DateDeGeneration>
<ListeDomaines><Domaine><Nom>&xxe;</Nom><DNCertificatOperateur>CN=a</DNCertificatOperateur></Domaine></ListeDomaines>
</ListeBlancheMSSante>"""

BOMB = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol9 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
]>
<ListeBlancheMSSante xmlns="https://listeblanche.mssante.fr/schema"><DateDeGeneration>&lol9;</DateDeGeneration>
</ListeBlancheMSSante>"""


def test_trust1_xxe_refused() -> None:
    assert "DOCTYPE" in refusal(XXE)


def test_trust1_billion_laughs_refused() -> None:
    assert "DOCTYPE" in refusal(BOMB)


def test_trust1_parser_never_resolves_entities_even_past_the_prescan() -> None:
    # Defence in depth: the parser itself loads no external entity.
    root = etree.fromstring(XXE, parser=parse._parser())
    assert b"root:" not in etree.tostring(root)


def test_trust1_entity_declaration_without_doctype_word_refused() -> None:
    data = sample_bytes().replace(b"<ListeBlancheMSSante", b"<!ENTITY x 'y'><ListeBlancheMSSante", 1)
    assert "ENTITY" in refusal(data)


def test_trust1_size_limit() -> None:
    data = sample_bytes()
    assert "too large" in refusal(data, max_bytes=len(data) - 1)
    assert parse.parse_document(data, max_bytes=len(data)) is not None  # control


def test_trust1_wrong_root_or_namespace_refused() -> None:
    wrong_ns = sample_bytes().replace(NS.encode(), b"https://example.test/other")
    assert "wrong root" in refusal(wrong_ns)
    no_ns = sample_bytes().replace(b' xmlns="' + NS.encode() + b'"', b"")
    assert "wrong root" in refusal(no_ns)
    wrong_root = sample_bytes().replace(b"ListeBlancheMSSante", b"ListeNoire")
    assert "wrong root" in refusal(wrong_root)


def test_trust1_not_well_formed_refused() -> None:
    assert "well-formed" in refusal(sample_bytes()[:-40])


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (b"<Nom>medecin.mssante.fr</Nom>", b"", "entry 3: no <Nom>"),
        (b"<Nom>medecin.mssante.fr</Nom>", b"<Nom> </Nom>", "entry 3: empty <Nom>"),
        (
            b"<DNCertificatOperateur>CN=smtp.operateur-national.example",
            b"<Nom>x.fr</Nom><DNCertificatOperateur>CN=smtp.operateur-national.example",
            "several <Nom>",
        ),
        (
            b"<DNCertificatOperateur>CN=smtp.operateur-national.example,OU=3000000000000001,"
            b"O=OPERATEUR NATIONAL,ST=Paris (75),C=FR</DNCertificatOperateur>",
            b"",
            "entry 3 ('medecin.mssante.fr'): no <DNCertificatOperateur>",
        ),
        (
            b"O=OPERATEUR NATIONAL,",
            b"O=OPERATEUR, NATIONAL,",
            "entry 3 ('medecin.mssante.fr'): DNCertificatOperateur",
        ),
        (b"CN=smtp.operateur-national.example,", b"", "has no CN"),
        (b"<Nom>medecin.mssante.fr</Nom>", b"<Nom>medecin_x.mssante.fr</Nom>", "not a valid host name"),
        (b"<Nom>medecin.mssante.fr</Nom>", b"<Nom>m\xc3\xa9decin\xe2\x80\x8d.mssante.fr</Nom>", "IDNA 2008"),
        (b"2026-11-20T06:00:00Z", b"2026-11-20T06:00:00", "DateDeGeneration"),
        (b"<ListeDomaines>", b"<ListeDomaines><Autre/>", "entry 1: unexpected element"),
    ],
)
def test_trust1_broken_entry_refused_naming_it(old: bytes, new: bytes, expected: str) -> None:
    data = sample_bytes()
    assert old in data
    assert expected in refusal(data.replace(old, new, 1))


def test_trust1_utf16_refused() -> None:
    data = sample_bytes().decode("utf-8").replace('encoding="UTF-8"', 'encoding="UTF-16"').encode("utf-16")
    assert "UTF-8" in refusal(data)


def test_trust1_declared_non_utf8_encoding_refused() -> None:
    latin = sample_bytes().replace(b'encoding="UTF-8"', b'encoding="ISO-8859-1"')
    assert "UTF-8" in refusal(latin)
    lower = sample_bytes().replace(b'encoding="UTF-8"', b"encoding='utf-8'")
    assert len(parsed(lower).domains) == 6  # control


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("UC-Clinique.mssante.fr", ("uc-clinique.mssante.fr", "uc-clinique.mssante.fr")),
        ("hôpital-sud.mssante.fr", ("xn--hpital-sud-rbb.mssante.fr", "hôpital-sud.mssante.fr")),
        ("XN--HPITAL-SUD-RBB.mssante.fr", ("xn--hpital-sud-rbb.mssante.fr", "hôpital-sud.mssante.fr")),
        ("a.fr.", ("a.fr", "a.fr")),
        ("a" * 63 + ".fr", ("a" * 63 + ".fr", "a" * 63 + ".fr")),
    ],
)
def test_trust5_name_forms(name: str, expected: tuple[str, str]) -> None:
    assert parse.normalise_name(name) == expected


@pytest.mark.parametrize(
    "name",
    [
        "fr",
        "a" * 64 + ".fr",
        ("a" * 60 + ".") * 5 + "fr",
        "-a.fr",
        "a-.fr",
        "a..fr",
        "a_b.fr",
        "xn--zz.fr",
        "é",
    ],
)
def test_trust5_invalid_names(name: str) -> None:
    with pytest.raises(ValueError):
        parse.normalise_name(name)
