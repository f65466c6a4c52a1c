"""playbooks/audit.yml against real Postfix instances: read-only, one result per requirement ID.

An MSSanté-like instance built here from design.md's settings passes the must-pass IDs; breaking one
setting makes exactly the matching ID fail (per-check mutation tests); a stock Postfix fails the
MSSanté IDs; and the host's files are byte-identical after the audit (issue 11). The IMAP listeners
of the mssante_dovecot role are found from its inventory variables and probed too (issue 7).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pytest
import yaml
from tests.e2e.test_dovecot_harness import running_host
from tests.support.common import free_port, make_base_dir, random_loopback, remove_base_dir, wait_until
from tests.support.postfix import PostfixInstance
from tests.unit.trustlist.helpers import sample_bytes, sign

from mssante.lab.pki import Pki

ROOT = Path(__file__).resolve().parents[2]
PLAYBOOK = ROOT / "playbooks" / "audit.yml"
pytestmark = pytest.mark.devonly  # drives ansible-playbook from the dev venv

MUST_PASS = set(
    yaml.safe_load((ROOT / "roles/mssante_audit/defaults/main.yml").read_text())["mssante_audit_must_pass"]
)


@dataclass
class Host:
    """A host laid out under one directory: every path the audit reads is a variable."""

    base: Path
    pki: Pki
    mssante: PostfixInstance
    ordinary_dir: Path
    domain: str = "hopital-a.mssante.test"

    @property
    def trust_dir(self) -> Path:
        return self.base / "state" / "trustlist"

    def variables(self) -> dict[str, Any]:
        return {
            "mssante_audit_postfix_config_dir": str(self.mssante.config_dir),
            "mssante_audit_ordinary_config_dir": str(self.ordinary_dir),
            "mssante_audit_domains": [self.domain],
            "mssante_audit_igc_chain": str(self.pki.chain),
            "mssante_audit_trustlist_dir": str(self.trust_dir / "current"),
            "mssante_audit_mssante_config": str(self.base / "etc-mssante" / "mssante.yml"),
            "mssante_audit_journal_verify_file": str(self.base / "state" / "self-verify.json"),
            "mssante_audit_crl_glob": str(self.base / "state" / "crls" / "*.crl"),
            "mssante_audit_backup_dir": str(self.base / "state" / "backups"),
            "mssante_audit_dovecot_config": str(self.base / "no-dovecot.conf"),
        }


def _mssante_settings(pki: Pki, trust_dir: Path, milter_socket: Path) -> dict[str, str]:
    """The sealed instance's settings from design.md (what mssante_postfix writes)."""
    return {
        "default_transport": "error:domain not in the MSSanté trust space",
        "local_transport": "error:domain not in the MSSanté trust space",
        "relay_transport": "error:domain not in the MSSanté trust space",
        "relayhost": "",
        "mydestination": "",
        "alias_maps": "",
        "transport_maps": f"hash:{trust_dir}/current/transport",
        "smtp_tls_policy_maps": f"hash:{trust_dir}/current/tls_policy",
        "smtp_tls_CAfile": str(pki.chain),
        "smtp_tls_CApath": "",
        "smtp_tls_cert_file": str(pki.hospital.fullchain),
        "smtp_tls_key_file": str(pki.hospital.key),
        "smtpd_tls_cert_file": str(pki.hospital.fullchain),
        "smtpd_tls_key_file": str(pki.hospital.key),
        "smtpd_tls_CAfile": str(pki.chain),
        "smtpd_tls_CApath": "",
        "tls_append_default_CA": "no",
        "smtpd_tls_ask_ccert": "yes",
        "smtpd_tls_security_level": "encrypt",
        "smtpd_tls_auth_only": "yes",
        "smtpd_tls_protocols": ">=TLSv1.2",
        "smtpd_tls_mandatory_protocols": ">=TLSv1.2",
        "smtpd_tls_mandatory_ciphers": "high",
        "smtpd_tls_ciphers": "high",
        "tls_high_cipherlist": "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!eNULL",
        "smtpd_tls_fingerprint_digest": "sha256",
        "smtpd_milters": "{ unix:" + str(milter_socket) + ", default_action=tempfail }",
        "disable_mime_output_conversion": "yes",
        "smtpd_forbid_bare_newline": "reject",
        "enable_long_queue_ids": "yes",
        "authorized_submit_users": "",
    }


