"""The milter's configuration: the ``milter:`` section of mssante.yml (plus the shared keys it needs).

Loaded once into a frozen dataclass; every problem is collected and reported together
(``mssante-milter check-config``). Keys and defaults: docs/configuration.md and docs/milter.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mssante import mailboxes
from mssante.configfile import ConfigError, Problems, load_document, section

DEFAULTS: dict[str, Any] = {
    "socket": "unix:/var/spool/postfix-mssante/private/mssante-milter",
    "peer_port": 25,
    "submission_port": 587,
    "metrics_listen": "127.0.0.1:9741",
    "journal_file": None,
    "aggregate_window_seconds": 60,
    "reload_interval_seconds": 1.0,
    "timeout_seconds": 600,
    "socket_umask": "0007",
}
KNOWN_KEYS = {*DEFAULTS, "trustlist_dir"}


@dataclass(frozen=True)
class MilterConfig:
    host_id: str
    socket: str
    trustlist_dir: Path
    mailboxes_file: Path
    journal_socket: Path
    journal_file: Path | None
    peer_port: int
    submission_port: int
    metrics_listen: tuple[str, int] | None
    aggregate_window_seconds: float
    reload_interval_seconds: float
    timeout_seconds: int
    socket_umask: int


def _port(value: Any, where: str, problems: Problems) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
        problems.add(where, f"must be a port number, not {value!r}")
        return 0
    return value


def _listen(value: Any, problems: Problems) -> tuple[str, int] | None:
    if value is None:
        return None
    host, sep, port = str(value).rpartition(":")
    if not sep or not host or not port.isdigit():
        problems.add("milter.metrics_listen", f"must be host:port or null, not {value!r}")
        return None
    return host.strip("[]"), int(port)


def _socket(value: Any, problems: Problems) -> str:
    text = str(value)
    if text.startswith("unix:") and len(text) > len("unix:"):
        return text
    if text.startswith(("inet:", "inet6:")) and text.rpartition(":")[2].isdigit():
        return text
    problems.add("milter.socket", f"must be unix:/path or inet:host:port, not {value!r}")
    return text


def _umask(value: Any, problems: Problems) -> int:
    text = str(value)
    if not text.isdigit() or any(c in "89" for c in text) or int(text, 8) > 0o777:
        problems.add("milter.socket_umask", f'must be an octal umask such as "0007", not {value!r}')
        return 0o007
    return int(text, 8)


def _positive(value: Any, where: str, problems: Problems) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        problems.add(where, f"must be a positive number, not {value!r}")
        return 1.0
    return float(value)


def _path(value: Any, where: str, problems: Problems) -> Path:
    if not isinstance(value, str) or not value:
        problems.add(where, f"must be a path, not {value!r}")
        return Path("/nonexistent")
    return Path(value)


def _paths(doc: Mapping[str, Any], values: Mapping[str, Any], problems: Problems) -> dict[str, Any]:
    """The paths the milter reads, some from other sections (defaults filled here, once)."""
    trust = section(doc, "trustlist", problems)
    journal = section(doc, "journal", problems)
    out_dir = trust.get("out_dir", "/var/lib/mssante/trustlist")
    journal_file = values["journal_file"]
    return {
        "trustlist_dir": _path(
            values.get("trustlist_dir", f"{out_dir}/current"), "milter.trustlist_dir", problems
        ),
        "mailboxes_file": _path(
            doc.get("mailboxes_file", "/etc/mssante/mailboxes.json"), "mailboxes_file", problems
        ),
        "journal_socket": _path(
            journal.get("socket", "/run/mssante/journal.sock"), "journal.socket", problems
        ),
        "journal_file": None
        if journal_file is None
        else _path(journal_file, "milter.journal_file", problems),
    }


def from_document(doc: Mapping[str, Any], source: str) -> MilterConfig:
    """Build the milter configuration from a loaded document; raise ConfigError with every problem."""
    problems = Problems(source)
    raw = section(doc, "milter", problems)
    for key in sorted(set(raw) - KNOWN_KEYS):
        problems.add(f"milter.{key}", "unknown key")
    values = {**DEFAULTS, **raw}
    host_id = doc.get("host_id")
    if not isinstance(host_id, str) or not host_id:
        problems.add("host_id", "must be a non-empty string")

    def num(key: str) -> float:
        return _positive(values[key], f"milter.{key}", problems)

    config = MilterConfig(
        host_id=str(host_id),
        socket=_socket(values["socket"], problems),
        **_paths(doc, values, problems),
        peer_port=_port(values["peer_port"], "milter.peer_port", problems),
        submission_port=_port(values["submission_port"], "milter.submission_port", problems),
        metrics_listen=_listen(values["metrics_listen"], problems),
        aggregate_window_seconds=num("aggregate_window_seconds"),
        reload_interval_seconds=num("reload_interval_seconds"),
        timeout_seconds=int(num("timeout_seconds")),
        socket_umask=_umask(values["socket_umask"], problems),
    )
    if config.peer_port and config.peer_port == config.submission_port:
        problems.add("milter.submission_port", "must differ from peer_port")
    problems.raise_if_any()
    return config


def load(path: Path | str, check_mailboxes: bool = False) -> MilterConfig:
    """Load and check ``path``; with ``check_mailboxes`` also the mailbox table it names."""
    doc = load_document(path)
    try:
        config = from_document(doc, str(path))
    except ConfigError as exc:
        problems = list(exc.problems)
        config = None
    else:
        problems = []
    mailbox_file = doc.get("mailboxes_file", "/etc/mssante/mailboxes.json")
    if check_mailboxes and isinstance(mailbox_file, str):
        try:
            mailboxes.load(mailbox_file)
        except mailboxes.MailboxTableError as exc:
            problems.extend(f"mailboxes_file: {p}" for p in exc.problems)
    if problems or config is None:
        raise ConfigError(str(path), problems)
    return config
