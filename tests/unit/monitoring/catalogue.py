"""The agreed metric catalogue (docs/monitoring.md) as data, and checks against it.

``check_exposition(text)`` takes a real ``/metrics`` page (Prometheus text format) and returns every
violation: an ``mssante_*`` series that is not in the catalogue, a wrong type, an unexpected label
name, or a label value outside its closed set; and, on every series of the page, a label value that
looks like an address, a domain, a distinguished name or an IP address (design.md principle 5).
Apply it to each producer's golden page: ``assert check_exposition(page) == []``.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

MILTER, JOURNAL, CERTCHECK, DELIVERY = "milter", "journal", "certcheck", "delivery"
REVOCATION = "revocation"

DIRECTIONS = frozenset({"inbound", "outbound", "unknown"})
DECISIONS = frozenset({"accept", "refuse", "tempfail"})
ERROR_STAGES = frozenset({"adapter", "policy", "tagging", "journal", "config", "trustlist", "mailboxes"})
DURATION_STAGES = frozenset({"connect", "helo", "envfrom", "envrcpt", "header", "eom", "journal"})
RECORD_TYPES = frozenset({"accepted", "refused", "refused-aggregate", "delivery", "mdn", "key", "purge"})
CERTIFICATES = frozenset({"operator", "igc_chain", "trustlist_ca", "personal_chain"})
DELIVERY_OUTCOMES = frozenset({"delivered", "deferred-then-delivered", "bounced", "expired", "not-queued"})

# Label values that come from a closed set defined in code or configuration (a Reason or Outcome enum,
# the configured CA names, the package version). Pass the actual sets to ``check_exposition`` when
# known; otherwise the value must at least match this pattern, which admits no dot, '@', '=', ','
# or space (so no domain, address, DN or IP address).
SLUG = re.compile(r"^[a-z_][a-z0-9_-]{0,63}$")
VERSION = re.compile(r"^\d+(\.\d+){1,3}((a|b|rc|\.post|\.dev)\d+)*$")
DYNAMIC = object()  # marker: the label's closed set comes from code or configuration


@dataclass(frozen=True)
class Series:
    """One family of the catalogue, named as exposed (counters with ``_total``)."""

    name: str
    type: str  # counter | gauge | histogram
    producer: str
    labels: Mapping[str, object] = field(default_factory=dict)  # name -> frozenset | DYNAMIC
    planned: bool = False

    @property
    def family(self) -> str:
        """The family name the text parser reports (counters lose ``_total``)."""
        return self.name.removesuffix("_total") if self.type == "counter" else self.name


def _s(name: str, kind: str, producer: str, planned: bool = False, **labels: object) -> Series:
    return Series(name, kind, producer, dict(labels), planned)


_SERIES = (
    _s("mssante_milter_decisions_total", "counter", MILTER,
       direction=DIRECTIONS, decision=DECISIONS, reason=DYNAMIC),
    _s("mssante_milter_errors_total", "counter", MILTER, stage=ERROR_STAGES),
    _s("mssante_milter_stage_duration_seconds", "histogram", MILTER, stage=DURATION_STAGES),
    _s("mssante_milter_missing_macro_total", "counter", MILTER, macro=DYNAMIC),
    _s("mssante_milter_refusals_aggregated_total", "counter", MILTER, reason=DYNAMIC),
    _s("mssante_trustlist_entries", "gauge", MILTER),
    _s("mssante_trustlist_domains", "gauge", MILTER),
    _s("mssante_trustlist_generated_timestamp_seconds", "gauge", MILTER),
    _s("mssante_trustlist_last_success_timestamp_seconds", "gauge", MILTER),
    _s("mssante_trustlist_last_attempt_timestamp_seconds", "gauge", MILTER),
    _s("mssante_trustlist_last_outcome", "gauge", MILTER, outcome=DYNAMIC),
    _s("mssante_mailboxes", "gauge", MILTER),
    _s("mssante_build_info", "gauge", MILTER, version=DYNAMIC),
    _s("mssante_journal_records_total", "counter", JOURNAL, type=RECORD_TYPES),
    _s("mssante_journal_append_errors_total", "counter", JOURNAL),
    _s("mssante_journal_commit_duration_seconds", "histogram", JOURNAL),
    _s("mssante_journal_tree_size", "gauge", JOURNAL),
    _s("mssante_journal_last_checkpoint_timestamp_seconds", "gauge", JOURNAL),
    _s("mssante_journal_verify_last_run_timestamp_seconds", "gauge", JOURNAL),
    _s("mssante_journal_verify_ok", "gauge", JOURNAL),
    _s("mssante_delivery_outcomes_total", "counter", DELIVERY, outcome=DELIVERY_OUTCOMES),
    _s("mssante_delivery_stuck_messages", "gauge", DELIVERY),
    _s("mssante_queue_messages", "gauge", DELIVERY),
    _s("mssante_queue_oldest_message_age_seconds", "gauge", DELIVERY),
    # Not in metrics.md: exported by the delivery tracker (journal appends failing, their backlog).
    _s("mssante_delivery_journal_errors_total", "counter", DELIVERY),
    _s("mssante_delivery_pending_records", "gauge", DELIVERY),
    # Not in metrics.md: delivery attempts to trust-space peers that failed in TLS
    # (handshake, certificate verification, CN match), read from Postfix's deferral texts.
    _s("mssante_delivery_tls_failures_total", "counter", DELIVERY),
    _s("mssante_certificate_not_after_timestamp_seconds", "gauge", CERTCHECK, certificate=CERTIFICATES),
    _s("mssante_crl_next_update_timestamp_seconds", "gauge", CERTCHECK, ca=DYNAMIC),
    _s("mssante_crl_last_refresh_timestamp_seconds", "gauge", CERTCHECK, ca=DYNAMIC),
    _s("mssante_crl_valid", "gauge", CERTCHECK, ca=DYNAMIC),
    # Not in metrics.md: written by mssante-revocation to its textfile (docs/revocation.md).
    _s("mssante_revocation_learned_certificates", "gauge", REVOCATION),
    _s("mssante_revocation_denied_certificates", "gauge", REVOCATION),
    _s("mssante_revocation_listed_peers_revoked", "gauge", REVOCATION),
    # Not in metrics.md: added by the monitoring pack so that a checker that stopped running is seen.
    _s("mssante_certcheck_last_run_timestamp_seconds", "gauge", CERTCHECK),
)  # fmt: skip

CATALOGUE: dict[str, Series] = {series.name: series for series in _SERIES}
_BY_FAMILY: dict[str, Series] = {series.family: series for series in _SERIES}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")

# What a label value must never look like, on any series of the page.
_PERSONAL = (
    ("an address", re.compile(r"@")),
    ("a domain", re.compile(r"[A-Za-z0-9-]\.[A-Za-z][A-Za-z0-9-]")),
    ("a distinguished name", re.compile(r"(^|,)\s*(CN|O|OU|C|L|ST|DC|E|emailAddress)=", re.IGNORECASE)),
    ("an IP address", re.compile(r"^\d{1,3}(\.\d{1,3}){3}$|^[0-9a-f]*:[0-9a-f:]+$", re.IGNORECASE)),
)


def series_for(name: str) -> Series | None:
    """The catalogue entry a sample or metric name belongs to (handles _total/_bucket/_sum/_count)."""
    if name in CATALOGUE:
        return CATALOGUE[name]
    for suffix in (*HISTOGRAM_SUFFIXES, "_created"):
        base = name.removesuffix(suffix)
        if base != name:
            series = CATALOGUE.get(base) or CATALOGUE.get(base + "_total")
            if series is not None and (suffix == "_created" or series.type == "histogram"):
                return series
    return None


def personal_data_kind(value: str) -> str | None:
    """What personal-looking thing ``value`` resembles, or None."""
    for kind, pattern in _PERSONAL:
        if pattern.search(value):
            return kind
    return None


def _value_allowed(label: str, value: str, allowed: object, dynamic: Mapping[str, Collection[str]]) -> bool:
    if allowed is DYNAMIC:
        if label in dynamic:
            return value in dynamic[label]
        return bool((VERSION if label == "version" else SLUG).match(value))
    assert isinstance(allowed, frozenset)
    return value in allowed


def _check_sample(
    sample_name: str, labels: Mapping[str, str], series: Series, dynamic: Mapping[str, Collection[str]]
) -> list[str]:
    problems = []
    names = set(labels)
    if sample_name.endswith("_bucket") and series.type == "histogram":
        names.discard("le")
    if names != set(series.labels):
        problems.append(f"{sample_name}: labels {sorted(names)} != catalogue {sorted(series.labels)}")
    for label, allowed in series.labels.items():
        value = labels.get(label)
        if value is not None and not _value_allowed(label, value, allowed, dynamic):
            problems.append(f"{sample_name}: {label}={value!r} is outside its closed set")
    return problems


def _family_type_problem(family_name: str, family_type: str, series: Series) -> str | None:
    if family_name.endswith("_created") and series.family != family_name:
        return None  # the client's creation-time gauge of a counter or histogram
    if family_type != series.type:
        return f"{family_name}: type {family_type} != catalogue {series.type}"
    return None


def code_enums() -> dict[str, frozenset[str]]:
    """The closed sets of the producers' enums (milter Reason, trust-list Outcome), when importable."""
    sets: dict[str, frozenset[str]] = {}
    try:
        from mssante.milter.reasons import Reason  # noqa: PLC0415

        sets["reason"] = frozenset(member.value for member in Reason)
    except ImportError:
        pass
    try:
        from mssante.trustlist.model import Outcome  # noqa: PLC0415

        sets["outcome"] = frozenset(member.value for member in Outcome)
    except ImportError:
        pass
    return sets


