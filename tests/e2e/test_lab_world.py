"""The lab's world (issue 9): `python3 -m mssante.lab up|status|down` builds four hosts, DNS and mail servers.

One lab for the module, under a temporary directory with a random tag (never the `make lab` one).
The last test takes it down and checks that nothing is left.
"""

from __future__ import annotations

import imaplib
import json
import os
import secrets
import shutil
import signal
import smtplib
import ssl
import subprocess
import sys
from collections.abc import Iterator, Sequence
from email.utils import make_msgid
from pathlib import Path
from typing import Any

import pytest
from tests.support.common import make_base_dir, remove_base_dir, wait_until

from mssante.lab import labjson
from mssante.lab.pki import Pki
from mssante.lab.system import alive
from mssante.trustlist import pipeline
from mssante.trustlist.settings import Settings

REPO = Path(__file__).resolve().parents[2]
SRC = str(REPO / "milters" / "src")
ENV = {**os.environ, "PYTHONPATH": SRC}
VERIFIED = 'Client CN "{cn}", Issuer "TEST AC IGC-SANTE ORGANISATIONS" (verified OK)'


def _lab(action: str, lab_dir: Path, *extra: str) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, "-m", "mssante.lab", action, "--dir", str(lab_dir), "--json", *extra],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=170,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return dict(json.loads(result.stdout))


class Lab:
    def __init__(self, directory: Path, tag: str, first: dict[str, Any]) -> None:
        self.dir = directory
        self.tag = tag
        self.first = first
        self.doc: dict[str, Any] = json.loads((directory / "lab.json").read_text())

    def host(self, name: str) -> dict[str, Any]:
        return dict(self.doc["hosts"][name])

    def inside(self, name: str, argv: Sequence[str], check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.host(name)["enter"], "env", f"PYTHONPATH={SRC}", *argv],
            capture_output=True,
            text=True,
            timeout=60,
            check=check,
        )

    def resolve(self, name: str, kind: str, record: str) -> list[str]:
        result = self.inside(name, [sys.executable, "-m", "mssante.lab.dns", kind, record], check=False)
        return result.stdout.split("\n")[:-1] if result.returncode == 0 else []

    def delivered(self, maildir: str, message_id: str, timeout: float = 30) -> str:
        new = Path(maildir) / "new"

        def found() -> str | None:
            for path in new.glob("*") if new.is_dir() else []:
                text = path.read_text(errors="replace")
                if message_id in text:
                    return text
            return None

        return wait_until(found, timeout, f"{message_id} in {new}")


