"""The ``journal:`` section of /etc/mssante/mssante.yml as a frozen dataclass (docs/configuration.md)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mssante.configfile import Problems, absolute_path, load_document, positive_number, section

DEFAULT_METRICS_LISTEN = "127.0.0.1:9742"


@dataclass(frozen=True)
class JournalSettings:
    host_id: str
    dir: Path
    socket: Path
    signing_key: Path
    public_key: Path
    checkpoint_interval_seconds: float = 60.0
    push_dir: Path | None = None
    push_syslog: bool = False
    push_url: str | None = None
    retention_days: int = 183
    segment_max_records: int = 1_000_000
    metrics_listen: str | None = DEFAULT_METRICS_LISTEN
    self_verify_file: Path | None = None

    @property
    def origin(self) -> str:
        """The checkpoint origin line: names this host's log."""
        return f"mssante-journal/{self.host_id}"

    @property
    def verify_status_file(self) -> Path:
        return self.self_verify_file or self.dir / "self-verify.json"


def _path(data: Mapping[str, Any], key: str, problems: Problems, default: str | None = None) -> Path | None:
    return absolute_path(data.get(key, default), f"journal.{key}", problems)


def _number(data: Mapping[str, Any], key: str, default: float, problems: Problems) -> float:
    return positive_number(data.get(key, default), f"journal.{key}", default, problems)


def load(path: Path | str) -> JournalSettings:
    """Read the journal section of ``path``, reporting every problem at once (ConfigError)."""
    document = load_document(path)
    problems = Problems(str(path))
    data = section(document, "journal", problems)
    host_id = document.get("host_id")
    if not isinstance(host_id, str) or not host_id or any(c.isspace() or c == "+" for c in host_id):
        problems.add("host_id", "must be a non-empty name without spaces or '+'")
        host_id = "invalid"
    paths = {
        "dir": _path(data, "dir", problems, "/var/lib/mssante/journal"),
        "socket": _path(data, "socket", problems, "/run/mssante/journal.sock"),
        "signing_key": _path(data, "signing_key", problems, "/etc/mssante/journal/signing.key"),
        "public_key": _path(data, "public_key", problems, "/etc/mssante/journal/signing.pub"),
    }
    push_url = data.get("push_url")
    if push_url is not None and not (
        isinstance(push_url, str) and push_url.startswith(("http://", "https://"))
    ):
        problems.add("journal.push_url", "must be an http(s) URL or null")
    listen = data.get("metrics_listen", DEFAULT_METRICS_LISTEN)
    if listen is not None and (not isinstance(listen, str) or ":" not in listen):
        problems.add("journal.metrics_listen", "must be HOST:PORT or null")
    settings = JournalSettings(
        host_id=host_id,
        dir=paths["dir"] or Path("/"),
        socket=paths["socket"] or Path("/"),
        signing_key=paths["signing_key"] or Path("/"),
        public_key=paths["public_key"] or Path("/"),
        checkpoint_interval_seconds=_number(data, "checkpoint_interval_seconds", 60.0, problems),
        push_dir=_path(data, "push_dir", problems),
        push_syslog=bool(data.get("push_syslog", False)),
        push_url=push_url,
        retention_days=int(_number(data, "retention_days", 183, problems)),
        segment_max_records=int(_number(data, "segment_max_records", 1_000_000, problems)),
        metrics_listen=listen,
        self_verify_file=_path(data, "self_verify_file", problems),
    )
    problems.raise_if_any()
    return settings
