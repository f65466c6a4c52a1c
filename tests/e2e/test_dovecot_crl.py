"""End-to-end: CRLs of the client-certificate CAs (TLS-3, TLS-4; docs/dovecot.md, "CRLs").

The refresh script installs only verified, unexpired CRLs and rebuilds the CA bundles Dovecot reads with
``ssl_require_crl = yes``. An expiring CRL shows in the certificate checker's metrics while certificate
logins still work; once it expires, Dovecot refuses every certificate login of that CA, which is why the
metric must alert first.
"""

from __future__ import annotations

import imaplib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from tests.e2e.test_dovecot_harness import (
    ROOT,
    DovecotHost,
    client_context,
    imap_starttls,
    render_template,
    running_host,
    shared_pki,
)

from mssante.lab import x509util as xu
from mssante.lab.pki import Authority


@pytest.fixture(scope="module")
def crl_host() -> Iterator[DovecotHost]:
    with running_host(shared_pki()) as host:
        yield host


def _ca_sets(host: DovecotHost, published: Path) -> dict[str, list[dict[str, str]]]:
    pki = host.pki
    cas = {"root": pki.root, "organisations": pki.intermediate, "personnes": pki.personal_ca}

    def entry(name: str) -> dict[str, str]:
        return {"name": name, "cert": str(cas[name].cert), "crl_url": f"file://{published}/{name}.crl"}

    return {"app": [entry("organisations"), entry("root")], "personal": [entry("personnes"), entry("root")]}


def _refresh_script(host: DovecotHost) -> Path:
    published = host.base / "published"
    published.mkdir(exist_ok=True)
    variables = {
        **host.variables,
        "mssante_dovecot_crl_dir": str(host.base / "etc/dovecot/mssante/crl"),
        "mssante_dovecot_config_dir": str(host.base / "etc/dovecot"),
        "mssante_dovecot_client_ca_sets": _ca_sets(host, published),
        "mssante_dovecot_crl_timeout_seconds": 10,
    }
    target = host.base / "sbin/mssante-dovecot-crl-refresh"
    return render_template("usr/local/sbin/mssante-dovecot-crl-refresh", variables, target, 0o755)


def _publish(host: DovecotHost, name: str, authority: Authority, *, valid_for: timedelta) -> float:
    """Publish a CRL of ``authority`` (DER, as IGC-Santé does) valid until now + ``valid_for``."""
    key, _ = xu.ensure_key(authority.key)
    cert = xu.load_cert(authority.cert)
    assert cert is not None
    now = xu.utcnow()
    crl = xu.make_crl((cert, key), [], (now - timedelta(minutes=5), now + valid_for))

    (host.base / "published" / f"{name}.crl").write_bytes(crl.public_bytes(Encoding.DER))
    return (now + valid_for).timestamp()


def _publish_all(host: DovecotHost, organisations_valid_for: timedelta) -> float:
    pki = host.pki
    _publish(host, "root", pki.root, valid_for=timedelta(days=7))
    _publish(host, "personnes", pki.personal_ca, valid_for=timedelta(days=7))
    return _publish(host, "organisations", pki.intermediate, valid_for=organisations_valid_for)


def _run(script: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", str(script)], capture_output=True, text=True, check=False, timeout=60)


def _certcheck(host: DovecotHost) -> dict[str, float]:
    """The certificate checker's CRL series for the installed organisation CRL, as name -> value."""
    crl = host.base / "etc/dovecot/mssante/crl/organisations.crl.pem"
    env = dict(os.environ, PYTHONPATH=str(ROOT / "milters" / "src"))
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "mssante.certcheck",
            "--crl",
            f"organisations={crl},{host.pki.chain}",
            "--stdout",
        ],
        capture_output=True,
        text=True,
        check=False,
        env=env,
        timeout=60,
    )
    series = {}
    for line in out.stdout.splitlines():
        if line.startswith("mssante_crl_") and '{ca="organisations"}' in line:
            name, value = line.split()
            series[name.split("{")[0]] = float(value)
    return series


def _app_login(host: DovecotHost) -> imaplib.IMAP4:
    pki = host.pki
    client = imap_starttls(
        host.addresses["app"], client_context(pki, cert=pki.dpi.fullchain, key=pki.dpi.key)
    )
    client.authenticate("EXTERNAL", lambda _challenge: b"")
    return client


def test_tls3_expiring_crl_reported_before_it_blocks_logins(crl_host: DovecotHost) -> None:
    script = _refresh_script(crl_host)
    next_update = _publish_all(crl_host, organisations_valid_for=timedelta(seconds=20))
    result = _run(script)
    assert result.returncode == 0, result.stderr
    # Reported: the installed CRL's nextUpdate is exposed (an alert fires when it comes near) ...
    series = _certcheck(crl_host)
    assert series["mssante_crl_valid"] == 1
    assert abs(series["mssante_crl_next_update_timestamp_seconds"] - int(next_update)) <= 1
    # ... while certificate logins still work.
    _app_login(crl_host).logout()
    # Once the CRL has expired, the checker says so and Dovecot refuses the certificate login.
    deadline = time.monotonic() + 60
    while time.time() <= next_update + 1 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _certcheck(crl_host)["mssante_crl_valid"] == 0
    with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        _app_login(crl_host)
    # Recovery: a fresh CRL is installed by the next refresh and logins work again.
    _publish_all(crl_host, organisations_valid_for=timedelta(days=7))
    result = _run(script)
    assert result.returncode == 0, result.stderr
    assert "organisations: installed" in result.stdout
    crl_host.wait_log("reloading configuration")
    _app_login(crl_host).logout()


def test_tls3_expired_or_forged_crl_never_installed(crl_host: DovecotHost) -> None:
    script = _refresh_script(crl_host)
    _publish_all(crl_host, organisations_valid_for=timedelta(days=7))
    assert _run(script).returncode == 0
    installed = (crl_host.base / "etc/dovecot/mssante/crl/organisations.crl.pem").read_bytes()
    # An already expired CRL is refused and the installed one kept.
    _publish(crl_host, "organisations", crl_host.pki.intermediate, valid_for=timedelta(seconds=-60))
    result = _run(script)
    assert result.returncode == 1
    assert "organisations: expired" in result.stderr
    assert (crl_host.base / "etc/dovecot/mssante/crl/organisations.crl.pem").read_bytes() == installed
    # A CRL signed by another CA (published under the organisations name) is refused too.
    _publish(crl_host, "organisations", crl_host.pki.foreign_ca, valid_for=timedelta(days=7))
    result = _run(script)
    assert result.returncode == 1
    assert "signature does not verify" in result.stderr
    assert (crl_host.base / "etc/dovecot/mssante/crl/organisations.crl.pem").read_bytes() == installed
    _app_login(crl_host).logout()