def check_exposition(text: str, dynamic: Mapping[str, Collection[str]] | None = None) -> list[str]:
    """Every violation of the catalogue and of the no-personal-data rule on a /metrics page.

    ``dynamic`` gives the closed sets of configured labels (``ca``) and overrides the producers'
    enums (``reason``, ``outcome``), which are used by default.
    """
    dynamic = {**code_enums(), **(dynamic or {})}
    problems: list[str] = []
    for family in text_string_to_metric_families(text):
        series = _BY_FAMILY.get(family.name) or series_for(family.name)
        if family.name.startswith("mssante_"):
            if series is None:
                problems.append(f"{family.name}: not in the metric catalogue")
                continue
            type_problem = _family_type_problem(family.name, family.type, series)
            if type_problem:
                problems.append(type_problem)
        for sample in family.samples:
            for label, value in sample.labels.items():
                kind = personal_data_kind(value) if label not in {"le", "quantile", "version"} else None
                if kind:
                    problems.append(f"{sample.name}: {label}={value!r} looks like {kind}")
            if series is not None and not sample.name.endswith("_created"):  # same labels as its counter
                problems += _check_sample(sample.name, sample.labels, series, dynamic)
    return problems


# PromQL words that are not metric names.
_PROMQL_KEYWORDS = frozenset(
    {"and", "or", "unless", "offset", "bool", "by", "without", "on", "ignoring", "group_left", "group_right"}
    | {"inf", "nan", "Inf", "NaN"}
)
_STRING = re.compile(r"\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*'|`[^`]*`")
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENTIFIER = re.compile(r"(?<![\w.$:])([a-zA-Z_:][a-zA-Z0-9_:]*)(?![\w:]|\s*\()")


def promql_metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (functions, keywords, labels and strings removed)."""
    text = _STRING.sub('""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers (and Grafana ${var} after strings went)
    text = re.sub(r"\[[^\]]*\]", " ", text)  # range and subquery durations
    text = _GROUPING.sub(" ", text)
    text = re.sub(r"\$\w+", " ", text)  # Grafana variables outside matchers
    return {name for name in _IDENTIFIER.findall(text) if name not in _PROMQL_KEYWORDS}