def _compile_trust_list(pki: Pki, out: Path, local: str) -> None:
    source = out.parent / "listeblanche.xml"
    signer = pki.trustlist_signer
    source.write_bytes(sign(sample_bytes(), signer.key, [signer.cert]))
    done = subprocess.run(
        [sys.executable, "-m", "mssante.trustlist", "compile", "--source", str(source), "--out", str(out),
         "--ca", str(pki.chain), "--signer", pki.trustlist_signer.cn, "--local", local],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture(scope="module")
def host(pki: Pki) -> Iterator[Host]:
    base = make_base_dir("audit")
    try:
        state = base / "state"
        (state / "crls").mkdir(parents=True)
        (state / "backups" / "postfix" / "20261125T000000Z").mkdir(parents=True)
        (state / "backups" / "postfix" / "20261125T000000Z" / "manifest.json").write_text("{}")
        (state / "crls" / "igc_org.crl").write_bytes(pki.intermediate.crl.read_bytes())
        (state / "self-verify.json").write_text(json.dumps({"ok": True, "records": 3, "time": time.time()}))
        (base / "etc-mssante").mkdir()
        (base / "etc-mssante" / "mssante.yml").write_text(
            "schema: 1\ntrustlist:\n  source: /srv/listeblanche.xml\n  ca_file: /etc/mssante/tls/chain.pem\n"
            "  require_signature: true\n"
        )
        trust_dir = state / "trustlist"
        trust_dir.mkdir()
        _compile_trust_list(pki, trust_dir, "hopital-a.mssante.test")
        address = random_loopback()
        settings = _mssante_settings(pki, trust_dir, base / "milter.sock")
        mssante = PostfixInstance.create(
            base / "mssante", "mssante", address=address, port=25, settings=settings
        )
        mssante.postconf({
            "smtpd_client_restrictions": "check_ccert_access " + mssante.write_map("ccert_access", {}),
            "smtpd_sender_login_maps": mssante.write_map("sender_login", {}),
            "smtpd_sender_restrictions": "reject_authenticated_sender_login_mismatch",
        })  # fmt: skip
        mssante.add_smtpd_listener(587, {"smtpd_tls_security_level": "encrypt"})
        ordinary = PostfixInstance.create(
            base / "ordinary", "ordinary", address=address, port=free_port(address),
            settings={"mydestination": "hopital-a.test"},
        )  # fmt: skip
        milter = subprocess.Popen(
            ["/usr/bin/python3", "-m", "tests.support.noop_milter", f"unix:{base / 'milter.sock'}"], cwd=ROOT
        )
        try:
            wait_until((base / "milter.sock").exists, 10, "the milter socket")
            (base / "milter.sock").chmod(0o666)  # smtpd runs as postfix
            mssante.start()
            try:
                yield Host(base, pki, mssante, ordinary.config_dir)
            finally:
                mssante.stop()
        finally:
            milter.kill()
            milter.wait()
    finally:
        remove_base_dir(base)


def run_audit(variables: dict[str, Any], tmp_path: Path) -> dict[str, dict[str, str]]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    inventory = tmp_path / "inventory.yml"
    interpreter = "/usr/bin/python3"  # the host runtime runs the module, as on a hospital server
    inventory.write_text(
        "mssante:\n  hosts:\n    hospital:\n      ansible_connection: local\n"
        f"      ansible_python_interpreter: {interpreter}\n"
    )
    variables = variables | {"mssante_audit_report_dir": str(tmp_path / "report"), "ansible_become": False}
    (tmp_path / "vars.json").write_text(json.dumps(variables))
    done = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(inventory), str(PLAYBOOK),
         "-e", f"@{tmp_path / 'vars.json'}"],
        capture_output=True, text=True, cwd=ROOT, timeout=300, check=False,
        env=os.environ | {"ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"},
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    return {c["id"]: c for c in report["hosts"]["hospital"]["checks"]}


# Files Postfix itself rewrites whenever a client connects (not the audit's doing): its log, the
# listeners' lock files and the TLS PRNG exchange file. Everything else must stay byte-identical.
RUNTIME = re.compile(r"/log/|/spool/pid/|/prng_exch$|_scache")


def _digests(root: Path) -> dict[str, str]:
    return {
        str(path): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file() and not RUNTIME.search(str(path))
    }


def test_audit_converted_like_host_passes_must_pass_and_changes_nothing(host: Host, tmp_path: Path) -> None:
    before, master = _digests(host.base), host.mssante.master_pid()
    checks = run_audit(host.variables(), tmp_path)
    failing = {rid: c["evidence"] for rid, c in checks.items() if rid in MUST_PASS and c["status"] != "pass"}
    assert failing == {}
    assert _digests(host.base) == before  # read-only: nothing under the host's directories changed
    assert host.mssante.master_pid() == master  # and the service was neither restarted nor reloaded
    assert host.mssante.queue_ids() == []  # the probes queued no mail
    junit = ElementTree.parse(tmp_path / "report" / "report.junit.xml").getroot()
    cases = {case.get("name", "").split()[0]: case for case in junit.iter("testcase")}
    assert set(cases) == set(checks)
    assert all(not list(cases[rid]) for rid in MUST_PASS)  # no failure/error/skipped element
    dom = _render_in_chromium(tmp_path / "report" / "report.html", tmp_path / "chromium")
    for rid in MUST_PASS:
        assert f'data-id="{rid}" data-status="pass"' in dom
    assert dom.count("<tr data-id=") == len(checks)


def _render_in_chromium(page: Path, profile: Path) -> str:
    """The report as headless Chromium builds its DOM (a page that does not parse renders nothing)."""
    done = subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
         "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "<table>" in done.stdout and "MSSanté compliance audit" in done.stdout
    return done.stdout


