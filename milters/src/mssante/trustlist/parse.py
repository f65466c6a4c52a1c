"""Safe parsing of the published trust list (TRUST-1, TRUST-4, TRUST-5).

The XML parser never loads a DTD, resolves no entity and uses no network; any DOCTYPE or ENTITY
declaration is refused outright, as are comments and processing instructions being taken as text
(they are dropped: exclusive c14n does not sign them). Every refusal names the problem and, where
there is one, the entry (its position and name).
"""

from __future__ import annotations

import re
from typing import Any

import idna
from lxml import etree

from mssante.trustlist import dn as dnlib
from mssante.trustlist.index import parse_timestamp
from mssante.trustlist.model import Certificate, Domain, Outcome, Refusal, TrustList

NAMESPACE = "https://listeblanche.mssante.fr/schema"
ROOT_TAG = f"{{{NAMESPACE}}}ListeBlancheMSSante"
DSIG_NS = "http://www.w3.org/2000/09/xmldsig#"
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
_DOMAINE = f"{{{NAMESPACE}}}Domaine"
_NOM = f"{{{NAMESPACE}}}Nom"
_DN = f"{{{NAMESPACE}}}DNCertificatOperateur"

_DECLARATIONS = re.compile(rb"<!\s*(DOCTYPE|ENTITY|ELEMENT|ATTLIST|NOTATION)", re.IGNORECASE)
_ENCODING = re.compile(rb"(?:\xef\xbb\xbf)?\s*<\?xml[^>]*?encoding\s*=\s*[\"']([^\"']*)[\"']")
# A lower-case LDH host name of at least two labels, each 1-63 characters, 253 at most in all.
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_HOSTNAME = re.compile(rf"(?=.{{1,253}}\Z)(?:{_LABEL}\.)+{_LABEL}\Z")


def refuse(message: str) -> Refusal:
    return Refusal(Outcome.REFUSED_PARSE, message)


def _parser() -> Any:
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_comments=True,
        remove_pis=True,
        strip_cdata=True,
        collect_ids=False,
    )


def parse_document(data: bytes, max_bytes: int = DEFAULT_MAX_BYTES) -> Any:
    """Parse ``data`` into an lxml tree after the size, DTD and root checks."""
    if len(data) > max_bytes:
        raise refuse(f"file too large: more than {max_bytes} bytes")
    match = _DECLARATIONS.search(data)
    if match is not None:
        kind = match.group(1).decode("ascii").upper()
        raise refuse(f"forbidden {kind} declaration (DTDs and entities are not allowed)")
    declared = _ENCODING.match(data)
    utf16 = data.startswith((b"\xff\xfe", b"\xfe\xff")) or data[:4] in (b"\x00<\x00?", b"<\x00?\x00")
    if utf16 or (declared is not None and declared.group(1).lower() not in (b"utf-8", b"utf8")):
        raise refuse("the file must be encoded in UTF-8")
    try:
        root = etree.fromstring(data, parser=_parser())
    except etree.XMLSyntaxError as exc:
        raise refuse(f"not well-formed XML: {exc}") from exc
    tree = root.getroottree()
    if tree.docinfo.doctype or tree.docinfo.internalDTD is not None:
        raise refuse("forbidden DOCTYPE declaration (DTDs and entities are not allowed)")
    if root.tag != ROOT_TAG:
        raise refuse(f"wrong root element {root.tag!r}: expected {ROOT_TAG!r}")
    return root


def normalise_name(name: str) -> tuple[str, str]:
    """Return ``(a_label, u_label)`` of a published ``<Nom>``, any case; raise ValueError."""
    text = name.strip()
    if text.endswith("."):
        text = text[:-1]
    if not text:
        raise ValueError("empty domain name")
    if text.isascii():
        a_label = text.lower()
        if _HOSTNAME.match(a_label) is None:
            raise ValueError(f"{name!r} is not a valid host name")
        if a_label.startswith("xn--") or ".xn--" in a_label:
            return a_label, idna.decode(a_label)
        return a_label, a_label
    try:
        a_label = idna.encode(text, uts46=True).decode("ascii").lower()
        u_label = idna.decode(a_label)
    except (idna.IDNAError, UnicodeError) as exc:
        raise ValueError(f"{name!r} is not a valid IDNA 2008 name: {exc}") from exc
    if _HOSTNAME.match(a_label) is None:
        raise ValueError(f"{name!r} is not a valid host name")
    return a_label, u_label


def _text(element: Any, tag: str, where: str) -> str:
    if len(element):
        raise refuse(f"{where}: <{tag}> must hold text only")
    text = (element.text or "").strip()
    if not text:
        raise refuse(f"{where}: empty <{tag}>")
    return text


