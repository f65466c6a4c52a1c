"""Journal records: a closed set of types, a closed set of fields per type, one canonical encoding.

A record is a JSON object. The leaf of the Merkle tree is its canonical encoding (version ``v`` = 1):
UTF-8 JSON with keys sorted, no whitespace (``separators=(",", ":")``), non-ASCII kept as UTF-8.
The writer sets ``v``, ``seq`` (leaf index), ``time`` (UTC) and ``host_id``; a client supplies only the
fields listed for its record type, so nothing else (a subject, a file name) can slip in (TRACE-1).
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Callable, Mapping
from typing import Any

VERSION = 1
MAX_STRING = 2048
MAX_RCPTS = 1000
SERVER_FIELDS = frozenset({"v", "type", "seq", "time", "host_id"})
_HEX64 = re.compile(r"[0-9a-f]{64}\Z")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?Z\Z")


class RecordType(enum.StrEnum):
    """The closed set of record types (design.md, "The journal")."""

    ACCEPTED = "accepted"
    REFUSED = "refused"
    REFUSED_AGGREGATE = "refused-aggregate"
    DELIVERY = "delivery"
    MDN = "mdn"
    KEY = "key"
    PURGE = "purge"


class RecordError(ValueError):
    """A record that does not follow the schema; ``problems`` lists every reason."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


Check = Callable[[object], str | None]


def _string(value: object) -> str | None:
    if not isinstance(value, str):
        return "must be a string"
    if len(value) > MAX_STRING:
        return f"longer than {MAX_STRING} characters"
    if _CONTROL.search(value):
        return "contains control characters"
    return None


def _count(value: object) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return "must be a non-negative integer"
    return None


def _number(value: object) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        return "must be a non-negative number"
    return None


def _digest(value: object) -> str | None:
    if not isinstance(value, str) or not _HEX64.match(value):
        return "must be 64 lower-case hex digits (SHA-256)"
    return None


def _timestamp(value: object) -> str | None:
    if not isinstance(value, str) or not _TIME.match(value):
        return "must be a UTC time like 2026-11-25T18:00:00Z"
    return None


def _one_of(*allowed: str) -> Check:
    def check(value: object) -> str | None:
        return None if value in allowed else f"must be one of {', '.join(allowed)}"

    return check


def _rcpts(value: object) -> str | None:
    if not isinstance(value, list) or not value or len(value) > MAX_RCPTS:
        return f"must be a list of 1 to {MAX_RCPTS} recipients"
    for item in value:
        if not isinstance(item, dict) or "address" not in item or not set(item) <= {"address", "status"}:
            return "each recipient is {address, status?} and nothing else"
        for key in item:
            problem = _string(item[key])
            if problem:
                return f"recipient {key} {problem}"
    return None


_DIRECTION = _one_of("inbound", "outbound", "unknown")
_TRANSACTION: dict[str, Check] = {
    "queue_id": _string,
    "message_id": _string,
    "mail_from": _string,
    "rcpts": _rcpts,
    "direction": _DIRECTION,
    "port": _count,
    "client_address": _string,
    "tls_version": _string,
    "tls_cipher": _string,
    "peer_cn": _string,
    "peer_issuer": _string,
    "auth_identity": _string,
    "size": _count,
    "body_sha256": _digest,
    "headers_sha256": _digest,
    "decision": _string,
    "reason": _string,
    "reply": _string,
}
_DELIVERY: dict[str, Check] = {
    "queue_id": _string,
    "message_id": _string,
    "rcpt": _string,
    "outcome": _string,
    "relay": _string,
    "dsn": _string,
    "delay_seconds": _number,
    "tls_version": _string,
    "tls_cipher": _string,
    "peer_cn": _string,
    "peer_issuer": _string,
}

# Per type: (allowed fields and their checks, required fields).
SCHEMA: dict[RecordType, tuple[dict[str, Check], frozenset[str]]] = {
    RecordType.ACCEPTED: (_TRANSACTION, frozenset({"queue_id", "mail_from", "rcpts"})),
    RecordType.REFUSED: (_TRANSACTION, frozenset({"reason"})),
    RecordType.REFUSED_AGGREGATE: (
        {
            "window_start": _timestamp,
            "window_end": _timestamp,
            "reason": _string,
            "count": _count,
            "direction": _DIRECTION,
            "port": _count,
        },
        frozenset({"window_start", "window_end", "reason", "count"}),
    ),
    RecordType.DELIVERY: (_DELIVERY, frozenset({"queue_id", "rcpt", "outcome"})),
    RecordType.MDN: (
        {
            "original_message_id": _string,
            "disposition": _string,
            "message_id": _string,
            "queue_id": _string,
            "mail_from": _string,
            "rcpt": _string,
        },
        frozenset({"original_message_id", "disposition"}),
    ),
    RecordType.KEY: (
        {"public_key": _string, "fingerprint": _string, "reason": _one_of("genesis", "rotation")},
        frozenset({"public_key", "fingerprint", "reason"}),
    ),
    RecordType.PURGE: (
        {"purged_from": _count, "purged_to": _count, "segments": _count, "older_than_days": _count},
        frozenset({"purged_from", "purged_to", "segments"}),
    ),
}


def check_fields(record: Mapping[str, object]) -> list[str]:
    """Every problem of the client part of ``record`` (type and type-specific fields)."""
    try:
        rtype = RecordType(str(record.get("type")))
    except ValueError:
        return [f"type: {record.get('type')!r} is not one of {', '.join(t.value for t in RecordType)}"]
    allowed, required = SCHEMA[rtype]
    problems = [f"{name}: missing" for name in sorted(required - set(record))]
    for name, value in sorted(record.items()):
        if name in SERVER_FIELDS:
            continue
        check = allowed.get(name)
        if check is None:
            problems.append(f"{name}: not a field of a {rtype.value} record")
        elif value is not None and (problem := check(value)):
            problems.append(f"{name}: {problem}")
    return problems


def seal(record: Mapping[str, object], seq: int, time: str, host_id: str) -> dict[str, Any]:
    """The stored form: client fields (``None`` dropped) plus the writer's own fields."""
    problems = [
        f"{name}: set by the journal, not by a writer"
        for name in sorted((SERVER_FIELDS - {"type"}) & set(record))
    ]
    problems += check_fields(record)
    if problems:
        raise RecordError(problems)
    sealed = {k: v for k, v in record.items() if v is not None}
    sealed.update(v=VERSION, seq=seq, time=time, host_id=host_id)
    return sealed


def canonical(record: Mapping[str, object]) -> bytes:
    """The canonical encoding, which is the Merkle leaf data."""
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def parse(data: bytes) -> dict[str, Any]:
    """Decode stored leaf data, checking that it is canonical, versioned and follows the schema."""
    try:
        record = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RecordError([f"not UTF-8 JSON: {exc}"]) from exc
    if not isinstance(record, dict):
        raise RecordError(["not a JSON object"])
    problems = check_fields(record)
    if record.get("v") != VERSION:
        problems.append(f"v: {record.get('v')!r} is not version {VERSION}")
    if _count(record.get("seq")) is not None:
        problems.append("seq: missing or not an integer")
    if _timestamp(record.get("time")) is not None:
        problems.append("time: missing or not a UTC time")
    if _string(record.get("host_id")) is not None:
        problems.append("host_id: missing or not a string")
    if not problems and canonical(record) != data:
        problems.append("not in canonical form")
    if problems:
        raise RecordError(problems)
    return record
