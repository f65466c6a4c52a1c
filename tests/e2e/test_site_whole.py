"""The whole playbooks/site.yml converts a hospital host, and real mail crosses the real milter (issue 6).

A test host (its own network, mount and UTS namespaces, tests/support/hosts.py) plays the lab's
hospital: an ordinary Postfix (domain hopital-a.test) and an ordinary Dovecot run on its first
address. A lab.json written here describes it as `python3 -m mssante.lab up` would, and
`ansible-playbook -i inventories/lab playbooks/site.yml -e lab_dir=...` converts it with every role
(mssante, journal, trust list, milter, Postfix, Dovecot, monitoring) at their default paths, over
nsenter, with the production chroot and supervisor. Then a peer operator (this machine, on the
bridge, with the peer's IGC-Santé certificate) sends over mutual TLS to the MSSanté instance: the
real milter accepts it, Postfix delivers it to Dovecot over LMTP, and the application mailbox fetches
it over IMAP with its certificate, tags included; the journal verifies. Requirements: TRUST-3,
TRUST-6, TLS-1, TLS-3, AUTH-2, MSG-3, TRACE-1.
"""

from __future__ import annotations

import imaplib
import json
import shutil
import smtplib
import socket
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from email import message_from_bytes
from pathlib import Path
from typing import Any

import pytest
from tests.support.ansible import playbook
from tests.support.ansible import recap as host_recap
from tests.support.common import wait_until
from tests.support.hosts import HostNetwork, TestHost

from mssante.lab.pki import Leaf, Pki
from mssante.lab.trustlist import subject_dn, write_lab_list

pytestmark = [pytest.mark.devonly, pytest.mark.timeout(2400)]

REPO = Path(__file__).resolve().parents[2]
LOCAL_DOMAIN = "hopital-a.mssante.test"
ORDINARY_DOMAIN = "hopital-a.test"
PEER_SENDER = "dr.durand@clinique-b.mssante.test"
DPI = f"dpi@{LOCAL_DOMAIN}"
HOST_PYTHON = "/usr/bin/python3"

ORDINARY_MAIN_CF = """\
# The hospital's ordinary Postfix, as found before the conversion.
compatibility_level = 3.6
myhostname = mail.hopital-a.test
mydomain = hopital-a.test
myorigin = $mydomain
mydestination = $myhostname, hopital-a.test, localhost
inet_interfaces = {ordinary}
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
alias_maps =
alias_database =
home_mailbox = Maildir/
smtpd_peername_lookup = no
maillog_file = /var/log/postfix.log
"""

ORDINARY_DOVECOT_LOCAL = """\
# The hospital's ordinary Dovecot: its own address only, a log file.
listen = {ordinary}
log_path = /var/log/dovecot.log
"""


@dataclass
class Hospital:
    host: TestHost
    network: HostNetwork
    lab_dir: Path
    pki: Pki
    ordinary: str
    address: str
    first: subprocess.CompletedProcess[str]

    def fs(self, path: str) -> Path:
        return self.host.fs(path)


def _start_ordinary(host: TestHost, pki: Pki) -> None:
    host.fs("/etc/postfix/main.cf").write_text(ORDINARY_MAIN_CF.format(ordinary=host.address))
    chroot_etc = host.fs("/var/spool/postfix/etc")
    chroot_etc.mkdir(parents=True, exist_ok=True)
    for name in ("resolv.conf", "hosts", "services", "nsswitch.conf", "host.conf", "localtime"):
        source = host.fs(f"/etc/{name}")
        if source.exists():
            (chroot_etc / name).write_bytes(source.read_bytes())
    host.run(["useradd", "-m", "alice"])
    host.run(["postfix", "start"])
    # Debian's 10-ssl.conf names /etc/dovecot/private/dovecot.{pem,key} (its snakeoil pair).
    private = host.fs("/etc/dovecot/private")
    (private / "dovecot.pem").write_bytes(pki.hospital.fullchain.read_bytes())
    (private / "dovecot.key").write_bytes(pki.hospital.key.read_bytes())
    (private / "dovecot.key").chmod(0o600)
    host.fs("/etc/dovecot/local.conf").write_text(ORDINARY_DOVECOT_LOCAL.format(ordinary=host.address))
    host.run(["dovecot"])
    wait_until(lambda: _answers(host.address, 25) and _answers(host.address, 143), 30, "ordinary services")


