"""The delivery tracker end to end over a real journal: no gap, no duplicate (TRACE-1, TRACE-2, issue 12)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from tests.unit.journal.helpers import accepted, make_journal

from mssante.delivery.daemon import DeliveryDaemon, DeliverySettings
from mssante.delivery.metrics import DeliveryMetrics
from mssante.journal.owner import Journal
from mssante.journal.records import RecordError

P = "Nov 25 18:22:08 mx postfix-mssante"


class Crash(BaseException):
    """Stands for kill -9 between the journal's acknowledgement and the tracker's next state save."""


class OwnerSink:
    """Appends through the journal owner, as the socket client would; can fail or 'crash'."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.down = False
        self.crash_after_append = False

    def append(self, record: dict[str, Any]) -> object:
        if self.down:
            raise ConnectionError("journal owner not running")
        [result] = self.journal.append_batch([record])
        if isinstance(result, RecordError):
            raise result
        if self.crash_after_append:
            raise Crash
        return result


@pytest.fixture
def journal(tmp_path: Path) -> Journal:
    return make_journal(tmp_path, count=0)


def settings(tmp_path: Path, journal: Journal) -> DeliverySettings:
    return DeliverySettings(
        log_file=tmp_path / "postfix-mssante.log",
        state_file=tmp_path / "delivery-state.json",
        journal_dir=journal.settings.dir,
        journal_socket=journal.settings.socket,
        postfix_config_dir=None,
        not_queued_after_seconds=60,
    )


def daemon(tmp_path: Path, journal: Journal, sink: OwnerSink) -> DeliveryDaemon:
    return DeliveryDaemon(settings(tmp_path, journal), sink, DeliveryMetrics(CollectorRegistry()))


def log(tmp_path: Path, *lines: str) -> None:
    with (tmp_path / "postfix-mssante.log").open("a") as handle:
        handle.writelines(line + "\n" for line in lines)


def sent(qid: str, rcpt: str, status: str = "sent", dsn: str = "2.0.0") -> str:
    return (
        f"{P}/smtp[7]: {qid}: to=<{rcpt}>, relay=mx.peer.test[127.1.1.1]:25, delay=0.1,"
        f" delays=0/0/0/0.1, dsn={dsn}, status={status} (250 2.0.0 Ok)"
    )


def deliveries(journal: Journal) -> list[tuple[str, str, str]]:
    records = [json.loads(line.data) for line in journal.store.lines()]
    return [(r["queue_id"], r["rcpt"], r["outcome"]) for r in records if r["type"] == "delivery"]


def test_trace2_accepted_then_delivered_and_deferred_then_delivered(tmp_path: Path, journal: Journal) -> None:
    sink = OwnerSink(journal)
    tracker = daemon(tmp_path, journal, sink)  # first start: follows what happens from now on
    journal.append_batch([accepted(1), accepted(2)])
    qid1, qid2 = accepted(1)["queue_id"], accepted(2)["queue_id"]
    rcpt = "dr.b@hopital-sud.mssante.fr"
    log(tmp_path, f"{P}/qmgr[3]: {qid1}: from=<a@b>, size=1, nrcpt=1 (queue active)", sent(qid1, rcpt))
    log(tmp_path, sent(qid2, rcpt, "deferred", "4.4.1"))
    assert tracker.step() == 1
    log(tmp_path, sent(qid2, rcpt))
    assert tracker.step() == 1
    assert deliveries(journal) == [(qid1, rcpt, "delivered"), (qid2, rcpt, "deferred-then-delivered")]
    assert tracker.step() == 0  # nothing new: nothing journaled twice


def test_trace2_crash_after_append_does_not_duplicate(tmp_path: Path, journal: Journal) -> None:
    sink = OwnerSink(journal)
    first = daemon(tmp_path, journal, sink)
    journal.append_batch([accepted(1)])
    qid, rcpt = accepted(1)["queue_id"], "dr.b@hopital-sud.mssante.fr"
    log(tmp_path, sent(qid, rcpt))
    sink.crash_after_append = True
    with pytest.raises(Crash):
        first.step()
    sink.crash_after_append = False
    again = daemon(tmp_path, journal, sink)  # restart from the state saved before the append
    again.step()
    again.step()
    assert deliveries(journal) == [(qid, rcpt, "delivered")]


def test_trace2_journal_down_keeps_outcomes_pending_until_it_returns(
    tmp_path: Path, journal: Journal
) -> None:
    sink = OwnerSink(journal)
    tracker = daemon(tmp_path, journal, sink)
    journal.append_batch([accepted(1)])
    qid, rcpt = accepted(1)["queue_id"], "dr.b@hopital-sud.mssante.fr"
    log(tmp_path, sent(qid, rcpt, "bounced", "5.1.1"))
    sink.down = True
    assert tracker.step() == 0
    restarted = daemon(tmp_path, journal, sink)  # and the tracker restarts meanwhile
    sink.down = False
    assert restarted.step() == 1
    assert deliveries(journal) == [(qid, rcpt, "bounced")]


