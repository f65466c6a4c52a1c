"""The owner's server in-process: a failed write is answered as unavailable (the milter's 4xx)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from mssante.journal.cli import serve_until
from mssante.journal.client import JournalClient, JournalUnavailable
from mssante.journal.server import JournalServer
from mssante.journal.store import Store

from .helpers import accepted, make_journal


def test_trace2_a_failed_write_is_unavailable_until_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = make_journal(tmp_path, 1)
    registry = CollectorRegistry()
    server = JournalServer(journal, tmp_path / "j.sock", registry)
    server.start()
    try:
        client = JournalClient(tmp_path / "j.sock")
        assert client.append(accepted(1)).index == 2  # control

        def disk_full(*_args: object, **_kwargs: object) -> None:
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(Store, "append", disk_full)
        with pytest.raises(JournalUnavailable, match="No space left"):
            client.append(accepted(2))
        monkeypatch.undo()
        with pytest.raises(JournalUnavailable, match="stopped after a write failure"):
            client.append(accepted(3))  # the files may hold a partial write: no more appends
        assert registry.get_sample_value("mssante_journal_append_errors_total") == 2.0  # both refused
        assert registry.get_sample_value("mssante_journal_records_total", {"type": "accepted"}) == 1.0
    finally:
        server.stop()


def test_trace2_the_owner_exits_after_a_failed_write_so_its_supervisor_restarts_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = make_journal(tmp_path, 1)
    server = JournalServer(journal, tmp_path / "j.sock", CollectorRegistry())
    server.start()
    done = threading.Event()
    exit_code: list[int] = []
    serving = threading.Thread(target=lambda: exit_code.append(serve_until(server, done, poll=0.05)))
    serving.start()
    client = JournalClient(tmp_path / "j.sock")
    client.append(accepted(1))
    assert serving.is_alive()  # control: a good write keeps it serving

    def disk_full(*_args: object, **_kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Store, "append", disk_full)
    with pytest.raises(JournalUnavailable):
        client.append(accepted(2))
    serving.join(timeout=10)
    assert exit_code == [1]  # non-zero: systemd (Restart=always) or supervisord starts it again
    assert not (tmp_path / "j.sock").exists()
