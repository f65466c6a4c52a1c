"""`mssante-delivery run --config FILE`: the delivery tracker (also `python3 -m mssante.delivery`)."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server

from mssante.configfile import (
    DEFAULT_CONFIG_PATH,
    ConfigError,
    Problems,
    absolute_path,
    load_document,
    positive_number,
    section,
)
from mssante.delivery.daemon import DeliveryDaemon, DeliverySettings
from mssante.delivery.metrics import DeliveryMetrics
from mssante.journal import config as journal_config

log = logging.getLogger("mssante.delivery")


def _path(data: Mapping[str, Any], key: str, default: str | None, problems: Problems) -> Path | None:
    return absolute_path(data.get(key, default), f"delivery.{key}", problems)


def _seconds(data: Mapping[str, Any], key: str, default: float, problems: Problems) -> float:
    return positive_number(data.get(key, default), f"delivery.{key}", default, problems)


def load_settings(path: Path) -> DeliverySettings:
    """The `delivery:` section (docs/configuration.md) plus the journal's directory and socket."""
    journal = journal_config.load(path)
    problems = Problems(str(path))
    data = section(load_document(path), "delivery", problems)
    log_file = _path(data, "log_file", "/var/log/postfix-mssante.log", problems)
    state_file = _path(data, "state_file", "/var/lib/mssante/delivery/state.json", problems)
    syslog_name = data.get("syslog_name", "postfix-mssante")
    if not isinstance(syslog_name, str) or not syslog_name:
        problems.add("delivery.syslog_name", "must be the MSSanté instance's syslog_name")
    listen = data.get("metrics_listen", "127.0.0.1:9743")
    if listen is not None and (not isinstance(listen, str) or ":" not in listen):
        problems.add("delivery.metrics_listen", "must be HOST:PORT or null")
    settings = DeliverySettings(
        log_file=log_file or Path("/"),
        state_file=state_file or Path("/"),
        journal_dir=journal.dir,
        journal_socket=journal.socket,
        syslog_name=str(syslog_name),
        postfix_config_dir=_path(data, "postfix_config_dir", "/etc/postfix-mssante", problems),
        poll_seconds=_seconds(data, "poll_seconds", 1.0, problems),
        not_queued_after_seconds=_seconds(data, "not_queued_after_seconds", 600.0, problems),
        stuck_after_seconds=_seconds(data, "stuck_after_seconds", 3600.0, problems),
        metrics_listen=listen,
    )
    problems.raise_if_any()
    return settings


def _serve_metrics(listen: str, registry: CollectorRegistry) -> None:
    host, _, port = listen.rpartition(":")
    start_http_server(int(port), addr=host.strip("[]"), registry=registry)


def run(settings: DeliverySettings) -> int:
    from mssante.journal.client import JournalClient  # noqa: PLC0415 - only the daemon needs a socket

    registry = CollectorRegistry()
    metrics = DeliveryMetrics(registry)
    if settings.metrics_listen:
        _serve_metrics(settings.metrics_listen, registry)
    settings.state_file.parent.mkdir(parents=True, exist_ok=True)
    daemon = DeliveryDaemon(settings, JournalClient(settings.journal_socket), metrics)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    log.info("following %s for %s", settings.log_file, settings.syslog_name)
    daemon.run(stop)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mssante-delivery", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run_parser = sub.add_parser("run", help="follow the MSSanté instance's log and journal outcomes")
    run_parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG_PATH)
    check = sub.add_parser("check-config", help="validate the delivery section of a config file")
    check.add_argument("config", type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(levelname)s: %(message)s")
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"{exc.source}: {problem}", file=sys.stderr)
        return 1 if args.command == "check-config" else 2
    if args.command == "check-config":
        print(f"{args.config}: delivery settings OK")
        return 0
    return run(settings)
