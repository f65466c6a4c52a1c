"""Records: closed types, closed fields, canonical encoding (TRACE-1: identifiers and digests only)."""

from __future__ import annotations

import pytest

from mssante.journal import records
from mssante.journal.records import RecordError, RecordType

from .helpers import accepted


def test_trace1_accepted_record_seals_canonically() -> None:
    sealed = records.seal(accepted(1), 7, "2026-11-25T18:00:00.000001Z", "hospital-1")
    data = records.canonical(sealed)
    assert records.parse(data) == sealed
    assert data.startswith(b'{"body_sha256":') and b" " not in data.replace(b"dr.", b"")
    assert (sealed["v"], sealed["seq"], sealed["host_id"]) == (1, 7, "hospital-1")


def test_trace1_subject_cannot_slip_in() -> None:
    record = accepted(1) | {"subject": "Résultats de M. Dupont"}
    assert records.check_fields(record) == ["subject: not a field of a accepted record"]
    with pytest.raises(RecordError):
        records.seal(record, 0, "2026-11-25T18:00:00Z", "h")
    assert records.check_fields(accepted(1)) == []  # control


def test_trace1_writer_cannot_set_the_journal_fields() -> None:
    with pytest.raises(RecordError, match="time: set by the journal"):
        records.seal(accepted(1) | {"time": "2020-01-01T00:00:00Z"}, 0, "2026-11-25T18:00:00Z", "h")


@pytest.mark.parametrize(
    ("record", "problem"),
    [
        ({"type": "mail"}, "type: 'mail' is not one of"),
        ({"type": "accepted", "queue_id": "Q", "mail_from": "a", "rcpts": []}, "rcpts: must be a list"),
        ({"type": "delivery", "queue_id": "Q", "rcpt": "a"}, "outcome: missing"),
        ({"type": "refused", "reason": "x", "body_sha256": "ABC"}, "body_sha256: must be 64"),
        ({"type": "refused", "reason": "x\r\nBcc: y"}, "reason: contains control characters"),
        (
            {
                "type": "refused-aggregate",
                "window_start": "yesterday",
                "window_end": "2026-11-25T18:00:00Z",
                "reason": "r",
                "count": 3,
            },
            "window_start: must be a UTC time",
        ),
        (
            {"type": "accepted", "queue_id": "Q", "mail_from": "a", "rcpts": [{"address": "b", "name": "B"}]},
            "each recipient is {address, status?}",
        ),
    ],
)
def test_trace1_invalid_records_are_refused_with_every_problem(
    record: dict[str, object], problem: str
) -> None:
    assert any(problem in p for p in records.check_fields(record)), records.check_fields(record)


def test_trace1_every_type_has_a_valid_minimal_record() -> None:
    minimal = {
        RecordType.ACCEPTED: {"queue_id": "Q", "mail_from": "", "rcpts": [{"address": "a@b"}]},
        RecordType.REFUSED: {"reason": "untrusted-peer"},
        RecordType.REFUSED_AGGREGATE: {
            "window_start": "2026-11-25T18:00:00Z",
            "window_end": "2026-11-25T18:05:00Z",
            "reason": "r",
            "count": 4,
        },
        RecordType.DELIVERY: {"queue_id": "Q", "rcpt": "a@b", "outcome": "delivered", "delay_seconds": 1.5},
        RecordType.MDN: {"original_message_id": "<m@x>", "disposition": "displayed"},
        RecordType.KEY: {"public_key": "k", "fingerprint": "f", "reason": "rotation"},
        RecordType.PURGE: {"purged_from": 0, "purged_to": 10, "segments": 1},
    }
    for rtype, fields in minimal.items():
        assert records.check_fields({"type": rtype.value, **fields}) == [], rtype


def test_trace2_non_canonical_stored_record_is_invalid() -> None:
    sealed = records.seal(accepted(1), 0, "2026-11-25T18:00:00Z", "h")
    spaced = records.canonical(sealed).replace(b',"seq"', b', "seq"')
    with pytest.raises(RecordError, match="canonical"):
        records.parse(spaced)
