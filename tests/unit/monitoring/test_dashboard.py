"""The provisionable Grafana dashboard: a well-formed dashboard whose queries name catalogue metrics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from tests.unit.monitoring.catalogue import CATALOGUE, promql_metric_names, series_for

ROOT = Path(__file__).resolve().parents[3]
DASHBOARD = ROOT / "roles" / "mssante_monitoring" / "files" / "grafana" / "mssante-dashboard.json"


def _dashboard() -> dict[str, Any]:
    data = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def _panels() -> list[dict[str, Any]]:
    return [panel for panel in _dashboard()["panels"] if panel["type"] != "row"]


def test_trace2_dashboard_is_a_provisionable_dashboard() -> None:
    dashboard = _dashboard()
    assert dashboard["uid"] == "mssante-operator"
    assert dashboard["title"]
    assert isinstance(dashboard["schemaVersion"], int) and dashboard["schemaVersion"] >= 36
    assert "id" not in dashboard or dashboard["id"] is None, "a provisioned dashboard carries no database id"
    variables = {variable["name"]: variable for variable in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    assert len(_panels()) >= 20


@pytest.mark.parametrize("panel", _panels(), ids=lambda panel: panel["title"])
def test_panel_queries_name_only_catalogue_metrics(panel: dict[str, Any]) -> None:
    assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
    assert set(panel["gridPos"]) == {"h", "w", "x", "y"}
    assert panel["targets"], "the panel queries something"
    for target in panel["targets"]:
        names = promql_metric_names(target["expr"])
        assert names, target["expr"]
        assert {name for name in names - {"up"} if series_for(name) is None} == set(), target["expr"]
        assert 'instance=~"$instance"' in target["expr"], "the host selector applies"


def test_every_catalogue_series_is_on_the_dashboard() -> None:
    shown = {
        series_for(name).name  # type: ignore[union-attr]
        for panel in _panels()
        for target in panel["targets"]
        for name in promql_metric_names(target["expr"]) - {"up"}
    }
    assert set(CATALOGUE) - shown == set()
