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
_SPECIAL = ' "#+,;<=>\\'
_HEX = "0123456789abcdefABCDEF"

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


class DnError(ValueError):
    """A string that is not a valid RFC 4514 distinguished name; the message says why."""


def _attribute_type(text: str) -> str:
    name = text.strip(" ")
    if _KEYSTRING.match(name):
        upper = name.upper()
        return _ALIASES.get(upper, upper)
    oid = name[4:] if name.upper().startswith("OID.") else name
    if _NUMERICOID.match(oid):
        return OID_NAMES.get(oid, oid)
    raise DnError(f"invalid attribute type {text!r}")


def _unescape(text: str, start: int) -> tuple[str, int, str]:
    """Read one value from ``text[start:]``; return it, the end index and the stop character."""
    out: list[str] = []
    raw = bytearray()
    i = start
    while i < len(text):
        char = text[i]
        if char == "\\":
            pair = text[i + 1 : i + 3]
            if len(pair) == 2 and all(c in _HEX for c in pair):
                raw.append(int(pair, 16))
                i += 3
                continue
            if pair[:1] and pair[0] in _SPECIAL:
                out.append(_flush(raw))
                out.append(pair[0])
                i += 2
                continue
            raise DnError(f"invalid escape at position {i}")
        if char in ",+":
            break
        if char in '";<>\x00':
            raise DnError(f"unescaped {char!r} at position {i}")
        out.append(_flush(raw))
        out.append(char)
        i += 1
    out.append(_flush(raw))
    return "".join(out), i, text[i] if i < len(text) else ""


def _flush(raw: bytearray) -> str:
    if not raw:
        return ""
    try:
        value = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DnError("escaped bytes are not UTF-8") from exc
    raw.clear()
    return value


def parse_dn(text: str) -> Dn:
    """Parse an RFC 4514 string; raise :class:`DnError` naming the problem."""
    if not text.strip():
        raise DnError("empty DN")
    rdns: list[Rdn] = []
    current: list[tuple[str, str]] = []
    i = 0
    while True:
        equals = text.find("=", i)
        if equals < 0:
            raise DnError(f"missing '=' after position {i}")
        attr = _attribute_type(text[i:equals])
        if text[equals + 1 : equals + 2] == "#":
            match = re.match(r"#([0-9A-Fa-f]{2})+", text[equals + 1 :])
            if match is None:
                raise DnError(f"invalid hex value for {attr}")
            value, end = match.group(0).lower(), equals + 1 + match.end()
            stop = text[end] if end < len(text) else ""
            if stop not in ",+":
                raise DnError(f"unexpected {stop!r} after hex value of {attr}")
        else:
            value, end, stop = _unescape(text, equals + 1)
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
