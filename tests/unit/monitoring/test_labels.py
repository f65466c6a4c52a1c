"""No label can carry an address, a domain or a certificate name (design.md principle 5, TRACE-2).

``check_exposition`` is applied to certcheck's real page built from the test PKI (whose CNs,
domains and addresses must appear nowhere on it), and shown to catch each kind of leak.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from tests.unit.monitoring.catalogue import SLUG, check_exposition, personal_data_kind

from mssante.certcheck import config as cfg
from mssante.certcheck.check import run_checks
from mssante.certcheck.metrics import registry_for
from mssante.configfile import Problems
from mssante.lab.pki import Pki, ensure_pki

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return ensure_pki(tmp_path_factory.mktemp("labels") / "pki", now=NOW)


def _certcheck_page(pki: Pki) -> str:
    section = {
        "certificates": {
            "operator": str(pki.hospital.fullchain),
            "igc_chain": str(pki.chain),
            "trustlist_ca": str(pki.chain),
            "personal_chain": str(pki.personal_chain),
        },
        "crls": [
            {"ca": "igc_organisations", "crl": str(pki.intermediate.crl)},
            {"ca": "igc_personnes", "crl": str(pki.personal_ca.crl), "issuer": str(pki.personal_chain)},
            {"ca": "foreign", "crl": str(pki.foreign_ca.crl)},  # not signed by the chain: valid 0
        ],
    }
    problems = Problems("test")
    config = cfg.from_section(section, problems)
    problems.raise_if_any()
    registry, _ = registry_for(run_checks(config, NOW))
    return generate_latest(registry).decode("utf-8")


def test_trace2_certcheck_page_labels_closed(pki: Pki) -> None:
    page = _certcheck_page(pki)
    assert check_exposition(page, {"ca": {"igc_organisations", "igc_personnes", "foreign"}}) == []
    assert check_exposition(page) == []  # without the configured names: the slug rule holds too


def test_trace2_certcheck_page_names_no_certificate(pki: Pki) -> None:
    """No CN, domain, address or organisation of the PKI appears anywhere on the page."""
    page = _certcheck_page(pki)
    leaves = [pki.hospital, pki.peer, pki.personal, pki.dpi, pki.trustlist_signer]
    names = {leaf.cn for leaf in leaves} | {leaf.domain for leaf in leaves if leaf.domain}
    names |= {leaf.email for leaf in leaves if leaf.email}
    names |= {pki.root.cn, pki.intermediate.cn, pki.personal_ca.cn, pki.foreign_ca.cn}
    assert [name for name in names if name.lower() in page.lower()] == []


def _page(label: str, value: str, name: str = "mssante_crl_valid") -> str:
    registry = CollectorRegistry()
    Gauge(name, "test", [label], registry=registry).labels(value).set(1)
    return generate_latest(registry).decode("utf-8")


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        ("dr.martin@hopital-a.mssante.test", "an address"),
        ("hopital-a.mssante.test", "a domain"),
        ("mx.clinique-b.test", "a domain"),
        ("CN=TEST AC IGC-SANTE ORGANISATIONS,OU=IGC-SANTE TEST", "a distinguished name"),
        ("192.0.2.10", "an IP address"),
    ],
)
def test_trace2_checker_catches_personal_data(value: str, kind: str) -> None:
    """A leak is reported on a catalogue series and on any other series of the page."""
    problems = check_exposition(_page("ca", value))
    assert any(kind in problem for problem in problems), problems
    other = check_exposition(_page("peer", value, name="python_other_info"))
    assert any(kind in problem for problem in other), other


def test_trace2_checker_catches_catalogue_violations() -> None:
    assert check_exposition(_page("ca", "igc_organisations")) == []  # control
    assert check_exposition(_page("ca", "TEST AC ORGANISATIONS")) == [
        "mssante_crl_valid: ca='TEST AC ORGANISATIONS' is outside its closed set"
    ]
    assert check_exposition(_page("ca", "other"), {"ca": {"igc_organisations"}}) == [
        "mssante_crl_valid: ca='other' is outside its closed set"
    ]
    assert check_exposition(_page("certificate", "operator")) == [
        "mssante_crl_valid: labels ['certificate'] != catalogue ['ca']"
    ]
    unknown = check_exposition(_page("x", "y", name="mssante_unknown"))
    assert unknown == ["mssante_unknown: not in the metric catalogue"]
    registry = CollectorRegistry()
    Counter("mssante_milter_errors", "test", ["stage"], registry=registry).labels("somewhere").inc()
    problems = check_exposition(generate_latest(registry).decode("utf-8"))
    assert "mssante_milter_errors_total: stage='somewhere' is outside its closed set" in problems
    registry = CollectorRegistry()
    Counter("mssante_mailboxes", "test", registry=registry).inc()
    problems = check_exposition(generate_latest(registry).decode("utf-8"))
    assert "mssante_mailboxes: type counter != catalogue gauge" in problems


@given(st.text(max_size=60))
def test_trace2_accepted_ca_name_is_never_personal(value: str) -> None:
    """Any ca name the configuration accepts passes the label check and looks like nothing personal."""
    if cfg.CA_NAME.match(value):
        assert SLUG.match(value)
        assert personal_data_kind(value) is None


@given(st.emails())
def test_trace2_no_address_is_a_valid_ca_name(address: str) -> None:
    assert not cfg.CA_NAME.match(address)
    assert personal_data_kind(address) == "an address"


def test_trace2_reason_and_outcome_checked_against_the_code_enums() -> None:
    """Without explicit sets, ``reason`` and ``outcome`` must be values of the producers' enums."""
    registry = CollectorRegistry()
    labels = ["direction", "decision", "reason"]
    decisions = Counter("mssante_milter_decisions", "test", labels, registry=registry)
    decisions.labels("inbound", "refuse", "peer-cn-not-listed").inc()  # control: a Reason value
    decisions.labels("inbound", "refuse", "made-up-reason").inc()
    assert check_exposition(generate_latest(registry).decode("utf-8")) == [
        "mssante_milter_decisions_total: reason='made-up-reason' is outside its closed set"
    ]
