"""Backup of a live journal and restore: the restored copy verifies and the owner continues on it."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest
from tests.unit.journal.helpers import accepted
from tests.unit.journal.server_fixture import Server, journal_cli

from mssante.journal.client import JournalClient


@pytest.fixture
def server(tmp_path: Path) -> Server:
    srv = Server(tmp_path)
    yield srv
    srv.stop()


def test_trace2_backup_while_writing_restores_verifies_and_continues(server: Server, tmp_path: Path) -> None:
    server.start()
    client = JournalClient(server.socket)
    for n in range(50):
        client.append(accepted(n))
    client.request("checkpoint")
    stop = threading.Event()

    def keep_writing() -> None:
        n = 100
        while not stop.is_set():
            client.append(accepted(n))
            n += 1

    writer = threading.Thread(target=keep_writing)
    writer.start()
    try:
        copied = journal_cli("backup", "--dir", str(server.dir), "--out", str(tmp_path / "backup"))
    finally:
        stop.set()
        writer.join(timeout=60)
    assert "copied" in copied.stdout
    public = str(server.tmp / "signing.pub")
    assert "VALID" in journal_cli("verify", "--dir", str(tmp_path / "backup"), "--public-key", public).stdout
    server.stop()
    shutil.rmtree(server.dir)  # the disk is lost: restore the copy
    shutil.copytree(tmp_path / "backup", server.dir)
    server.start()
    result = client.append(accepted(9999))
    client.request("checkpoint")
    server.stop()
    report = journal_cli("verify", "--dir", str(server.dir), "--public-key", public)
    assert "VALID" in report.stdout
    assert result.index >= 51
