"""Journal benchmarks (issue 5): durable appends/s with 8 writers, verify rate, export of 1M records.

Measures, does not assert. `python -m tests.bench.bench_journal [RECORDS]` prints the result as JSON;
`run()` returns it for `make bench`. Targets: >= 5,000 appends/s, >= 100,000 records/s verified,
1 million records exported in under a minute.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from tests.unit.journal.helpers import accepted, settings
from tests.unit.journal.server_fixture import Server

from mssante.journal import export, keys
from mssante.journal.client import JournalClient
from mssante.journal.owner import Journal
from mssante.journal.verify import verify_directory

WRITERS = 8


def appends_per_second(tmp: Path, per_writer: int = 2500) -> dict[str, Any]:
    """8 threads, each with its own connection, appending through the owner's socket (fsync'd)."""
    server = Server(tmp, interval=1.0)
    server.start()
    try:
        client = JournalClient(server.socket, timeout=60)
        client.append(accepted(0))  # warm up
        errors: list[str] = []

        def work(worker: int) -> None:
            for n in range(per_writer):
                try:
                    client.append(accepted(worker * per_writer + n))
                except Exception as exc:
                    errors.append(str(exc))

        threads = [threading.Thread(target=work, args=(i,)) for i in range(WRITERS)]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - started
    finally:
        server.stop()
    total = WRITERS * per_writer
    return {
        "appends": total,
        "errors": len(errors),
        "seconds": round(elapsed, 3),
        "appends_per_second": round(total / elapsed),
    }


def build(tmp: Path, records: int, batch: int = 10_000) -> Path:
    """A journal of ``records`` accepted records, written in batches (in-process owner)."""
    conf = settings(tmp)
    keys.generate(conf.signing_key, conf.public_key, conf.host_id)
    journal = Journal(conf, keys.load_signer(conf.signing_key))
    journal.open()
    template = [accepted(n) for n in range(batch)]
    for _ in range(records // batch):
        journal.append_batch(template)
    journal.checkpoint()
    journal.close()
    return conf.dir


def verify_and_export(tmp: Path, records: int) -> dict[str, Any]:
    started = time.perf_counter()
    directory = build(tmp, records)
    built = time.perf_counter() - started
    results: dict[str, Any] = {"records": records + 1, "build_seconds": round(built, 1)}
    for schema in (False, True):
        started = time.perf_counter()
        report = verify_directory(directory, schema=schema)
        elapsed = time.perf_counter() - started
        key = "verify_schema" if schema else "verify"
        results[key] = {
            "ok": report.ok,
            "seconds": round(elapsed, 2),
            "records_per_second": round(report.records / elapsed),
        }
    public = (tmp / "keys" / "signing.pub").read_text()
    started = time.perf_counter()
    export.export(directory, tmp / "export", "jsonl", public)
    results["export"] = {"seconds": round(time.perf_counter() - started, 2)}
    return results


def run(records: int = 1_000_000) -> dict[str, Any]:
    base = Path(tempfile.mkdtemp(prefix="bench-journal-", dir="/var/tmp"))
    try:
        (base / "a").mkdir()
        (base / "b").mkdir()
        return {
            "durable_appends_8_writers": appends_per_second(base / "a"),
            **verify_and_export(base / "b", records),
        }
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    print(json.dumps(run(int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000), indent=1))
