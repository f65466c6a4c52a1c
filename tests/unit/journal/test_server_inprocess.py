"""The owner's server in-process: a failed write is answered as unavailable (the milter's 4xx)."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

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
