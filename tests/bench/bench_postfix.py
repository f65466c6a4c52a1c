"""Postfix throughput with and without the MSSanté milter chain (issue 10), smtp-source to smtp-sink.

Two measurements, in one run, on one MSSanté-style instance built like the process-test lab
(``tests.milter.lab``: settings from ``postfix_settings.yml``, the real milter on the host runtime, the
real journal owner with its fsync'd group commit), whose next hop is Postfix's ``smtp-sink``:

- **plain, one tier**: smtp-source speaks plain SMTP to the instance's peer listener. For this run
  only, that listener does not require TLS (``-o smtpd_tls_security_level=none`` in master.cf) and
  main.cf sets ``milter_macro_defaults`` so that Postfix hands the milter the macros of a verified
  peer (``{tls_version}``, ``{cert_subject}``, ``{cert_issuer}``: the peer certificate's CN).
  Postfix uses a default only when the session has no value of its own. The milter itself and its
  configuration are unchanged: it runs its whole policy, journals every message durably and tags it.
- **two tiers**: smtp-source → a peer operator's Postfix (holds the peer certificate, TLS client
  with connection reuse through tlsproxy) → the MSSanté instance (TLS required, client certificate
  verified against the test IGC chain) → smtp-sink. Nothing is relaxed.

Each configuration is measured with the milter attached and detached (``smtpd_milters`` empty, then
``postfix reload``): the ratio is the milter's cost. Throughput counts end to end, from the first
connection to the last ``status=sent`` at the sink. Added latency comes from the milter's own
``mssante_milter_stage_duration_seconds`` histograms, scraped before and after each milter run.
Measures, never asserts.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from tests.milter.lab import MilterLab
from tests.support.common import (
    free_port,
    listening,
    make_base_dir,
    random_loopback,
    remove_base_dir,
    wait_until,
)
from tests.support.postfix import PostfixInstance, smtp_tls_settings

from mssante.lab.pki import Pki, ensure_pki

REPO = Path(__file__).resolve().parents[2]
MESSAGES = 2000
SESSIONS = 20  # parallel SMTP sessions: Postfix's default_destination_concurrency_limit
SIZE = 2048  # octets of body per message
STAGE_METRIC = "mssante_milter_stage_duration_seconds"
_SENT = re.compile(r"status=sent")


def smtp_sink(address: str, port: int) -> subprocess.Popen[bytes]:
    """Postfix's smtp-sink on ``address:port``: answers 250 to everything, keeps nothing."""
    process = subprocess.Popen(
        ["smtp-sink", "-u", "postfix", "-4", f"{address}:{port}", "256"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_until(lambda: listening(address, port) or process.poll() is not None, 10, "smtp-sink")
    if process.poll() is not None:
        raise RuntimeError(f"smtp-sink exited with {process.returncode}")
    return process


@dataclass(frozen=True)
class Load:
    """One smtp-source run: what it sends and where."""

    address: str
    port: int
    sender: str
    recipient: str
    messages: int = MESSAGES
    sessions: int = SESSIONS


def send_and_wait(load: Load, last_hop: PostfixInstance, timeout: float = 300) -> dict[str, Any]:
    """Run smtp-source; wait until ``last_hop`` logged ``messages`` deliveries. Rates in messages/s."""
    mark = last_hop.log_mark()
    command = [
        "smtp-source", "-d", "-s", str(load.sessions), "-m", str(load.messages), "-l", str(SIZE),
        "-f", load.sender, "-t", load.recipient, "-M", "source.test", f"{load.address}:{load.port}",
    ]  # fmt: skip
    started = time.perf_counter()
    subprocess.run(command, check=True, timeout=timeout, capture_output=True)
    accepted = time.perf_counter() - started

    def delivered() -> bool:
        text = last_hop.log_text(mark)
        if "status=deferred" in text or "status=bounced" in text:
            raise RuntimeError(f"a benchmark message was not delivered\n{last_hop.log_tail()}")
        return len(_SENT.findall(text)) >= load.messages

    wait_until(delivered, timeout, lambda: f"{load.messages} deliveries\n{last_hop.log_tail()}", 0.1)
    total = time.perf_counter() - started
    return {
        "messages": load.messages,
        "sessions": load.sessions,
        "accept_seconds": round(accepted, 2),
        "end_to_end_seconds": round(total, 2),
        "messages_per_second": round(load.messages / total, 1),
    }


def scrape(lab: MilterLab) -> dict[str, dict[float, float]]:
    """The milter's stage histograms: stage -> {upper bound: cumulative count}; plus sums/counts."""
    url = f"http://{lab.address}:{lab.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    stages: dict[str, dict[float, float]] = {}
    for family in text_string_to_metric_families(text):
        if family.name != STAGE_METRIC:
            continue
        for sample in family.samples:
            stage = sample.labels.get("stage", "")
            bucket = stages.setdefault(stage, {})
            if sample.name.endswith("_bucket"):
                bucket[float(sample.labels["le"])] = sample.value
            elif sample.name.endswith("_sum"):
                bucket[-1.0] = sample.value  # the sum, kept under a key no bound uses
    return stages


def quantile(buckets: dict[float, float], q: float) -> float | None:
    """Prometheus-style histogram_quantile: linear interpolation inside the bucket reaching ``q``."""
    bounds = sorted(b for b in buckets if b >= 0)
    total = buckets.get(float("inf"), 0.0)
    if total <= 0:
        return None
    rank, previous_bound, previous_count = q * total, 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if bound == float("inf"):
                return previous_bound
            share = (rank - previous_count) / (count - previous_count) if count > previous_count else 0
            return previous_bound + (bound - previous_bound) * share
        previous_bound, previous_count = bound, count
    return None


def latency(
    before: dict[str, dict[float, float]], after: dict[str, dict[float, float]], n: int
) -> dict[str, Any]:
    """Per-stage p50/p99 (ms) of the observations made between two scrapes, and the total per message."""
    stages: dict[str, Any] = {}
    total_seconds = 0.0
    for stage, buckets in sorted(after.items()):
        old = before.get(stage, {})
        delta = {bound: value - old.get(bound, 0.0) for bound, value in buckets.items()}
        spent = delta.pop(-1.0, 0.0)
        if stage != "journal":  # timed inside eom: counted there already
            total_seconds += spent
        p50, p99 = quantile(delta, 0.5), quantile(delta, 0.99)
        stages[stage] = {
            "observations": int(delta.get(float("inf"), 0)),
            "p50_ms": None if p50 is None else round(p50 * 1000, 3),
            "p99_ms": None if p99 is None else round(p99 * 1000, 3),
        }
    return {"stages": stages, "milter_ms_per_message_mean": round(total_seconds * 1000 / max(n, 1), 3)}


class BenchLab(MilterLab):
    """The lab's MSSanté instance (no Dovecot), with smtp-sink as the next hop of every domain."""

    sink_process: subprocess.Popen[bytes] | None = None

    def start(self) -> BenchLab:
        self.sink_process = smtp_sink(self.sink.address, self.sink.port)
        self.config = self.write_config()
        self.python(["-m", "mssante.journal", "keygen", "--config", str(self.config)])
        self.start_journal()
        self.start_milter()
        self.postfix = PostfixInstance.create(
            self.base / "postfix", "mssante", address=self.address, port=self.peer_port
        )
        self.postfix.postconf(self.postfix_settings(self.postfix))
        self.milters = self.postfix.postconf_value("smtpd_milters")
        shutil.chown(self.postfix.data_dir, "postfix")
        self.postfix.start()
        return self

    def stop(self) -> None:
        try:
            super().stop()
        finally:
            if self.sink_process is not None:
                self.sink_process.kill()
                self.sink_process.wait(timeout=10)

    def attach(self, on: bool) -> None:
        """Attach or detach the milter. A restart, not a reload: after a reload, smtpd processes
        still serving a cached connection would keep the old setting for a while."""
        self.postfix.postconf({"smtpd_milters": self.milters if on else ""})
        self.postfix.stop()
        self.postfix.start()

    def plain(self, on: bool) -> None:
        """The benchmark-only relaxation of the peer listener (module docstring), on or off."""
        listener = f"{self.address}:{self.peer_port}/inet"
        pki = self.pki
        if on:
            self.postfix.runner.run(["postconf", "-c", str(self.postfix.config_dir), "-P",
                                     f"{listener}/smtpd_tls_security_level=none"])  # fmt: skip
            defaults = {"{tls_version}": "TLSv1.3", "{cert_subject}": pki.peer.cn, "{cert_issuer}": "bench"}
            value = ", ".join(f"{{ {name} = {v} }}" for name, v in defaults.items())
            self.postfix.postconf({"milter_macro_defaults": value})
        else:
            self.postfix.runner.run(["postconf", "-c", str(self.postfix.config_dir), "-PX",
                                     f"{listener}/smtpd_tls_security_level"])  # fmt: skip
            self.postfix.runner.run(
                ["postconf", "-c", str(self.postfix.config_dir), "-X", "milter_macro_defaults"]
            )
        self.postfix.reload()

    def journal_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for record in self.records():
            counts[record["type"]] = counts.get(record["type"], 0) + 1
        return counts


def peer_instance(base: Path, lab: BenchLab) -> PostfixInstance:
    """A peer operator's Postfix: plain SMTP in, TLS with the peer certificate out, connection reuse."""
    pki: Pki = lab.pki
    address = random_loopback()
    peer = PostfixInstance.create(base / "peer", "peer", address=address, port=free_port(address))
    route = peer.write_map("transport", {lab.local: f"smtp:[{lab.address}]:{lab.peer_port}"})
    peer.postconf({
        **smtp_tls_settings(pki.peer.fullchain, pki.peer.key, pki.chain, match=pki.hospital.cn),
        "smtp_tls_connection_reuse": "yes",
        "smtp_tls_loglevel": "0",
        "relay_domains": lab.local,
        "transport_maps": route,
        "smtpd_relay_restrictions": "permit_mynetworks, reject_unauth_destination",
    })  # fmt: skip
    shutil.chown(peer.data_dir, "postfix")
    peer.start()
    return peer


def _measure(
    lab: BenchLab, load: Load, last_hop: PostfixInstance, milter: bool, peer: PostfixInstance | None
) -> dict[str, Any]:
    lab.attach(milter)
    if peer is not None:  # no connection cached towards the restarted instance
        peer.stop()
        peer.start()
    if not milter:
        return send_and_wait(load, last_hop)
    before = scrape(lab)
    result = send_and_wait(load, last_hop)
    result["latency"] = latency(before, scrape(lab), load.messages)
    return result


def _pairs(lab: BenchLab, load: Load, peer: PostfixInstance | None, rounds: int) -> dict[str, Any]:
    """``rounds`` alternating bare/milter runs; the ratio of the summed rates."""
    runs: dict[str, list[dict[str, Any]]] = {"bare": [], "milter": []}
    for _ in range(rounds):
        runs["bare"].append(_measure(lab, load, lab.postfix, False, peer))
        runs["milter"].append(_measure(lab, load, lab.postfix, True, peer))
    bare = sum(r["messages_per_second"] for r in runs["bare"])
    with_milter = sum(r["messages_per_second"] for r in runs["milter"])
    return {**runs, "ratio": round(with_milter / bare, 3) if bare else None}


def run(messages: int = MESSAGES, rounds: int = 1) -> dict[str, Any]:
    """Both measurements (module docstring); the figures as a dict for ``make bench``."""
    base = make_base_dir("bench-postfix")
    lab: BenchLab | None = None
    peer: PostfixInstance | None = None
    try:
        pki = ensure_pki(REPO / ".cache" / "test-pki")
        (base / "mssante").mkdir(mode=0o755)
        lab = BenchLab(base / "mssante", pki)
        lab.start()
        sender, rcpt = f"bench@{lab.peer}", f"dr.martin@{lab.local}"
        lab.plain(True)
        plain = _pairs(lab, Load(lab.address, lab.peer_port, sender, rcpt, messages), None, rounds)
        lab.plain(False)
        peer = peer_instance(base, lab)
        load = Load(peer.address, peer.port, sender, rcpt, messages)
        tiers = _pairs(lab, load, peer, rounds)
        lab.attach(True)
        counts = lab.journal_counts()
        lab.stop_milter()
        lab.stop_journal()
        try:
            lab.python(["-m", "mssante.journal", "verify", "--dir", str(lab.base / "journal")])
            verified = True
        except RuntimeError:
            verified = False
        return {
            "plain_single_tier": plain,
            "two_tiers_mutual_tls": tiers,
            "journal_records": counts,
            "journal_verify_ok": verified,
            "settings": {"messages_per_run": messages, "sessions": SESSIONS, "body_octets": SIZE},
        }
    finally:
        try:
            if peer is not None:
                peer.stop()
        finally:
            if lab is not None:
                lab.stop()
            remove_base_dir(base)


if __name__ == "__main__":
    import json
    import sys

    print(json.dumps(run(int(sys.argv[1]) if len(sys.argv) > 1 else MESSAGES, 1), indent=1))
