"""Peer certificate revocation (TLS-4): verified CRLs, learned certificates, the fingerprint deny-list."""

from __future__ import annotations

import http.server
import json
import ssl
import subprocess
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from tests.support.common import free_port, random_loopback

from mssante.configfile import ConfigError
from mssante.lab.pki import Pki
from mssante.revocation.cli import load_settings
from mssante.revocation.cli import main as cli_main
from mssante.revocation.crls import CrlDownload, RefreshOutcome, refresh
from mssante.revocation.denylist import REJECT_TEXT, revoked, write_map
from mssante.revocation.learned import LearnedStore, fingerprint, probe


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _org_crl(pki: Pki) -> CrlDownload:
    return CrlDownload("igc_org", str(pki.intermediate.crl), pki.chain)


def test_tls4_crl_verified_against_its_ca_is_kept_once(pki: Pki, tmp_path: Path) -> None:
    first = refresh(_org_crl(pki), tmp_path)
    assert first.outcome is RefreshOutcome.UPDATED
    assert (tmp_path / "igc_org.crl").read_bytes() == pki.intermediate.crl.read_bytes()
    assert refresh(_org_crl(pki), tmp_path).outcome is RefreshOutcome.UNCHANGED


def test_tls4_crl_from_another_ca_or_tampered_is_refused_and_old_one_kept(pki: Pki, tmp_path: Path) -> None:
    assert refresh(_org_crl(pki), tmp_path).outcome is RefreshOutcome.UPDATED
    kept = (tmp_path / "igc_org.crl").read_bytes()
    foreign = refresh(CrlDownload("igc_org", str(pki.foreign_ca.crl), pki.chain), tmp_path)
    assert foreign.outcome is RefreshOutcome.REFUSED
    tampered = tmp_path / "tampered.pem"
    der = x509.load_pem_x509_crl(pki.intermediate.crl.read_bytes()).public_bytes(Encoding.DER)
    flipped = bytearray(der)
    flipped[len(flipped) // 2] ^= 0x01
    tampered.write_bytes(bytes(flipped))
    assert (
        refresh(CrlDownload("igc_org", str(tampered), pki.chain), tmp_path).outcome is RefreshOutcome.REFUSED
    )
    assert (tmp_path / "igc_org.crl").read_bytes() == kept


def test_tls4_expired_crl_is_refused(pki: Pki, tmp_path: Path) -> None:
    later = datetime.now(UTC) + timedelta(days=30)
    result = refresh(_org_crl(pki), tmp_path, now=later)
    assert (result.outcome, result.detail) == (RefreshOutcome.REFUSED, "expired")
    assert refresh(_org_crl(pki), tmp_path).outcome is RefreshOutcome.UPDATED  # control: valid now


def test_tls4_crl_fetched_over_http_and_fetch_failure_reported(pki: Pki, tmp_path: Path) -> None:
    address = random_loopback()
    handler = lambda *a: http.server.SimpleHTTPRequestHandler(*a, directory=str(pki.intermediate.crl.parent))  # noqa: E731
    server = http.server.ThreadingHTTPServer((address, free_port(address)), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://{address}:{server.server_port}/{pki.intermediate.crl.name}"
        ok = refresh(CrlDownload("igc_org", url, pki.chain), tmp_path / "a")
        missing = refresh(CrlDownload("igc_org", url + ".nope", pki.chain), tmp_path / "b")
    finally:
        server.shutdown()
        server.server_close()
    assert ok.outcome is RefreshOutcome.UPDATED
    assert missing.outcome is RefreshOutcome.FETCH_FAILED


def test_tls4_revoked_learned_certificate_denied_valid_one_with_same_cn_kept(
    pki: Pki, tmp_path: Path
) -> None:
    store = LearnedStore(tmp_path / "learned")
    assert pki.revoked.cn == pki.peer.cn
    assert store.add(_cert(pki.revoked.cert), pki.peer.cn, "seed")
    assert store.add(_cert(pki.peer.cert), pki.peer.cn, "probe")
    assert not store.add(_cert(pki.peer.cert), pki.peer.cn, "probe")  # already known
    crl = x509.load_pem_x509_crl(pki.intermediate.crl.read_bytes())
    found = revoked(list(store), {"igc_org": crl})
    assert [item.learned.fingerprint for item in found] == [fingerprint(_cert(pki.revoked.cert))]
    assert revoked(list(store), {}) == []  # control: without the CRL nothing is denied

    path = write_map(tmp_path / "ccert_access", found, None)
    assert oct(path.stat().st_mode & 0o777) == oct(Path(f"{path}.db").stat().st_mode & 0o777) == "0o644"

    def lookup(cert: Path) -> str:
        key = fingerprint(_cert(cert))
        config = ["-c", str(tmp_path / ".postfix")]
        out = subprocess.run(
            ["postmap", *config, "-q", key, f"hash:{path}"], check=False, capture_output=True
        )
        return out.stdout.decode().strip()

    assert lookup(pki.revoked.cert) == REJECT_TEXT
    assert lookup(pki.peer.cert) == ""  # the reissued, valid certificate keeps working


class _Sink:
    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        return "250 OK"


@pytest.fixture
def starttls_server(pki: Pki) -> Iterator[tuple[str, int]]:
    address = random_loopback()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki.peer.fullchain, pki.peer.key)
    controller = Controller(_Sink(), hostname=address, port=free_port(address), tls_context=context)
    controller.start()
    try:
        yield address, controller.port
    finally:
        controller.stop()


def test_tls4_probe_learns_the_certificate_a_listed_operator_serves(
    pki: Pki, starttls_server: tuple[str, int]
) -> None:
    address, port = starttls_server
    cert = probe(address, port, pki.chain, timeout=10)
    assert fingerprint(cert) == fingerprint(_cert(pki.peer.cert))
    with pytest.raises(ssl.SSLError):  # control: a server outside the IGC chain teaches nothing
        probe(address, port, pki.foreign_ca.cert, timeout=10)


def test_tls4_settings_name_the_learned_store_and_the_deny_list(tmp_path: Path) -> None:
    """The role renders `learned_dir` and `deny_list`; without them both live under `dir`."""
    config = tmp_path / "mssante.yml"
    config.write_text(
        "schema: 1\nrevocation:\n  dir: /srv/rev\n  deny_list: /srv/pf/ccert_access\n"
        "  learned_dir: /srv/learned\n",
        encoding="utf-8",
    )
    settings = load_settings(config)
    assert (settings.map_path, settings.learned) == (Path("/srv/pf/ccert_access"), Path("/srv/learned"))
    config.write_text(
        "schema: 1\nrevocation:\n  dir: /srv/rev\n  ca_file: /srv/igc.pem\n"
        "  crls: [{ca: igc_org, url: 'http://crl.example/org.crl'}]\n",
        encoding="utf-8",
    )
    settings = load_settings(config)
    assert (settings.map_path, settings.learned) == (Path("/srv/rev/ccert_access"), Path("/srv/rev/learned"))
    assert [(c.ca, c.issuer) for c in settings.crls] == [("igc_org", Path("/srv/igc.pem"))]  # issuer default
    config.write_text("schema: 1\nrevocation:\n  deny_list: relative/map\n", encoding="utf-8")
    with pytest.raises(ConfigError) as refused:
        load_settings(config)
    assert any("revocation.deny_list" in problem for problem in refused.value.problems)


def test_tls4_seed_then_build_denies_the_seeded_certificate(pki: Pki, tmp_path: Path) -> None:
    """The lab's entry point: `learn --seed CERT --cn CN` (a certificate the peer served earlier), then
    `build`; the deny-list is written even though no Postfix instance exists yet (private postmap)."""
    config = tmp_path / "mssante.yml"
    config.write_text(
        json.dumps(
            {
                "schema": 1,
                "revocation": {
                    "dir": str(tmp_path / "rev"),
                    "probe": False,
                    "crls": [{"ca": "igc_org", "url": str(pki.intermediate.crl), "issuer": str(pki.chain)}],
                    "postfix_config_dir": str(tmp_path / "no-instance-yet"),
                    "textfile": str(tmp_path / "metrics" / "mssante_revocation.prom"),
                },
            }
        ),
        encoding="utf-8",
    )
    (tmp_path / "metrics").mkdir()
    seed = ["learn", "--config", str(config), "--seed", str(pki.revoked.cert), "--cn", pki.revoked.cn]
    assert cli_main(seed) == 0
    assert cli_main(["run", "--config", str(config)]) == 0
    deny_list = (tmp_path / "rev" / "ccert_access").read_text(encoding="utf-8")
    assert fingerprint(_cert(pki.revoked.cert)) in deny_list
    assert fingerprint(_cert(pki.peer.cert)) not in deny_list  # control: the reissue is not denied
    page = (tmp_path / "metrics" / "mssante_revocation.prom").read_text(encoding="utf-8")
    assert "mssante_revocation_denied_certificates 1.0" in page
    assert cli_main(["learn", "--config", str(config), "--seed", str(pki.peer.cert)]) == 2  # no --cn
