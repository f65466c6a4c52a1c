"""``mssante-trustlist``: fetch, verify, compile and inspect the MSSanté trust list.

Exit codes of compile and fetch: 0 switched to the new list, 1 refused (the last good list kept),
2 usage error, 3 fetch failed (the last good list kept), 4 unchanged (no reload needed).
show: 0, or 1 when there is no compiled list. diff: 0 same domains and CNs, 1 different,
2 error. See docs/trustlist.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mssante.configfile import ConfigError
from mssante.trustlist import fetch, pipeline
from mssante.trustlist.diff import diff_main
from mssante.trustlist.index import IndexLoadError, TrustIndex
from mssante.trustlist.model import Outcome
from mssante.trustlist.settings import Settings, from_config
from mssante.trustlist.status import read_status

EXIT_USAGE = 2

JSON_HELP = """\
--json output:
  compile/fetch: {"outcome": "switched|unchanged|refused-parse|refused-signature|refused-older|
    refused-empty|refused-shrink|fetch-failed|compile-failed", "exit_code": N, "message": "...",
    "generation": "g-...|null"}
  show: {"generation": "g-...", "generated": "ISO 8601", "signer": "...|null",
    "status": {status.json}, "domains": [{"domain": A-label, "u_label": "...", "cns": [...],
    "dns": [...], "local": true|false}, ...]}
  diff: {"added": [{"domain": ..., "cns": [...]}], "removed": [...],
    "changed": [{"domain": ..., "cns_added": [...], "cns_removed": [...]}]}
"""

EPILOG = __doc__.split("\n", 2)[2] + "\n" + JSON_HELP


def _add_compile_options(parser: argparse.ArgumentParser, source_required: bool) -> None:
    parser.add_argument(
        "--source", metavar="PATH_OR_URL", help="path, file:// or https:// URL of the XML list"
    )
    parser.add_argument(
        "--out", type=Path, metavar="DIR", help="output directory (generations + `current` link)"
    )
    parser.add_argument(
        "--config", type=Path, metavar="FILE", help="mssante.yml (its trustlist: section; options override)"
    )
    parser.add_argument(
        "--ca", type=Path, metavar="FILE", help="CA bundle (PEM or PKCS#7): signer chain and HTTPS server"
    )
    parser.add_argument(
        "--signer", metavar="SUBJECT", help="pinned signer: full RFC 4514 DN, or its CN alone"
    )
    parser.add_argument(
        "--local",
        action="append",
        default=None,
        metavar="DOMAIN",
        help="the hospital's own domain (repeatable)",
    )
    parser.add_argument("--allow-unsigned", action="store_true", help="accept a list without signature")
    parser.add_argument("--force", action="store_true", help="bypass the date and shrink gates only")
    parser.add_argument(
        "--postfix-config-dir", type=Path, metavar="DIR", help="postmap -c DIR (default: a private one)"
    )
    parser.add_argument(
        "--max-shrink", type=float, metavar="FRACTION", help="largest accepted loss of domains (0.10 = 10%%)"
    )
    parser.add_argument("--keep", type=int, metavar="N", help="number of generations kept (default 5)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON (see below)")
    parser.set_defaults(source_required=source_required)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mssante-trustlist",
        description="Fetch, verify, compile and inspect the MSSanté trust list.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for name, text in (
        ("compile", "read the list (path or URL), verify it and switch to it"),
        ("fetch", "fetch the configured list (conditional GET, retries), then compile it"),
    ):
        sub = commands.add_parser(
            name,
            help=text,
            description=text,
            epilog=EPILOG,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        _add_compile_options(sub, source_required=name == "compile")
    show = commands.add_parser(
        "show",
        help="domains of the compiled list with their CNs",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    show.add_argument("--out", type=Path, required=True, help="output directory or a generation directory")
    show.add_argument("--json", action="store_true", help="print JSON (see below)")
    diff = commands.add_parser(
        "diff",
        help="domains and CNs added or removed between two lists",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    diff.add_argument("old", type=Path, help="compiled directory, output directory or XML file")
    diff.add_argument("new", type=Path, help="compiled directory, output directory or XML file")
    diff.add_argument(
        "--json", action="store_true", help='print {"added": [...], "removed": [...], "changed": [...]}'
    )
    return parser


def settings_from(args: argparse.Namespace) -> Settings:
    """The config file's section, overridden by the options given."""
    settings = from_config(args.config)
    overrides: dict[str, Any] = {
        "source": args.source,
        "out_dir": args.out,
        "ca_file": args.ca,
        "signer": args.signer,
        "postfix_config_dir": args.postfix_config_dir,
        "max_shrink": args.max_shrink,
        "keep_generations": args.keep,
        "local_domains": tuple(args.local) if args.local is not None else None,
    }
    changes = {key: value for key, value in overrides.items() if value is not None}
    if args.allow_unsigned:
        changes["require_signature"] = False
    changes["force"] = args.force
    return dataclasses.replace(settings, **changes)


