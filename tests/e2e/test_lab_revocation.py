"""Issue 13 in the lab (TLS-4, TRUST-6): the revoked certificate is refused on the hospital's port 25.

The module builds its own lab (temporary directory, random tag; never the `make lab` one) with the
same steps as `playbooks/lab.yml`: `python3 -m mssante.lab up`, `playbooks/site.yml -i inventories/lab`,
then `python3 -m mssante.lab seed-revoked`, which seeds the PKI's revoked certificate (the peer's CN)
as one the peer served earlier with `mssante-revocation learn --seed` and runs the revocation job. The
revocation CRLs are the lab PKI's (file:// URLs), also listed for the certificate checker.
Peers connect from the peer host over real SMTP with mutual TLS. The same converted lab also shows
the lab's OAuth side end to end (AUTH-1): a token from `oauth.token_command` logs the mailbox's owner in
on the hospital's MSSanté IMAP listener through its Dovecot and the lab's introspection server.
"""

from __future__ import annotations

import base64
import contextlib
import imaplib
import json
import os
import re
import secrets
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from tests.support.ansible import playbook

from mssante.lab import x509util as xu
from mssante.lab.revocation import COMMAND, CONFIG, JOB_USER, fingerprint
from mssante.lab.scenario import Lab as ScenarioLab

# needs ansible-playbook (the development venv); converting the hospital takes minutes
pytestmark = [pytest.mark.devonly, pytest.mark.timeout(2400)]

REPO = Path(__file__).resolve().parents[2]
SRC = str(REPO / "milters" / "src")
ENV = {**os.environ, "PYTHONPATH": SRC}
RULES = REPO / "roles" / "mssante_monitoring" / "files" / "mssante-alerts.yml"
ORG_CA = "igc_sante_org"
KEPT_CRL = f"/var/lib/mssante/revocation/crls/{ORG_CA}.crl"
DENY_LIST = "/var/lib/mssante/revocation/ccert_access"
INSTANCE = "/etc/postfix-mssante"
SUPERVISOR = "/etc/supervisor/supervisord.conf"


class Lab(ScenarioLab):
    """The lab of the scenario (lab.json, commands inside its hosts) with the revocation steps."""

    def seed_revoked(self) -> dict[str, Any]:
        result = _run(
            [sys.executable, "-m", "mssante.lab", "seed-revoked", "--dir", str(self.directory), "--json"]
        )
        assert result.returncode in (0, 1), result.stdout + result.stderr
        return dict(json.loads(result.stdout))

    def revocation(self, *argv: str) -> subprocess.CompletedProcess[str]:
        """The hospital's revocation command, as the job's user (like its periodic job)."""
        return self.run_in("hospital", ["runuser", "-u", JOB_USER, "--", COMMAND, *argv, "--config", CONFIG])

    def send_from_peer(self, cert: str, key: str) -> tuple[int, str]:
        """An SMTP session from inside the peer to the hospital's MSSante address with this client
        certificate (mutual TLS), up to RCPT: its reply code (Postfix evaluates the client restrictions
        there) and text."""
        hospital, peer = self.host("hospital"), self.host("peer")
        session = {
            "server": hospital["address"],
            "ca": self.data["pki"]["ca_chain"],
            "cert": cert,
            "key": key,
            "ehlo": self.data["pki"]["operators"]["peer"]["cn"],
            "sender": peer["mailboxes"][0]["address"],
            "rcpt": hospital["mailboxes"][0]["address"],
        }
        result = self.run_in("peer", [sys.executable, "-c", PEER_SESSION, json.dumps(session)])
        assert result.returncode == 0, result.stdout + result.stderr
        answer = json.loads(result.stdout)
        return int(answer["code"]), str(answer["text"])


