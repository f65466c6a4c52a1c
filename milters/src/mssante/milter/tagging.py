"""Header tagging at end of message (MSG-4): strip every incoming copy of our headers, add ours.

Our headers are every ``X-MSSante-*`` field (case-insensitive). They never collide with the
MSSanté ``X-MSS-*`` fields (``X-MSS-NIL``...), which pass byte for byte like the body (MSG-2, MSG-3).
"""

from __future__ import annotations

from collections.abc import Iterable

OWN_PREFIX = "x-mssante-"
TRACE_HEADER = "X-MSSante-Trace"
VERDICT_HEADER = "X-MSSante-Verdict"


def is_own(name: str) -> bool:
    return name.strip().lower().startswith(OWN_PREFIX)


def removals(headers: Iterable[tuple[str, str]]) -> tuple[tuple[str, int], ...]:
    """``(name, index)`` deletions (1-based per field name), last first so indexes stay valid."""
    seen: dict[str, int] = {}
    found: list[tuple[str, int]] = []
    for name, _value in headers:
        key = name.strip().lower()
        seen[key] = seen.get(key, 0) + 1
        if key.startswith(OWN_PREFIX):
            found.append((name, seen[key]))
    return tuple(reversed(found))


def additions(record_id: str, host_id: str, direction: str, reason: str) -> tuple[tuple[str, str], ...]:
    """The trace header (journal record id) and the verdict header."""
    return (
        (TRACE_HEADER, f"{record_id}; host={host_id}"),
        (VERDICT_HEADER, f"pass; direction={direction}; reason={reason}; host={host_id}"),
    )
