"""Command line: ``python3 -m mssante.certcheck --config /etc/mssante/mssante.yml`` (or explicit files).

One run checks everything once and writes the text file (``textfile``, for node_exporter's textfile
collector; run it from a timer). With ``listen`` it keeps running, serves the page on that loopback
address and checks again every ``interval_seconds``.

Exit status: 0 all checks passed, 1 a problem was found (the page still reports it), 2 usage or
configuration error, or the text file could not be written.
"""

from __future__ import annotations

import argparse
import sys
import threading
from pathlib import Path
from typing import Any

from prometheus_client import generate_latest, start_http_server, write_to_textfile

from mssante.certcheck import config as cfg
from mssante.certcheck.check import Report, run_checks
from mssante.certcheck.metrics import registry_for
from mssante.configfile import ConfigError, Problems

EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python3 -m mssante.certcheck", description=__doc__.split("\n")[0])
    parser.add_argument("--config", help="mssante.yml whose certcheck section names the files")
    parser.add_argument(
        "--certificate",
        action="append",
        default=[],
        metavar="KIND=PATH",
        help="a certificate file to check; KIND is operator, igc_chain, trustlist_ca or personal_chain",
    )
    parser.add_argument(
        "--crl",
        action="append",
        default=[],
        metavar="CA=CRL[,ISSUER]",
        help="a CRL to check under the label CA, signed by a certificate in ISSUER (default: igc_chain)",
    )
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--textfile", help="write the page here (a .prom file in node_exporter's directory)")
    output.add_argument("--listen", help="serve the page on IP:PORT (loopback) and re-check periodically")
    output.add_argument("--stdout", action="store_true", help="print the page (one run)")
    parser.add_argument("--interval", type=int, help="seconds between checks when listening")
    return parser


def _section_from_args(args: argparse.Namespace) -> dict[str, Any]:
    certificates = {}
    for item in args.certificate:
        kind, _, path = item.partition("=")
        certificates[kind] = path
    crls = []
    for item in args.crl:
        ca, _, files = item.partition("=")
        crl, _, issuer = files.partition(",")
        crls.append({"ca": ca, "crl": crl, "issuer": issuer or None})
    return {"certificates": certificates, "crls": crls}


def load_config(args: argparse.Namespace) -> cfg.CertcheckConfig:
    """The file's section, or one built from the explicit arguments; command-line outputs win."""
    if args.config:
        config = cfg.load(args.config)
        source = args.config
    else:
        problems = Problems("command line")
        config = cfg.from_section(_section_from_args(args), problems)
        problems.raise_if_any()
        source = "command line"
    problems = Problems(source)
    listen = config.listen
    if args.listen:
        listen = cfg.parse_listen(args.listen)
    textfile = Path(args.textfile) if args.textfile else config.textfile
    if args.textfile or args.stdout:
        listen = None
    if args.stdout:
        textfile = None
    interval = args.interval if args.interval is not None else config.interval_seconds
    if interval < 1:
        problems.add("--interval", "must be a positive integer")
    problems.raise_if_any()
    return cfg.CertcheckConfig(config.certificates, config.crls, textfile, listen, interval)


def _report_problems(report: Report) -> int:
    for line in report.problems:
        print(f"mssante-certcheck: {line}", file=sys.stderr)
    return EXIT_PROBLEMS if report.problems else EXIT_OK


def serve(config: cfg.CertcheckConfig, stop: threading.Event) -> int:
    """Serve the page on ``config.listen`` and re-check every interval until ``stop`` is set."""
    assert config.listen is not None
    report = run_checks(config)
    registry, collector = registry_for(report)
    start_http_server(config.listen.port, config.listen.host, registry=registry)
    _report_problems(report)
    while not stop.wait(config.interval_seconds):
        report = run_checks(config)
        collector.update(report)
        _report_problems(report)
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = load_config(args)
    except (ConfigError, ValueError) as exc:
        print(f"mssante-certcheck: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if config.listen is not None:
        return serve(config, threading.Event())
    report = run_checks(config)
    registry, _ = registry_for(report)
    if config.textfile is not None:
        try:
            write_to_textfile(str(config.textfile), registry)
        except OSError as exc:
            reason = exc.strerror or exc
            print(f"mssante-certcheck: cannot write {config.textfile}: {reason}", file=sys.stderr)
            return EXIT_USAGE
    else:
        sys.stdout.write(generate_latest(registry).decode("utf-8"))
    return _report_problems(report)
