"""Fault injection under load (issue 10): nothing a sender saw accepted is lost (TRACE-2).

The process-test lab (``tests.milter.lab``: real Postfix from postfix_settings.yml, the real milter and
journal owner on /usr/bin/python3, SASL through Dovecot, the test PKI, an aiosmtpd sink), with two
changes: the milter and the journal owner run under Debian's supervisord (config in the test's
directory; it restarts what crashes), and the journal directory is a 2 MiB tmpfs mounted by the test.

While concurrent senders (verified peers on the peer port, authenticated users on submission) push
their messages, retrying every 4xx and dropped connection like a real MTA, the test: kills the milter
with SIGKILL, fills the journal's file system, reloads Postfix, switches the trust list to a new
generation and restarts Dovecot. Then every message is accounted for: each Message-ID a sender saw
answered 250 has an ``accepted`` journal record and reached the sink, every deferred message got
through on a retry, and ``mssante-journal verify`` passes.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.utils import make_msgid
from pathlib import Path

import pytest
from tests.milter.harness import write_trustlist
from tests.milter.lab import ENV, HOST_PYTHON, MilterLab, trust_index
from tests.support.common import make_base_dir, remove_base_dir, wait_until
from tests.support.smtpclient import Transcript

from mssante.lab.pki import Pki

MESSAGES = 150
BATCH = 20  # messages released to the senders with each fault
SENDERS = 6
DEADLINE = 150.0  # seconds for all senders, faults included


class SupervisedLab(MilterLab):
    """The lab with the milter and the journal owner under supervisord and the journal on a tmpfs."""

    supervisord: subprocess.Popen[bytes] | None = None

    @property
    def supervisor_conf(self) -> Path:
        return self.base / "supervisord.conf"

    def _program(self, name: str, args: str, priority: int) -> str:
        return (
            f"[program:{name}]\ncommand={HOST_PYTHON} {args} --config {self.config}\n"
            f'environment=PYTHONPATH="{ENV["PYTHONPATH"]}"\ndirectory={self.base}\npriority={priority}\n'
            "autostart=true\nautorestart=true\nstartsecs=1\nstartretries=100\nstopsignal=TERM\n"
            f"stopwaitsecs=15\nredirect_stderr=true\nstdout_logfile={self.base / name}.log\n\n"
        )

    def write_supervisor_conf(self) -> None:
        sock = self.base / "supervisor.sock"
        text = (
            f"[supervisord]\nnodaemon=true\nlogfile={self.base / 'supervisord.log'}\n"
            f"pidfile={self.base / 'supervisord.pid'}\nchildlogdir={self.base}\n\n"
            f"[unix_http_server]\nfile={sock}\nchmod=0700\n\n"
            "[rpcinterface:supervisor]\n"
            "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n\n"
            f"[supervisorctl]\nserverurl=unix://{sock}\n\n"
            # Started in priority order, stopped in reverse: the milter stops before the journal.
            + self._program("journal", "-m mssante.journal serve", 100)
            + self._program("milter", "-m mssante.milter run", 200)
        )
        self.supervisor_conf.write_text(text, encoding="utf-8")

    def ctl(self, *args: str) -> str:
        run = subprocess.run(
            ["supervisorctl", "-c", str(self.supervisor_conf), *args],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        return run.stdout.strip()

    def pid(self, program: str) -> int:
        text = self.ctl("pid", program)
        return int(text) if text.isdigit() else 0

    def running(self, program: str, other_than: int = 0) -> int:
        """The program's pid once supervisord reports it RUNNING (and it is not ``other_than``)."""
        status = self.ctl("status", program)
        pid = self.pid(program)
        return pid if "RUNNING" in status and pid not in (0, other_than) else 0

    # MilterLab.start calls start_journal then start_milter: supervisord starts both.
    def start_journal(self) -> None:
        self.write_supervisor_conf()
        self.journal_socket.unlink(missing_ok=True)
        self.supervisord = subprocess.Popen(
            ["supervisord", "-c", str(self.supervisor_conf)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=self.base,
        )  # fmt: skip
        wait_until(lambda: self.running("journal") and self.journal_socket.exists(), 30, "supervised journal")

    def start_milter(self) -> None:
        wait_until(lambda: self.running("milter") and self.socket.exists(), 30, "supervised milter")

    def stop_milter(self, sig: int = signal.SIGTERM) -> None:
        if self.supervisord is not None and self.supervisord.poll() is None:
            self.ctl("stop", "milter")

    def stop_journal(self) -> None:
        process, self.supervisord = self.supervisord, None
        if process is None or process.poll() is not None:
            return
        process.terminate()  # supervisord stops its programs, milter first
        try:
            process.wait(timeout=40)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

    def verify_journal(self) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [HOST_PYTHON, "-m", "mssante.journal", "verify", "--dir", str(self.base / "journal")],
            env=ENV, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip


@pytest.fixture(scope="module")
def lab(pki: Pki) -> Iterator[SupervisedLab]:
    base = make_base_dir("faults")
    journal_fs = base / "journal"
    journal_fs.mkdir(mode=0o755)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0755", "tmpfs", str(journal_fs)], check=True)
    instance: SupervisedLab | None = None
    try:
        instance = SupervisedLab(base, pki)
        instance.start()
        yield instance
    finally:
        try:
            if instance is not None:
                instance.stop()
        finally:
            subprocess.run(["umount", "-l", str(journal_fs)], check=False)
            remove_base_dir(base)


# ---- senders that behave like an MTA: retry 4xx and dropped connections ----------------------------
@dataclass
class Outcome:
    message_id: str
    attempts: list[str] = field(default_factory=list)  # one summary per attempt ("250", "451", "error")
    accepted: bool = False
    refused: bool = False


@dataclass
class Load:
    """Messages are released to the senders in batches, so that each fault hits messages in flight."""

    lab: SupervisedLab
    outcomes: list[Outcome] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    tokens: threading.Semaphore = field(default_factory=lambda: threading.Semaphore(0))
    released: int = 0
    done: threading.Event = field(default_factory=threading.Event)
    deadline: float = field(default_factory=lambda: time.monotonic() + DEADLINE)

    def release(self, count: int) -> None:
        self.released += count
        self.tokens.release(count)

    def next_index(self) -> int | None:
        while not self.tokens.acquire(timeout=0.2):
            if self.done.is_set() or time.monotonic() > self.deadline:
                return None
        with self.lock:
            return len(self.outcomes)

    @property
    def finished(self) -> int:
        with self.lock:
            return sum(1 for o in self.outcomes if o.accepted or o.refused)

    def tempfailures(self) -> int:
        with self.lock:
            return sum(1 for o in self.outcomes for a in o.attempts if a != "250")

    def wait_batch(self) -> None:
        wait_until(lambda: self.finished >= self.released, 90, f"{self.released} messages through")


def _summary(t: Transcript) -> str:
    for reply in (t.data, *t.rcpt.values(), t.mail, t.auth, t.ehlo_tls, t.banner):
        if reply is not None and not 200 <= reply.code < 400:
            reason = re.search(r"\(reason ([a-z-]+)", reply.text)
            return f"{reply.code} {reason.group(1)}" if reason else str(reply.code)
    if t.delivered:
        return "250"
    return f"error {t.disconnected or t.tls_error or 'incomplete'}"


def _attempt(lab: SupervisedLab, index: int, message_id: str) -> Transcript:
    if index % 3 == 2:  # an authenticated user on submission, to a trust-space recipient
        sender, rcpt, login, cert = f"dr.martin@{lab.local}", f"dr.durand@{lab.peer}", "dr.martin", None
        port = lab.submission_port
    else:  # a verified peer operator on the peer port
        sender, rcpt, login, cert = f"dr.durand@{lab.peer}", f"dr.martin@{lab.local}", None, lab.pki.peer
        port = lab.peer_port
    raw = (
        f"From: <{sender}>\r\nTo: <{rcpt}>\r\nSubject: charge\r\nMessage-ID: {message_id}\r\n\r\n"
        f"Compte rendu {index}.\r\n"
    ).encode()
    return lab.send(port, sender, [rcpt], raw, cert=cert, login=login)


def _sender(load: Load) -> None:
    while (index := load.next_index()) is not None:
        outcome = Outcome(make_msgid(domain="faults.test"))
        with load.lock:
            load.outcomes.append(outcome)
        delay = 0.1
        while time.monotonic() < load.deadline:
            try:
                summary = _summary(_attempt(load.lab, index, outcome.message_id))
            except OSError as exc:  # refused or reset connection: Postfix or the milter is restarting
                summary = f"error {type(exc).__name__}"
            with load.lock:
                outcome.attempts.append(summary)
                outcome.accepted = summary == "250"
                outcome.refused = summary.startswith("5")  # never retried: a policy refusal is final
            if outcome.accepted or outcome.refused:
                break
            time.sleep(delay)  # a retry, as an MTA would (bounded by the deadline)
            delay = min(delay * 2, 1.0)


# ---- the faults -------------------------------------------------------------------------------------
def kill_milter(lab: SupervisedLab) -> str:
    old = wait_until(lambda: lab.running("milter"), 30, "the milter running")
    assert old > 1  # never kill(0) or kill(-1): a real pid from supervisord only
    os.kill(old, signal.SIGKILL)
    wait_until(lambda: lab.running("milter", other_than=old), 30, "the milter restarted by supervisord")
    return f"milter {old} killed, restarted as {lab.pid('milter')}"


def fill_journal_fs(lab: SupervisedLab, load: Load) -> str:
    """Fill the tmpfs until ENOSPC, wait until a sender is deferred, free it, restart the owner.

    The journal owner stops appending after a failed write (its files may hold a partial write) and
    refuses appends until restarted: the restart is the operator's (or an alert's) action.
    """
    filler = lab.base / "journal" / "filler"
    before = load.tempfailures()
    with contextlib.suppress(OSError), filler.open("wb") as out:
        while True:
            out.write(b"\0" * 65536)
            out.flush()
    wait_until(lambda: load.tempfailures() > before, 30, "a sender deferred while the journal's disk is full")
    filler.unlink()
    lab.ctl("restart", "journal")
    wait_until(lambda: lab.running("journal") and lab.journal_socket.exists(), 30, "the journal restarted")
    return f"journal disk full: {load.tempfailures() - before} deferrals, then freed"


def switch_trustlist(lab: SupervisedLab) -> str:
    index = trust_index(lab.pki)
    extra = {"u_label": "nouveau.mssante.test", "cns": ["mx.nouveau.test"], "dns": [], "local": False}
    domains = {**index["domains"], "nouveau.mssante.test": extra}
    write_trustlist(lab.base / "trustlist", {**index, "domains": domains}, generation="gen-2")
    return "trust list switched to gen-2"


def restart_dovecot(lab: SupervisedLab) -> str:
    lab.dovecot.stop()
    lab.dovecot.start()
    return "dovecot restarted"


def reload_postfix(lab: SupervisedLab) -> str:
    lab.postfix.reload()
    return "postfix reloaded"


def test_trace2_no_loss_under_faults(lab: SupervisedLab) -> None:
    """TRACE-2: under kill -9, disk full, reloads and restarts, every 250 is journaled and delivered."""
    load = Load(lab)
    threads = [threading.Thread(target=_sender, args=(load,), daemon=True) for _ in range(SENDERS)]
    for thread in threads:
        thread.start()
    faults: list[Callable[[], str]] = [
        lambda: kill_milter(lab),
        lambda: fill_journal_fs(lab, load),
        lambda: reload_postfix(lab),
        lambda: switch_trustlist(lab),
        lambda: restart_dovecot(lab),
        lambda: kill_milter(lab),
    ]
    done: list[str] = []
    try:
        for fault in faults:
            load.release(BATCH)  # these messages are in flight while the fault happens
            done.append(fault())
            load.wait_batch()
        load.release(MESSAGES - load.released)
        load.wait_batch()
    finally:
        load.done.set()
        for thread in threads:
            thread.join(timeout=60)
    outcomes = list(load.outcomes)
    report = json.dumps({"faults": done, "attempts": [o.attempts for o in outcomes if len(o.attempts) > 1]})
    print(report)

    # Every message got through, some only after a retry (the faults were felt).
    assert len(outcomes) == MESSAGES, report
    assert all(o.accepted for o in outcomes), report
    attempts = [a for o in outcomes for a in o.attempts]
    assert "451 journal-unavailable" in attempts, report  # the full disk deferred, never refused

    # Every 250 is in the journal as an accepted record and reached the sink.
    lab.postfix.flush()
    accepted_ids = {o.message_id for o in outcomes}
    wait_until(lambda: all(lab.received(m) for m in accepted_ids), 90, "every accepted message at the sink")
    journaled = {r.get("message_id") for r in lab.records() if r["type"] == "accepted"}
    assert accepted_ids <= journaled, sorted(accepted_ids - journaled)

    lab.stop_journal()  # a last checkpoint, then verify the whole log
    verify = lab.verify_journal()
    assert verify.returncode == 0, verify.stdout + verify.stderr
