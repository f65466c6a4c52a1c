"""A small, strict RFC 4514 distinguished-name parser, identical on every runtime.

cryptography's ``Name.from_rfc4514_string`` behaves differently between the host's release (38) and
current ones (empty values, lower-case attribute types), so the trust list uses this parser instead.
A DN is kept as a tuple of RDNs, each a tuple of ``(TYPE, value)`` pairs, in the order written
(most specific first, as in the trust list and in ``openssl -nameopt RFC2253``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from cryptography import x509

Rdn = tuple[tuple[str, str], ...]
Dn = tuple[Rdn, ...]

_KEYSTRING = re.compile(r"[A-Za-z][A-Za-z0-9-]*\Z")
_NUMERICOID = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))+\Z")

# Short names for the attribute types found in IGC-Santé certificates and RFC 4514's table.
OID_NAMES = {
    "2.5.4.3": "CN",
    "2.5.4.6": "C",
    "2.5.4.7": "L",
    "2.5.4.8": "ST",
    "2.5.4.9": "STREET",
    "2.5.4.10": "O",
    "2.5.4.11": "OU",
    "2.5.4.5": "SERIALNUMBER",
    "2.5.4.4": "SN",
    "2.5.4.42": "GIVENNAME",
    "2.5.4.12": "TITLE",
    "2.5.4.97": "ORGANIZATIONIDENTIFIER",
    "0.9.2342.19200300.100.1.25": "DC",
    "0.9.2342.19200300.100.1.1": "UID",
    "1.2.840.113549.1.9.1": "EMAILADDRESS",
}
_ALIASES = {"E": "EMAILADDRESS", "S": "ST", "SERIAL": "SERIALNUMBER"}
_COMMON = {name: name for name in ("CN", "C", "L", "ST", "O", "OU", "DC", "UID", "STREET", "SERIALNUMBER")}


class DnError(ValueError):
    """A string that is not a valid RFC 4514 distinguished name; the message says why."""


def _attribute_type(text: str) -> str:
    known = _COMMON.get(text)
    if known is not None:
        return known
    name = text.strip(" ")
    if _KEYSTRING.match(name):
        upper = name.upper()
        return _ALIASES.get(upper, upper)
    oid = name[4:] if name.upper().startswith("OID.") else name
    if _NUMERICOID.match(oid):
        return OID_NAMES.get(oid, oid)
    raise DnError(f"invalid attribute type {text!r}")


# One attribute value: unescaped characters other than the specials, or escapes (pair or hex byte).
_VALUE = re.compile(r'(?:[^\\,+";<>\x00]|\\(?:[0-9A-Fa-f]{2}|[ "#+,;<=>\\]))*')
_ESCAPE = re.compile(r"((?:\\[0-9A-Fa-f]{2})+)|\\(.)")
_HEXVALUE = re.compile(r"#(?:[0-9A-Fa-f]{2})+")


def _unescape_match(match: re.Match[str]) -> str:
    if match.group(1):
        try:
            return bytes.fromhex(match.group(1).replace("\\", "")).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DnError("escaped bytes are not UTF-8") from exc
    return match.group(2)


def _value(text: str, start: int, attr: str) -> tuple[str, int]:
    """Read one value from ``text[start:]``; return it and the index where it stops."""
    if text.startswith("#", start):
        hexmatch = _HEXVALUE.match(text, start)
        if hexmatch is None:
            raise DnError(f"invalid hex value for {attr}")
        return hexmatch.group(0).lower(), hexmatch.end()
    match = _VALUE.match(text, start)
    assert match is not None  # the pattern matches the empty string
    raw = match.group(0)
    return (_ESCAPE.sub(_unescape_match, raw) if "\\" in raw else raw), match.end()


_NOT_SIMPLE = re.compile(r'[\\+#";<>\x00]')


def _parse_simple(text: str) -> Dn:
    """The common case: no escape, no multi-valued RDN, no special character (fast path)."""
    rdns = []
    for position, part in enumerate(text.split(",")):
        attr_text, equals, value = part.partition("=")
        if not equals:
            raise DnError(f"missing '=' in RDN {position + 1}")
        attr = _COMMON.get(attr_text) or _attribute_type(attr_text)
        if not value:
            raise DnError(f"empty value for {attr}")
        rdns.append(((attr, value),))
    return tuple(rdns)


def parse_dn(text: str) -> Dn:
    """Parse an RFC 4514 string; raise :class:`DnError` naming the problem."""
    if not text.strip():
        raise DnError("empty DN")
    if _NOT_SIMPLE.search(text) is None:
        return _parse_simple(text)
    return _parse_general(text)


def _parse_general(text: str) -> Dn:
    rdns: list[Rdn] = []
    current: list[tuple[str, str]] = []
    i = 0
    while True:
        equals = text.find("=", i)
        if equals < 0:
            raise DnError(f"missing '=' after position {i}")
        attr = _attribute_type(text[i:equals])
        value, end = _value(text, equals + 1, attr)
        stop = text[end] if end < len(text) else ""
        if stop and stop not in ",+":
            raise DnError(f"unescaped {stop!r} or invalid escape at position {end}")
        if not value:
            raise DnError(f"empty value for {attr}")
        current.append((attr, value))
        if stop != "+":
            rdns.append(tuple(current))
            current = []
        if not stop:
            return tuple(rdns)
        i = end + 1


def escape_value(value: str) -> str:
    """Escape ``value`` for an RFC 4514 string."""
    out = []
    for index, char in enumerate(value):
        leading = index == 0 and char in " #"
        trailing = index == len(value) - 1 and char == " "
        if char in '"+,;<>\\=' or leading or trailing:
            out.append("\\" + char)
        elif char == "\x00":
            out.append("\\00")
        else:
            out.append(char)
    return "".join(out)


def format_dn(dn: Dn) -> str:
    """The RFC 4514 string of a parsed DN (inverse of :func:`parse_dn`)."""
    return ",".join("+".join(f"{t}={escape_value(v)}" for t, v in rdn) for rdn in dn)


def from_x509_name(name: x509.Name) -> Dn:
    """A certificate's subject or issuer, most specific RDN first (the RFC 4514 order)."""
    rdns = []
    for rdn in reversed(list(name.rdns)):
        pairs = []
        for attribute in rdn:
            oid = attribute.oid.dotted_string
            value = attribute.value if isinstance(attribute.value, str) else attribute.value.hex()
            pairs.append((OID_NAMES.get(oid, oid), value))
        rdns.append(tuple(pairs))
    return tuple(rdns)


def common_names(dn: Dn) -> list[str]:
    """Every CN value of ``dn``, in order."""
    return [value for rdn in dn for attr, value in rdn if attr == "CN"]


def _fold(dn: Iterable[Rdn]) -> tuple[frozenset[tuple[str, str]], ...]:
    return tuple(frozenset((t, " ".join(v.split()).casefold()) for t, v in rdn) for rdn in dn)


def same_dn(left: Dn, right: Dn) -> bool:
    """Compare two DNs: same RDN order, values compared case-insensitively, spaces collapsed."""
    return _fold(left) == _fold(right)
