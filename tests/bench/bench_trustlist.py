"""Benchmark: parse + verify + compile of a 20,000-entry signed trust list (target: under 2 s).

``run()`` returns the figures; ``python -m tests.bench.bench_trustlist`` prints them.
The real list has about 8,700 entries (3.6 MB); this one is larger on purpose, with every DN
distinct (the worst case). Wall-clock time depends on what else runs on the machine: the CPU time
(this process and postmap) and the load average are reported beside it.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from tests.unit.trustlist.helpers import SIGNER_CN, build_list, pki, sign_with, synthetic_entries

from mssante.trustlist import pipeline
from mssante.trustlist.index import TrustIndex
from mssante.trustlist.model import Outcome
from mssante.trustlist.settings import Settings

ENTRIES = 20_000
ROUNDS = 3
TARGET_SECONDS = 2.0


def _cpu() -> float:
    """CPU seconds of this process and its finished children (postmap)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def _timed(function: object, *args: object) -> tuple[float, object]:
    start = time.perf_counter()
    value = function(*args)  # type: ignore[operator]
    return time.perf_counter() - start, value


def run(entries: int = ENTRIES, rounds: int = ROUNDS) -> dict[str, object]:
    """Measure each stage ``rounds`` times on a fresh output directory; medians in seconds."""
    data = sign_with(build_list(synthetic_entries(entries)))
    base = Path(tempfile.mkdtemp(prefix="bench-trustlist-"))
    settings = Settings(ca_file=pki().chain, signer=SIGNER_CN)
    parse_verify, total, total_cpu, load, lookups = [], [], [], [], []
    try:
        for number in range(rounds):
            seconds, trust_list = _timed(pipeline.read_list, data, settings)
            parse_verify.append(seconds)
            out = base / f"out{number}"
            cpu = _cpu()
            seconds, result = _timed(pipeline.run, data, Settings(**{**settings.__dict__, "out_dir": out}))
            total_cpu.append(_cpu() - cpu)
            assert result.outcome is Outcome.SWITCHED, result.message  # type: ignore[attr-defined]
            total.append(seconds)
            seconds, index = _timed(TrustIndex.load, out / "current")
            load.append(seconds)
            names = [f"dom{i}.mssante.fr" for i in range(0, entries, 7)]
            start = time.perf_counter()
            for name in names:
                index.cn_listed_for(name, f"mx1.{name.split('.')[0]}.fr")  # type: ignore[attr-defined]
            lookups.append((time.perf_counter() - start) / len(names))
    finally:
        shutil.rmtree(base, ignore_errors=True)
    median_total = statistics.median(total)
    return {
        "entries": entries,
        "domains": len(trust_list.domains),  # type: ignore[attr-defined]
        "list_bytes": len(data),
        "parse_verify_seconds": round(statistics.median(parse_verify), 3),
        "parse_verify_compile_switch_seconds": round(median_total, 3),
        "parse_verify_compile_switch_cpu_seconds": round(statistics.median(total_cpu), 3),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "index_load_seconds": round(statistics.median(load), 4),
        "lookup_microseconds": round(statistics.median(lookups) * 1e6, 2),
        "target_seconds": TARGET_SECONDS,
        "within_target": median_total < TARGET_SECONDS,
    }


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
