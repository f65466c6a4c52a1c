"""The journal section of mssante.yml (docs/configuration.md), every problem reported at once."""

from __future__ import annotations

from pathlib import Path

import pytest

from mssante.configfile import ConfigError
from mssante.journal import config


def test_trace3_defaults_and_retention(tmp_path: Path) -> None:
    path = tmp_path / "mssante.yml"
    path.write_text(
        "schema: 1\nhost_id: hospital-1\njournal:\n  retention_days: 90\n  push_dir: /mnt/off-host\n"
    )
    settings = config.load(path)
    assert settings.retention_days == 90
    assert settings.dir == Path("/var/lib/mssante/journal")
    assert settings.push_dir == Path("/mnt/off-host")
    assert settings.origin == "mssante-journal/hospital-1"
    assert settings.metrics_listen == "127.0.0.1:9742"


def test_trace3_every_problem_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "mssante.yml"
    path.write_text(
        "schema: 1\nhost_id: 'a b'\njournal:\n  dir: relative\n  retention_days: -1\n  push_url: ftp://x\n"
    )
    with pytest.raises(ConfigError) as caught:
        config.load(path)
    problems = " ".join(caught.value.problems)
    for key in ("host_id", "journal.dir", "journal.retention_days", "journal.push_url"):
        assert key in problems
