"""The built-in lab (docs/lab.md): `python3 -m mssante.lab` and `playbooks/lab.yml` (TRUST-6)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from tests.support.common import make_base_dir, remove_base_dir

from mssante.lab.pki import Pki

REPO = Path(__file__).resolve().parents[2]


def _lab(action: str, lab_dir: Path) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(REPO / "milters" / "src")}
    result = subprocess.run(
        [sys.executable, "-m", "mssante.lab", action, "--dir", str(lab_dir), "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return dict(json.loads(result.stdout))


@pytest.fixture
def lab_dir(pki: Pki) -> Any:
    """A lab directory seeded with the session's PKI (still valid files are kept: no key generation)."""
    base = make_base_dir("lab")
    shutil.copytree(pki.directory, base / "lab" / "pki", ignore=shutil.ignore_patterns(".lock"))
    yield base / "lab"
    _lab("down", base / "lab")
    remove_base_dir(base)


def test_trust6_lab_shows_verified_peer_and_refused_impostor(lab_dir: Path) -> None:
    first = _lab("up", lab_dir)
    assert first["changed"] is True
    assert first["peer"]["reply_code"] == 250
    assert first["delivery"]["verified_peer_cn"] == "mx.clinique-b.test"
    assert first["delivery"]["issuer_cn"] == "TEST AC IGC-SANTE ORGANISATIONS"
    assert Path(first["delivery"]["file"]).is_file()
    assert first["impostor"]["reply_code"] == 554
    assert any("verified peer CN: mx.clinique-b.test" in line for line in first["summary"])

    second = _lab("up", lab_dir)
    assert second["changed"] is False
    assert second["listener"] == first["listener"]
    assert second["delivery"]["file"] != first["delivery"]["file"]  # a new message crossed

    assert _lab("down", lab_dir)["changed"] is True
    assert not lab_dir.exists()
    assert _lab("down", lab_dir)["changed"] is False


@pytest.mark.devonly
def test_lab_playbook_is_idempotent(lab_dir: Path) -> None:
    playbook = shutil.which("ansible-playbook", path=str(Path(sys.executable).parent))
    assert playbook is not None, "ansible-playbook is part of the dev venv (requirements.txt)"
    env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg")}

    def play(*extra: str) -> str:
        result = subprocess.run(
            [playbook, str(REPO / "playbooks" / "lab.yml"), "-e", f"lab_dir={lab_dir}", *extra],
            capture_output=True,
            text=True,
            env=env,
            cwd=REPO,
            timeout=300,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    assert "changed=1" in play()
    second = play()
    assert "changed=0" in second
    assert "verified peer CN: mx.clinique-b.test" in second
    assert "changed=1" in play("-e", "lab_state=absent")
    assert not lab_dir.exists()
