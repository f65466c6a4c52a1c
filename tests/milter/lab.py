"""A real MSSanté-style Postfix instance with the real milter process behind it (process-level tests).

Postfix is configured from ``postfix_settings.yml`` (the same data the Postfix role consumes), with
the test PKI: port "25" (a random port, ``peer_port``) asks for a client certificate verified against
the IGC-like chain only; port "587" (``submission_port``) permits relaying for SASL logins (a
test-only Dovecot passwd-file) and verified application certificates. Every accepted message, whatever
its domain, goes to an aiosmtpd sink: routing does not hide the milter's decisions from the tests.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.milter.harness import write_mailboxes, write_trustlist
from tests.support.common import (
    free_port,
    listening,
    make_base_dir,
    random_loopback,
    remove_base_dir,
    wait_until,
)
from tests.support.dovecot import DovecotInstance, dovecot_settings_for_postfix
from tests.support.postfix import PostfixInstance
from tests.support.sink import Received, Sink
from tests.support.smtpclient import TlsOptions, Transcript, send

from mssante.lab.pki import Leaf, Pki, ensure_pki
from mssante.milter import postfix_settings

REPO = Path(__file__).resolve().parents[2]
USERS = {"dr.martin": "secret-martin", "sec1": "secret-sec1"}  # test-only SASL logins
HOST_PYTHON = "/usr/bin/python3"  # the host runtime (design.md): the milter runs on Debian's packages
ENV = {**os.environ, "PYTHONPATH": str(REPO / "milters" / "src")}


def trust_index(pki: Pki) -> dict[str, Any]:
    def entry(leaf: Leaf, local: bool = False) -> dict[str, Any]:
        return {"u_label": leaf.domain, "cns": [leaf.cn], "dns": [f"CN={leaf.cn}"], "local": local}

    domains = {str(pki.peer.domain): entry(pki.peer), str(pki.other.domain): entry(pki.other)}
    domains[str(pki.hospital.domain)] = entry(pki.hospital, local=True)
    return {"schema": 1, "generated": "2026-11-20T06:00:00Z", "source_sha256": "0" * 64, "domains": domains}


def mailbox_table(pki: Pki) -> dict[str, Any]:
    local = pki.hospital.domain

    def box(name: str, kind: str, owners: list[str], cns: list[str] | None = None) -> dict[str, Any]:
        return {"address": f"{name}@{local}", "type": kind, "owners": owners, "cert_cns": cns or []}

    boxes = [
        box("dr.martin", "PER", ["dr.martin"]),
        box("secretariat", "ORG", ["dr.martin", "sec1"]),
        box("dpi", "APP", ["dpi-app"], [pki.dpi.cn]),
    ]
    return {"schema": 1, "mailboxes": boxes}


@dataclass
class MilterLab:
    base: Path
    pki: Pki
    address: str = field(default_factory=random_loopback)
    inet: bool = False  # the milter on a TCP socket instead of the default unix socket
    process: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        self.peer_port = free_port(self.address)
        self.submission_port = free_port(self.address)
        self.metrics_port = free_port(self.address)
        self.socket = self.base / "milter" / "milter.sock"
        self.socket.parent.mkdir(mode=0o755)
        self.milter_port = free_port(self.address)
        self.milter_socket = f"inet:{self.address}:{self.milter_port}" if self.inet else f"unix:{self.socket}"
        self.journal_socket = self.base / "journal.sock"
        self.journal_process: subprocess.Popen[bytes] | None = None
        self.milter_log = self.base / "milter.log"
        self.local = str(self.pki.hospital.domain)
        self.peer = str(self.pki.peer.domain)
        self.other = str(self.pki.other.domain)
        sink_address = random_loopback()
        self.sink = Sink(sink_address, free_port(sink_address))

    # ---- setup ----------------------------------------------------------------------------------
    def write_config(self) -> Path:
        write_trustlist(self.base / "trustlist", trust_index(self.pki))
        write_mailboxes(self.base / "mailboxes.json", mailbox_table(self.pki))
        config = {
            "schema": 1,
            "host_id": "test-hospital",
            "mailboxes_file": str(self.base / "mailboxes.json"),
            "trustlist": {"out_dir": str(self.base / "trustlist")},
            "journal": {
                "dir": str(self.base / "journal"),
                "socket": str(self.journal_socket),
                "signing_key": str(self.base / "journal-keys" / "signing.key"),
                "public_key": str(self.base / "journal-keys" / "signing.pub"),
                "metrics_listen": None,
                "checkpoint_interval_seconds": 3600,
            },
            "milter": {
                "socket": self.milter_socket,
                "peer_port": self.peer_port,
                "submission_port": self.submission_port,
                "metrics_listen": f"{self.address}:{self.metrics_port}",
                "socket_umask": "0000",
                "aggregate_window_seconds": 3600,  # aggregates reach the journal at shutdown
                "reload_interval_seconds": 0.2,
            },
        }
        path = self.base / "mssante.yml"
        path.write_text(json.dumps(config, indent=1), encoding="utf-8")
        return path

    def postfix_settings(self, postfix: PostfixInstance) -> dict[str, str]:
        pki = self.pki
        sink = f"smtp:{self.sink.hostport}"
        transport = postfix.write_map("transport", {d: sink for d in (self.local, self.peer, self.other)})
        recipients = postfix.write_map(
            "relay_recipients", {b["address"]: "OK" for b in mailbox_table(pki)["mailboxes"]}
        )
        return {
            **postfix_settings.render(self.milter_socket),
            "smtpd_tls_cert_file": str(pki.hospital.fullchain),
            "smtpd_tls_key_file": str(pki.hospital.key),
            "smtpd_tls_CAfile": str(pki.chain),
            "smtpd_tls_CApath": "",
            "smtpd_tls_security_level": "encrypt",
            "smtpd_tls_ask_ccert": "yes",
            "smtpd_tls_mandatory_protocols": ">=TLSv1.2",
            "smtpd_tls_protocols": ">=TLSv1.2",
            "smtpd_forbid_bare_newline": "reject",
            "relay_domains": self.local,
            "relay_recipient_maps": recipients,
            "transport_maps": transport,
            # Production routes other domains to an error: transport (Postfix refuses them itself); here
            # they reach the sink, so that a test sees the milter's own refusal and what would leak.
            "default_transport": sink,
            "smtpd_relay_restrictions": "reject_unauth_destination",
            "smtp_tls_security_level": "none",
            "enable_long_queue_ids": "yes",
            "disable_mime_output_conversion": "yes",
        }

    def start(self) -> MilterLab:
        self.dovecot = DovecotInstance(
            "sasl", self.address, free_port(self.address), free_port(self.address), self.base / "dovecot",
            cert=self.pki.hospital.fullchain, key=self.pki.hospital.key, users=dict(USERS),
        )  # fmt: skip
        self.dovecot.start()
        self.sink.start()
        self.config = self.write_config()
        self.python(["-m", "mssante.journal", "keygen", "--config", str(self.config)])
        self.start_journal()
        self.start_milter()
        postfix = PostfixInstance.create(
            self.base / "postfix", "mssante", address=self.address, port=self.peer_port
        )
        self.postfix = postfix
        postfix.postconf(self.postfix_settings(postfix))
        postfix.postconf(dovecot_settings_for_postfix(self.dovecot))
        relay = "permit_sasl_authenticated,permit_tls_all_clientcerts,reject"
        self.postfix.add_smtpd_listener(self.submission_port, {"smtpd_relay_restrictions": relay})
        shutil.chown(postfix.data_dir, "postfix")  # Postfix's data directory belongs to mail_owner
        self.postfix.start()
        return self

    def python(self, args: list[str]) -> str:
        """Run ``/usr/bin/python3 ARGS`` (the host runtime) with the checkout on its path."""
        run = subprocess.run(
            [HOST_PYTHON, *args], env=ENV, capture_output=True, text=True, timeout=60, check=False
        )
        if run.returncode != 0:
            raise RuntimeError(f"{args} failed: {run.stdout}{run.stderr}")
        return run.stdout

    def _spawn(self, args: list[str], socket: Path, log: Path, port: int = 0) -> subprocess.Popen[bytes]:
        socket.unlink(missing_ok=True)  # a killed process leaves its socket behind

        def ready() -> bool:
            return listening(self.address, port) if port else socket.exists()

        with log.open("ab") as out:
            process = subprocess.Popen(
                [HOST_PYTHON, *args], env=ENV, stdout=out, stderr=subprocess.STDOUT, cwd=self.base
            )
        try:
            wait_until(lambda: ready() or process.poll() is not None, 20, f"{socket} or port {port}")
        except TimeoutError:
            _stop(process, signal.SIGKILL)
            raise
        if process.poll() is not None:
            raise RuntimeError(f"{args} exited: {log.read_text()}")
        return process

    def start_journal(self) -> None:
        args = ["-m", "mssante.journal", "serve", "--config", str(self.config)]
        self.journal_process = self._spawn(args, self.journal_socket, self.base / "journal.log")

    def stop_journal(self) -> None:
        process, self.journal_process = self.journal_process, None
        _stop(process, signal.SIGTERM)

    def start_milter(self) -> None:
        args = ["-m", "mssante.milter", "run", "--config", str(self.config)]
        port = self.milter_port if self.inet else 0
        self.process = self._spawn(args, self.socket, self.milter_log, port)

    def stop_milter(self, sig: int = signal.SIGTERM) -> None:
        process, self.process = self.process, None
        _stop(process, sig)

    def stop(self) -> None:
        """Stop everything that started, in reverse order, even when one stop fails."""
        try:
            if hasattr(self, "postfix"):
                self.postfix.stop()
        finally:
            try:
                self.stop_milter()
                self.stop_journal()
            finally:
                self.sink.stop()
                if hasattr(self, "dovecot"):
                    self.dovecot.stop()

    # ---- use ------------------------------------------------------------------------------------
    def send(
        self,
        port: int,
        sender: str,
        recipients: list[str],
        message: bytes,
        *,
        cert: Leaf | None = None,
        login: str | None = None,
    ) -> Transcript:
        """One SMTP transaction over STARTTLS, with ``cert`` as client certificate and/or a SASL login."""
        tls = TlsOptions(
            cert=cert.fullchain if cert else None, key=cert.key if cert else None, ca_file=self.pki.chain
        )
        auth = (login, USERS[login]) if login else None
        return send(
            self.address, port, sender=sender, recipients=recipients, message=message, tls=tls, auth=auth
        )

    def records(self) -> list[dict[str, Any]]:
        """Every journal record so far (``mssante-journal show``), with the record id people quote."""
        out = self.python(["-m", "mssante.journal", "show", "--dir", str(self.base / "journal")])
        records = [json.loads(line) for line in out.splitlines() if line.strip()]
        return [{**r, "record_id": f"{r['host_id']}:{r['seq']}"} for r in records]

    def received(self, message_id: str) -> list[Received]:
        with self.sink.lock:
            return [m for m in self.sink.messages if message_id.encode() in m.data]


def _stop(process: subprocess.Popen[bytes] | None, sig: int) -> None:
    if process is None or process.poll() is not None:
        return
    process.send_signal(sig)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=15)


def start_lab(pki: Pki | None = None, inet: bool = False) -> MilterLab:
    """Start a lab under a fresh 0755 directory (with the session's test PKI when given)."""
    base = make_base_dir("milter-e2e")
    lab: MilterLab | None = None
    try:
        lab = MilterLab(base, pki or ensure_pki(base / "pki"), inet=inet)
        return lab.start()
    except BaseException:
        try:
            if lab is not None:
                lab.stop()  # whatever had started (Dovecot, sink, journal, milter, Postfix)
        finally:
            remove_base_dir(base)
        raise


def stop_lab(lab: MilterLab) -> None:
    try:
        lab.stop()
    finally:
        remove_base_dir(lab.base)
