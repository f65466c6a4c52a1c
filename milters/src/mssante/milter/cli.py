"""``mssante-milter``: ``run --config FILE``, ``check-config FILE`` and ``postfix-settings``."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from mssante.configfile import DEFAULT_CONFIG_PATH, ConfigError
from mssante.milter import config as milter_config
from mssante.milter import postfix_settings
from mssante.milter.config import MilterConfig
from mssante.milter.engine import Services
from mssante.milter.journal import Aggregator, ClientJournal, FileJournal, JournalSink, JournalUnavailable
from mssante.milter.metrics import Metrics, TrustlistCollector
from mssante.milter.policy import Ports

LOG = logging.getLogger("mssante.milter")


def libmilter_socket(socket: str) -> str:
    """Postfix-style ``inet:host:port`` becomes libmilter's ``inet:port@host``; unix stays."""
    kind, _, rest = socket.partition(":")
    if kind in ("inet", "inet6"):
        host, _, port = rest.rpartition(":")
        return f"{kind}:{port}@{host.strip('[]')}"
    return socket


def make_journal(config: MilterConfig) -> JournalSink:
    if config.journal_file is not None:
        return FileJournal(config.journal_file, prefix=config.host_id)
    return ClientJournal(str(config.journal_socket))


def build(config: MilterConfig, registry: object) -> tuple[Services, Aggregator]:
    """Wire the stages of the process (also used by tests with a fresh registry)."""
    from prometheus_client import CollectorRegistry  # noqa: PLC0415

    from mssante.milter.live import LiveViews  # noqa: PLC0415

    assert isinstance(registry, CollectorRegistry)
    metrics = Metrics(registry)
    views = LiveViews(config.trustlist_dir, config.mailboxes_file, config.reload_interval_seconds, metrics)
    registry.register(TrustlistCollector(views.index, lambda: config.trustlist_dir / "status.json"))
    journal = make_journal(config)
    aggregator = Aggregator(journal, config.aggregate_window_seconds, time.time)
    ports = Ports(config.peer_port, config.submission_port)
    return Services(ports, views, journal, aggregator, metrics, config.host_id), aggregator


def _flush_loop(aggregator: Aggregator, metrics: Metrics, stop: threading.Event) -> None:
    while not stop.wait(min(aggregator.window, 5.0)):
        try:
            aggregator.flush()
        except JournalUnavailable:
            LOG.exception("could not journal aggregated refusals (kept for the next attempt)")
            metrics.error("journal")
        except Exception:  # a bug must not stop aggregation for the life of the process
            LOG.exception("aggregated refusals: flush failed")
            metrics.error("journal")


def run(config: MilterConfig) -> int:
    import Milter  # noqa: PLC0415
    from prometheus_client import CollectorRegistry, start_http_server  # noqa: PLC0415

    from mssante.milter.adapter import install  # noqa: PLC0415

    # libmilter stops on SIGTERM, SIGINT and SIGHUP from its own signal thread (sigwait); block them
    # before any other thread starts, so that none of ours takes the default action (dying without
    # journaling the pending aggregated refusals).
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT, signal.SIGHUP})
    registry = CollectorRegistry()
    services, aggregator = build(config, registry)
    if config.metrics_listen is not None:
        host, port = config.metrics_listen
        start_http_server(port, addr=host, registry=registry)
    stop = threading.Event()
    flusher = threading.Thread(target=_flush_loop, args=(aggregator, services.metrics, stop), daemon=True)
    flusher.start()
    try:
        services.views()
    except Exception as exc:
        LOG.error("no usable trust list or mailbox table yet (mail is deferred until there is): %s", exc)
    install(services)
    os.umask(config.socket_umask)
    LOG.info("mssante-milter listening on %s", config.socket)
    try:
        Milter.runmilter("mssante-milter", libmilter_socket(config.socket), config.timeout_seconds)
    finally:
        stop.set()
        try:
            aggregator.flush(force=True)
        except JournalUnavailable:
            LOG.exception("aggregated refusals lost at shutdown")
    LOG.info("mssante-milter stopped")
    return 0


def check_config(path: str) -> int:
    try:
        milter_config.load(path, check_mailboxes=True)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"{exc.source}: {problem}", file=sys.stderr)
        return 1
    print(f"{path}: ok")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mssante-milter", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run_p = sub.add_parser("run", help="run the milter")
    run_p.add_argument("--config", default=str(DEFAULT_CONFIG_PATH))
    check_p = sub.add_parser("check-config", help="check a configuration file, list every problem")
    check_p.add_argument("file")
    settings_p = sub.add_parser("postfix-settings", help="print the main.cf settings the milter needs")
    settings_p.add_argument("--socket", required=True, help="the milter socket as Postfix sees it")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.command == "check-config":
        return check_config(args.file)
    if args.command == "postfix-settings":
        for name, value in postfix_settings.render(args.socket).items():
            print(f"{name} = {value}")
        return 0
    try:
        config = milter_config.load(Path(args.config))
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"{exc.source}: {problem}", file=sys.stderr)
        return 1
    return run(config)