def _report(result: pipeline.Result, as_json: bool) -> int:
    code = result.outcome.exit_code
    if as_json:
        document = {
            "outcome": result.outcome.value,
            "exit_code": code,
            "message": result.message,
            "generation": result.generation,
        }
        print(json.dumps(document, ensure_ascii=False))
    else:
        stream = sys.stdout if code in (0, 4) else sys.stderr
        print(f"mssante-trustlist: {result.outcome.value}: {result.message}", file=stream)
    return code


def run_compile(args: argparse.Namespace, conditional: bool) -> int:
    try:
        settings = settings_from(args)
    except ConfigError as exc:
        print(f"mssante-trustlist: {exc}", file=sys.stderr)
        return EXIT_USAGE
    problems = settings.problems()
    if problems:
        for problem in problems:
            print(f"mssante-trustlist: {problem}", file=sys.stderr)
        return EXIT_USAGE
    assert settings.out_dir is not None and settings.source is not None
    cache = (
        fetch.read_cache(settings.out_dir, settings.source) if conditional and not settings.force else None
    )
    try:
        fetched = fetch.obtain(settings, cache)
    except fetch.FetchError as exc:
        result = pipeline.Result(Outcome.FETCH_FAILED, str(exc))
        pipeline.record(settings.out_dir, result, datetime.now(UTC))
        return _report(result, args.json)
    if fetched.data is None:
        result = pipeline.Result(Outcome.UNCHANGED, "the server reports the list unchanged (304)")
        pipeline.record(settings.out_dir, result, datetime.now(UTC))
        return _report(result, args.json)
    result = pipeline.run(fetched.data, settings)
    if conditional and result.outcome in (Outcome.SWITCHED, Outcome.UNCHANGED):
        fetch.write_cache(settings.out_dir, settings.source, fetched)
    return _report(result, args.json)


def run_show(args: argparse.Namespace) -> int:
    try:
        index = TrustIndex.load(args.out)
    except IndexLoadError as exc:
        print(f"mssante-trustlist: no compiled list: {exc}", file=sys.stderr)
        return 1
    base = args.out if (args.out / "status.json").exists() else args.out.parent
    try:
        status = read_status(base).to_json()
    except ValueError:
        status = {}
    entries: list[dict[str, Any]] = [
        {"domain": e.a_label, "u_label": e.u_label, "cns": list(e.cns), "dns": list(e.dns), "local": e.local}
        for e in index.entries()
    ]
    if args.json:
        document = {
            "generation": index.generation,
            "generated": index.generated.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "signer": index.signer,
            "status": status,
            "domains": entries,
        }
        print(json.dumps(document, ensure_ascii=False, indent=2))
        return 0
    print(
        f"# generation {index.generation}, generated {index.generated:%Y-%m-%dT%H:%M:%SZ},",
        f"{len(index)} domains",
    )
    if status.get("outcome"):
        print(f"# last attempt {status.get('last_attempt')}: {status.get('outcome')} {status.get('message')}")
    for entry in entries:
        label = "" if entry["u_label"] == entry["domain"] else f" ({entry['u_label']})"
        cns = " ".join([*entry["cns"], *(["[local]"] if entry["local"] else [])])
        print(f"{entry['domain']}{label}\t{cns}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command in ("compile", "fetch"):
        return run_compile(args, conditional=args.command == "fetch")
    if args.command == "show":
        return run_show(args)
    return diff_main(args.old, args.new, args.json)


if __name__ == "__main__":
    sys.exit(main())