# (the IDs that must turn to fail, the change). One setting, one ID, with one exception: a listener can
# only negotiate TLS 1.1 with suites TLS 1.2 would not use (CBC), so allowing TLS 1.1 cannot be observed
# without also allowing weak suites (TLS-2).
MUTATIONS = [
    ({"TRUST-6"}, {"smtpd_tls_CAfile": "/etc/ssl/certs/ca-certificates.crt"}),
    ({"TRUST-6"}, {"smtpd_milters": "unix:{base}/milter.sock"}),  # attached, but not failing closed
    ({"TRUST-6"}, {"smtpd_tls_security_level": "may"}),
    ({"TRUST-7"}, {"default_transport": "smtp"}),
    ({"TRUST-7"}, {"smtp_tls_CApath": "/etc/ssl/certs"}),
    ({"TLS-1", "TLS-2"}, {"smtpd_tls_protocols": ">=TLSv1", "smtpd_tls_mandatory_protocols": ">=TLSv1",
                          "tls_high_cipherlist": "ECDHE+AESGCM:ECDHE+AES:!aNULL"}),
    ({"TLS-2"}, {"tls_high_cipherlist": "ALL:!aNULL:!eNULL"}),
    ({"TLS-4"}, {"smtpd_client_restrictions": ""}),
    ({"AUTH-3"}, {"smtpd_sender_restrictions": ""}),
    ({"MSG-2"}, {"disable_mime_output_conversion": "no"}),
]  # fmt: skip


@pytest.fixture(scope="module")
def baseline(host: Host, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return {k: c["status"] for k, c in run_audit(host.variables(), tmp_path_factory.mktemp("base")).items()}


@pytest.mark.parametrize(
    ("ids", "change"), MUTATIONS, ids=[f"{min(r)}-{next(iter(c))}" for r, c in MUTATIONS]
)
def test_audit_mutation_fails_exactly_its_id(
    host: Host, baseline: dict[str, str], tmp_path: Path, ids: set[str], change: dict[str, str]
) -> None:
    assert {baseline[rid] for rid in ids} == {"pass"}  # control: the checks pass before the change
    original = {name: host.mssante.postconf_value(name) for name in change}
    host.mssante.postconf({name: value.format(base=host.base) for name, value in change.items()})
    host.mssante.reload()
    try:
        after = {k: c["status"] for k, c in run_audit(host.variables(), tmp_path).items()}
    finally:
        host.mssante.postconf(original)
        host.mssante.reload()
    changed = {k for k in after if after[k] != baseline[k]}
    assert changed == ids, {k: (baseline[k], after[k]) for k in changed}
    assert {after[rid] for rid in ids} == {"fail"}


def test_audit_stock_postfix_fails_mssante_ids(pki: Pki, tmp_path: Path) -> None:
    base = make_base_dir("audit-stock")
    try:
        address = random_loopback()
        stock = PostfixInstance.create(base / "postfix", "stock", address=address, port=free_port(address),
                                       settings={"mydestination": "hopital-a.mssante.test"})  # fmt: skip
        stock.start()
        try:
            variables = {
                "mssante_audit_postfix_config_dir": str(base / "absent"),
                "mssante_audit_ordinary_config_dir": str(stock.config_dir),
                "mssante_audit_domains": ["hopital-a.mssante.test"],
                "mssante_audit_igc_chain": str(pki.chain),
                "mssante_audit_trustlist_dir": str(base / "absent"),
                "mssante_audit_mssante_config": str(base / "absent.yml"),
                "mssante_audit_journal_verify_file": str(base / "absent.json"),
                "mssante_audit_crl_glob": str(base / "absent" / "*.crl"),
                "mssante_audit_backup_dir": str(base / "absent"),
            }
            checks = run_audit(variables, tmp_path)
        finally:
            stock.stop()
    finally:
        remove_base_dir(base)
    assert {rid for rid in MUST_PASS if checks[rid]["status"] == "pass"} == set()
    assert "claims MSSanté domains" in checks["SEAL-1"]["evidence"]


def test_audit_probes_the_dovecot_role_imap_listeners(
    host: Host, baseline: dict[str, str], pki: Pki, tmp_path: Path
) -> None:
    """AUTH-1 and the TLS checks see the MSSanté IMAP listeners named by ``mssante_dovecot_listeners``
    (the Dovecot role's own variable), with no ``mssante_audit_extra_listeners`` in the inventory."""
    assert baseline["AUTH-1"] == "unknown"  # control: Postfix alone offers no authentication here
    with running_host(pki) as dovecot:
        listeners = dovecot.variables["mssante_dovecot_listeners"]
        checks = run_audit(host.variables() | {"mssante_dovecot_listeners": listeners}, tmp_path)
    assert checks["AUTH-1"]["status"] != "unknown", checks["AUTH-1"]
    assert "mechanisms" in checks["AUTH-1"]["evidence"]
    failing = {rid: c["evidence"] for rid, c in checks.items() if rid in MUST_PASS and c["status"] != "pass"}
    assert failing == {}  # TLS-1, TLS-2, TLS-3, TLS-5 hold on the IMAP listeners too
