"""Checkpoints pushed off the host (TRACE-2): a directory and an HTTP endpoint; failures never block."""

from __future__ import annotations

import http.server
import threading
from pathlib import Path
from typing import ClassVar

from tests.support.common import free_port, random_loopback

from mssante.journal import keys
from mssante.journal.owner import Journal
from mssante.journal.push import DirectoryPusher, HttpPusher
from mssante.journal.verify import verify_directory

from .helpers import accepted, settings


class Receiver(http.server.BaseHTTPRequestHandler):
    received: ClassVar[list[bytes]] = []

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        Receiver.received.append(self.rfile.read(length))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_trace2_checkpoints_reach_a_directory_and_an_http_endpoint(tmp_path: Path) -> None:
    host = random_loopback()
    server = http.server.HTTPServer((host, free_port(host)), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        conf = settings(tmp_path, push_dir=tmp_path / "off-host")
        keys.generate(conf.signing_key, conf.public_key, conf.host_id)
        url = f"http://{host}:{server.server_address[1]}/checkpoints"
        pushers = [DirectoryPusher(tmp_path / "off-host", conf.origin), HttpPusher(url)]
        journal = Journal(conf, keys.load_signer(conf.signing_key), pushers)
        journal.open()
        journal.append_batch([accepted(1)])
        text = journal.checkpoint()
        journal.close()
    finally:
        server.shutdown()
    pushed = sorted((tmp_path / "off-host").iterdir())
    assert [p.name for p in pushed] == [f"mssante-journal_hospital-1.{n:020d}.note" for n in (1, 2)]
    assert pushed[-1].read_text() == text
    assert Receiver.received[-1].decode() == text
    external = [(p.name + ".kept", p.read_text()) for p in pushed]
    assert verify_directory(conf.dir, keys.load_verifier(conf.public_key), external).ok


def test_trace2_a_failed_push_does_not_stop_the_journal(tmp_path: Path) -> None:
    conf = settings(tmp_path)
    keys.generate(conf.signing_key, conf.public_key, conf.host_id)
    host = random_loopback()
    pushers = [
        HttpPusher(f"http://{host}:{free_port(host)}/", timeout=2),
        DirectoryPusher(Path("/proc/x"), "o"),
    ]
    journal = Journal(conf, keys.load_signer(conf.signing_key), pushers)
    journal.open()
    journal.append_batch([accepted(1)])
    assert journal.checkpoint() is not None
    journal.close()