def _answers(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=2):
            return True
    except OSError:
        return False


def _leaf(leaf: Leaf) -> dict[str, Any]:
    return {
        "cert": str(leaf.fullchain),
        "key": str(leaf.key),
        "cn": leaf.cn,
        "domain": leaf.domain,
    }


def _write_lab_json(lab_dir: Path, host: TestHost, address: str, pki: Pki) -> None:
    """The parts of lab.json (docs/lab.md) that inventories/lab reads, for this one host."""
    source = lab_dir / "trustlist" / "listeblanche.xml"
    write_lab_list(pki, source)
    hospital = {
        "netns": host.netns,
        "pid": host.anchor.pid if host.anchor else None,
        "enter": host.nsenter([]),
        "address": address,
        "ordinary_address": host.address,
        "smtp_port": 25,
        "submission_port": 587,
        "imap_port": 143,
        "mssante_domains": [LOCAL_DOMAIN],
        "internet_domains": [ORDINARY_DOMAIN],
        "mailboxes": [
            {
                "address": f"dr.martin@{LOCAL_DOMAIN}",
                "type": "PER",
                "password": None,
                "cert": None,
                "key": None,
            },
            {"address": f"secretariat.cardio@{LOCAL_DOMAIN}", "type": "ORG", "password": None},
            {"address": DPI, "type": "APP", "cert": str(pki.dpi.fullchain), "key": str(pki.dpi.key)},
        ],
    }
    lab = {
        "hosts": {"hospital": hospital},
        "pki": {
            "ca_chain": str(pki.chain),
            "personal_ca": str(pki.personal_chain),
            "crls": [str(a.crl) for a in (pki.root, pki.intermediate, pki.personal_ca)],
            "trustlist_signer_ca": str(pki.intermediate.cert),
            "operators": {name: _leaf(leaf) for name, leaf in pki.operators.items()},
        },
        "trustlist": {
            "source": str(source),
            "compiled_dir": str(host.fs("/var/lib/mssante/trustlist")),
            "signer": subject_dn(pki.trustlist_signer.cert),
        },
        "oauth": {"token_command": None, "introspection_url": None},
    }
    (lab_dir / "lab.json").write_text(json.dumps(lab, indent=2))


def site(lab_dir: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    # A snapshot of milters/: both runs build the wheel from the same sources while the checkout
    # changes under them (the role reinstalls on any change, by design).
    variables = ["-e", f"lab_dir={lab_dir}", "-e", f"mssante_wheel_source_dir={lab_dir / 'milters'}"]
    return playbook("site.yml", REPO / "inventories" / "lab", [*variables, *extra])


def recap(result: subprocess.CompletedProcess[str]) -> dict[str, int]:
    return host_recap(result, "hospital")


@pytest.fixture(scope="module")
def hospital(pki: Pki) -> Iterator[Hospital]:
    network = HostNetwork.create()
    try:
        host = network.add_host("hospital")
        address = f"{network.prefix}.250"
        host.run(["ip", "addr", "add", f"{address}/24", "dev", "eth0"])
        lab_dir = host.base / "lab"
        lab_dir.mkdir()
        shutil.copytree(
            REPO / "milters",
            lab_dir / "milters",
            ignore=shutil.ignore_patterns(".*", "__pycache__", "*.egg-info", "build", "dist"),
        )
        _start_ordinary(host, pki)
        _write_lab_json(lab_dir, host, address, pki)
        first = site(lab_dir)
        yield Hospital(host, network, lab_dir, pki, host.address, address, first)
    finally:
        network.destroy()


def _context(pki: Pki, leaf: Leaf | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki.chain))
    context.check_hostname = False
    if leaf is not None:
        context.load_cert_chain(str(leaf.fullchain), str(leaf.key))
    return context


