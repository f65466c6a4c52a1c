"""From acceptance to one terminal outcome per recipient (TRACE-1, TRACE-2)."""

from __future__ import annotations

from mssante.delivery.parse import Event, Kind
from mssante.delivery.tracker import Accepted, Tracker

QID = "4jZSh03vQwzCHND"


def rcpt(to: str, status: str, pid: int = 7, dsn: str = "2.0.0") -> Event:
    return Event(Kind.RCPT, pid, "mssante", queue_id=QID, recipient=to, status=status, relay="r", dsn=dsn)


def tracker_with(*recipients: str, at: float = 0.0) -> Tracker:
    tracker = Tracker(not_queued_after=60)
    tracker.accept(Accepted(QID, recipients, at))
    return tracker


def test_trace1_delivered_with_outbound_tls_details() -> None:
    tracker = tracker_with("a@peer.test")
    tracker.feed(Event(Kind.TLS, 7, "mssante", tls_version="TLSv1.3", tls_cipher="C", tls_trust="Verified"))
    [record] = tracker.feed(rcpt("a@peer.test", "sent"))
    assert record["outcome"] == "delivered" and record["tls_version"] == "TLSv1.3"
    assert record["queue_id"] == QID and record["rcpt"] == "a@peer.test"


def test_trace2_deferred_then_delivered_is_one_record() -> None:
    tracker = tracker_with("a@peer.test")
    assert tracker.feed(rcpt("a@peer.test", "deferred", dsn="4.4.1")) == []
    assert tracker.feed(rcpt("a@peer.test", "deferred", dsn="4.4.1")) == []
    [record] = tracker.feed(rcpt("a@peer.test", "sent"))
    assert record["outcome"] == "deferred-then-delivered"


def test_trace2_each_recipient_settles_once_and_message_is_forgotten() -> None:
    tracker = tracker_with("a@x.test", "b@x.test")
    assert [r["outcome"] for r in tracker.feed(rcpt("b@x.test", "bounced", dsn="5.1.1"))] == ["bounced"]
    assert tracker.feed(rcpt("b@x.test", "sent")) == []  # already settled
    assert [r["rcpt"] for r in tracker.feed(rcpt("a@x.test", "sent"))] == ["a@x.test"]
    assert list(tracker.known()) == []


def test_trace2_expiry_settles_every_open_recipient() -> None:
    tracker = tracker_with("a@x.test", "b@x.test")
    tracker.feed(rcpt("a@x.test", "sent"))
    tracker.feed(rcpt("b@x.test", "deferred", dsn="4.4.1"))
    records = tracker.feed(Event(Kind.EXPIRED, 1, "qmgr", queue_id=QID))
    assert [(r["rcpt"], r["outcome"]) for r in records] == [("b@x.test", "expired")]


def test_trace2_accepted_but_never_queued_becomes_not_queued_after_grace() -> None:
    tracker = tracker_with("a@x.test", at=100.0)
    assert tracker.sweep(now=150.0) == []  # still within the grace time
    assert [r["outcome"] for r in tracker.sweep(now=161.0)] == ["not-queued"]
    queued = tracker_with("a@x.test", at=100.0)
    queued.feed(Event(Kind.QUEUED, 1, "qmgr", queue_id=QID))
    assert queued.sweep(now=1000.0) == []  # control: a queued message is not "not queued"


def test_trace1_unknown_queue_ids_are_ignored() -> None:
    tracker = Tracker()
    assert tracker.feed(rcpt("a@x.test", "sent")) == []  # e.g. a bounce Postfix generated itself


def test_trace2_state_round_trips_through_json() -> None:
    tracker = tracker_with("a@x.test", "b@x.test")
    tracker.feed(rcpt("a@x.test", "deferred", dsn="4.4.1"))
    restored = Tracker()
    restored.load_json(tracker.to_json())
    [record] = restored.feed(rcpt("a@x.test", "sent"))
    assert record["outcome"] == "deferred-then-delivered"
    assert restored.open_messages(now=10_000, older_than=60) == 1


def test_trace2_refused_by_postfix_after_the_milter_settles_not_queued_at_once() -> None:
    """A later milter's or milter_header_checks' refusal: no grace time needed."""
    for kind in (Kind.CONTENT_REJECT, Kind.MILTER_REJECT):
        tracker = tracker_with("a@x.test", "b@x.test", at=100.0)
        records = tracker.feed(Event(kind, 1, "cleanup", queue_id=QID))
        assert [(r["rcpt"], r["outcome"]) for r in records] == [
            ("a@x.test", "not-queued"),
            ("b@x.test", "not-queued"),
        ]
        assert tracker.sweep(now=10_000.0) == []  # settled once
