"""The mailbox table (`/etc/mssante/mailboxes.json`): who owns which MSSanté mailbox.

Schema-versioned JSON rendered by the roles (docs/configuration.md). Loaded once into frozen
dataclasses; every problem of a file is collected and reported together.

Address matching: the domain is compared case-insensitively (as its lower-case A-label), the local
part exactly, as RFC 5321 section 2.4 says it may be case-sensitive. Owners (`{auth_authen}`
strings) are compared exactly; certificate CNs case-insensitively (they are host names).
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mssante.trustlist.index import normalise_domain

SUPPORTED_SCHEMA = 1
_KEYS = {"address", "type", "owners", "cert_cns", "rpps", "structure_id", "red_list"}


class MailboxType(enum.Enum):
    """Directory type of a mailbox (DIR-1)."""

    PER = "PER"
    ORG = "ORG"
    APP = "APP"
    CAB = "CAB"


class MailboxTableError(Exception):
    """A mailbox table that cannot be used; ``problems`` lists every reason."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(problems))


def normalize_domain(domain: str) -> str | None:
    """Lower-case A-label form of ``domain``, or None when it is not a usable domain name.

    The trust list's own normalisation (one definition for both tables), after a trailing dot.
    """
    text = domain.strip()
    return normalise_domain(text[:-1] if text.endswith(".") else text)


def split_address(address: str) -> tuple[str, str] | None:
    """``(local_part, normalized_domain)`` of ``local@domain``; None when malformed."""
    text = address.strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1]
    local, sep, domain = text.rpartition("@")
    if not sep or not local or any(c.isspace() for c in local):
        return None
    norm = normalize_domain(domain)
    if norm is None:
        return None
    return local, norm


def address_key(address: str) -> str | None:
    """The lookup key of an address: exact local part, lower-case A-label domain."""
    parts = split_address(address)
    return None if parts is None else f"{parts[0]}@{parts[1]}"


@dataclass(frozen=True)
class Mailbox:
    """One MSSanté mailbox and the identities allowed to use it."""

    address: str
    type: MailboxType
    owners: tuple[str, ...]
    cert_cns: tuple[str, ...] = ()
    rpps: str | None = None
    structure_id: str | None = None
    red_list: bool = False

    @property
    def domain(self) -> str:
        return self.address.rpartition("@")[2]


@dataclass(frozen=True)
class MailboxTable:
    """Lookups by address, by owner identity and by application certificate CN."""

    mailboxes: tuple[Mailbox, ...] = ()
    _by_address: Mapping[str, Mailbox] = field(default_factory=dict, repr=False)
    _by_owner: Mapping[str, tuple[Mailbox, ...]] = field(default_factory=dict, repr=False)
    _by_cn: Mapping[str, tuple[Mailbox, ...]] = field(default_factory=dict, repr=False)

    @classmethod
    def of(cls, mailboxes: tuple[Mailbox, ...]) -> MailboxTable:
        by_owner: dict[str, list[Mailbox]] = {}
        by_cn: dict[str, list[Mailbox]] = {}
        for box in mailboxes:
            for owner in box.owners:
                by_owner.setdefault(owner, []).append(box)
            for cn in box.cert_cns:
                by_cn.setdefault(cn.lower(), []).append(box)
        return cls(
            mailboxes,
            {box.address: box for box in mailboxes},
            {k: tuple(v) for k, v in by_owner.items()},
            {k: tuple(v) for k, v in by_cn.items()},
        )

    def __len__(self) -> int:
        return len(self.mailboxes)

    def __iter__(self) -> Iterator[Mailbox]:
        return iter(self.mailboxes)

    def by_address(self, address: str) -> Mailbox | None:
        key = address_key(address)
        return None if key is None else self._by_address.get(key)

    def owned_by(self, identity: str) -> tuple[Mailbox, ...]:
        return self._by_owner.get(identity, ())

    def by_cert_cn(self, cn: str) -> tuple[Mailbox, ...]:
        return self._by_cn.get(cn.lower(), ())

    def domains(self) -> frozenset[str]:
        return frozenset(box.domain for box in self.mailboxes)


def _strings(value: Any, where: str, problems: list[str]) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        problems.append(f"{where}: must be a list of non-empty strings")
        return ()
    return tuple(value)


def _optional_str(entry: Mapping[str, Any], key: str, where: str, problems: list[str]) -> str | None:
    value = entry.get(key)
    if value is not None and not isinstance(value, str):
        problems.append(f"{where}.{key}: must be a string or null")
        return None
    return value


def _parse_entry(entry: Any, where: str, problems: list[str]) -> Mailbox | None:
    if not isinstance(entry, dict):
        problems.append(f"{where}: must be an object")
        return None
    before = len(problems)
    for key in sorted(set(entry) - _KEYS):
        problems.append(f"{where}.{key}: unknown key")
    address = entry.get("address")
    key = address_key(address) if isinstance(address, str) else None
    if key is None:
        problems.append(f"{where}.address: not a valid address: {address!r}")
    try:
        box_type = MailboxType(entry.get("type"))
    except ValueError:
        problems.append(f"{where}.type: must be one of {', '.join(t.value for t in MailboxType)}")
        box_type = MailboxType.PER
    owners = _strings(entry.get("owners", []), f"{where}.owners", problems)
    cert_cns = _strings(entry.get("cert_cns", []), f"{where}.cert_cns", problems)
    rpps = _optional_str(entry, "rpps", where, problems)
    structure_id = _optional_str(entry, "structure_id", where, problems)
    red_list = entry.get("red_list", False)
    if not isinstance(red_list, bool):
        problems.append(f"{where}.red_list: must be true or false")
    if len(problems) > before or key is None:
        return None
    return Mailbox(key, box_type, owners, cert_cns, rpps, structure_id, bool(red_list))


def parse(data: Any, source: str = "mailboxes") -> MailboxTable:
    """Turn a decoded mailbox table document into a :class:`MailboxTable` (all problems at once)."""
    problems: list[str] = []
    if not isinstance(data, dict):
        raise MailboxTableError(source, ["the top level must be an object"])
    if data.get("schema") != SUPPORTED_SCHEMA:
        problems.append(f"schema: {data.get('schema')!r} is not supported (expected {SUPPORTED_SCHEMA})")
    entries = data.get("mailboxes")
    if not isinstance(entries, list):
        problems.append("mailboxes: must be a list")
        entries = []
    boxes: list[Mailbox] = []
    seen: set[str] = set()
    for i, entry in enumerate(entries):
        box = _parse_entry(entry, f"mailboxes[{i}]", problems)
        if box is None:
            continue
        if box.address in seen:
            problems.append(f"mailboxes[{i}].address: duplicate mailbox")
        seen.add(box.address)
        boxes.append(box)
    if problems:
        raise MailboxTableError(source, problems)
    return MailboxTable.of(tuple(boxes))


def load(path: Path | str) -> MailboxTable:
    """Read and parse the mailbox table at ``path``."""
    source = str(path)
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise MailboxTableError(source, [f"cannot read: {exc.strerror or exc}"]) from exc
    except ValueError as exc:
        raise MailboxTableError(source, [f"not valid JSON: {exc}"]) from exc
    return parse(data, source)
