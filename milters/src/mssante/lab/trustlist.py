"""Trust lists for the lab and the tests: the published layout, signed with XML-DSig by a test signer.

``build_list`` writes the layout of the published "liste blanche" (tests/data/listeblanche-sample.xml);
``sign`` signs it as the published list is (enveloped, exc-c14n, RSA-SHA256, ``URI=""``, the signer's
certificate in ``X509Data``). ``write_lab_list`` writes the lab's signed list for a set of operators,
e.g. without the peer and then with it again, to show a trust-list update.

Command line: ``python3 -m mssante.lab.trustlist --dir DIR [--operators hospital,other] [--json]``
rewrites DIR/trustlist/listeblanche.xml with the PKI of DIR/pki (default: all three operators).
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import xmlsec
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from lxml import etree

from mssante.lab import x509util as xu
from mssante.lab.pki import Leaf, Pki, ensure_pki

NS = "https://listeblanche.mssante.fr/schema"
LIST_DIR = "trustlist"
LIST_FILE = "listeblanche.xml"
# The operators of the lab, in the order of the list.
LAB_OPERATORS = ("hospital", "peer", "other")


@dataclass(frozen=True)
class Entry:
    """One <Domaine> of the list: a domain and one operator certificate's DN."""

    name: str
    dn: str
    description: str = "Domaine de test"
    contact: str = "01 00 00 00 00, dsi@example.test\n"
    support: str | None = None
    updated: str = "2026-10-01T08:00:00Z"


def build_list(entries: Iterable[Entry], generated: str = "2026-11-20T06:00:00Z") -> bytes:
    """An unsigned list in the published layout."""
    root = etree.Element(f"{{{NS}}}ListeBlancheMSSante", nsmap={None: NS})
    etree.SubElement(root, f"{{{NS}}}DateDeGeneration").text = generated
    domains = etree.SubElement(root, f"{{{NS}}}ListeDomaines")
    for entry in entries:
        item = etree.SubElement(domains, f"{{{NS}}}Domaine")
        etree.SubElement(item, f"{{{NS}}}Nom").text = entry.name
        etree.SubElement(item, f"{{{NS}}}Description").text = entry.description
        etree.SubElement(item, f"{{{NS}}}DNCertificatOperateur").text = entry.dn
        etree.SubElement(item, f"{{{NS}}}ResponsableContact").text = entry.contact
        if entry.support is not None:
            etree.SubElement(item, f"{{{NS}}}SupportContact").text = entry.support
        etree.SubElement(item, f"{{{NS}}}DateMAJ").text = entry.updated
    unsigned: bytes = etree.tostring(root, xml_declaration=True, encoding="UTF-8")
    return unsigned


def sign(document: bytes, key_path: Path, cert_paths: Sequence[Path]) -> bytes:
    """Sign ``document`` as the published list is: enveloped, exc-c14n, RSA-SHA256, URI=""."""
    root = etree.fromstring(document)
    signature = xmlsec.template.create(
        root, xmlsec.constants.TransformExclC14N, xmlsec.constants.TransformRsaSha256, ns="ds"
    )
    root.append(signature)
    reference = xmlsec.template.add_reference(signature, xmlsec.constants.TransformSha256, uri="")
    xmlsec.template.add_transform(reference, xmlsec.constants.TransformEnveloped)
    xmlsec.template.add_transform(reference, xmlsec.constants.TransformExclC14N)
    key_info = xmlsec.template.ensure_key_info(signature)
    x509_data = xmlsec.template.add_x509_data(key_info)
    xmlsec.template.x509_data_add_certificate(x509_data)
    context = xmlsec.SignatureContext()
    key = xmlsec.Key.from_file(str(key_path), xmlsec.constants.KeyDataFormatPem)
    key.load_cert_from_file(str(cert_paths[0]), xmlsec.constants.KeyDataFormatPem)
    context.key = key
    context.sign(signature)
    for extra in cert_paths[1:]:
        cert = x509.load_pem_x509_certificate(Path(extra).read_bytes())
        element = etree.SubElement(x509_data, f"{{{xmlsec.constants.DSigNs}}}X509Certificate")
        element.text = base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode("ascii")
    signed: bytes = etree.tostring(root, xml_declaration=True, encoding="UTF-8")
    return signed


def subject_dn(cert_path: Path) -> str:
    """The RFC 4514 subject of a certificate (as the list's DNCertificatOperateur and the signer pin)."""
    cert = xu.load_cert(cert_path)
    assert cert is not None, f"no certificate at {cert_path}"
    return cert.subject.rfc4514_string()


def lab_entries(pki: Pki, operators: Iterable[str] = LAB_OPERATORS) -> list[Entry]:
    """The lab's entries for ``operators`` (names among hospital, peer, other).

    The peer's domain also lists the CN of the PKI's expired certificate (a listed CN whose
    certificate expired), as a second relay would be.
    """
    wanted = set(operators)
    unknown = wanted - set(LAB_OPERATORS)
    if unknown:
        raise ValueError(f"unknown lab operators: {sorted(unknown)}")
    leaves: list[Leaf] = [pki.operators[name] for name in LAB_OPERATORS if name in wanted]
    if "peer" in wanted:
        leaves.append(pki.expired)
    entries = []
    for leaf in leaves:
        assert leaf.domain is not None
        organisation = leaf.domain.split(".", 1)[0].upper()
        entries.append(
            Entry(
                name=leaf.domain,
                dn=subject_dn(leaf.cert),
                description=f"Domaine MSSanté de {organisation} (lab)",
                contact=f"01 00 00 00 00, dsi@{leaf.cn.split('.', 1)[1]}",
                support=f"01 00 00 00 01, support@{leaf.cn.split('.', 1)[1]}",
            )
        )
    return entries


def write_lab_list(pki: Pki, path: Path, operators: Iterable[str] = LAB_OPERATORS) -> bool:
    """Write the lab's list for ``operators`` at ``path``, signed by the PKI's trust-list signer.

    The generation date is now (a later list is newer); the file is rewritten only when its domains
    and DNs differ from those wanted, so a rerun changes nothing. True when it was written.
    """
    entries = lab_entries(pki, operators)
    if path.exists() and _listed(path.read_bytes()) == [(entry.name, entry.dn) for entry in entries]:
        return False
    generated = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    signer = pki.trustlist_signer
    document = sign(build_list(entries, generated), signer.key, [signer.cert])
    path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    xu.write_atomic(path, document)
    return True


def _listed(document: bytes) -> list[tuple[str, str]]:
    try:
        root = etree.fromstring(document)
    except etree.XMLSyntaxError:
        return []
    return [
        (item.findtext(f"{{{NS}}}Nom", ""), item.findtext(f"{{{NS}}}DNCertificatOperateur", ""))
        for item in root.iter(f"{{{NS}}}Domaine")
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python3 -m mssante.lab.trustlist", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--dir", required=True, type=Path, help="the lab directory (holds pki/)")
    parser.add_argument(
        "--operators", default=",".join(LAB_OPERATORS), help="comma-separated operators to list"
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    operators = [name for name in args.operators.split(",") if name]
    path = args.dir.absolute() / LIST_DIR / LIST_FILE
    changed = write_lab_list(ensure_pki(args.dir.absolute() / "pki"), path, operators)
    result = {"changed": changed, "path": str(path), "operators": operators}
    sys.stdout.write(json.dumps(result) + "\n" if args.json else f"{path}: {operators} ({changed=})\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