# Runs inside the peer host: STARTTLS with the client certificate, the hospital's chain verified
# against the IGC-Sante test chain (its name is the operator CN, the session targets its address).
PEER_SESSION = """
import json, smtplib, ssl, sys
s = json.loads(sys.argv[1])
context = ssl.create_default_context(cafile=s["ca"])
context.check_hostname = False
context.load_cert_chain(s["cert"], s["key"])
with smtplib.SMTP(s["server"], 25, local_hostname=s["ehlo"], timeout=30) as client:
    client.starttls(context=context)
    client.ehlo(s["ehlo"])
    code, text = client.mail(s["sender"])
    if code == 250:
        code, text = client.rcpt(s["rcpt"])
    print(json.dumps({"code": code, "text": text.decode(errors="replace")}))
"""


def _run(argv: Sequence[str], timeout: float = 1800) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, env=ENV, timeout=timeout, check=False)


def _revocation_vars(lab_dir: Path) -> dict[str, Any]:
    """The revocation CRLs of the lab PKI, and the kept one listed for the certificate checker."""
    crl_dir = lab_dir / "pki" / "crl"
    return {
        "mssante_revocation_crls": [
            {"ca": ORG_CA, "url": f"file://{crl_dir / 'igc-organisations.crl.pem'}"},
            {"ca": "igc_sante_root", "url": f"file://{crl_dir / 'igc-root.crl.pem'}"},
        ],
        "mssante_monitoring_certcheck_crls": [{"ca": ORG_CA, "crl": KEPT_CRL}],
    }


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    base = Path(tempfile.mkdtemp(prefix="mssante-labrev-", dir="/var/tmp"))
    base.chmod(0o755)
    lab_dir, tag = base / "lab", "r" + secrets.token_hex(3)[:5]
    try:
        built = _run(
            [sys.executable, "-m", "mssante.lab", "up", "--dir", str(lab_dir), "--tag", tag, "--json"]
        )
        assert built.returncode == 0, built.stdout + built.stderr
        extra = base / "revocation-vars.json"
        extra.write_text(json.dumps(_revocation_vars(lab_dir)))
        variables = ["-e", f"lab_dir={lab_dir}", "-e", f"@{extra}"]
        converted = playbook("site.yml", REPO / "inventories" / "lab", variables)
        assert converted.returncode == 0, converted.stdout[-6000:] + converted.stderr[-3000:]
        lab = Lab(lab_dir)
        seeded = lab.seed_revoked()
        assert seeded["ok"] and seeded["changed"], seeded
        yield lab
    finally:
        _run(
            [sys.executable, "-m", "mssante.lab", "down", "--dir", str(lab_dir), "--tag", tag, "--json"], 300
        )
        shutil.rmtree(base, ignore_errors=True)


def _assert_revoked_refused_valid_accepted(lab: Lab) -> None:
    pki = lab.data["pki"]
    code, out = lab.send_from_peer(pki["revoked"]["cert"], pki["revoked"]["key"])
    assert code == 554 and "revoked by its IGC-Sante authority" in out, out
    code, out = lab.send_from_peer(pki["operators"]["peer"]["cert"], pki["operators"]["peer"]["key"])
    assert code == 250 and "revoked" not in out, out


def test_tls4_lab_revoked_certificate_refused_on_port_25_valid_one_accepted(lab: Lab) -> None:
    pki = lab.data["pki"]
    assert pki["revoked"]["cn"] == pki["operators"]["peer"]["cn"]  # same CN: only the fingerprint differs
    _assert_revoked_refused_valid_accepted(lab)
    deny_list = lab.hospital_file(DENY_LIST).read_text()
    assert fingerprint(Path(pki["revoked"]["cert"])) in deny_list
    assert fingerprint(Path(pki["operators"]["peer"]["cert"])) not in deny_list
    learned = json.loads(lab.hospital_file("/var/lib/mssante/revocation/learned/learned.json").read_text())
    assert learned[fingerprint(Path(pki["revoked"]["cert"]))]["source"] == "seed"


