"""The certificate and CRL checker (TRUST-8 / TRACE-2 operational side: certificates and CRLs watched).

Uses the test PKI (``mssante.lab.pki``) built at a fixed instant, so that the whole metrics page is pinned
by a golden file, and a second PKI at the real time for the command-line runs.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from mssante.certcheck import config as cfg
from mssante.certcheck.check import CrlState, run_checks
from mssante.certcheck.metrics import registry_for
from mssante.configfile import ConfigError, Problems
from mssante.lab import x509util as xu
from mssante.lab.pki import Pki, ensure_pki

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
REFRESHED = NOW - timedelta(minutes=30)
GOLDEN = Path(__file__).parent / "monitoring" / "golden" / "certcheck.prom"
SRC = Path(__file__).resolve().parents[2] / "milters" / "src"


@dataclass(frozen=True)
class Lab:
    pki: Pki
    crl_dir: Path

    def section(self) -> dict[str, object]:
        """A certcheck section naming every certificate kind and three CRLs."""
        return {
            "certificates": {
                "operator": str(self.pki.hospital.fullchain),
                "igc_chain": str(self.pki.chain),
                "trustlist_ca": str(self.pki.chain),
                "personal_chain": str(self.pki.personal_chain),
            },
            "crls": [
                {"ca": "igc_organisations", "crl": str(self.crl_dir / "organisations.crl")},
                {
                    "ca": "igc_personnes",
                    "crl": str(self.crl_dir / "personnes.crl"),
                    "issuer": str(self.pki.personal_chain),
                },
                {"ca": "igc_racine", "crl": str(self.crl_dir / "racine.crl")},
            ],
        }


def _lab(base: Path, now: datetime) -> Lab:
    pki = ensure_pki(base / "pki", now=now)
    crl_dir = base / "crl"
    crl_dir.mkdir()
    for authority, name in (
        (pki.intermediate, "organisations"),
        (pki.personal_ca, "personnes"),
        (pki.root, "racine"),
    ):
        shutil.copyfile(authority.crl, crl_dir / f"{name}.crl")
        os.utime(crl_dir / f"{name}.crl", (REFRESHED.timestamp(), REFRESHED.timestamp()))
    return Lab(pki, crl_dir)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Lab:
    return _lab(tmp_path_factory.mktemp("certcheck-fixed"), NOW)


@pytest.fixture(scope="module")
def live_lab(tmp_path_factory: pytest.TempPathFactory) -> Lab:
    return _lab(tmp_path_factory.mktemp("certcheck-live"), datetime.now(UTC))


def _config(section: dict[str, object]) -> cfg.CertcheckConfig:
    problems = Problems("test")
    config = cfg.from_section(section, problems)
    problems.raise_if_any()
    return config


def _page(section: dict[str, object], now: datetime = NOW) -> str:
    registry, _ = registry_for(run_checks(_config(section), now))
    return generate_latest(registry).decode("utf-8")


def _samples(page: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(page)
        for s in family.samples
    }


def _sign_crl(lab: Lab, name: str, signer_key: Path, window: tuple[datetime, datetime]) -> Path:
    """A CRL naming the organisations CA as issuer, signed with ``signer_key``."""
    key = serialization.load_pem_private_key(signer_key.read_bytes(), password=None)
    issuer_cert = xu.load_cert(lab.pki.intermediate.cert)
    assert issuer_cert is not None
    crl = xu.make_crl((issuer_cert, key), [], window)  # type: ignore[arg-type]
    path = lab.crl_dir / name
    path.write_bytes(xu.crl_pem(crl))
    return path


def test_trace2_certcheck_golden_page(lab: Lab) -> None:
    """The whole page of a fresh registry, for every certificate kind and three valid CRLs."""
    assert _page(lab.section()) == GOLDEN.read_text(encoding="utf-8")


def test_trust8_expired_crl_reported_invalid(lab: Lab) -> None:
    """A correctly signed CRL past its nextUpdate: valid 0, its nextUpdate still shown."""
    expired = _sign_crl(
        lab, "expired.crl", lab.pki.intermediate.key, (NOW - timedelta(days=10), NOW - timedelta(days=3))
    )
    section = {"crls": [{"ca": "old", "crl": str(expired), "issuer": str(lab.pki.chain)}]}
    report = run_checks(_config(section), NOW)
    assert report.crls[0].state is CrlState.EXPIRED
    samples = _samples(_page(section))
    assert samples[("mssante_crl_valid", (("ca", "old"),))] == 0.0
    assert (
        samples[("mssante_crl_next_update_timestamp_seconds", (("ca", "old"),))]
        == (NOW - timedelta(days=3)).timestamp()
    )
    # Control: the same CRL checked before its nextUpdate is valid.
    earlier = run_checks(_config(section), NOW - timedelta(days=5))
    assert earlier.crls[0].state is CrlState.VALID


def test_trust8_forged_crl_never_trusted(lab: Lab) -> None:
    """A CRL naming the CA but signed by another key: valid 0 and none of its dates reported."""
    forged = _sign_crl(
        lab, "forged.crl", lab.pki.foreign_ca.key, (NOW - timedelta(hours=1), NOW + timedelta(days=7))
    )
    genuine = _sign_crl(
        lab, "genuine.crl", lab.pki.intermediate.key, (NOW - timedelta(hours=1), NOW + timedelta(days=7))
    )
    section = {
        "crls": [
            {"ca": "forged", "crl": str(forged), "issuer": str(lab.pki.chain)},
            {"ca": "genuine", "crl": str(genuine), "issuer": str(lab.pki.chain)},
        ]
    }
    report = run_checks(_config(section), NOW)
    assert [c.state for c in report.crls] == [CrlState.BAD_SIGNATURE, CrlState.VALID]
    samples = _samples(_page(section))
    assert samples[("mssante_crl_valid", (("ca", "forged"),))] == 0.0
    assert samples[("mssante_crl_valid", (("ca", "genuine"),))] == 1.0
    reported = {labels for (name, labels) in samples if name != "mssante_crl_valid"}
    assert (("ca", "forged"),) not in reported
    assert (("ca", "genuine"),) in reported


def test_trust8_crl_checked_against_wrong_issuer_file_refused(lab: Lab) -> None:
    """The organisations CRL verified against the personal chain (wrong CA) is not trusted."""
    section = {
        "crls": [
            {
                "ca": "org",
                "crl": str(lab.crl_dir / "organisations.crl"),
                "issuer": str(lab.pki.personal_chain),
            }
        ]
    }
    assert run_checks(_config(section), NOW).crls[0].state is CrlState.BAD_SIGNATURE


def test_trust8_tampered_crl_refused(lab: Lab) -> None:
    """One flipped byte in a DER CRL's signature makes it untrusted; the untouched DER copy passes."""
    crl = xu.load_crl(lab.crl_dir / "organisations.crl")
    assert crl is not None
    der = crl.public_bytes(serialization.Encoding.DER)
    (lab.crl_dir / "good.der").write_bytes(der)
    (lab.crl_dir / "bad.der").write_bytes(der[:-1] + bytes([der[-1] ^ 0x01]))
    section = {
        "certificates": {"igc_chain": str(lab.pki.chain)},
        "crls": [
            {"ca": "bad", "crl": str(lab.crl_dir / "bad.der")},
            {"ca": "good", "crl": str(lab.crl_dir / "good.der")},
        ],
    }
    states = {c.ca: c.state for c in run_checks(_config(section), NOW).crls}
    assert states == {"bad": CrlState.BAD_SIGNATURE, "good": CrlState.VALID}


