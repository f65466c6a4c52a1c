"""The producers' real /metrics pages carry no address, domain or certificate name (issue 8, principle 5)."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from tests.unit.monitoring.catalogue import check_exposition

from mssante.delivery.metrics import DeliveryMetrics

REPO = Path(__file__).resolve().parents[3]


def test_milter_golden_page_after_a_conversation_is_clean() -> None:
    """The page pinned after a scripted conversation with real addresses, domains and CNs."""
    page = (REPO / "tests" / "milter" / "golden" / "metrics.txt").read_text(encoding="utf-8")
    assert "mssante_milter_decisions_total" in page
    assert check_exposition(page, {"version": {"VERSION"}}) == []


def test_delivery_tracker_page_is_clean() -> None:
    registry = CollectorRegistry()
    metrics = DeliveryMetrics(registry)
    metrics.outcomes.labels(outcome="deferred-then-delivered").inc()
    metrics.observe(stuck=2, pending=1)
    page = generate_latest(registry).decode()
    assert check_exposition(page) == []


def test_control_a_domain_in_a_label_is_caught() -> None:
    registry = CollectorRegistry()
    DeliveryMetrics(registry).outcomes.labels(outcome="hopital-a.mssante.test").inc()
    problems = check_exposition(generate_latest(registry).decode())
    assert any("looks like a domain" in p for p in problems), problems
