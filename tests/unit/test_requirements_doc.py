"""docs/requirements.md stays true: every requirement ID is in the matrix, every path it names exists,
and its must-pass list is the one the audit enforces (issue 11)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
DOC = (REPO / "docs" / "requirements.md").read_text(encoding="utf-8")
# The steering repository's requirements (shared/ beside the checkout, as in CI), else the copy kept in
# tests/data (a clone on its own).
SHARED = REPO.parent / "shared" / "mssante" / "requirements.md"
REQUIREMENTS = SHARED if SHARED.exists() else REPO / "tests" / "data" / "requirements.md"


def _ids_of_requirements() -> set[str]:
    text = REQUIREMENTS.read_text(encoding="utf-8")
    return set(re.findall(r"^\| ([A-Z]+-\d+) \|", text, re.M))


def test_every_requirement_id_has_a_row() -> None:
    rows = set(re.findall(r"^\| ([A-Z]+-\d+) \|", DOC, re.M))
    assert _ids_of_requirements() - rows == set()


def test_every_path_named_exists() -> None:
    paths = set(re.findall(r"`((?:milters|roles|tests|playbooks|templates|docs)/[^` ]*)`", DOC))
    assert paths, "the matrix names no path"
    assert sorted(p for p in paths if not (REPO / p).exists()) == []


def test_must_pass_list_is_the_audits() -> None:
    block = DOC.split("<!-- must-pass -->")[1].split("<!-- /must-pass -->")[0]
    documented = {item.strip() for item in block.replace("\n", " ").split(",") if item.strip()}
    defaults = yaml.safe_load((REPO / "roles" / "mssante_audit" / "defaults" / "main.yml").read_text())
    assert documented == set(defaults["mssante_audit_must_pass"])