def test_tls4_lab_deny_list_survives_restarts_and_a_second_seeding(lab: Lab) -> None:
    before = lab.hospital_file(DENY_LIST).read_text()
    for action in ("stop", "start"):
        done = lab.run_in("hospital", ["postfix", "-c", INSTANCE, action])
        assert done.returncode == 0, done.stderr
    restarted = lab.run_in("hospital", ["supervisorctl", "-c", SUPERVISOR, "restart", "all"])
    assert restarted.returncode == 0, restarted.stdout + restarted.stderr
    _wait_smtp(lab)
    _assert_revoked_refused_valid_accepted(lab)
    again = lab.seed_revoked()  # what a rerun of `make lab` does
    assert again["ok"] and again["changed"] is False, again
    assert lab.hospital_file(DENY_LIST).read_text() == before
    _assert_revoked_refused_valid_accepted(lab)


def _wait_smtp(lab: Lab) -> None:
    """Until the restarted instance and milter take a session again (the milter fails closed, 4xx)."""
    peer = lab.data["pki"]["operators"]["peer"]
    deadline = time.monotonic() + 120
    while True:
        try:
            if lab.send_from_peer(peer["cert"], peer["key"])[0] < 400:
                return
        except AssertionError:
            pass  # STARTTLS refused while the milter is away
        assert time.monotonic() < deadline, "the MSSante instance did not take mail again"
        time.sleep(0.5)


