"""The shipped alert rules (TRUST-8, TRACE-2 operational side): promtool check and unit tests.

``promtool test rules`` runs alerts_test.yml and alerts_long_test.yml against a copy of the rules
without annotations (promtool compares annotations verbatim); every alert must have a case where it
fires and one where it stays quiet, a runbook, and a section in docs/monitoring.md.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.unit.monitoring.catalogue import CATALOGUE, promql_metric_names, series_for

ROOT = Path(__file__).resolve().parents[3]
RULES = ROOT / "roles" / "mssante_monitoring" / "files" / "mssante-alerts.yml"
TESTS = [Path(__file__).parent / "alerts_test.yml", Path(__file__).parent / "alerts_long_test.yml"]
DOC = ROOT / "docs" / "monitoring.md"
ANNOTATIONS = {"summary", "description", "runbook", "runbook_url"}


def _promtool() -> str:
    path = shutil.which("promtool")
    assert path, "promtool is missing: install Debian's prometheus (scripts/install-system-packages.sh)"
    return path


def _alerts() -> list[dict[str, Any]]:
    document = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return [rule for group in document["groups"] for rule in group["rules"] if "alert" in rule]


def test_trust8_promtool_check_rules() -> None:
    result = subprocess.run(
        [_promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, check=False, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(_alerts())} rules found" in result.stdout


def test_trust8_promtool_unit_tests(tmp_path: Path) -> None:
    """Every case of the promtool test files passes (firing and quiet)."""
    document = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    for group in document["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    (tmp_path / RULES.name).write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    for test in TESTS:
        shutil.copy(test, tmp_path / test.name)
    result = subprocess.run(
        [_promtool(), "test", "rules", *(test.name for test in TESTS)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
        timeout=170,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(TESTS)


def _cases() -> tuple[set[str], set[str]]:
    firing, quiet = set(), set()
    for test_file in TESTS:
        for test in yaml.safe_load(test_file.read_text(encoding="utf-8"))["tests"]:
            for case in test.get("alert_rule_test", []):
                (firing if case.get("exp_alerts") else quiet).add(case["alertname"])
    return firing, quiet


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    names = {rule["alert"] for rule in _alerts()}
    firing, quiet = _cases()
    assert names - firing == set(), "alerts never shown firing"
    assert names - quiet == set(), "alerts never shown quiet"
    assert (firing | quiet) - names == set(), "cases for alerts that do not exist"


@pytest.mark.parametrize("rule", _alerts(), ids=lambda rule: rule["alert"])
def test_alert_has_runbook_severity_and_doc_section(rule: dict[str, Any]) -> None:
    assert set(rule["annotations"]) == ANNOTATIONS
    assert len(rule["annotations"]["runbook"].split()) >= 15, "the runbook says what to do"
    assert rule["labels"]["severity"] in {"critical", "warning"}
    assert rule["labels"]["component"] in {"milter", "journal", "trustlist", "certificates", "delivery"}
    anchor = rule["alert"].lower()
    assert rule["annotations"]["runbook_url"] == f"docs/monitoring.md#{anchor}"
    headings = re.findall(r"^#+ (\S+)", DOC.read_text(encoding="utf-8"), re.MULTILINE)
    assert rule["alert"] in headings, "docs/monitoring.md has a section for the alert"


@pytest.mark.parametrize("rule", _alerts(), ids=lambda rule: rule["alert"])
def test_alert_uses_only_catalogue_metrics(rule: dict[str, Any]) -> None:
    names = promql_metric_names(rule["expr"])
    assert names, "the expression selects a metric"
    assert {name for name in names - {"up"} if series_for(name) is None} == set()
    assert all(name in CATALOGUE for name in names - {"up"})
