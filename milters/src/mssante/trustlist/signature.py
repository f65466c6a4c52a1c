"""XML-DSig verification of the trust list (TRUST-3), with python-xmlsec.

The shape is checked before any cryptography: exactly one ``ds:Signature``, the last child of the
root; one ``Reference`` with ``URI=""``; only the enveloped-signature and exclusive c14n transforms;
exclusive c14n for ``SignedInfo``; RSA-SHA256 and SHA-256. The signer certificate comes from
``KeyInfo``: it must chain to the configured CA, match the pinned signer and be valid now. xmlsec
then checks the signature with that certificate's key only (never a key it finds by itself).
On success the ``Signature`` element is removed, so that the caller reads exactly the signed tree.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import xmlsec
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from mssante.trustlist import certs
from mssante.trustlist.model import Outcome, Refusal

DS = "http://www.w3.org/2000/09/xmldsig#"
EXC_C14N = "http://www.w3.org/2001/10/xml-exc-c14n#"
ENVELOPED = "http://www.w3.org/2000/09/xmldsig#enveloped-signature"
RSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
SHA256 = "http://www.w3.org/2001/04/xmlenc#sha256"


_KEY_INFO_CHILDREN = {f"{{{DS}}}{tag}" for tag in ("X509Data", "KeyName", "KeyValue")}


def refuse(message: str) -> Refusal:
    return Refusal(Outcome.REFUSED_SIGNATURE, message)


def _ds(tag: str) -> str:
    return f"{{{DS}}}{tag}"


def _one(parent: Any, tag: str, where: str) -> Any:
    found = parent.findall(_ds(tag))
    if len(found) != 1:
        raise refuse(f"{where}: expected exactly one {tag}, found {len(found)}")
    return found[0]


def _algorithm(element: Any, expected: str, what: str) -> None:
    value = element.get("Algorithm")
    if value != expected:
        raise refuse(f"{what} {value!r} is not allowed (only {expected})")


def find_signature(root: Any) -> Any | None:
    """The single Signature element, None when the list carries none; refuse any other shape."""
    signatures = list(root.iter(_ds("Signature")))
    if not signatures:
        return None
    if len(signatures) > 1:
        raise refuse(f"expected exactly one Signature, found {len(signatures)}")
    signature = signatures[0]
    if signature.getparent() is not root or root[-1] is not signature:
        raise refuse("the Signature must be the last child of the root element")
    return signature


def check_shape(signature: Any) -> None:
    """Refuse anything but the one profile the trust list is signed with."""
    signed_info = _one(signature, "SignedInfo", "Signature")
    _algorithm(_one(signed_info, "CanonicalizationMethod", "SignedInfo"), EXC_C14N, "canonicalization")
    _algorithm(_one(signed_info, "SignatureMethod", "SignedInfo"), RSA_SHA256, "signature method")
    reference = _one(signed_info, "Reference", "SignedInfo")
    if reference.get("URI") != "":
        raise refuse(f'Reference URI {reference.get("URI")!r} is not allowed (only URI="")')
    _algorithm(_one(reference, "DigestMethod", "Reference"), SHA256, "digest method")
    transforms = reference.findall(f"{_ds('Transforms')}/{_ds('Transform')}")
    algorithms = [t.get("Algorithm") for t in transforms]
    if ENVELOPED not in algorithms:
        raise refuse("the enveloped-signature transform is missing")
    if len(algorithms) != len(set(algorithms)) or not set(algorithms) <= {ENVELOPED, EXC_C14N}:
        raise refuse(f"transforms {algorithms!r} are not allowed (only enveloped-signature and exc-c14n)")
    if signature.findall(_ds("Object")):
        raise refuse("ds:Object is not allowed in the Signature")
    for key_info in signature.findall(_ds("KeyInfo")):
        for child in key_info:
            if child.tag not in _KEY_INFO_CHILDREN:
                raise refuse(f"KeyInfo child {child.tag!r} is not allowed (only X509Data, KeyName, KeyValue)")


def key_info_certificates(signature: Any) -> list[x509.Certificate]:
    """The certificates carried in ``KeyInfo/X509Data``."""
    found = []
    for element in signature.iter(_ds("X509Certificate")):
        try:
            der = base64.b64decode("".join((element.text or "").split()), validate=True)
            found.append(x509.load_der_x509_certificate(der))
        except ValueError as exc:
            raise refuse(f"KeyInfo holds an unreadable certificate: {exc}") from exc
    if not found:
        raise refuse("KeyInfo carries no X509Certificate")
    return found


def _leaf(candidates: Sequence[x509.Certificate]) -> x509.Certificate:
    """The certificate that issued none of the others: the signer."""
    leaves = [c for c in candidates if not any(o != c and certs.signed_by(o, c) for o in candidates)]
    if len(leaves) != 1:
        raise refuse(f"KeyInfo must name one signer certificate, found {len(leaves)} candidates")
    return leaves[0]


def choose_signer(
    signature: Any, anchors: Sequence[x509.Certificate], pinned: str, now: datetime | None = None
) -> x509.Certificate:
    """The KeyInfo signer, checked: chains to ``anchors``, matches ``pinned``, valid now."""
    carried = key_info_certificates(signature)
    signer = _leaf(carried)
    subject = signer.subject.rfc4514_string()
    try:
        if not certs.matches_signer(signer, pinned):
            raise refuse(f"signer {subject!r} is not the pinned trust-list signer {pinned!r}")
        certs.check_signing_usage(signer)
        certs.verify_chain(signer, [c for c in carried if c != signer], anchors, now)
    except certs.CertificateError as exc:
        raise refuse(str(exc)) from exc
    except ValueError as exc:
        raise refuse(f"pinned signer {pinned!r} is not a valid DN: {exc}") from exc
    return signer


def verify(
    root: Any, anchors: Sequence[x509.Certificate], pinned: str, now: datetime | None = None
) -> x509.Certificate:
    """Verify the enveloped signature of ``root``; remove it and return the signer certificate."""
    signature = find_signature(root)
    if signature is None:
        raise refuse("the list is not signed (no Signature element)")
    check_shape(signature)
    signer = choose_signer(signature, anchors, pinned, now)
    pem = signer.public_bytes(serialization.Encoding.PEM)
    context = xmlsec.SignatureContext()
    try:
        context.key = xmlsec.Key.from_memory(pem, xmlsec.constants.KeyDataFormatCertPem)
        context.set_enabled_key_data([xmlsec.constants.KeyDataX509])
        context.verify(signature)
    except xmlsec.Error as exc:
        raise refuse(f"signature verification failed: {exc}") from exc
    root.remove(signature)
    return signer


def strip_signature(root: Any) -> bool:
    """Remove an (unverified) Signature when signatures are not required; True when one was there."""
    signature = find_signature(root)
    if signature is None:
        return False
    root.remove(signature)
    return True