def test_trust8_certificate_expiring_soon_reported(lab: Lab) -> None:
    """Five days before the operator certificate ends, its notAfter is what the page shows."""
    leaf = xu.load_cert(lab.pki.hospital.cert)
    assert leaf is not None
    soon = xu.not_after(leaf) - timedelta(days=5)
    page = _page({"certificates": {"operator": str(lab.pki.hospital.fullchain)}}, soon)
    value = _samples(page)[
        ("mssante_certificate_not_after_timestamp_seconds", (("certificate", "operator"),))
    ]
    assert value - soon.timestamp() == 5 * 86400
    expired = _page({"certificates": {"operator": str(lab.pki.expired.cert)}})
    value = _samples(expired)[
        ("mssante_certificate_not_after_timestamp_seconds", (("certificate", "operator"),))
    ]
    assert value < NOW.timestamp()


def test_unreadable_files_reported_not_invented(lab: Lab, tmp_path: Path) -> None:
    """A missing certificate has no series; a missing CRL is valid 0 with no dates."""
    section = {
        "certificates": {"operator": str(tmp_path / "missing.pem"), "igc_chain": str(lab.pki.chain)},
        "crls": [{"ca": "gone", "crl": str(tmp_path / "missing.crl")}],
    }
    report = run_checks(_config(section), NOW)
    assert report.problems == ["certificate operator: unreadable", "crl gone: unreadable"]
    samples = _samples(_page(section))
    assert ("mssante_certificate_not_after_timestamp_seconds", (("certificate", "operator"),)) not in samples
    assert samples[("mssante_crl_valid", (("ca", "gone"),))] == 0.0


