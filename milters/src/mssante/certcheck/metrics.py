"""The certificate and CRL series of the metric catalogue, built from the latest :class:`Report`.

Labels come only from closed sets: ``certificate`` is a :class:`CertificateKind` value and ``ca`` a
configured slug (``config.CA_NAME``), never a certificate or CA name.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from mssante.certcheck.check import CrlState, Report

NOT_AFTER = "mssante_certificate_not_after_timestamp_seconds"
CRL_NEXT_UPDATE = "mssante_crl_next_update_timestamp_seconds"
CRL_LAST_REFRESH = "mssante_crl_last_refresh_timestamp_seconds"
CRL_VALID = "mssante_crl_valid"
LAST_RUN = "mssante_certcheck_last_run_timestamp_seconds"


def families(report: Report) -> Iterator[Metric]:
    """The metric families for one report, in a fixed order."""
    not_after = GaugeMetricFamily(
        NOT_AFTER,
        "End of validity (notAfter) of the first certificate to expire in the file, Unix time.",
        labels=["certificate"],
    )
    for cert in report.certificates:
        if cert.not_after is not None:
            not_after.add_metric([cert.kind.value], cert.not_after.timestamp())
    next_update = GaugeMetricFamily(
        CRL_NEXT_UPDATE,
        "nextUpdate of the CA's CRL, Unix time (only when its signature verified).",
        labels=["ca"],
    )
    refreshed = GaugeMetricFamily(
        CRL_LAST_REFRESH,
        "Last modification of the CA's CRL file, Unix time (only when its signature verified).",
        labels=["ca"],
    )
    valid = GaugeMetricFamily(
        CRL_VALID,
        "1 when the CA's CRL is readable, signed by the CA and within its dates, else 0.",
        labels=["ca"],
    )
    for crl in report.crls:
        if crl.next_update is not None:
            next_update.add_metric([crl.ca], crl.next_update.timestamp())
        if crl.refreshed is not None:
            refreshed.add_metric([crl.ca], crl.refreshed.timestamp())
        valid.add_metric([crl.ca], 1.0 if crl.state is CrlState.VALID else 0.0)
    last_run = GaugeMetricFamily(LAST_RUN, "When the certificate and CRL checks last ran, Unix time.")
    last_run.add_metric([], report.checked_at.timestamp())
    yield from (not_after, next_update, refreshed, valid, last_run)


class ReportCollector(Collector):
    """Serves the latest report; ``update`` swaps it in (thread-safe for the HTTP listener)."""

    def __init__(self, report: Report) -> None:
        self._lock = threading.Lock()
        self._report = report

    def update(self, report: Report) -> None:
        with self._lock:
            self._report = report

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            report = self._report
        return list(families(report))


def registry_for(report: Report) -> tuple[CollectorRegistry, ReportCollector]:
    """A fresh registry holding only the certcheck series (no process or platform collectors)."""
    registry = CollectorRegistry(auto_describe=True)
    collector = ReportCollector(report)
    registry.register(collector)
    return registry, collector