def test_trace2_log_rotated_while_tracker_down(tmp_path: Path, journal: Journal) -> None:
    sink = OwnerSink(journal)
    log(tmp_path, f"{P}/master[1]: daemon started -- version 3.7.11")
    daemon(tmp_path, journal, sink).step()
    journal.append_batch([accepted(1), accepted(2)])
    qid1, qid2 = accepted(1)["queue_id"], accepted(2)["queue_id"]
    rcpt = "dr.b@hopital-sud.mssante.fr"
    log(tmp_path, sent(qid1, rcpt))
    (tmp_path / "postfix-mssante.log").rename(tmp_path / "postfix-mssante.log.1")
    log(tmp_path, sent(qid2, rcpt))
    daemon(tmp_path, journal, sink).step()
    assert deliveries(journal) == [(qid1, rcpt, "delivered"), (qid2, rcpt, "delivered")]


def test_trace2_accepted_but_never_queued(tmp_path: Path, journal: Journal) -> None:
    sink = OwnerSink(journal)
    tracker = daemon(tmp_path, journal, sink)
    journal.append_batch([accepted(1)])
    tracker.step(now=1_000_000_000.0)
    assert deliveries(journal) == []
    tracker.step(now=4_000_000_000.0)  # far past the grace time: Postfix never queued it
    assert deliveries(journal) == [(accepted(1)["queue_id"], "dr.b@hopital-sud.mssante.fr", "not-queued")]


def test_trace2_tls_failures_counted_once_per_attempt(tmp_path: Path, journal: Journal) -> None:
    """`mssante_delivery_tls_failures_total` (alert MssanteTlsFailuresToPeers): one per failed attempt."""
    registry = CollectorRegistry()
    tracker = DeliveryDaemon(settings(tmp_path, journal), OwnerSink(journal), DeliveryMetrics(registry))

    def attempt(pid: int, qid: str, rcpt: str, reason: str) -> str:
        return (
            f"{P}/smtp[{pid}]: {qid}: to=<{rcpt}>, relay=mx.peer.test[127.1.1.1]:25, delay=1,"
            f" delays=0/0/1/0, dsn=4.7.5, status=deferred ({reason})"
        )

    log(
        tmp_path,
        attempt(7, "4jZSh31Zk6zCHNH", "a@peer.test", "Server certificate not verified"),
        attempt(7, "4jZSh31Zk6zCHNH", "b@peer.test", "Server certificate not verified"),  # same attempt
        attempt(8, "4jZSh31Zk6zCHNH", "a@peer.test", "Cannot start TLS: handshake failure"),
        attempt(8, "4jZSh31Zk6zCHNJ", "a@peer.test", "connect to mx.peer.test: Connection refused"),
    )
    tracker.step()
    assert registry.get_sample_value("mssante_delivery_tls_failures_total") == 2


def test_trace2_backlog_read_over_several_polls_without_false_not_queued(
    tmp_path: Path, journal: Journal, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A backlog longer than one poll's share: nothing skipped, and no `not-queued` before catching up."""
    monkeypatch.setattr("mssante.delivery.daemon.MAX_LINES_PER_POLL", 2)
    sink = OwnerSink(journal)
    tracker = daemon(tmp_path, journal, sink)
    journal.append_batch([accepted(1)])
    qid, rcpt = accepted(1)["queue_id"], "dr.b@hopital-sud.mssante.fr"
    noise = [f"{P}/smtpd[5]: connect from unknown[127.0.0.{n}]" for n in range(5)]
    log(tmp_path, *noise, f"{P}/qmgr[3]: {qid}: from=<a@b>, size=1, nrcpt=1 (queue active)", sent(qid, rcpt))
    far_future = 10_000_000_000.0  # the grace time is long over, yet the queue id is in the backlog
    for _ in range(4):
        tracker.step(now=far_future)
    assert deliveries(journal) == [(qid, rcpt, "delivered")]


def test_trace1_delivery_records_carry_the_message_id(tmp_path: Path, journal: Journal) -> None:
    """`prove --message-id` and `trace` find the outcomes by the Message-ID too."""
    tracker = daemon(tmp_path, journal, OwnerSink(journal))
    journal.append_batch([accepted(1)])
    qid, rcpt = accepted(1)["queue_id"], "dr.b@hopital-sud.mssante.fr"
    log(tmp_path, sent(qid, rcpt))
    tracker.step()
    [record] = [json.loads(line.data) for line in journal.store.lines() if b'"delivery"' in line.data]
    assert record["message_id"] == accepted(1)["message_id"]
