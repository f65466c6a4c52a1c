"""``mssante-journal``: the owner process and the operator's and auditor's commands (docs/journal.md).

Exit status: 0 success (for verify: valid), 1 failure (for verify: tampered or inconsistent), 2 usage.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from prometheus_client import CollectorRegistry, start_http_server

from mssante.configfile import DEFAULT_CONFIG_PATH, ConfigError
from mssante.journal import config, export, keys, trace
from mssante.journal.backup import backup
from mssante.journal.client import JournalClient, JournalUnavailable
from mssante.journal.config import JournalSettings
from mssante.journal.note import VerifierKey
from mssante.journal.owner import Journal
from mssante.journal.push import DirectoryPusher, HttpPusher, Pusher, SyslogPusher
from mssante.journal.server import JournalServer
from mssante.journal.store import Store, StoreError
from mssante.journal.verify import verify_directory, write_status

USAGE, FAILED = 2, 1
log = logging.getLogger("mssante.journal")


def _settings(args: argparse.Namespace) -> JournalSettings:
    if getattr(args, "config", None):
        return config.load(args.config)
    if args.dir is None:
        return config.load(DEFAULT_CONFIG_PATH)
    base = Path(args.dir)
    return JournalSettings(
        host_id=getattr(args, "host_id", None) or "journal",
        dir=base,
        socket=Path(getattr(args, "socket", None) or base / "journal.sock"),
        signing_key=Path(getattr(args, "signing_key", None) or base.parent / "signing.key"),
        public_key=Path(getattr(args, "public_key", None) or base.parent / "signing.pub"),
        checkpoint_interval_seconds=getattr(args, "checkpoint_interval", None) or 60.0,
        push_dir=Path(args.push_dir) if getattr(args, "push_dir", None) else None,
        metrics_listen=getattr(args, "metrics_listen", None),
    )


def _progress(label: str) -> Callable[[int], None] | None:
    if not sys.stderr.isatty():
        return None
    return lambda n: print(f"\r{label}: {n} records", end="", file=sys.stderr, flush=True)


def cmd_keygen(args: argparse.Namespace) -> int:
    settings = _settings(args)
    key = keys.generate(settings.signing_key, settings.public_key, settings.host_id)
    print(f"public key {settings.public_key}: {key.verifier.encode()}")
    print(f"fingerprint (give it to the auditors): {key.verifier.fingerprint}")
    return 0


def _pushers(settings: JournalSettings) -> list[Pusher]:
    pushers: list[Pusher] = []
    if settings.push_dir:
        pushers.append(DirectoryPusher(settings.push_dir, settings.origin))
    if settings.push_syslog:
        pushers.append(SyslogPusher())
    if settings.push_url:
        pushers.append(HttpPusher(settings.push_url))
    return pushers


def cmd_serve(args: argparse.Namespace) -> int:
    settings = _settings(args)
    journal = Journal(settings, keys.load_signer(settings.signing_key), _pushers(settings))
    journal.open()
    registry = CollectorRegistry()
    server = JournalServer(journal, settings.socket, registry)
    server.start()
    if settings.metrics_listen:
        host, _, port = settings.metrics_listen.rpartition(":")
        start_http_server(int(port), host, registry)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    print(f"ready {settings.socket}", flush=True)
    return serve_until(server, done)


def serve_until(server: JournalServer, done: threading.Event, poll: float = 0.5) -> int:
    """Serve until stopped (exit 0) or until a write fails (exit 1): a failed write may have left a
    partial record, which only the recovery at start cuts cleanly, so the owner exits and lets its
    supervisor (systemd or supervisord) start it again; appends fail (the milter answers 4xx) meanwhile."""
    while not done.wait(poll):
        if server.broken is not None:
            log.error("journal: exiting after a write failure, to recover at the next start")
            break
    server.stop()
    return FAILED if server.broken is not None else 0


def _trusted(args: argparse.Namespace) -> VerifierKey | None:
    return keys.load_verifier(Path(args.public_key)) if args.public_key else None


def cmd_verify(args: argparse.Namespace) -> int:
    external = [(str(p), Path(p).read_text(encoding="utf-8", errors="replace")) for p in args.checkpoint]
    report = verify_directory(
        Path(args.dir), _trusted(args), external, _progress("verify"), schema=args.schema
    )
    if args.json:
        print(json.dumps(report.as_dict(), indent=1))
    else:
        status = "VALID" if report.ok else "TAMPERED OR INCONSISTENT"
        print(
            f"{status}: {report.records} records, {report.checkpoints} checkpoints, "
            f"covered up to {report.covered}"
        )
        for problem in report.problems:
            print(f"  {problem}")
        for note in report.notes:
            print(f"  note: {note}")
    return 0 if report.ok else FAILED


def cmd_self_verify(args: argparse.Namespace) -> int:
    settings = _settings(args)
    trusted = keys.load_verifier(settings.public_key) if settings.public_key.exists() else None
    report = verify_directory(settings.dir, trusted, schema=False)
    write_status(settings.verify_status_file, report, time.time())
    return 0 if report.ok else FAILED


def _public_key_text(args: argparse.Namespace) -> str:
    path = Path(args.public_key) if args.public_key else Path(args.dir).parent / "signing.pub"
    return path.read_text(encoding="ascii")


def cmd_export(args: argparse.Namespace) -> int:
    if args.socket:
        JournalClient(args.socket).request("checkpoint")
    first, end = export.export(
        Path(args.dir),
        Path(args.out),
        args.format,
        _public_key_text(args),
        since=args.since,
        until=args.until,
        progress=_progress("export"),
    )
    print(f"exported records {first}..{end - 1} to {args.out}")
    return 0


def cmd_prove(args: argparse.Namespace) -> int:
    proofs = export.prove(Path(args.dir), _public_key_text(args), args.message_id, args.queue_id)
    print(json.dumps(proofs if len(proofs) != 1 else proofs[0], indent=1))
    return 0 if proofs else FAILED


def cmd_show(args: argparse.Namespace) -> int:
    for line in Store(Path(args.dir)).lines():
        if not line.check_ok:
            print(f"damaged line {line.segment.path.name}:{line.number} (run verify)", file=sys.stderr)
            continue
        record = json.loads(line.data)
        if args.seq is not None and record.get("seq") != args.seq:
            continue
        if args.type and record.get("type") != args.type:
            continue
        print(json.dumps(record, ensure_ascii=False, sort_keys=True))
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    store = Store(Path(args.dir))
    counts: dict[str, int] = {}
    first = last = None
    for line in store.lines():
        if not line.check_ok:
            counts["damaged"] = counts.get("damaged", 0) + 1
            continue
        record = json.loads(line.data)
        counts[record["type"]] = counts.get(record["type"], 0) + 1
        first = first or record["time"]
        last = record["time"]
    stats = {"records": sum(counts.values()), "by_type": counts, "first": first, "last": last}
    stats["segments"] = len(store.segments())
    stats["checkpoints"] = len(store.checkpoint_files())
    print(json.dumps(stats, indent=1))
    return 0


def cmd_backup(args: argparse.Namespace) -> int:
    count = backup(Path(args.dir), Path(args.out))
    print(f"copied {count} records to {args.out}")
    return 0


def cmd_purge(args: argparse.Namespace) -> int:
    days = args.older_than or _settings(args).retention_days
    return _owner_call(args, "purge", older_than_days=days)


def _owner_call(args: argparse.Namespace, op: str, **kw: object) -> int:
    """Ask the running owner; when none runs, do it here holding the lock."""
    settings = _settings(args)
    try:
        print(json.dumps(JournalClient(settings.socket, timeout=600).request(op, **kw)))
        return 0
    except JournalUnavailable as exc:  # no owner running: do it here (the lock says if one is)
        print(f"note: {exc}; working on {settings.dir} directly", file=sys.stderr)
    journal = Journal(settings, keys.load_signer(settings.signing_key))
    journal.open()
    try:
        result = (
            journal.rotate_key() if op == "rotate-key" else journal.purge(int(str(kw["older_than_days"])))
        )
    finally:
        journal.close()
    print(json.dumps({"ok": True, "result": str(result)}))
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mssante-journal", description="Tamper-evident message journal")
    sub = parser.add_subparsers(dest="command", required=True)

    def add(
        name: str, func: Callable[[argparse.Namespace], int], owner: bool = False
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(name)
        p.set_defaults(func=func)
        p.add_argument("--dir", help="the journal directory")
        p.add_argument("--public-key", help="the journal public key file (trust anchor)")
        if owner:
            p.add_argument("--config", type=Path, help=f"config file (default {DEFAULT_CONFIG_PATH})")
            p.add_argument("--socket")
            p.add_argument("--signing-key")
            p.add_argument("--host-id")
            p.add_argument("--push-dir")
            p.add_argument("--metrics-listen")
            p.add_argument("--checkpoint-interval", type=float)
        return p

    add("keygen", cmd_keygen, owner=True)
    add("serve", cmd_serve, owner=True)
    add("self-verify", cmd_self_verify, owner=True)
    add("rotate-key", lambda a: _owner_call(a, "rotate-key"), owner=True)
    purge = add("purge", cmd_purge, owner=True)
    purge.add_argument("--older-than", type=int, metavar="DAYS", help="default: journal.retention_days")
    verify = add("verify", cmd_verify)
    verify.add_argument("--checkpoint", action="append", default=[], help="a checkpoint kept elsewhere")
    verify.add_argument("--json", action="store_true")
    verify.add_argument("--schema", action="store_true", help="also re-validate every record (slower)")
    exp = add("export", cmd_export)
    exp.add_argument("--since")
    exp.add_argument("--until")
    exp.add_argument("--format", choices=["csv", "jsonl"], default="jsonl")
    exp.add_argument("--out", required=True)
    exp.add_argument("--socket", help="ask the running owner for a fresh checkpoint first")
    prv = add("prove", cmd_prove)
    which = prv.add_mutually_exclusive_group(required=True)
    which.add_argument("--message-id")
    which.add_argument("--queue-id")
    show = add("show", cmd_show)
    show.add_argument("--seq", type=int)
    show.add_argument("--type")
    add("stats", cmd_stats)
    trace.register(add("trace", trace.command))
    add("backup", cmd_backup).add_argument("--out", required=True, help="a new directory")
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    args = _parser().parse_args(argv)
    if args.command in ("verify", "export", "prove", "show", "stats", "backup") and not args.dir:
        print("error: --dir is required", file=sys.stderr)
        return USAGE
    try:
        return int(args.func(args))
    except (ConfigError, keys.KeyFileError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return USAGE
    except (StoreError, export.ExportError, JournalUnavailable, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return FAILED
