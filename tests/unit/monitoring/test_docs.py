"""docs/monitoring.md documents every series of the catalogue, its labels, and the planned ones."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from tests.unit.monitoring.catalogue import CATALOGUE, Series

DOC = Path(__file__).resolve().parents[3] / "docs" / "monitoring.md"


def _row(name: str) -> str:
    rows = re.findall(rf"^\| `{re.escape(name)}` \|.*$", DOC.read_text(encoding="utf-8"), re.MULTILINE)
    assert len(rows) == 1, f"{name}: one table row in docs/monitoring.md"
    return rows[0]


@pytest.mark.parametrize("series", CATALOGUE.values(), ids=lambda series: series.name)
def test_trace2_series_documented_with_type_and_labels(series: Series) -> None:
    row = _row(series.name)
    assert f"| {series.type} |" in row
    for label, allowed in series.labels.items():
        assert f"`{label}`" in row
        if isinstance(allowed, frozenset):
            assert all(value in row for value in allowed), f"{series.name}: every value of {label} listed"
    assert ("(planned)" in row) == series.planned