def send(h: Hospital, leaf: Leaf | None, sender: str, rcpt: str, marker: str) -> tuple[int, str]:
    """One message to the MSSanté instance's port 25 as ``leaf``'s holder; the RCPT or DATA reply."""
    body = (
        f"From: <{sender}>\r\nTo: <{rcpt}>\r\nSubject: {marker}\r\nMessage-ID: <{marker}@lab.test>\r\n"
        f"\r\nHello {marker}.\r\n"
    )
    with smtplib.SMTP(h.address, 25, local_hostname="mx.clinique-b.test", timeout=60) as client:
        client.starttls(context=_context(h.pki, leaf))
        client.ehlo("mx.clinique-b.test")
        code, reply = client.mail(sender)
        if code != 250:
            return code, reply.decode()
        code, reply = client.rcpt(rcpt)
        if code != 250:
            return code, reply.decode()
        code, reply = client.data(body.encode())
        return code, reply.decode()


def fetch_app_mailbox(h: Hospital, marker: str) -> bytes | None:
    """The message whose Subject is ``marker`` in the APP mailbox, over IMAP with its certificate."""
    client = imaplib.IMAP4(h.address, 143, timeout=30)
    try:
        client.starttls(ssl_context=_context(h.pki, h.pki.dpi))
        client.authenticate("EXTERNAL", lambda _challenge: b"")
        client.select("INBOX", readonly=True)
        _, found = client.search(None, "SUBJECT", marker)
        numbers = found[0].split()
        if not numbers:
            return None
        _, data = client.fetch(numbers[-1], "(BODY.PEEK[])")
        first = data[0]
        assert isinstance(first, tuple)
        return bytes(first[1])
    finally:
        client.logout()


def test_site_converges_the_whole_hospital(hospital: Hospital) -> None:
    """Every role of site.yml converges on a host already running an ordinary Postfix and Dovecot."""
    result = hospital.first
    assert recap(result)["failed"] == 0, result.stdout[-8000:] + result.stderr[-3000:]
    assert recap(result)["changed"] > 0


def test_trust3_msg3_peer_mail_crosses_the_real_milter_to_imap_with_tags(hospital: Hospital) -> None:
    """A listed peer's message is accepted by the real milter, delivered by LMTP, fetched over IMAP tagged."""
    code, reply = send(hospital, hospital.pki.peer, PEER_SENDER, DPI, "whole-site-peer")
    assert code == 250, reply
    message = wait_until(
        lambda: fetch_app_mailbox(hospital, "whole-site-peer"), 60, "the message in the DPI mailbox"
    )
    parsed = message_from_bytes(message)
    tags = {name.lower(): value for name, value in parsed.items() if name.lower().startswith("x-mssante-")}
    assert tags, message[:2000]
    assert "mx.clinique-b.test" in message.decode(errors="replace")


def test_trust3_impostor_refused_by_the_real_milter(hospital: Hospital) -> None:
    """Control of the test above: the same CN from a foreign CA is refused with the milter's 5.7.1."""
    code, reply = send(hospital, hospital.pki.impostor, PEER_SENDER, DPI, "whole-site-impostor")
    assert code == 550 and "5.7.1" in reply, (code, reply)


def test_ordinary_instance_still_serves(hospital: Hospital) -> None:
    """The ordinary instance still accepts mail for its own domain (internet mail unchanged)."""
    with smtplib.SMTP(hospital.ordinary, 25, timeout=30) as client:
        client.ehlo("internet.test")
        assert client.mail("someone@ailleurs.test")[0] == 250
        assert client.rcpt(f"alice@{ORDINARY_DOMAIN}")[0] == 250


def test_trace1_journal_verifies_after_the_mail(hospital: Hospital) -> None:
    """TRACE-1: the journal written by the running owner verifies with its public key."""
    out = hospital.host.run(
        [
            "/opt/mssante/bin/mssante-journal",
            "verify",
            "--dir",
            "/var/lib/mssante/journal",
            "--public-key",
            "/etc/mssante/journal/signing.pub",
            "--json",
        ],
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_site_second_run_changes_nothing(hospital: Hospital) -> None:
    """Idempotence of the whole site.yml on the converted host."""
    second = site(hospital.lab_dir)
    assert recap(second) | {"ok": 0} == {"ok": 0, "changed": 0, "unreachable": 0, "failed": 0}, second.stdout[
        -8000:
    ]