@pytest.mark.parametrize(
    "label",
    [
        "TEST AC IGC-SANTE ORGANISATIONS",
        "hopital-a.mssante.test",
        "dr.martin@hopital-a.mssante.test",
        "CN=x",
        "Upper",
    ],
)
def test_trust8_ca_label_cannot_carry_a_name(label: str) -> None:
    """The ca label is a configured slug: a CN, domain, address or DN is refused at load time."""
    with pytest.raises(ConfigError, match="ca: must be a lower-case slug"):
        _config({"crls": [{"ca": label, "crl": "/x.crl", "issuer": "/x.pem"}]})
    assert _config({"crls": [{"ca": "igc_organisations", "crl": "/x.crl", "issuer": "/x.pem"}]}).crls


def test_config_problems_reported_together(tmp_path: Path) -> None:
    path = tmp_path / "mssante.yml"
    path.write_text(
        "schema: 1\ncertcheck:\n  certificates: {operatr: /a.pem}\n"
        "  crls: [{ca: a, crl: /a.crl}, {ca: a, crl: /b.crl, issuer: /c.pem}]\n"
        "  textfile: /tmp/out.txt\n  listen: localhost:99999\n  interval_seconds: 0\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as info:
        cfg.load(path)
    text = str(info.value)
    for fragment in ("'operatr' is not one of", "crls[0].issuer", "textfile", "listen", "interval_seconds"):
        assert fragment in text


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    return subprocess.run(
        [sys.executable, "-m", "mssante.certcheck", *args],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def _write_config(lab: Lab, tmp_path: Path, **extra: object) -> Path:
    path = tmp_path / "mssante.yml"
    path.write_text(yaml.safe_dump({"schema": 1, "certcheck": {**lab.section(), **extra}}), encoding="utf-8")
    return path


def test_trust8_cli_writes_textfile(live_lab: Lab, tmp_path: Path) -> None:
    """One run from the configuration file writes the .prom file node_exporter reads, exit 0."""
    out = tmp_path / "textfile" / "mssante_certcheck.prom"
    out.parent.mkdir()
    result = _run("--config", str(_write_config(live_lab, tmp_path, textfile=str(out))))
    assert result.returncode == 0, result.stderr
    samples = _samples(out.read_text(encoding="utf-8"))
    assert samples[("mssante_crl_valid", (("ca", "igc_organisations"),))] == 1.0
    assert [p.name for p in out.parent.iterdir()] == [out.name]


def test_trust8_cli_explicit_args_exit_1_on_problem(live_lab: Lab) -> None:
    pki = live_lab.pki
    result = _run(
        "--certificate", f"igc_chain={pki.chain}",
        "--crl", f"org={live_lab.crl_dir / 'organisations.crl'}",
        "--crl", f"wrong={live_lab.crl_dir / 'organisations.crl'},{pki.personal_chain}",
        "--stdout",
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.strip() == "mssante-certcheck: crl wrong: bad_signature"
    samples = _samples(result.stdout)
    assert samples[("mssante_crl_valid", (("ca", "org"),))] == 1.0
    assert samples[("mssante_crl_valid", (("ca", "wrong"),))] == 0.0


def test_cli_config_error_exit_2(tmp_path: Path) -> None:
    result = _run("--crl", "Bad Name=/x.crl,/y.pem", "--stdout")
    assert result.returncode == 2
    assert "lower-case slug" in result.stderr


def test_cli_unwritable_textfile_exit_2(live_lab: Lab, tmp_path: Path) -> None:
    """A text file that cannot be written is a job failure (2), not a reported problem (1)."""
    target = tmp_path / "missing-dir" / "mssante_certcheck.prom"
    result = _run("--certificate", f"igc_chain={live_lab.pki.chain}", "--textfile", str(target))
    assert result.returncode == 2
    assert "cannot write" in result.stderr


def _free_address() -> tuple[str, int]:
    host = f"127.{random.randint(1, 254)}.{random.randint(1, 254)}.{random.randint(1, 254)}"
    with socket.socket() as sock:
        sock.bind((host, 0))
        return host, sock.getsockname()[1]


@pytest.fixture
def listener(live_lab: Lab, tmp_path: Path) -> Iterator[str]:
    host, port = _free_address()
    config = _write_config(live_lab, tmp_path, listen=f"{host}:{port}", interval_seconds=3600)
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "mssante.certcheck", "--config", str(config)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        yield f"http://{host}:{port}/metrics"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_trust8_listener_serves_page(listener: str) -> None:
    """With ``listen`` the checker serves the same series over HTTP on the configured loopback address."""
    deadline = time.monotonic() + 20
    while True:
        try:
            with urllib.request.urlopen(listener, timeout=5) as response:
                page = response.read().decode("utf-8")
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    samples = _samples(page)
    assert samples[("mssante_crl_valid", (("ca", "igc_personnes"),))] == 1.0
    assert ("mssante_certificate_not_after_timestamp_seconds", (("certificate", "operator"),)) in samples
