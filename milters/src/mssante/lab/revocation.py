"""The lab's revoked certificate, seeded into the converted hospital (issue 13, TLS-4, docs/revocation.md).

The test PKI's revoked certificate carries the peer's CN. The lab treats it as a certificate the peer
served earlier: ``python3 -m mssante.lab seed-revoked --dir DIR`` runs, inside the hospital, the
documented entry point ``mssante-revocation learn --seed CERT --cn CN`` (as root: the store's files
are handed to its owner), then the revocation job once (``mssante-revocation run``, as the job's
user), which verifies the CRLs, probes the listed operators and rebuilds the port-25 deny-list.
Run it after ``playbooks/site.yml`` converted the hospital; a rerun seeds nothing new.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from mssante.lab.system import run_command

CONFIG = "/etc/mssante/mssante.yml"  # role mssante's default
COMMAND = "/opt/mssante/bin/mssante-revocation"  # role mssante's venv (mssante_venv_dir)
JOB_USER = "mssante"  # role mssante's mssante_user, who runs the periodic job
LEARNED_INDEX = "/var/lib/mssante/revocation/learned/learned.json"  # role default learned_dir


@dataclass(frozen=True)
class Seeding:
    """What the lab hands to the hospital: the certificate, the CN it was served for, how to enter."""

    cert: Path
    cn: str
    enter: list[str]
    config: str = CONFIG
    command: str = COMMAND
    user: str = JOB_USER


def fingerprint(cert_file: Path) -> str:
    """The SHA-256 certificate fingerprint of the first certificate in ``cert_file`` (Postfix's form)."""
    cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    return ":".join(f"{byte:02X}" for byte in cert.fingerprint(hashes.SHA256()))


def from_lab_json(root: Path) -> Seeding:
    document = json.loads((root / "lab.json").read_text())
    revoked = document["pki"]["revoked"]
    return Seeding(Path(revoked["cert"]), str(revoked["cn"]), list(document["hosts"]["hospital"]["enter"]))


def _learned(seeding: Seeding) -> dict[str, Any]:
    shown = run_command([*seeding.enter, "cat", LEARNED_INDEX], check=False)
    try:
        return dict(json.loads(shown.stdout)) if shown.returncode == 0 else {}
    except ValueError:
        return {}


def seed(seeding: Seeding) -> dict[str, Any]:
    """Seed the certificate (unless known), run the revocation job once; the result for ``--json``."""
    digest = fingerprint(seeding.cert)
    known = digest in _learned(seeding)
    if not known:
        argv = ["learn", "--config", seeding.config, "--seed", str(seeding.cert), "--cn", seeding.cn]
        run_command([*seeding.enter, seeding.command, *argv])
    job = run_command(
        [
            *seeding.enter,
            "runuser",
            "-u",
            seeding.user,
            "--",
            seeding.command,
            "run",
            "--config",
            seeding.config,
        ],
        check=False,
        timeout=300,
    )
    return {
        "changed": not known,
        "fingerprint": digest,
        "cn": seeding.cn,
        "job_exit": job.returncode,
        "job_log": job.stderr[-4000:],
        "ok": job.returncode == 0,
    }


def main(root: Path) -> int:
    """``python3 -m mssante.lab seed-revoked --dir DIR --json``: exit 1 when the job reported a problem."""
    result = seed(from_lab_json(root.absolute()))
    sys.stdout.write(json.dumps(result, indent=2, sort_keys=True) + "\n")
    return 0 if result["ok"] else 1
