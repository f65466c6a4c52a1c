"""Shared test data and a TestCtx driver for the milter (mocks only below the pymilter adapter)."""

from __future__ import annotations

import email
import functools
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any

import Milter
from Milter.testctx import TestCtx
from prometheus_client import CollectorRegistry

from mssante.milter.adapter import MSSanteMilter
from mssante.milter.engine import Services
from mssante.milter.journal import Aggregator, AppendResult, FileJournal, JournalUnavailable
from mssante.milter.live import LiveViews
from mssante.milter.metrics import Metrics
from mssante.milter.policy import Ports, Views

LOCAL = "hopital-exemple.mssante.fr"
PEER = "hopital-sud.mssante.fr"
OTHER = "clinique-nord.mssante.fr"
PEER_CN = "mssante.hopital-sud.fr"
OTHER_CN = "mssante.clinique-nord.fr"
LOCAL_CN = "mssante.hopital-exemple.fr"
APP_CN = "dpi.hopital-exemple.fr"

INDEX = {
    "schema": 1,
    "generated": "2026-11-20T06:00:00Z",
    "source_sha256": "0" * 64,
    "signer": "CN=test signer",
    "domains": {
        PEER: {"u_label": PEER, "cns": [PEER_CN], "dns": [f"CN={PEER_CN}"], "local": False},
        OTHER: {"u_label": OTHER, "cns": [OTHER_CN], "dns": [f"CN={OTHER_CN}"], "local": False},
        LOCAL: {"u_label": LOCAL, "cns": [LOCAL_CN], "dns": [f"CN={LOCAL_CN}"], "local": True},
    },
}

MAILBOXES = {
    "schema": 1,
    "mailboxes": [
        {"address": f"dr.martin@{LOCAL}", "type": "PER", "owners": ["dr.martin"], "cert_cns": [],
         "rpps": "10001234567", "structure_id": None, "red_list": False},
        {"address": f"secretariat@{LOCAL}", "type": "ORG", "owners": ["dr.martin", "sec1"], "cert_cns": [],
         "rpps": None, "structure_id": "1000000001", "red_list": False},
        {"address": f"dpi@{LOCAL}", "type": "APP", "owners": ["dpi-app"], "cert_cns": [APP_CN],
         "rpps": None, "structure_id": "1000000001", "red_list": True},
    ],
}  # fmt: skip


def write_trustlist(base: Path, index: Mapping[str, Any] = INDEX, generation: str = "gen-1") -> Path:
    """Write a compiled trust-list directory with a ``current`` link; returns the link."""
    gen = base / generation
    gen.mkdir(parents=True, exist_ok=True)
    (gen / "index.json").write_text(json.dumps(index), encoding="utf-8")
    (gen / "status.json").write_text(
        json.dumps({"schema": 1, "outcome": "switched", "last_success": "2026-11-20T06:00:05Z",
                    "last_attempt": "2026-11-20T06:00:05Z", "generated": "2026-11-20T06:00:00Z"}),
        encoding="utf-8",
    )  # fmt: skip
    link = base / "current"
    tmp = base / "current.tmp"
    if tmp.is_symlink():
        tmp.unlink()
    os.symlink(generation, tmp)
    os.replace(tmp, link)
    return link


def write_mailboxes(path: Path, data: Mapping[str, Any] = MAILBOXES) -> Path:
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


class FailingJournal:
    """A journal whose owner is down (below the adapter)."""

    def append(self, record: Mapping[str, Any]) -> AppendResult:
        raise JournalUnavailable("journal owner not reachable")


@dataclass
class Clock:
    now: float = 1_780_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class World:
    """Services wired on a temp dir, with a fresh registry and a readable journal."""

    base: Path
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    clock: Clock = field(default_factory=Clock)
    journal: Any = None

    def __post_init__(self) -> None:
        self.link = write_trustlist(self.base / "trustlist")
        self.boxes = write_mailboxes(self.base / "mailboxes.json")
        self.journal_path = self.base / "journal.jsonl"
        if self.journal is None:
            self.journal = FileJournal(self.journal_path, prefix="test")
        self.metrics = Metrics(self.registry)
        self.aggregator = Aggregator(self.journal, 60, self.clock)
        self.views_error: Exception | None = None
        self.live = LiveViews(self.link, self.boxes, 1.0, self.metrics)
        self.services = Services(
            Ports(25, 587), self.views, self.journal, self.aggregator, self.metrics, "hospital-1", self.clock
        )

    def views(self) -> Views:
        if self.views_error is not None:
            raise self.views_error
        return self.live()

    def records(self) -> list[dict[str, Any]]:
        if not self.journal_path.exists():
            return []
        return [json.loads(line) for line in self.journal_path.read_text().splitlines()]

    def sample(self, name: str, **labels: str) -> float:
        value = self.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value


def connect(
    world: World,
    *,
    port: int | None = 25,
    tls: str | None = "TLSv1.3",
    cn: str | None = None,
    auth: str | None = None,
    ip: str = "127.0.0.1",
) -> TestCtx:
    """A TestCtx connection through the real adapter with the given Postfix macros."""
    Milter.factory = functools.partial(MSSanteMilter, world.services)
    ctx = TestCtx()
    macros = {
        "{daemon_port}": None if port is None else str(port),
        "{tls_version}": tls,
        "{cipher}": "TLS_AES_256_GCM_SHA384" if tls else None,
        "{cert_subject}": cn,
        "{cert_issuer}": "TEST IGC-Sante Serveurs" if cn else None,
        "{auth_authen}": auth,
    }
    for name, value in macros.items():
        if value is not None:
            ctx._setsymval(name, value)
    assert ctx._connect(host="peer", helo="peer.example", ip=ip) == Milter.CONTINUE
    return ctx


def reply(ctx: TestCtx) -> str:
    assert ctx._reply is not None
    return " ".join(str(part) for part in ctx._reply)


def send_message(ctx: TestCtx, raw: bytes, queue_id: str = "4XyzQ1abcDz") -> int:
    """DATA, headers, body and end of message of an accepted envelope; returns the eom answer."""
    msg = email.message_from_bytes(raw)
    ctx._msg = msg
    if queue_id:
        ctx._setsymval("i", queue_id)
    assert ctx._data() == Milter.CONTINUE
    for name, value in msg.items():
        assert ctx._header(name, value) == Milter.CONTINUE
    assert ctx._eoh() == Milter.CONTINUE
    body = raw.split(b"\r\n\r\n", 1)[1]
    assert ctx._feed_body(BytesIO(body)) == Milter.CONTINUE
    return int(ctx._eom())


def simple_message(extra: str = "", body: str = "Bonjour.\r\n") -> bytes:
    head = (
        f"From: dr.house@{PEER}\r\nTo: dr.martin@{LOCAL}\r\nSubject: compte rendu\r\n"
        f"Message-ID: <abc@{PEER}>\r\n{extra}"
    )
    return (head + "\r\n" + body).encode("ascii")