def _sendmail(lab: Lab, host: str, sender: str, recipient: str) -> str:
    message_id = make_msgid(domain="lab-world.test")
    body = f"From: <{sender}>\nTo: <{recipient}>\nSubject: lab world\nMessage-ID: {message_id}\n\nhello\n"
    result = subprocess.run(
        [*lab.host(host)["enter"], "sendmail", "-f", sender, recipient],
        input=body,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return message_id


@pytest.fixture(scope="module")
def lab(pki: Pki) -> Iterator[Lab]:
    base = make_base_dir("lab-world")
    directory = base / "lab"
    # Seeded with the session's PKI (still valid files are kept: no key generation).
    shutil.copytree(pki.directory, directory / "pki", ignore=shutil.ignore_patterns(".lock"))
    tag = secrets.token_hex(3)
    try:
        yield Lab(directory, tag, _lab("up", directory, "--tag", tag))
    finally:
        _lab("down", directory)
        remove_base_dir(base)


def test_lab_dns_answers_mx_from_inside_each_host(lab: Lab) -> None:
    hospital = lab.host("hospital")
    for name in labjson.HOST_NAMES:
        assert lab.resolve(name, "MX", "hopital-a.mssante.test") == ["10 mx.hopital-a.test"], name
        assert lab.resolve(name, "A", "mx.hopital-a.test") == [hospital["address"]], name
        assert lab.resolve(name, "MX", "hopital-a.test") == ["10 mail.hopital-a.test"], name
        assert lab.resolve(name, "A", "mail.hopital-a.test") == [hospital["ordinary_address"]], name
        assert lab.resolve(name, "A", "mx.clinique-b.test") == [lab.host("peer")["address"]], name
        assert lab.resolve(name, "MX", "ailleurs.test") == ["10 mx.ailleurs.test"], name
        # Nothing leaves the machine: a name outside the lab gets no answer.
        assert lab.resolve(name, "A", "www.example.com") == [], name


def test_lab_hospital_ordinary_postfix_takes_internet_mail_into_dovecot(lab: Lab, pki: Pki) -> None:
    """internet <-> hopital-a.test: lab DNS MX, ordinary Postfix, Dovecot LMTP, IMAP; and back."""
    hospital = lab.host("hospital")
    user = hospital["ordinary_mailboxes"][0]
    assert user["address"].endswith("@hopital-a.test")
    message_id = _sendmail(lab, "internet", "alice@ailleurs.test", user["address"])
    lab.delivered(user["maildir"], message_id)
    context = ssl.create_default_context(cafile=str(pki.foreign_ca.cert))
    context.check_hostname = False  # reached by address; the certificate names mail.hopital-a.test
    with imaplib.IMAP4(hospital["ordinary_address"], hospital["imap_port"]) as imap:
        imap.starttls(context)
        imap.login(user["address"], user["password"])
        imap.select("INBOX")
        status, found = imap.search(None, "HEADER", "Message-ID", message_id)
        assert status == "OK" and found[0].split(), found
    # And back: the hospital's ordinary domain reaches the internet (MX through the lab DNS).
    alice = lab.host("internet")["ordinary_mailboxes"][0]
    reply_id = _sendmail(lab, "hospital", user["address"], alice["address"])
    received = lab.delivered(alice["maildir"], reply_id)
    assert "(using TLSv1.3" in received  # opportunistic TLS, no client certificate


def _peer_transaction(lab: Lab, pki: Pki, cert: bool) -> tuple[int, str]:
    peer = lab.host("peer")
    context = ssl.create_default_context(cafile=str(pki.chain))
    context.check_hostname = False  # reached by address; the certificate names mx.clinique-b.test
    if cert:
        context.load_cert_chain(str(pki.hospital.fullchain), str(pki.hospital.key))
    message_id = make_msgid(domain="lab-world.test")
    recipient = peer["mailboxes"][0]["address"]
    sender = "dr.martin@hopital-a.mssante.test"
    body = f"From: <{sender}>\r\nTo: <{recipient}>\r\nMessage-ID: {message_id}\r\n\r\nhi\r\n"
    client = smtplib.SMTP(peer["address"], peer["smtp_port"], local_hostname=pki.hospital.cn, timeout=30)
    with client as smtp:
        smtp.starttls(context=context)
        try:
            smtp.sendmail(sender, [recipient], body.encode())
        except smtplib.SMTPRecipientsRefused as refused:
            code, text = refused.recipients[recipient]
            return code, text.decode(errors="replace")
    return 250, lab.delivered(peer["mailboxes"][0]["maildir"], message_id)


def test_tls1_lab_peer_takes_mail_only_from_a_verified_client_certificate(lab: Lab, pki: Pki) -> None:
    code, delivered = _peer_transaction(lab, pki, cert=True)
    assert code == 250
    assert VERIFIED.format(cn=pki.hospital.cn) in delivered
    # Control: the same transaction without a client certificate is refused at RCPT.
    code, reply = _peer_transaction(lab, pki, cert=False)
    assert code == 554, reply
    assert "Access denied" in reply


def test_tls1_lab_peer_sends_with_its_certificate_and_secure_tls(lab: Lab, pki: Pki) -> None:
    """peer -> other through DNS MX, `secure` TLS matching the other's CN, the peer's client certificate."""
    other = lab.host("other")["mailboxes"][0]
    message_id = _sendmail(lab, "peer", "dr.durand@clinique-b.mssante.test", other["address"])
    delivered = lab.delivered(other["maildir"], message_id)
    assert VERIFIED.format(cn=pki.peer.cn) in delivered
    log = Path(lab.host("peer")["postfix_log"]).read_text()
    assert "Verified TLS connection established to mx.labo-c.test" in log


def test_lab_json_has_the_documented_shape(lab: Lab, pki: Pki) -> None:
    doc = lab.doc
    assert labjson.validate(doc) == []
    assert lab.first["lab"] == doc and lab.first["changed"] is True
    assert doc["tag"] == lab.tag and all(lab.tag in host["netns"] for host in doc["hosts"].values())
    for name, host in doc["hosts"].items():
        assert lab.inside(name, ["hostname"]).stdout.strip() == name
        by_pid = ["nsenter", "--target", str(host["pid"]), "--mount", "--uts", "--net", "hostname"]
        assert subprocess.run(by_pid, capture_output=True, text=True, check=True).stdout.strip() == name
    certificates = [
        *doc["pki"]["operators"].values(),
        *(doc["pki"][k] for k in ("impostor", "expired", "revoked")),
    ]
    for entry in certificates:
        assert Path(entry["cert"]).is_file() and Path(entry["key"]).is_file()
    assert (
        doc["pki"]["impostor"]["cn"] == doc["pki"]["revoked"]["cn"] == doc["pki"]["operators"]["peer"]["cn"]
    )
    assert doc["pki"]["expired"]["domain"] == "clinique-b.mssante.test"
    settings = Settings(ca_file=Path(doc["pki"]["trustlist_signer_ca"]), signer=doc["trustlist"]["signer"])
    listed = pipeline.read_list(Path(doc["trustlist"]["source"]).read_bytes(), settings).domains
    assert listed["clinique-b.mssante.test"].cns == ["mx.clinique-b.test", "mx2.clinique-b.test"]
    assert sorted(listed) == sorted(d for h in doc["hosts"].values() for d in h["mssante_domains"])
    hospital = doc["hosts"]["hospital"]
    inside = lab.inside("hospital", ["ip", "-4", "-o", "addr", "show", "dev", "eth0"]).stdout
    for key in ("address", "ordinary_address", "personal_address"):
        assert f" {hospital[key]}/24 " in inside, key
    types = {box["type"] for box in hospital["mailboxes"]}
    assert types == {"PER", "ORG", "APP"}
    # A broken document is caught (control).
    broken = json.loads(json.dumps(doc))
    del broken["hosts"]["peer"]["enter"]
    broken["pki"]["operators"]["hospital"]["cert"] = "relative.pem"
    assert labjson.validate(broken) == [
        "hosts.peer.enter: missing",
        "pki.operators.hospital.cert: unexpected value 'relative.pem'",
    ]


def _introspect(lab: Lab, token: str) -> dict[str, Any]:
    """Ask the lab's introspection server from inside the hospital, as its Dovecot does (mode post)."""
    script = (
        "import sys, urllib.parse, urllib.request\n"
        "body = urllib.parse.urlencode({'token': sys.stdin.read().strip()}).encode()\n"
        "print(urllib.request.urlopen(sys.argv[1], body, timeout=10).read().decode())\n"
    )
    url = lab.doc["oauth"]["introspection_url"]
    result = subprocess.run(
        [*lab.host("hospital")["enter"], sys.executable, "-c", script, url],
        input=token,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return dict(json.loads(result.stdout))


def test_auth1_lab_token_command_gives_a_token_the_hospital_introspection_accepts(lab: Lab) -> None:
    command = lab.doc["oauth"]["token_command"]
    mailbox = next(box for box in lab.host("hospital")["mailboxes"] if box["type"] == "PER")
    argv = [item.replace("{mailbox}", mailbox["address"]) for item in command]
    token = subprocess.run(
        argv, capture_output=True, text=True, env=ENV, timeout=60, check=True
    ).stdout.strip()
    assert len(token) > 3000  # a realistic size (Pro Sante Connect tokens are JWTs of several KB)
    answer = _introspect(lab, token)
    assert answer["active"] is True and answer["sub"] == mailbox["owners"][0]
    assert _introspect(lab, token[:-4] + "AAAA") == {"active": False}  # control: a forged token is not


def test_lab_rerun_and_status_change_nothing(lab: Lab) -> None:
    again = _lab("up", lab.dir)
    assert again["changed"] is False
    assert again["lab"] == lab.doc  # same hosts, same anchors, same addresses
    status = _lab("status", lab.dir)
    assert status["running"] is True and status["changed"] is False
    assert set(status["hosts"]) == set(labjson.HOST_NAMES)


def test_lab_up_revives_a_dead_anchor_without_touching_the_servers(lab: Lab) -> None:
    hospital = lab.host("hospital")
    master_pid = lab.dir / "hospital" / "upper" / "var_spool" / "postfix" / "pid" / "master.pid"
    postfix_before = int(master_pid.read_text())
    os.kill(hospital["pid"], signal.SIGKILL)
    wait_until(lambda: not alive(hospital["pid"]), 10, "the anchor to die")
    assert _lab("status", lab.dir)["running"] is False  # control: status notices
    again = _lab("up", lab.dir)
    assert again["changed"] is True
    revived = again["lab"]["hosts"]["hospital"]
    assert revived["pid"] != hospital["pid"] and alive(revived["pid"])
    assert revived["netns"] == hospital["netns"] and revived["address"] == hospital["address"]
    assert int(master_pid.read_text()) == postfix_before and alive(postfix_before)
    assert _lab("status", lab.dir)["running"] is True
    assert _lab("up", lab.dir)["changed"] is False
    lab.doc = json.loads((lab.dir / "lab.json").read_text())


def _mounts_under(directory: Path) -> list[str]:
    return [line for line in Path("/proc/self/mountinfo").read_text().splitlines() if str(directory) in line]


def test_lab_down_leaves_no_namespace_link_mount_or_process(lab: Lab) -> None:
    pids = [host["pid"] for host in lab.doc["hosts"].values()]
    dnsmasq = int((lab.dir / "dns" / "dnsmasq.pid").read_text())
    assert all(alive(pid) for pid in [*pids, dnsmasq])  # control: running now
    assert _mounts_under(lab.dir)
    assert _lab("down", lab.dir)["changed"] is True
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    assert f"mst-{lab.tag}-" not in netns
    assert not [link.name for link in Path("/sys/class/net").iterdir() if lab.tag in link.name]
    assert not _mounts_under(lab.dir)
    assert not [pid for pid in [*pids, dnsmasq] if alive(pid)]
    assert not lab.dir.exists()
    assert _lab("down", lab.dir)["changed"] is False
