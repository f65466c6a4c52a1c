"""``make bench``: trust list, journal and Postfix benchmarks; writes docs/benchmarks.md (issue 10).

Bounded to a few minutes: ``MSSANTE_BENCH_MESSAGES`` (messages per Postfix run, default 2,000),
``MSSANTE_BENCH_ROUNDS`` (bare/milter pairs per configuration, default 2) and
``MSSANTE_BENCH_JOURNAL_RECORDS`` (records verified and exported, default 200,000). Measures, never
asserts: the figures depend on the machine and on what else runs on it (the load average is recorded).
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

from tests.bench import bench_journal, bench_postfix, bench_trustlist

REPO = Path(__file__).resolve().parents[2]
OUTPUT = REPO / "docs" / "benchmarks.md"
TARGET_RATIO = 0.75


def machine() -> dict[str, Any]:
    """nproc, memory, CPU model, kernel, Postfix version and the load average now."""
    meminfo = Path("/proc/meminfo").read_text().splitlines()
    total_kib = int(next(line for line in meminfo if line.startswith("MemTotal")).split()[1])
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), "?")
    postfix = subprocess.run(["postconf", "-dh", "mail_version"], capture_output=True, text=True, check=False)
    return {
        "nproc": os.cpu_count(),
        "memory_gib": round(total_kib / 1024 / 1024, 1),
        "cpu": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "postfix": postfix.stdout.strip(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def _env(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def _runs(result: dict[str, Any]) -> list[str]:
    rows = []
    for kind in ("bare", "milter"):
        for n, r in enumerate(result[kind], 1):
            rows.append(
                f"| {kind} #{n} | {r['messages']} | {r['accept_seconds']} | {r['end_to_end_seconds']} "
                f"| {r['messages_per_second']} |"
            )
    return rows


def _latency(result: dict[str, Any]) -> list[str]:
    lines = ["| stage | observations | p50 (ms) | p99 (ms) |", "|---|---|---|---|"]
    last = result["milter"][-1]["latency"]
    for stage, s in last["stages"].items():
        lines.append(f"| {stage} | {s['observations']} | {s['p50_ms']} | {s['p99_ms']} |")
    lines.append("")
    mean = last["milter_ms_per_message_mean"]
    lines.append(f"Mean time spent in the milter per message (all stages, journal inside eom): {mean} ms.")
    return lines


def _postfix_section(title: str, result: dict[str, Any], explanation: str, target: bool) -> list[str]:
    ratio = result["ratio"]
    verdict = ""
    if target and ratio is not None:
        verdict = f" (target {TARGET_RATIO}: {'met' if ratio >= TARGET_RATIO else 'not met'})"
    return [
        f"### {title}",
        "",
        explanation,
        "",
        f"**Throughput ratio, milter / bare: {ratio}**{verdict}",
        "",
        "| run | messages | accepted by smtpd (s) | end to end (s) | messages/s end to end |",
        "|---|---|---|---|---|",
        *_runs(result),
        "",
        "Added latency per stage, from the milter's `mssante_milter_stage_duration_seconds` histograms "
        "(last milter run; `journal` is the durable append inside `eom`; the first bucket ends at 0.5 ms, "
        'so quantiles below it are interpolated and only say "under 0.5 ms"):',
        "",
        *_latency(result),
        "",
    ]


PLAIN = (
    "smtp-source → the MSSanté instance's peer listener → smtp-sink. **Relaxed for this run only**: "
    "the peer listener does not require TLS (`-o smtpd_tls_security_level=none`) and main.cf sets "
    "`milter_macro_defaults` to `{tls_version}=TLSv1.3`, `{cert_subject}=<the peer's listed CN>`, "
    "`{cert_issuer}=bench`, values Postfix passes only when the session has none of its own. The milter, "
    "its configuration and its code are unchanged: it classifies the flow as inbound from a listed peer, "
    "runs the whole policy, journals every message durably (fsync before the answer) and tags it."
)
TIERS = (
    "smtp-source → a peer operator's Postfix (holds the peer certificate; TLS client, level `secure`, "
    "connection reuse through tlsproxy) → the MSSanté instance (TLS required, client certificate verified "
    "against the test IGC chain only, full milter chain, durable journal) → smtp-sink. Nothing relaxed. "
    "The baseline is the same chain with the milter detached (`smtpd_milters` empty)."
)


def render(results: dict[str, Any]) -> str:
    m, t, j, p = results["machine"], results["trustlist"], results["journal"], results["postfix"]
    appends = j["durable_appends_8_writers"]
    lines = [
        "# Benchmarks",
        "",
        "Written by `make bench` (`python -m tests.bench`); do not edit by hand. Figures depend on the "
        "machine and on what else runs on it: compare runs on the same machine only.",
        "",
        "## Machine",
        "",
        f"- {m['nproc']} CPUs ({m['cpu']}), {m['memory_gib']} GiB memory, kernel {m['kernel']}",
        f"- Postfix {m['postfix']}, Python {m['python']} (benchmark driver; the milter and the journal "
        "run on /usr/bin/python3)",
        f"- load average at start: {' / '.join(map(str, m['load_average']))} (1, 5, 15 min); "
        f"run {m['date']}, {results['seconds']} s in all",
        "",
        "## Trust list",
        "",
        f"Parse, verify the signature, compile and switch a signed list of {t['entries']} entries "
        f"({t['list_bytes']} bytes): **{t['parse_verify_compile_switch_seconds']} s** "
        f"(CPU {t['parse_verify_compile_switch_cpu_seconds']} s; target {t['target_seconds']} s); "
        f"parse and verify alone {t['parse_verify_seconds']} s; index load {t['index_load_seconds']} s; "
        f"lookup {t['lookup_microseconds']} µs.",
        "",
        "## Journal",
        "",
        f"- durable appends, 8 writers through the owner's socket: **{appends['appends_per_second']}/s** "
        f"({appends['appends']} appends, {appends['errors']} errors)",
        f"- verify {j['records']} records (`MSSANTE_BENCH_JOURNAL_RECORDS`; `python -m "
        f"tests.bench.bench_journal` does 1 million): **{j['verify']['records_per_second']} records/s** "
        f"(with schema validation {j['verify_schema']['records_per_second']}/s); export "
        f"{j['export']['seconds']} s",
        "",
        "## Postfix with the milter chain",
        "",
        *_postfix_section("Plain, one tier (the milter's own cost)", p["plain_single_tier"], PLAIN, True),
        *_postfix_section("Two tiers, mutual TLS", p["two_tiers_mutual_tls"], TIERS, False),
        f"Journal after the Postfix runs: {p['journal_records']}; `mssante-journal verify`: "
        f"{'passed' if p['journal_verify_ok'] else 'FAILED'}.",
        "",
        "## Raw figures",
        "",
        "```json",
        json.dumps(results, indent=1, ensure_ascii=False),
        "```",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    started = time.monotonic()
    results: dict[str, Any] = {"machine": machine()}
    print("trust list ...", flush=True)
    results["trustlist"] = bench_trustlist.run()
    print("journal ...", flush=True)
    results["journal"] = bench_journal.run(_env("MSSANTE_BENCH_JOURNAL_RECORDS", 200_000))
    print("postfix ...", flush=True)
    results["postfix"] = bench_postfix.run(
        _env("MSSANTE_BENCH_MESSAGES", bench_postfix.MESSAGES), _env("MSSANTE_BENCH_ROUNDS", 2)
    )
    results["seconds"] = round(time.monotonic() - started)
    OUTPUT.write_text(render(results), encoding="utf-8")
    print(f"wrote {OUTPUT}")


if __name__ == "__main__":
    main()
