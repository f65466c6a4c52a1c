"""An exported bundle verifies offline with only its shipped verifier, in a fresh virtual environment.

The environment is `/usr/bin/python3 -m venv --system-site-packages`: Debian's python3-cryptography
and nothing of this project (the test checks that `import mssante` fails there). No network is used.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import zipfile
from pathlib import Path

from tests.unit.journal.helpers import accepted, make_journal
from tests.unit.journal.server_fixture import journal_cli

from mssante.journal.owner import Journal

EML = (
    b"From: dr.a@hopital-exemple.mssante.fr\nTo: dr.b@hopital-sud.mssante.fr\nSubject: x\n\n"
    b"Bonjour,\n..\nFin\n"
)


def fresh_venv(tmp_path: Path) -> Path:
    venv = tmp_path / "auditor-venv"
    subprocess.run(
        ["/usr/bin/python3", "-m", "venv", "--system-site-packages", str(venv)], check=True, timeout=120
    )
    python = venv / "bin" / "python"
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    probe = subprocess.run(
        [python, "-c", "import mssante"], cwd=tmp_path, env=clean, capture_output=True, check=False
    )
    assert probe.returncode != 0, "the auditor's environment must not see this project"
    return python


def test_trace2_bundle_verifies_in_a_fresh_venv_and_finds_the_eml(tmp_path: Path) -> None:
    journal: Journal = make_journal(tmp_path, 3)
    body = EML.split(b"\n\n", 1)[1].replace(b"\n", b"\r\n")
    message = accepted(42) | {"body_sha256": hashlib.sha256(body).hexdigest(), "message_id": "<eml@x>"}
    journal.append_batch([message])
    journal.checkpoint()
    journal.close()
    directory, public = str(tmp_path / "journal"), str(tmp_path / "keys" / "signing.pub")
    journal_cli(
        "export",
        "--dir",
        directory,
        "--public-key",
        public,
        "--format",
        "csv",
        "--out",
        str(tmp_path / "export.zip"),
    )
    proof = journal_cli("prove", "--dir", directory, "--public-key", public, "--message-id", "<eml@x>")
    (tmp_path / "proof.json").write_text(proof.stdout)
    (tmp_path / "message.eml").write_bytes(EML)
    with zipfile.ZipFile(tmp_path / "export.zip") as archive:
        archive.extractall(tmp_path / "auditor")
    bundle = tmp_path / "auditor" / "journal-export"
    python = fresh_venv(tmp_path)
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(python), "verify_bundle.py", *args],
            cwd=bundle,
            env=clean,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    ok = run(
        ".",
        "--public-key",
        public,
        "--eml",
        str(tmp_path / "message.eml"),
        "--proof",
        str(tmp_path / "proof.json"),
    )
    assert ok.returncode == 0, ok.stderr
    assert "OK: records 0..4" in ok.stdout and "1 record(s)" in ok.stdout and "<eml@x>" in ok.stdout
    assert "OK: record 4" in ok.stdout
    records = bundle / "records.jsonl"
    lines = records.read_bytes().split(b"\n")
    lines[2] = lines[2].replace(b'"size":1001', b'"size":1000')
    records.write_bytes(b"\n".join(lines))
    bad = run(".", "--public-key", public)
    assert bad.returncode == 1 and "root mismatch" in bad.stderr
    assert json.loads(proof.stdout)["index"] == 4
