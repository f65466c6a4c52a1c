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

_DECLARATIONS = re.compile(rb"<!\s*(DOCTYPE|ENTITY|ELEMENT|ATTLIST|NOTATION)", re.IGNORECASE)
_LDH_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\Z")


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
    if data.startswith((b"\xff\xfe", b"\xfe\xff")) or data[:4] in (b"\x00<\x00?", b"<\x00?\x00"):
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
        labels = a_label.split(".")
        if len(a_label) > 253 or len(labels) < 2 or not all(_LDH_LABEL.match(x) for x in labels):
            raise ValueError(f"{name!r} is not a valid host name")
        if any(label.startswith("xn--") for label in labels):
            return a_label, idna.decode(a_label)
        return a_label, a_label
    try:
        a_label = idna.encode(text, uts46=True).decode("ascii").lower()
        return a_label, idna.decode(a_label)
    except (idna.IDNAError, UnicodeError) as exc:
        raise ValueError(f"{name!r} is not a valid IDNA 2008 name: {exc}") from exc


def _field(entry: Any, tag: str, where: str) -> str:
    found = entry.findall(f"{{{NAMESPACE}}}{tag}")
    if not found:
        raise refuse(f"{where}: no <{tag}>")
    if len(found) > 1:
        raise refuse(f"{where}: several <{tag}>")
    element = found[0]
    if len(element):
        raise refuse(f"{where}: <{tag}> must hold text only")
    text = (element.text or "").strip()
    if not text:
        raise refuse(f"{where}: empty <{tag}>")
    return text


def _certificate(entry: Any, where: str) -> Certificate:
    text = _field(entry, "DNCertificatOperateur", where)
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


def extract(root: Any, signer: str | None) -> TrustList:
    """Turn a parsed, verified tree into a :class:`TrustList`; refuse any broken entry."""
    generated = _generated(root)
    lists = root.findall(f"{{{NAMESPACE}}}ListeDomaines")
    if len(lists) != 1:
        raise refuse(f"expected exactly one <ListeDomaines>, found {len(lists)}")
    domains: dict[str, Domain] = {}
    entries = 0
    for position, entry in enumerate(lists[0], start=1):
        if entry.tag != f"{{{NAMESPACE}}}Domaine":
            raise refuse(f"entry {position}: unexpected element {entry.tag!r} in <ListeDomaines>")
        where = f"entry {position}"
        name = _field(entry, "Nom", where)
        where = f"entry {position} ({name!r})"
        try:
            a_label, u_label = normalise_name(name)
        except ValueError as exc:
            raise refuse(f"{where}: {exc}") from exc
        certificate = _certificate(entry, where)
        domain = domains.setdefault(a_label, Domain(a_label=a_label, u_label=u_label))
        if certificate not in domain.certificates:
            domain.certificates.append(certificate)
        entries += 1
    return TrustList(generated=generated, domains=domains, entries=entries, signer=signer)