def _org_ca(lab: Lab) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
    pki_dir = Path(lab.data["pki"]["dir"])
    cert = x509.load_pem_x509_certificate((pki_dir / "ca" / "igc-organisations.pem").read_bytes())
    key = serialization.load_pem_private_key((pki_dir / "ca" / "igc-organisations.key").read_bytes(), None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return cert, key


def _revoked_entries(lab: Lab) -> list[tuple[int, Any]]:
    cert = x509.load_pem_x509_certificate(Path(lab.data["pki"]["revoked"]["cert"]).read_bytes())
    return [(cert.serial_number, xu.utcnow() - timedelta(days=9))]


def _next_update_metric(lab: Lab) -> float:
    """What the hospital's certificate checker reports for the kept CRL (the alert's input): one run of
    the checker its supervisor program runs (``--crl`` as in mssante_monitoring_certcheck_crls)."""
    python = str(Path(COMMAND).parent / "python")
    checker = [python, "-m", "mssante.certcheck", "--certificate", f"igc_chain={lab.data['pki']['ca_chain']}"]
    argv = ["runuser", "-u", JOB_USER, "--", *checker, "--crl", f"{ORG_CA}={KEPT_CRL}", "--stdout"]
    page = lab.run_in("hospital", argv)
    found = re.search(
        rf'^mssante_crl_next_update_timestamp_seconds{{[^}}]*ca="{ORG_CA}"[^}}]*}} (\S+)$', page.stdout, re.M
    )
    assert found, page.stdout + page.stderr
    return float(found.group(1))


def _assert_alert(next_update: float, scraped_at: float, tmp_path: Path, firing: bool) -> None:
    """MssanteCrlExpired by promtool on the scraped value, shifted to promtool's clock (0 at start)."""
    document = yaml.safe_load(RULES.read_text())
    for group in document["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(document, sort_keys=False))
    at = 600  # the evaluation time (seconds on promtool's clock): the scrape happened "now"
    value = at + (next_update - scraped_at)
    case = {
        "rule_files": ["rules.yml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    {
                        "series": f'mssante_crl_next_update_timestamp_seconds{{ca="{ORG_CA}"}}',
                        "values": f"{value}x20",
                    }
                ],
                "alert_rule_test": [
                    {
                        "eval_time": f"{at}s",
                        "alertname": "MssanteCrlExpired",
                        "exp_alerts": []
                        if not firing
                        else [
                            {
                                "exp_labels": {
                                    "ca": ORG_CA,
                                    "severity": "critical",
                                    "component": "certificates",
                                }
                            }
                        ],
                    }
                ],
            }
        ],
    }
    (tmp_path / "case.yml").write_text(yaml.safe_dump(case))
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: install Debian's prometheus (scripts/install-system-packages.sh)"
    result = subprocess.run(
        [promtool, "test", "rules", "case.yml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr  # promtool compares both ways


def test_tls4_lab_crl_past_next_update_raises_the_alert_and_still_denies(lab: Lab, tmp_path: Path) -> None:
    kept = lab.hospital_file(KEPT_CRL)
    original = kept.read_bytes()
    fresh = _next_update_metric(lab)
    _assert_alert(fresh, time.time(), tmp_path, firing=False)  # control: the kept CRL is current
    now = xu.utcnow()
    stale = xu.make_crl(
        _org_ca(lab), _revoked_entries(lab), (now - timedelta(days=8), now - timedelta(hours=1))
    )
    owner = kept.stat()
    try:
        # The CRL kept while it was current, its next update now passed (no newer one came).
        kept.write_bytes(xu.crl_pem(stale))
        os.chown(kept, owner.st_uid, owner.st_gid)
        scraped = _next_update_metric(lab)
        assert scraped < time.time()
        _assert_alert(scraped, time.time(), tmp_path, firing=True)
        built = lab.revocation("build")  # a stale CRL is still used for what it lists: a revocation is final
        assert built.returncode == 0, built.stderr
        _assert_revoked_refused_valid_accepted(lab)
    finally:
        kept.write_bytes(original)
        os.chown(kept, owner.st_uid, owner.st_gid)


def test_tls4_lab_crl_failing_verification_is_reported_and_not_trusted(lab: Lab) -> None:
    source = Path(lab.data["pki"]["dir"]) / "crl" / "igc-organisations.crl.pem"
    kept = lab.hospital_file(KEPT_CRL)
    original, kept_before = source.read_bytes(), kept.read_bytes()
    org_cert, _ = _org_ca(lab)
    foreign_key = serialization.load_pem_private_key(
        (Path(lab.data["pki"]["dir"]) / "ca" / "foreign-root.key").read_bytes(), None
    )
    assert isinstance(foreign_key, rsa.RSAPrivateKey)
    now = xu.utcnow()
    # Newer, in date, the organisations CA's name, but not its signature; it lists nothing (if it were
    # trusted, the revoked certificate would leave the deny-list: the refusal below would notice).
    forged = xu.make_crl((org_cert, foreign_key), [], (now - timedelta(minutes=1), now + timedelta(days=7)))
    try:
        source.write_bytes(xu.crl_pem(forged))
        job = lab.revocation("run")
        assert job.returncode == 1, job.stdout + job.stderr
        assert f"crl {ORG_CA}: refused" in job.stderr
        assert kept.read_bytes() == kept_before
        _assert_revoked_refused_valid_accepted(lab)
    finally:
        source.write_bytes(original)
    assert lab.revocation("run").returncode == 0  # control: the genuine CRL verifies


def _xoauth2_login(lab: Lab, user: str, token: str) -> str:
    """XOAUTH2 on the hospital's MSSante IMAP listener (STARTTLS, its chain verified); the answer."""
    context = ssl.create_default_context(cafile=lab.data["pki"]["ca_chain"])
    context.check_hostname = False  # reached by address; the chain is IGC-Sante's
    client = imaplib.IMAP4(lab.host("hospital")["address"], 143, timeout=30)
    try:
        client.starttls(ssl_context=context)
        payload = f"user={user}\x01auth=Bearer {token}\x01\x01".encode()
        try:
            client.authenticate("XOAUTH2", lambda _challenge: payload)
        except imaplib.IMAP4.error as refused:
            return f"NO {refused}"
        status, _ = client.select("INBOX")
        return f"OK {status}"
    finally:
        with contextlib.suppress(imaplib.IMAP4.error, OSError):
            client.logout()


def test_auth1_lab_token_command_logs_the_owner_in_over_imap(lab: Lab) -> None:
    mailbox = next(box for box in lab.host("hospital")["mailboxes"] if box["type"] == "PER")
    argv = [item.replace("{mailbox}", mailbox["address"]) for item in lab.data["oauth"]["token_command"]]
    token = _run(argv, 60).stdout.strip()
    assert len(token) > 3000
    owner = mailbox["owners"][0]
    assert _xoauth2_login(lab, owner, token) == "OK OK"
    forged = token[:-8] + base64.urlsafe_b64encode(b"forged").decode()[:8]
    assert _xoauth2_login(lab, owner, forged).startswith("NO")  # control: introspection decides