def _field(parent: Any, tag: str, where: str) -> str:
    found = parent.findall(f"{{{NAMESPACE}}}{tag}")
    if not found:
        raise refuse(f"{where}: no <{tag}>")
    if len(found) > 1:
        raise refuse(f"{where}: several <{tag}>")
    return _text(found[0], tag, where)


def _entry_fields(entry: Any, position: int) -> tuple[str, str]:
    """``(Nom, DNCertificatOperateur)`` of one ``<Domaine>``, each exactly once (one pass)."""
    where = f"entry {position}"
    found: dict[str, list[Any]] = {_NOM: [], _DN: []}
    name = ""
    for child in entry.iterchildren(_NOM, _DN):
        found[child.tag].append(child)
    for tag, elements in found.items():
        short = tag.rpartition("}")[2]
        if len(elements) != 1:
            raise refuse(f"{where}: {'no' if not elements else 'several'} <{short}>")
        if tag == _NOM:
            name = _text(elements[0], short, where)
            where = f"entry {position} ({name!r})"
    return name, _text(found[_DN][0], "DNCertificatOperateur", where)


def _certificate(text: str, where: str) -> Certificate:
    try:
        parsed = dnlib.parse_dn(text)
    except dnlib.DnError as exc:
        raise refuse(f"{where}: DNCertificatOperateur {text!r} is not an RFC 4514 DN: {exc}") from exc
    cns = dnlib.common_names(parsed)
    if not cns:
        raise refuse(f"{where}: DNCertificatOperateur {text!r} has no CN")
    return Certificate(dn=text, cns=tuple(cns))


def _generated(root: Any) -> Any:
    text = _field(root, "DateDeGeneration", "list")
    try:
        return parse_timestamp(text)
    except ValueError as exc:
        raise refuse(f"DateDeGeneration {text!r} is not an ISO 8601 time with a zone") from exc


_XNS = {"n": NAMESPACE}
_ENTRIES = "n:ListeDomaines/n:Domaine"
# Any irregular entry (another element, a missing, repeated or structured field, a field not made
# of exactly one text node) sends the list to the entry-by-entry path, which names the problem.
_IRREGULAR = etree.XPath(
    "count(n:ListeDomaines/*[not(self::n:Domaine)"
    " or count(n:Nom) != 1 or count(n:DNCertificatOperateur) != 1"
    " or n:Nom/* or n:DNCertificatOperateur/*"
    " or count(n:Nom/text()) != 1 or count(n:DNCertificatOperateur/text()) != 1])",
    namespaces=_XNS,
)
_NAMES = etree.XPath(f"{_ENTRIES}/n:Nom/text()", namespaces=_XNS, smart_strings=False)
_DNS = etree.XPath(f"{_ENTRIES}/n:DNCertificatOperateur/text()", namespaces=_XNS, smart_strings=False)


def _raw_fields(root: Any, container: Any) -> list[tuple[str, str]]:
    """``(Nom, DNCertificatOperateur)`` texts of every entry, in order, structure checked."""
    if _IRREGULAR(root) == 0:
        names, dns = _NAMES(root), _DNS(root)
        if len(names) == len(dns) == len(container):
            return list(zip(names, dns, strict=True))
    pairs = []
    for position, entry in enumerate(container, start=1):
        if entry.tag != _DOMAINE:
            raise refuse(f"entry {position}: unexpected element {entry.tag!r} in <ListeDomaines>")
        pairs.append(_entry_fields(entry, position))
    return pairs


def extract(root: Any, signer: str | None) -> TrustList:
    """Turn a parsed, verified tree into a :class:`TrustList`; refuse any broken entry."""
    generated = _generated(root)
    lists = root.findall(f"{{{NAMESPACE}}}ListeDomaines")
    if len(lists) != 1:
        raise refuse(f"expected exactly one <ListeDomaines>, found {len(lists)}")
    domains: dict[str, Domain] = {}
    names: dict[str, tuple[str, str]] = {}
    for position, (raw_name, raw_dn) in enumerate(_raw_fields(root, lists[0]), start=1):
        name, dn_text = raw_name.strip(), raw_dn.strip()
        if not name:
            raise refuse(f"entry {position}: empty <Nom>")
        where = f"entry {position} ({name!r})"
        if not dn_text:
            raise refuse(f"{where}: empty <DNCertificatOperateur>")
        labels = names.get(name)
        if labels is None:
            try:
                labels = names[name] = normalise_name(name)
            except ValueError as exc:
                raise refuse(f"{where}: {exc}") from exc
        certificate = _certificate(dn_text, where)
        domain = domains.get(labels[0])
        if domain is None:
            domain = domains[labels[0]] = Domain(a_label=labels[0], u_label=labels[1])
        if certificate not in domain.certificates:
            domain.certificates.append(certificate)
    return TrustList(generated=generated, domains=domains, entries=len(lists[0]), signer=signer)
