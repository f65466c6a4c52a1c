"""Delivery tracking end to end (issue 12; TRACE-1, TRACE-2, MSG-3): from acceptance to each outcome.

Real parts: the MSSanté-style Postfix of the milter lab (its own ``maillog_file``, syslog_name
``postfix-mssante``, short retry timers), the real milter and journal owner, an aiosmtpd next hop
whose replies the tests script, and the delivery tracker as a process on the host runtime
(``/usr/bin/python3 -m mssante.delivery run``). Every outcome is read back from the journal.
"""

from __future__ import annotations

import json
import signal
import subprocess
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from email.utils import make_msgid
from pathlib import Path
from typing import Any

import pytest
from tests.milter.lab import ENV, HOST_PYTHON, MilterLab, start_lab, stop_lab
from tests.support.common import free_port, listening, wait_until
from tests.support.postfix import FAST_RETRY
from tests.support.smtpclient import Transcript

from mssante.journal.store import Store
from mssante.lab.pki import Pki

WAIT = 60  # seconds: bounded waits for a delivery attempt, a retry, the tracker's poll


@dataclass
class Tracking:
    lab: MilterLab
    config: Path
    state: Path
    metrics_port: int
    process: subprocess.Popen[bytes] | None = None

    # ---- the tracker process ------------------------------------------------------------------
    def start(self) -> None:
        before = self.state.stat().st_mtime_ns if self.state.exists() else 0
        log = (self.lab.base / "delivery.log").open("ab")
        with log:
            self.process = subprocess.Popen(
                [HOST_PYTHON, "-m", "mssante.delivery", "run", "--config", str(self.config)],
                env=ENV, stdout=log, stderr=subprocess.STDOUT, cwd=self.lab.base,
            )  # fmt: skip

        def ready() -> bool:
            saved = self.state.exists() and self.state.stat().st_mtime_ns != before
            return (
                self.process is None
                or self.process.poll() is not None
                or (saved and listening(self.lab.address, self.metrics_port))
            )

        wait_until(ready, 30, "the delivery tracker's first poll")
        assert self.process.poll() is None, (self.lab.base / "delivery.log").read_text()

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=15)

    # ---- reading the journal ------------------------------------------------------------------
    def records(self, kind: str | None = None) -> list[dict[str, Any]]:
        lines = Store(self.lab.base / "journal").lines()
        records = [json.loads(line.data) for line in lines if line.check_ok]
        return [r for r in records if kind is None or r["type"] == kind]

    def accepted(self, message_id: str) -> dict[str, Any]:
        def find() -> dict[str, Any] | None:
            found = [r for r in self.records("accepted") if r.get("message_id") == message_id]
            return found[0] if found else None

        return wait_until(find, WAIT, f"the accepted record of {message_id}", interval=0.2)

    def outcomes(self, queue_id: str) -> list[dict[str, Any]]:
        return [r for r in self.records("delivery") if r["queue_id"] == queue_id]

    def wait_outcomes(self, queue_id: str, count: int = 1) -> list[dict[str, Any]]:
        return wait_until(
            lambda: found if len(found := self.outcomes(queue_id)) >= count else None,
            WAIT,
            lambda: (
                f"{count} delivery record(s) of {queue_id}; tracker log:\n{self.tracker_log()}"
                f"\nPostfix log:\n{self.lab.postfix.log_tail(20)}"
            ),
            interval=0.2,
        )

    def tracker_log(self) -> str:
        path = self.lab.base / "delivery.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def journal_cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        journal, key = self.lab.base / "journal", self.lab.base / "journal-keys" / "signing.pub"
        return subprocess.run(
            [HOST_PYTHON, "-m", "mssante.journal", *args, "--dir", str(journal), "--public-key", str(key)],
            env=ENV, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip

    # ---- sending ------------------------------------------------------------------------------
    def send_inbound(self, rcpts: list[str], extra: bytes = b"") -> tuple[str, Transcript]:
        """A peer's message to the hospital over port 25 with the peer's certificate."""
        sender = f"dr.durand@{self.lab.peer}"
        msgid = make_msgid(domain="clinique.test")
        head = f"From: <{sender}>\r\nTo: <{rcpts[0]}>\r\nSubject: compte rendu\r\nMessage-ID: {msgid}\r\n"
        raw = head.encode() + extra + b"\r\nBonjour.\r\n"
        return msgid, self.lab.send(self.lab.peer_port, sender, rcpts, raw, cert=self.lab.pki.peer)


def tracker_config(lab: MilterLab, state: Path, metrics_port: int) -> Path:
    config = json.loads(lab.config.read_text(encoding="utf-8"))
    config["delivery"] = {
        "log_file": str(lab.postfix.log_file),
        "state_file": str(state),
        "syslog_name": "postfix-mssante",
        "postfix_config_dir": str(lab.postfix.config_dir),
        "poll_seconds": 0.2,
        "not_queued_after_seconds": 120,
        "stuck_after_seconds": 600,
        "metrics_listen": f"{lab.address}:{metrics_port}",
    }
    path = lab.base / "delivery.yml"
    path.write_text(json.dumps(config, indent=1), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def tracking(pki: Pki) -> Iterator[Tracking]:
    lab = start_lab(pki)
    tracking: Tracking | None = None
    try:
        lab.postfix.postconf(FAST_RETRY)
        lab.postfix.reload()
        port = free_port(lab.address)
        state = lab.base / "delivery" / "state.json"
        tracking = Tracking(lab, tracker_config(lab, state, port), state, port)
        tracking.start()
        yield tracking
    finally:
        try:
            if tracking is not None:
                tracking.stop()
        finally:
            stop_lab(lab)


@pytest.fixture
def sink_replies(tracking: Tracking) -> Iterator[dict[str, str]]:
    """The next hop's scripted RCPT replies, cleared after the test."""
    replies = tracking.lab.sink.rcpt_replies
    try:
        yield replies
    finally:
        replies.clear()


def test_trace1_trace2_accepted_then_delivered(tracking: Tracking) -> None:
    """TRACE-1/TRACE-2: an accepted message gets one `delivered` record per recipient, with the relay."""
    lab = tracking.lab
    rcpts = [f"dr.martin@{lab.local}", f"secretariat@{lab.local}"]
    msgid, sent = tracking.send_inbound(rcpts)
    assert sent.delivered, sent
    accepted = tracking.accepted(msgid)
    assert accepted["queue_id"] == sent.queue_id
    records = tracking.wait_outcomes(accepted["queue_id"], 2)
    assert sorted((r["rcpt"], r["outcome"]) for r in records) == [(r, "delivered") for r in sorted(rcpts)]
    for record in records:
        assert (record["dsn"], record["message_id"]) == ("2.0.0", msgid)
        assert f"[{lab.sink.address}]:{lab.sink.port}" in record["relay"]
        assert record["seq"] > accepted["seq"]
    assert wait_until(lambda: lab.received(msgid), WAIT, "the message at the next hop")


def test_trace2_deferred_then_delivered(tracking: Tracking, sink_replies: dict[str, str]) -> None:
    """TRACE-2: the next hop says 4xx first; nothing final is journaled until the retry succeeds."""
    lab = tracking.lab
    rcpt = f"dpi@{lab.local}"
    sink_replies[rcpt] = "451 4.3.0 Try again later"
    msgid, sent = tracking.send_inbound([rcpt])
    assert sent.delivered, sent
    queue_id = tracking.accepted(msgid)["queue_id"]
    lab.postfix.wait_log(rf"{queue_id}: to=<{rcpt}>.*status=deferred", WAIT)
    assert tracking.outcomes(queue_id) == []  # control: a deferral is not an outcome
    del sink_replies[rcpt]
    [record] = tracking.wait_outcomes(queue_id)
    assert (record["rcpt"], record["outcome"], record["dsn"]) == (rcpt, "deferred-then-delivered", "2.0.0")


def test_trace2_next_hop_down_then_up_is_deferred_then_delivered(tracking: Tracking) -> None:
    """TRACE-2: the next hop is down (connection refused), then comes back: one final record."""
    lab = tracking.lab
    rcpt = f"secretariat@{lab.local}"
    tls_failures = _tls_failures(tracking)
    lab.sink.stop()
    try:
        msgid, sent = tracking.send_inbound([rcpt])
        assert sent.delivered, sent
        queue_id = tracking.accepted(msgid)["queue_id"]
        lab.postfix.wait_log(rf"{queue_id}: to=<{rcpt}>.*status=deferred \(connect to ", WAIT)
        assert tracking.outcomes(queue_id) == []
    finally:
        lab.sink.start()
    [record] = tracking.wait_outcomes(queue_id)
    assert (record["rcpt"], record["outcome"]) == (rcpt, "deferred-then-delivered")
    assert _tls_failures(tracking) == tls_failures  # a refused connection is no TLS failure


def _tls_failures(tracking: Tracking) -> float:
    url = f"http://{tracking.lab.address}:{tracking.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        page = response.read().decode()
    [value] = [
        line.split()[1]
        for line in page.splitlines()
        if line.startswith("mssante_delivery_tls_failures_total ")
    ]
    return float(value)


def test_trace2_tls_failure_to_next_hop_counted_then_delivered(tracking: Tracking) -> None:
    """`mssante_delivery_tls_failures_total` (alert MssanteTlsFailuresToPeers) counts a real Postfix
    TLS deferral (TLS required, next hop offers no STARTTLS); the message is delivered once TLS is
    no longer required. (Control: the next-hop-down test, whose deferral is not counted.)"""
    lab = tracking.lab
    before = _tls_failures(tracking)
    lab.postfix.postconf({"smtp_tls_security_level": "encrypt"})
    lab.postfix.reload()
    try:
        msgid, sent = tracking.send_inbound([f"dr.martin@{lab.local}"])
        assert sent.delivered, sent
        queue_id = tracking.accepted(msgid)["queue_id"]
        lab.postfix.wait_log(rf"{queue_id}: to=<.*status=deferred \(TLS is required", WAIT)
        wait_until(lambda: _tls_failures(tracking) >= before + 1, WAIT, "the TLS failure counted")
    finally:
        lab.postfix.postconf({"smtp_tls_security_level": "none"})
        lab.postfix.reload()
    lab.postfix.flush()
    [record] = tracking.wait_outcomes(queue_id)
    assert record["outcome"] == "deferred-then-delivered"


def test_trace2_bounced(tracking: Tracking, sink_replies: dict[str, str]) -> None:
    """TRACE-2: a 5xx from the next hop gives `bounced` with the DSN; the other recipient is delivered."""
    lab = tracking.lab
    refused, fine = f"secretariat@{lab.local}", f"dr.martin@{lab.local}"
    sink_replies[refused] = "550 5.1.1 No such user here"
    msgid, sent = tracking.send_inbound([refused, fine])
    assert sent.delivered, sent
    queue_id = tracking.accepted(msgid)["queue_id"]
    records = {r["rcpt"]: r for r in tracking.wait_outcomes(queue_id, 2)}
    assert (records[refused]["outcome"], records[refused]["dsn"]) == ("bounced", "5.1.1")
    assert records[fine]["outcome"] == "delivered"  # control: same message, accepted by the next hop


def _rotate(tracking: Tracking) -> None:
    """`postfix logrotate`: rename the log, make postlogd reopen it, compress the old one."""
    result = subprocess.run(
        ["postfix", "-c", str(tracking.lab.postfix.config_dir), "logrotate"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, (
        result.stdout + result.stderr
    )  # postlogd makes the new file on its next line


def _batch(tracking: Tracking, count: int) -> list[str]:
    rcpt = f"dr.martin@{tracking.lab.local}"
    queue_ids = []
    for _ in range(count):
        msgid, sent = tracking.send_inbound([rcpt])
        assert sent.delivered, sent
        queue_ids.append(tracking.accepted(msgid)["queue_id"])
    return queue_ids


def test_trace2_rotation_mid_stream_and_restart_no_gap_no_duplicate(tracking: Tracking) -> None:
    """TRACE-2: rotations (one while the tracker runs, one while it is down) and a restart lose
    no outcome and journal none twice: exactly one delivery record per (queue id, recipient)."""
    lab = tracking.lab
    first = _batch(tracking, 3)
    _rotate(tracking)  # mid-stream: some of these deliveries may still be in flight
    second = _batch(tracking, 3)
    wait_until(lambda: all(tracking.outcomes(q) for q in first + second), WAIT, "outcomes before restart")
    tracking.stop()
    third = _batch(tracking, 3)  # accepted and delivered while the tracker is down
    for queue_id in third:
        lab.postfix.wait_log(rf"{queue_id}: to=<.*status=sent", WAIT)
    # A rotation while the tracker is down needs the rotated file left uncompressed for a while
    # (logrotate's delaycompress); `postfix logrotate` compresses at once, so use a no-op compressor.
    lab.postfix.postconf({"maillog_file_compressor": "true"})
    _rotate(tracking)
    fourth = _batch(tracking, 2)
    tracking.start()
    everything = first + second + third + fourth
    wait_until(lambda: all(tracking.outcomes(q) for q in everything), WAIT, "outcomes after restart")
    tracking.stop()
    tracking.start()  # a restart with nothing new journals nothing
    per_message = Counter((r["queue_id"], r["rcpt"]) for r in tracking.records("delivery"))
    assert all(per_message[(q, f"dr.martin@{lab.local}")] == 1 for q in everything), per_message
    assert [n for n in per_message.values() if n != 1] == []
    assert {r["outcome"] for r in tracking.records("delivery") if r["queue_id"] in everything} == {
        "delivered"
    }


def _receipt(tracking: Tracking, original: str) -> bytes:
    lab = tracking.lab
    return (
        f"From: <dr.martin@{lab.local}>\r\nTo: <dr.durand@{lab.peer}>\r\n"
        f"Subject: Lu : compte rendu\r\nMessage-ID: {make_msgid(domain=lab.local)}\r\nMIME-Version: 1.0\r\n"
        "Content-Type: multipart/report;\r\n report-type=disposition-notification;\r\n"
        ' boundary="R"\r\n\r\n'  # folded, as mail clients write it
        "--R\r\nContent-Type: text/plain\r\n\r\nLe message a ete affiche.\r\n"
        "--R\r\nContent-Type: message/disposition-notification\r\n\r\n"
        f"Reporting-UA: mua.{lab.local}; test\r\nFinal-Recipient: rfc822;dr.martin@{lab.local}\r\n"
        f"Original-Message-ID: {original}\r\nDisposition: manual-action/MDN-sent-manually; displayed\r\n"
        "\r\n--R--\r\n"
    ).encode()


def test_msg3_read_receipt_linked_to_original_and_trace_tells_the_story(tracking: Tracking) -> None:
    """MSG-3: a receipt for a journaled message gets an `mdn` record naming the original Message-ID;
    TRACE-1: `mssante-journal trace` shows accepted, delivered, the receipt and the proofs."""
    lab = tracking.lab
    msgid, sent = tracking.send_inbound([f"dr.martin@{lab.local}"])
    assert sent.delivered, sent
    queue_id = tracking.accepted(msgid)["queue_id"]
    tracking.wait_outcomes(queue_id)
    receipt = lab.send(
        lab.submission_port, f"dr.martin@{lab.local}", [f"dr.durand@{lab.peer}"],
        _receipt(tracking, msgid), login="dr.martin",
    )  # fmt: skip
    assert receipt.delivered, receipt
    [mdn] = wait_until(
        lambda: [r for r in tracking.records("mdn") if r["original_message_id"] == msgid], WAIT, "mdn"
    )
    assert (mdn["disposition"], mdn["queue_id"]) == ("displayed", receipt.queue_id)
    assert "affiche" not in json.dumps(mdn)
    # Control: the ordinary message itself got no mdn record.
    assert [r for r in tracking.records("mdn") if r.get("queue_id") == queue_id] == []

    story = tracking.journal_cli("trace", "--socket", str(lab.journal_socket), "--json", queue_id)
    assert story.returncode == 0, story.stderr
    data = json.loads(story.stdout)
    assert [r["type"] for r in data["records"]] == ["accepted", "delivery", "mdn"]
    assert data["recipients"] == {f"dr.martin@{lab.local}": "delivered"}
    assert data["checkpoint"]["signature"].startswith("valid")
    assert len(data["proofs"]) == 3 and all(p["verified"] for p in data["proofs"])
    human = tracking.journal_cli("trace", msgid)
    assert human.returncode == 0 and f"dr.martin@{lab.local}: delivered" in human.stdout, human
    assert "read receipt: displayed" in human.stdout
    missing = tracking.journal_cli("trace", "<nobody@nowhere.test>")
    assert missing.returncode == 1


def test_trace2_refused_by_postfix_after_the_milter_accepted_is_not_queued(tracking: Tracking) -> None:
    """TRACE-2: Postfix can still refuse after the milter's yes: `milter_header_checks` inspect the
    headers the milter added. The accepted record then gets `not-queued`; `verify` passes after all."""
    lab = tracking.lab
    checks = lab.postfix.config_dir / "milter_header_checks"
    checks.write_text("/^X-MSSante-Verdict: pass/ REJECT 5.7.1 refused after the milter (test)\n")
    lab.postfix.postconf({"milter_header_checks": f"regexp:{checks}"})
    lab.postfix.reload()
    try:
        msgid, sent = tracking.send_inbound([f"dr.martin@{lab.local}"])
    finally:
        lab.postfix.postconf({"milter_header_checks": ""})
        lab.postfix.reload()
    assert sent.data is not None and sent.data.code == 550, sent
    accepted = tracking.accepted(msgid)  # the milter had said yes and journaled it
    [record] = tracking.wait_outcomes(accepted["queue_id"])
    assert (record["rcpt"], record["outcome"]) == (f"dr.martin@{lab.local}", "not-queued")
    assert not lab.received(msgid)
    # Control: the next message, without the check, is delivered.
    msgid, sent = tracking.send_inbound([f"dr.martin@{lab.local}"])
    [record] = tracking.wait_outcomes(tracking.accepted(msgid)["queue_id"])
    assert record["outcome"] == "delivered"

    verify = tracking.journal_cli("verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr
