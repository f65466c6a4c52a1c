"""Prometheus metrics of the milter process (names from the agreed catalogue, closed-enum labels).

Everything is registered on an injected ``CollectorRegistry`` (a fresh one per test). No address,
domain, subject or certificate name ever becomes a label value.
"""

from __future__ import annotations

import enum
import importlib
import json
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from mssante import __version__
from mssante.milter.reasons import Decision, Direction

STAGES = ("connect", "helo", "envfrom", "envrcpt", "header", "eom", "journal")
ERROR_STAGES = ("adapter", "policy", "tagging", "journal", "config", "trustlist", "mailboxes")
MACROS = ("i", "auth_authen", "cert_subject", "tls_version", "daemon_port")
# Fallback closed list when the trust list package does not export its Outcome enum.
DEFAULT_OUTCOMES = (
    "switched",
    "unchanged",
    "refused-parse",
    "refused-signature",
    "refused-older",
    "refused-empty",
    "refused-shrink",
    "fetch-failed",
    "compile-failed",
)


class Metrics:
    """The milter's counters and histograms on one registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.decisions = Counter(
            "mssante_milter_decisions",
            "Milter decisions by direction, decision and reason.",
            ["direction", "decision", "reason"],
            registry=registry,
        )
        self.errors = Counter(
            "mssante_milter_errors", "Internal errors by stage.", ["stage"], registry=registry
        )
        self.stage_duration = Histogram(
            "mssante_milter_stage_duration_seconds",
            "Time spent per milter stage.",
            ["stage"],
            registry=registry,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
        )
        self.missing_macro = Counter(
            "mssante_milter_missing_macro",
            "Expected Postfix macros that did not arrive (see postfix_settings.yml).",
            ["macro"],
            registry=registry,
        )
        self.aggregated = Counter(
            "mssante_milter_refusals_aggregated",
            "Refusals of unauthenticated clients, journaled per window and reason.",
            ["reason"],
            registry=registry,
        )
        self.mailboxes = Gauge("mssante_mailboxes", "Mailboxes in the mailbox table.", registry=registry)
        for stage in ERROR_STAGES:
            self.errors.labels(stage=stage)
        for macro in MACROS:
            self.missing_macro.labels(macro=macro)
        build = Gauge("mssante_build_info", "Build information.", ["version"], registry=registry)
        build.labels(version=__version__).set(1)

    def decision(self, direction: Direction, decision: Decision) -> None:
        self.decisions.labels(
            direction=direction.value, decision=decision.action.value, reason=decision.reason.value
        ).inc()

    def error(self, stage: str) -> None:
        if stage not in ERROR_STAGES:
            raise ValueError(f"unknown error stage {stage!r}")
        self.errors.labels(stage=stage).inc()

    def missing(self, macro: str) -> None:
        if macro not in MACROS:
            raise ValueError(f"unknown macro {macro!r}")
        self.missing_macro.labels(macro=macro).inc()

    def observe(self, stage: str, seconds: float) -> None:
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}")
        self.stage_duration.labels(stage=stage).observe(seconds)


def outcomes() -> tuple[str, ...]:
    """The closed list of trust-list outcomes (the trust list's own enum when it exports one)."""
    try:
        module = importlib.import_module("mssante.trustlist.model")
    except ImportError:
        return DEFAULT_OUTCOMES
    enum_type = getattr(module, "Outcome", None)
    if isinstance(enum_type, type) and issubclass(enum_type, enum.Enum):
        return tuple(str(member.value) for member in enum_type)
    return DEFAULT_OUTCOMES


def _timestamp(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return None
    return None


class TrustlistCollector(Collector):
    """Trust-list gauges, read at scrape time from the live index and the directory's status.json."""

    def __init__(self, index: Callable[[], Any], status_file: Callable[[], Path]) -> None:
        self._index = index
        self._status_file = status_file

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            index = self._index()
        except Exception:
            index = None
        try:
            status = json.loads(self._status_file().read_text(encoding="utf-8"))
        except (OSError, ValueError):
            status = {}
        if not isinstance(status, dict):
            status = {}
        if index is not None:
            listed = [e for e in index.entries() if not e.local]
            entries, domains = status.get("entries"), status.get("domains")
            if not isinstance(entries, int) or not isinstance(domains, int):
                entries, domains = sum(max(len(e.dns), 1) for e in listed), len(listed)
            yield GaugeMetricFamily(
                "mssante_trustlist_entries", "Trust-list entries (domain, certificate).", value=entries
            )
            yield GaugeMetricFamily("mssante_trustlist_domains", "Trust-list domains.", value=domains)
        yield from self._status(index, status)

    def _status(self, index: Any, status: dict[str, Any]) -> Iterator[GaugeMetricFamily]:
        generated = _timestamp(status.get("generated"))
        if generated is None and index is not None:
            generated = index.generated.timestamp()
        for key, name in (
            ("generated", "mssante_trustlist_generated_timestamp_seconds"),
            ("last_success", "mssante_trustlist_last_success_timestamp_seconds"),
            ("last_attempt", "mssante_trustlist_last_attempt_timestamp_seconds"),
        ):
            value = generated if key == "generated" else _timestamp(status.get(key))
            if value is not None:
                yield GaugeMetricFamily(name, f"Trust list {key.replace('_', ' ')} time.", value=value)
        current = status.get("outcome")
        family = GaugeMetricFamily(
            "mssante_trustlist_last_outcome", "Outcome of the last trust-list update.", labels=["outcome"]
        )
        for outcome in outcomes():
            family.add_metric([outcome], 1.0 if outcome == current else 0.0)
        yield family
