"""End to end: convert a realistic ("dirty") hospital Postfix into an MSSanté operator (issue 6).

Each hospital is a ``TestHost`` (tests/support/hosts.py): its own mount, network and UTS namespaces
with copy-on-write /etc, spools, /var/lib, /run and /var/log, so the playbooks and the molecule
scenarios run against the default paths, with the production chroot, exactly as on a hospital host.
The ordinary instance and the MSSanté instance are real Postfix instances; the milter on the
MSSanté instance is a stand-in that refuses by policy (550 5.7.1), as the real one refuses an
unauthenticated client, except in the uninstall test, which runs the real Python side.
Requirements: TRUST-6, TRUST-7, TLS-1, TLS-2, TLS-3, TLS-5, AUTH-3, MSG-3.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.support.common import make_base_dir, random_loopback, remove_base_dir, run_command, wait_until
from tests.support.hosts import HostNetwork, TestHost

from mssante.lab.pki import Pki

pytestmark = [pytest.mark.devonly, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = REPO / ".venv" / "bin"
HOST_PYTHON = "/usr/bin/python3"
SAMPLE_LIST = REPO / "tests" / "data" / "listeblanche-sample.xml"
# The host's trees a conversion writes (check mode must leave them as they were).
WATCHED = (
    "/etc/postfix",
    "/etc/postfix-mssante",
    "/var/spool/postfix",
    "/var/spool/postfix-mssante",
    "/var/lib/postfix",
    "/var/lib/postfix-mssante",
    "/etc/mssante",
    "/var/lib/mssante",
    "/run/mssante",
)
ORDINARY = "127.0.10.1"  # the ordinary instance's address, inside the host's own network namespace
RELAY = "127.0.10.2"  # its relayhost (never reached)
LOCAL_DOMAIN = "hopital-a.mssante.test"
PEER_DOMAIN = "clinique-b.mssante.test"
MULTI_KEYS = {"multi_instance_wrapper", "multi_instance_enable", "multi_instance_directories"}
STUB_MILTER = r"""
import os, sys, Milter
class Stub(Milter.Base):
    def envfrom(self, sender, *args):
        if self.getsymval("{auth_authen}"):
            return Milter.CONTINUE
        self.setreply("550", "5.7.1", "MSSante policy stand-in: refused")
        return Milter.REJECT
os.umask(0)
Milter.factory = Stub
Milter.runmilter("stub", sys.argv[1], 30)
"""

PROBE = r"""
import json, smtplib, ssl, sys
a = json.loads(sys.argv[1])
steps = []
try:
    with smtplib.SMTP(a["address"], a["port"], timeout=20) as c:
        steps.append(["EHLO", *c.ehlo("probe.test")])
        if a["starttls"]:
            ctx = ssl.create_default_context(cafile=a["cafile"])
            ctx.check_hostname = False
            steps.append(["STARTTLS", *c.starttls(context=ctx)])
            steps.append(["TLS", 0, c.sock.version()])
            c.ehlo("probe.test")
        if a.get("login"):
            steps.append(["AUTH", *c.login(*a["login"])])
        if a["mail"] is not None:
            steps.append(["MAIL", *c.docmd("MAIL FROM:<%s>" % a["mail"])])
        if a["rcpt"] is not None:
            steps.append(["RCPT", *c.docmd("RCPT TO:<%s>" % a["rcpt"])])
        if a.get("data"):
            steps.append(["DATA", *c.data(b"Subject: probe\r\n\r\nprobe\r\n")])
        steps.append(["RSET", *c.rset()])
except (OSError, smtplib.SMTPException) as exc:
    steps.append(["ERROR", -1, str(exc)])
print(json.dumps([[n, c, t.decode("utf-8", "replace") if isinstance(t, bytes) else t] for n, c, t in steps]))
"""

# The plays run by ConvertHost.playbook besides playbooks/*.yml: the Postfix role alone (with a
# stand-in milter), and the Python side then the Postfix role (site.yml without Dovecot and
# monitoring, which have their own tests).
CONVERT_PLAYS = {
    "convert": ["mssante_postfix"],
    "convert-all": ["mssante", "mssante_journal", "mssante_trustlist", "mssante_milter", "mssante_postfix"],
}

DOVECOT_CONF = """\
base_dir = /run/mssante/dovecot-test
state_dir = /run/mssante/dovecot-test-state
protocols = lmtp
log_path = /var/log/dovecot-test.log
ssl = no
auth_mechanisms = plain
passdb {
  driver = static
  args = password=test
}
userdb {
  driver = static
  args = uid=nobody gid=nogroup home=/run/mssante/dovecot-test-home
}
service auth {
  unix_listener /var/spool/postfix-mssante/private/dovecot-auth {
    mode = 0660
    user = postfix
    group = postfix
  }
}
service lmtp {
  unix_listener /var/spool/postfix-mssante/private/dovecot-lmtp {
    mode = 0660
    user = postfix
    group = postfix
  }
}
"""

DIRTY_MAIN_CF = """\
# main.cf of the Hopital A mail server, grown over the years.
smtpd_banner = $myhostname ESMTP Hopital A
biff = no
append_dot_mydomain = no
compatibility_level = 3.6
myhostname = mail.hopital-a.test
mydomain = hopital-a.test
myorigin = $mydomain
mydestination = $myhostname, localhost.$mydomain, localhost,
    hopital-a.test, {local}
inet_interfaces = {ordinary}
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relayhost = [{relay}]:2525
relay_domains = hash:/etc/postfix/relay_domains
transport_maps = hash:/etc/postfix/transport
virtual_alias_maps = hash:/etc/postfix/virtual
alias_maps = hash:/etc/postfix/aliases
alias_database = hash:/etc/postfix/aliases
# the antivirus milter (not running here: accept when absent)
smtpd_milters = inet:127.0.0.1:8899
milter_default_action = accept
header_checks = regexp:/etc/postfix/header_checks
smtpd_recipient_restrictions = permit_mynetworks,
        reject_unauth_destination
message_size_limit=52428800
home_mailbox = Maildir/
smtpd_peername_lookup = no
maillog_file = /var/log/postfix.log
"""
DIRTY_MAPS = {
    "transport": (
        "# site routes\n{local} smtp:[127.9.9.9]\n.{local} smtp:[127.9.9.9]\n"
        "labo.example smtp:[127.8.8.8]:2525\n"
    ),
    "relay_domains": "{local} OK\npartner.example OK\n",
    "virtual": "contact@hopital-a.test direction@hopital-a.test\n",
    "aliases": "postmaster: root\n",
    "header_checks": "/^X-Secret:/ IGNORE\n",
}


def snapshot(root: Path) -> dict[str, str]:
    """SHA-256 of every regular file under ``root`` (relative names)."""
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file() and not path.is_symlink()
    }


def postconf_n(text: str) -> dict[str, str]:
    result = {}
    for line in text.splitlines():
        match = re.match(r"^(\S+) =\s?(.*)$", line)
        if match:
            result[match.group(1)] = match.group(2)
    return result


class ConvertHost:
    """A hospital host (a ``TestHost``) with a dirty ordinary Postfix running.

    The ordinary instance listens on a loopback address of the host, the MSSanté instance gets the
    host's own network address; ``work`` (under /var/tmp, seen alike inside and outside) holds the
    inventory, the stand-in milter and Dovecot's configuration.
    """

    def __init__(self, host: TestHost, work: Path, pki: Pki) -> None:
        self.host = host
        self.work = work
        self.pki = pki
        self.ordinary = ORDINARY
        self.address = host.address
        self.relay = RELAY
        self.milter: subprocess.Popen[bytes] | None = None
        self.extra_vars: dict[str, Any] = {}
        for address in (self.ordinary, self.relay):
            self.run(["ip", "addr", "add", f"{address}/32", "dev", "lo"])

    def run(
        self,
        argv: Sequence[str],
        *,
        check: bool = True,
        timeout: float = 120,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        return self.host.run(argv, check=check, timeout=timeout, env=env)

    def fs(self, path: str) -> Path:
        return self.host.fs(path)

    def close(self) -> None:
        if self.milter:
            self.milter.kill()
            self.milter.wait()

    # --- the hospital as found -------------------------------------------------------------
    def write(self, path: str, text: str, mode: int = 0o644) -> Path:
        target = self.fs(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        target.chmod(mode)
        return target

    def dirty_ordinary(self) -> None:
        fmt = {"local": LOCAL_DOMAIN, "ordinary": self.ordinary, "relay": self.relay}
        self.write("/etc/postfix/main.cf", DIRTY_MAIN_CF.format(**fmt))
        for name, text in DIRTY_MAPS.items():
            self.write(f"/etc/postfix/{name}", text.format(**fmt))
        for name in ("transport", "relay_domains", "virtual"):
            self.run(["postmap", f"hash:/etc/postfix/{name}"])
        self.run(["postalias", "hash:/etc/postfix/aliases"])
        self.fs("/var/spool/postfix/etc").mkdir(parents=True, exist_ok=True)
        for name in ("resolv.conf", "hosts", "services", "nsswitch.conf", "host.conf", "localtime"):
            if self.fs(f"/etc/{name}").exists():
                shutil.copy(self.fs(f"/etc/{name}"), self.fs(f"/var/spool/postfix/etc/{name}"))
        self.run(["postfix", "-c", "/etc/postfix", "start"])
        wait_until(lambda: self.answers(self.ordinary), 30, "the ordinary instance")

    def mssante_inputs(self, trustlist: bool = True) -> None:
        """The operator certificate, key and IGC chain; with ``trustlist``, a compiled stand-in list."""
        tls = self.fs("/etc/mssante/tls")
        tls.mkdir(parents=True, exist_ok=True)
        shutil.copy(self.pki.hospital.fullchain, tls / "operator.crt")
        shutil.copy(self.pki.hospital.key, tls / "operator.key")
        (tls / "operator.key").chmod(0o600)
        shutil.copy(self.pki.chain, tls / "igc-sante-chain.pem")
        if not trustlist:
            return
        gen = self.fs("/var/lib/mssante/trustlist/gen-1")
        gen.mkdir(parents=True, exist_ok=True)
        (gen / "transport").write_text(f"{PEER_DOMAIN} mssante:[{random_loopback()}]:25\n")
        (gen / "tls_policy").write_text(f"{PEER_DOMAIN} secure match=mx.clinique-b.test\n")
        for name in ("transport", "tls_policy"):
            self.run(["postmap", f"hash:/var/lib/mssante/trustlist/gen-1/{name}"])
        (gen.parent / "current").symlink_to("gen-1")

    def start_milter(self) -> None:
        sock_dir = self.fs("/var/spool/postfix-mssante/mssante")
        sock_dir.mkdir(parents=True, exist_ok=True)
        script = self.work / "stub_milter.py"
        script.write_text(STUB_MILTER)
        self.milter = self.host.popen(
            [HOST_PYTHON, str(script), "unix:/var/spool/postfix-mssante/mssante/milter.sock"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until((sock_dir / "milter.sock").exists, 15, "the stand-in milter")

    def start_dovecot(self) -> None:
        """Dovecot's SASL and LMTP sockets under the queue directory (stand-in for mssante_dovecot)."""
        private = self.fs("/var/spool/postfix-mssante/private")
        private.mkdir(parents=True, exist_ok=True)
        shutil.chown(private, "postfix", "root")
        private.chmod(0o700)
        conf = self.work / "dovecot.conf"
        conf.write_text(DOVECOT_CONF)
        self.run(["dovecot", "-c", str(conf)], timeout=30)
        wait_until((private / "dovecot-auth").exists, 15, "Dovecot's auth socket")

    # --- probes, run inside the host's namespaces ------------------------------------------
    def probe(
        self,
        address: str,
        port: int,
        *,
        starttls: bool = True,
        mail: str | None = None,
        rcpt: str | None = None,
        login: tuple[str, str] | None = None,
        data: bool = False,
    ) -> list[list[Any]]:
        """EHLO, STARTTLS (server verified against the IGC chain), MAIL, RCPT: each step's reply."""
        args = {
            "address": address,
            "port": port,
            "starttls": starttls,
            "cafile": str(self.pki.chain),
            "mail": mail,
            "rcpt": rcpt,
            "login": login,
            "data": data,
        }
        result = self.run([HOST_PYTHON, "-c", PROBE, json.dumps(args)], check=False, timeout=60)
        return list(json.loads(result.stdout or "[]"))

    def answers(self, address: str, port: int = 25) -> bool:
        steps = self.probe(address, port, starttls=False)
        return bool(steps) and steps[0][1] == 250

    # --- ansible ---------------------------------------------------------------------------
    def inventory(self, extra: Mapping[str, Any] | None = None) -> Path:
        variables: dict[str, Any] = {
            "ansible_connection": "local",
            "ansible_python_interpreter": str(VENV_BIN / "python"),
            "mssante_state_dir": "/var/lib/mssante",
            "mssante_trustlist_out_dir": "/var/lib/mssante/trustlist",
            "mssante_tls_cert": "/etc/mssante/tls/operator.crt",
            "mssante_tls_key": "/etc/mssante/tls/operator.key",
            "mssante_igc_chain": "/etc/mssante/tls/igc-sante-chain.pem",
            "mssante_milter_postfix_socket": "unix:mssante/milter.sock",
            "mssante_domains": [LOCAL_DOMAIN],
            "mssante_mailboxes": [
                {"address": f"dr.martin@{LOCAL_DOMAIN}", "type": "PER", "owners": ["dr.martin"]},
                {
                    "address": f"dpi@{LOCAL_DOMAIN}",
                    "type": "APP",
                    "owners": ["dpi-app"],
                    "cert_cns": ["dpi.hopital-a.test"],
                },
            ],
            "mssante_postfix_address": self.address,
            "mssante_postfix_hostname": "mx.hopital-a.test",
            "mssante_postfix_peername_lookup": False,
            "mssante_postfix_ordinary_smoke": {
                "enabled": True,
                "host": self.ordinary,
                "port": 25,
                "starttls": False,
                "rcpt": "postmaster",
            },
        }
        variables.update(self.extra_vars)
        variables.update(extra or {})
        inventory = {"all": {"children": {"mssante": {"hosts": {"localhost": variables}}}}}
        path = self.work / "hosts.yml"
        path.write_text(yaml.safe_dump(inventory))
        return path

    def with_python_side(self) -> None:
        """Inputs of the Python-side roles: a snapshot of milters/ to build from, the sample list."""
        source = self.work / "milters"
        shutil.copytree(
            REPO / "milters", source, ignore=shutil.ignore_patterns(".*", "__pycache__", "*.egg-info")
        )
        self.extra_vars.update(
            {
                "mssante_wheel_source_dir": str(source),
                "mssante_trustlist_source": str(SAMPLE_LIST),
                "mssante_trustlist_require_signature": False,
            }
        )

    def playbook(
        self, name: str, *args: str, extra: Mapping[str, Any] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run ``playbooks/<name>.yml``, or one of CONVERT_PLAYS, inside the host."""
        if name in CONVERT_PLAYS:
            path = self.work / f"{name}.yml"
            path.write_text(
                f"- name: Convert\n  hosts: mssante\n  gather_facts: true\n  roles: {CONVERT_PLAYS[name]}\n"
            )
        else:
            path = REPO / "playbooks" / f"{name}.yml"
        env = {
            "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
            "ANSIBLE_ROLES_PATH": str(REPO / "roles"),
            "ANSIBLE_FORCE_COLOR": "0",
            "ANSIBLE_NOCOLOR": "1",
            "PATH": f"{VENV_BIN}:{os.environ['PATH']}",
        }
        argv = [str(VENV_BIN / "ansible-playbook"), "-i", str(self.inventory(extra)), str(path), *args]
        return self.run(argv, check=False, timeout=900, env=env)

    def molecule(self, scenario: str) -> subprocess.CompletedProcess[str]:
        """``molecule test -s scenario`` inside the host (molecule/resources/group_vars/all.yml)."""
        env = {
            "PATH": f"{VENV_BIN}:{os.environ['PATH']}",
            "MSSANTE_MOLECULE_ADDRESS": self.address,
            "MSSANTE_MOLECULE_ORDINARY": self.ordinary,
            "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
            "MOLECULE_NO_LOG": "false",
            "HOME": str(self.work),
        }
        argv = ["molecule", "test", "-s", scenario]
        return self.host.run(argv, check=False, timeout=900, env=env, cwd=str(REPO))

    def snapshot(self, trees: Sequence[str] = WATCHED) -> dict[str, dict[str, str]]:
        return {tree: snapshot(self.fs(tree)) if self.fs(tree).exists() else {} for tree in trees}


def changed_tasks(result: subprocess.CompletedProcess[str]) -> list[str]:
    """The names of the tasks a run reports as changed."""
    tasks, task = [], ""
    for line in result.stdout.splitlines():
        if line.startswith("TASK ["):
            task = line
        elif line.startswith("changed:") and task not in tasks:
            tasks.append(task)
    return tasks


def recap(result: subprocess.CompletedProcess[str]) -> dict[str, int]:
    match = re.search(r"ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", result.stdout)
    assert match, result.stdout[-3000:] + result.stderr[-3000:]
    return dict(zip(("ok", "changed", "unreachable", "failed"), map(int, match.groups()), strict=True))


def _prepare(host: TestHost, work: Path, pki: Pki, trustlist: bool = True) -> ConvertHost:
    convert = ConvertHost(host, work, pki)
    convert.dirty_ordinary()
    convert.mssante_inputs(trustlist)
    convert.start_dovecot()
    return convert


@pytest.fixture
def fresh_host(host_factory: Callable[[str], TestHost], base_dir: Path, pki: Pki) -> Iterator[ConvertHost]:
    host = _prepare(host_factory("hospital"), base_dir, pki)
    try:
        yield host
    finally:
        host.close()


@pytest.fixture(scope="module")
def converted(pki: Pki) -> Iterator[tuple[ConvertHost, dict[str, Any]]]:
    """A host converted once; ``before`` holds what the ordinary instance looked like."""
    network = HostNetwork.create()
    work = make_base_dir("convert")
    host: ConvertHost | None = None
    try:
        host = _prepare(network.add_host("hospital"), work, pki)
        before = {
            "postconf": postconf_n(host.run(["postconf", "-c", "/etc/postfix", "-n"]).stdout),
            "files": snapshot(host.fs("/etc/postfix")),
        }
        host.start_milter()
        # Short queue timers, so that the test sees a deferred message retried within seconds.
        host.extra_vars["mssante_postfix_main"] = [
            {"name": name, "value": "2s"}
            for name in ("queue_run_delay", "minimal_backoff_time", "maximal_backoff_time")
        ]
        first = host.playbook("convert")
        before["first"] = first
        yield host, before
    finally:
        if host is not None:
            host.close()
        network.destroy()
        remove_base_dir(work)


# ---------------------------------------------------------------------------------------------
# Conversion
# ---------------------------------------------------------------------------------------------


def test_convert_succeeds_and_reports_ordinary(converted: tuple[ConvertHost, dict[str, Any]]) -> None:
    _, before = converted
    result = before["first"]
    assert recap(result)["failed"] == 0, result.stdout[-6000:]
    assert "Claims on MSSanté domains removed" in result.stdout
    assert "explicit settings" in result.stdout


def test_ordinary_postconf_differs_only_in_multi_instance_keys_and_claims(
    converted: tuple[ConvertHost, dict[str, Any]],
) -> None:
    """The ordinary instance keeps its behaviour: postconf -n differs only in the allowed keys."""
    host, before = converted
    after = postconf_n(host.run(["postconf", "-c", "/etc/postfix", "-n"]).stdout)
    changed = {k for k in set(before["postconf"]) | set(after) if before["postconf"].get(k) != after.get(k)}
    assert changed == MULTI_KEYS | {"mydestination"}
    assert LOCAL_DOMAIN not in after["mydestination"]
    assert re.split(r"[\s,]+", after["mydestination"]) == [
        d for d in re.split(r"[\s,]+", before["postconf"]["mydestination"]) if d != LOCAL_DOMAIN
    ]
    assert after["multi_instance_directories"] == "/etc/postfix-mssante"
    files = snapshot(host.fs("/etc/postfix"))
    touched = {k for k in set(files) | set(before["files"]) if files.get(k) != before["files"].get(k)}
    assert touched == {"main.cf", "transport", "transport.db", "relay_domains", "relay_domains.db"}
    transport = host.fs("/etc/postfix/transport").read_text()
    assert LOCAL_DOMAIN not in transport and "labo.example" in transport
    assert "partner.example" in host.fs("/etc/postfix/relay_domains").read_text()


def test_ordinary_still_relays_internet_mail(converted: tuple[ConvertHost, dict[str, Any]]) -> None:
    """Internet mail still flows: the ordinary instance accepts mail for its own domain."""
    host, _ = converted
    steps = host.probe(
        host.ordinary, 25, starttls=False, mail="someone@example.org", rcpt="contact@hopital-a.test"
    )
    assert [step[1] for step in steps] == [250, 250, 250, 250], steps


def test_trust7_tls1_mssante_instance_sealed_settings(converted: tuple[ConvertHost, dict[str, Any]]) -> None:
    """TRUST-7, TLS-1, TLS-3: the instance is built from a clean base with the sealed settings."""
    host, _ = converted
    n = postconf_n(host.run(["postconf", "-c", "/etc/postfix-mssante", "-n"]).stdout)
    error = "error:domain not in the MSSanté trust space"
    assert n["default_transport"] == n["local_transport"] == n["relay_transport"] == error
    assert n["relayhost"] == n["mydestination"] == n["alias_maps"] == ""
    assert n["transport_maps"] == "hash:/var/lib/mssante/trustlist/current/transport"
    assert n["smtp_tls_policy_maps"] == "hash:/var/lib/mssante/trustlist/current/tls_policy"
    assert n["smtp_tls_CAfile"] == n["smtpd_tls_CAfile"] == "/etc/mssante/tls/igc-sante-chain.pem"
    assert n["smtp_tls_CApath"] == n["smtpd_tls_CApath"] == ""
    assert n["smtpd_tls_security_level"] == "encrypt" and n["smtpd_tls_ask_ccert"] == "yes"
    assert n["smtp_tls_connection_reuse"] == "yes" and n["disable_mime_output_conversion"] == "yes"
    assert n["smtpd_forbid_bare_newline"] == "reject" and n["smtpd_forbid_bare_newline_exclusions"] == ""
    assert n["authorized_submit_users"] == "" and n["enable_long_queue_ids"] == "yes"
    assert "default_action=tempfail" in n["smtpd_milters"]
    # nothing of the ordinary instance leaked in
    values = "\n".join(n.values())
    for leaked in ("52428800", "header_checks", "8899", "Maildir", "/etc/postfix/", "2525"):
        assert leaked not in values
    assert "header_checks" not in n and "message_size_limit" not in n
    instances = host.run(["postmulti", "-l"]).stdout
    assert re.search(r"(?m)^postfix-mssante\s+mssante\s+y\s+/etc/postfix-mssante$", instances), instances
    services = host.run(["postconf", "-c", "/etc/postfix-mssante", "-M"]).stdout
    assert not re.search(r"(?m)^(pickup|local|virtual|relay)\s", services)
    assert re.search(r"(?m)^25\s+inet\s+n\s+-\s+y\s", services), services  # chrooted as in production


def test_tls1_tls5_listeners_require_tls_and_milter_decides(
    converted: tuple[ConvertHost, dict[str, Any]],
) -> None:
    """TLS-1, TLS-5: 25 and 587 speak TLS >= 1.2 with the operator certificate; the milter answers."""
    host, _ = converted
    for port in (25, 587):
        steps = host.probe(host.address, port, mail=f"probe@{PEER_DOMAIN}", rcpt=f"dr.martin@{LOCAL_DOMAIN}")
        assert steps[1][1] == 220, steps
        assert steps[2][2] in ("TLSv1.2", "TLSv1.3"), steps
        assert steps[3][1] == 550 and "5.7.1" in steps[3][2], steps


def _log_has(host: ConvertHost, pattern: str) -> bool:
    log = host.fs("/var/log/postfix-mssante.log")
    return bool(log.exists() and re.search(pattern, log.read_text(errors="replace")))


def test_trust7_unlisted_domain_refused_at_rcpt_by_construction(
    converted: tuple[ConvertHost, dict[str, Any]],
) -> None:
    """TRUST-7: even past the milter, a recipient outside the trust list is refused at RCPT, saying why."""
    host, _ = converted
    steps = host.probe(
        host.address,
        587,
        mail=f"dr.martin@{LOCAL_DOMAIN}",
        rcpt="someone@outside.example",
        login=("dr.martin", "test"),
    )
    assert [s[1] for s in steps[3:6]] == [235, 250, 550], steps  # AUTH, MAIL (the stand-in accepts), RCPT
    assert "domain not in the MSSanté trust space" in steps[5][2]
    # control: a trust-space recipient is accepted by Postfix
    control = host.probe(
        host.address,
        587,
        mail=f"dr.martin@{LOCAL_DOMAIN}",
        rcpt=f"x@{PEER_DOMAIN}",
        login=("dr.martin", "test"),
    )
    assert [s[1] for s in control[3:6]] == [235, 250, 250], control


def test_trust7_domain_removed_while_queued_bounced(converted: tuple[ConvertHost, dict[str, Any]]) -> None:
    """TRUST-7: a domain removed from the trust list while its mail is queued is bounced, never sent."""
    host, _ = converted
    steps = host.probe(
        host.address,
        587,
        mail=f"dr.martin@{LOCAL_DOMAIN}",
        rcpt=f"dr.durand@{PEER_DOMAIN}",
        login=("dr.martin", "test"),
        data=True,
    )
    assert [s[1] for s in steps[3:7]] == [235, 250, 250, 250], steps
    wait_until(
        lambda: _log_has(
            host,
            rf"to=<dr\.durand@{re.escape(PEER_DOMAIN)}>.*relay=mssante.*status=deferred"
            r"|to=<dr\.durand@.*status=deferred",
        ),
        90,
        "the deferral",
    )
    gen = host.fs("/var/lib/mssante/trustlist/gen-2")
    gen.mkdir()
    (gen / "transport").write_text("# empty trust list\n")
    (gen / "tls_policy").write_text("# empty trust list\n")
    for name in ("transport", "tls_policy"):
        host.run(["postmap", f"hash:/var/lib/mssante/trustlist/gen-2/{name}"])
    host.fs("/var/lib/mssante/trustlist/next").symlink_to("gen-2")
    host.fs("/var/lib/mssante/trustlist/next").rename(host.fs("/var/lib/mssante/trustlist/current"))
    host.run(["postfix", "-c", "/etc/postfix-mssante", "reload"])  # no pickup: postqueue -f is not available
    wait_until(
        lambda: _log_has(host, r"to=<dr\.durand@.*status=bounced \(domain not in the MSSanté trust space\)"),
        90,
        "the bounce",
    )


def test_tls5_no_mail_before_starttls(converted: tuple[ConvertHost, dict[str, Any]]) -> None:
    """TLS-5 (control of the test above): without STARTTLS the instance refuses MAIL."""
    host, _ = converted
    steps = host.probe(host.address, 25, starttls=False, mail=f"probe@{PEER_DOMAIN}")
    assert steps[1][1] == 530, steps


def test_auth3_sender_login_map_rendered(converted: tuple[ConvertHost, dict[str, Any]]) -> None:
    """AUTH-3: the sender-login map comes from the mailbox table."""
    host, _ = converted
    out = host.run(
        ["postmap", "-q", f"dr.martin@{LOCAL_DOMAIN}", "hash:/etc/postfix-mssante/sender_login"]
    ).stdout
    assert out.strip() == "dr.martin"


def test_convert_idempotent(converted: tuple[ConvertHost, dict[str, Any]]) -> None:
    """A second run changes nothing."""
    host, _ = converted
    result = host.playbook("convert")
    assert recap(result) | {"ok": 0} == {"ok": 0, "changed": 0, "unreachable": 0, "failed": 0}, result.stdout[
        -6000:
    ]


def test_check_mode_changes_nothing_and_shows_diff(fresh_host: ConvertHost) -> None:
    """--check --diff shows the real diff and changes no file."""
    host = fresh_host
    before = host.snapshot()
    result = host.playbook("convert", "--check", "--diff")
    assert recap(result)["failed"] == 0, result.stdout[-6000:]
    assert "+default_transport = error:domain not in the MSSanté trust space" in result.stdout
    assert (
        re.search(r"(?m)^-mydestination = .*$", result.stdout)
        or "-    hopital-a.test, " + LOCAL_DOMAIN in result.stdout
    )
    assert host.snapshot() == before


# ---------------------------------------------------------------------------------------------
# Molecule: the `default` scenario (converge, idempotence, verify against the requirements) and
# the fault-injection scenarios, each leaving every original file byte-identical and Postfix
# serving (molecule/resources/fault/verify.yml)
# ---------------------------------------------------------------------------------------------


def test_molecule_default_scenario_trust7_tls1_tls3_tls5(fresh_host: ConvertHost) -> None:
    """Molecule's default scenario converges the dirty host, proves idempotence and verifies."""
    fresh_host.start_milter()
    result = fresh_host.molecule("default")
    assert result.returncode == 0, (result.stdout + result.stderr)[-8000:]


@pytest.mark.parametrize(
    ("scenario", "milter"),
    [
        pytest.param("fault-bad-value", True, id="tls1-bad-value-fails-validation"),
        pytest.param("fault-cert-key-mismatch", True, id="tls3-certificate-not-matching-key"),
        pytest.param("fault-dead-milter", False, id="dead-milter-rolls-back"),
    ],
)
def test_molecule_fault_scenario_leaves_ordinary_untouched(
    fresh_host: ConvertHost, scenario: str, milter: bool
) -> None:
    """A real fault stops the conversion for its own reason (checked by the scenario's converge,
    the control) and the ordinary instance's files stay byte-identical, still serving, with no
    MSSanté instance live (its verify). TLS-1, TLS-3."""
    if milter:
        fresh_host.start_milter()
    result = fresh_host.molecule(scenario)
    assert result.returncode == 0, (result.stdout + result.stderr)[-8000:]
    assert "Stopped as expected" in result.stdout + result.stderr


# ---------------------------------------------------------------------------------------------
# Rollback and uninstall playbooks
# ---------------------------------------------------------------------------------------------


def test_rollback_playbook_restores_latest_backup(fresh_host: ConvertHost) -> None:
    host = fresh_host
    host.start_milter()
    before = snapshot(host.fs("/etc/postfix"))
    assert recap(host.playbook("convert"))["failed"] == 0
    assert host.answers(host.address)
    result = host.playbook("rollback")
    assert recap(result)["failed"] == 0, result.stdout[-6000:]
    assert snapshot(host.fs("/etc/postfix")) == before
    assert host.answers(host.ordinary)
    assert not host.answers(host.address)


def _mssante_processes(host: ConvertHost) -> list[str]:
    """Command lines of the host's processes that run the MSSanté Python side."""
    pids = run_command(["ip", "netns", "pids", host.host.netns]).stdout.split()
    found = []
    for pid in pids:
        with contextlib.suppress(OSError):
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            if "/opt/mssante" in cmdline:
                found.append(cmdline)
    return found


@pytest.mark.timeout(1800)
def test_uninstall_removes_instance_and_services_keeps_journal(
    host_factory: Callable[[str], TestHost], base_dir: Path, pki: Pki
) -> None:
    """After a conversion with the real Python side (milter, journal owner, trust-list refresh under
    supervisor), uninstall stops and removes the instance and every service, leaves no process,
    keeps the journal and its keys (which still verify) and says so; the ordinary instance serves
    on; a second uninstall changes nothing. TRACE-1 (the journal outlives the operator)."""
    host = _prepare(host_factory("hospital"), base_dir, pki, trustlist=False)
    try:
        host.with_python_side()
        converted = host.playbook("convert-all")
        assert recap(converted)["failed"] == 0, converted.stdout[-8000:]
        assert host.answers(host.address)
        assert len(_mssante_processes(host)) >= 4  # control: the services run before
        programs = sorted(p.name for p in host.fs("/etc/supervisor/conf.d").glob("mssante-*.conf"))
        assert len(programs) >= 4, programs

        # The configuration trees only: the running journal owner writes its checkpoints meanwhile.
        trees = ("/etc/postfix", "/etc/postfix-mssante", "/etc/mssante", "/etc/supervisor")
        trees += ("/opt/mssante/libexec",)
        before = host.snapshot(trees)
        preview = host.playbook("uninstall", "--check", "--diff")
        assert recap(preview)["failed"] == 0, preview.stdout[-8000:]
        assert recap(preview)["changed"] > 0  # control: it found what to remove
        assert host.snapshot(trees) == before and len(_mssante_processes(host)) >= 4

        result = host.playbook("uninstall")
        assert recap(result)["failed"] == 0, result.stdout[-8000:]
        kept = "Kept: the journal and its keys: /var/lib/mssante/journal, /etc/mssante/journal/signing.key"
        assert kept in result.stdout, result.stdout[-4000:]
        assert not list(host.fs("/etc/supervisor/conf.d").glob("mssante-*.conf"))
        status = host.run(["supervisorctl", "status"], check=False).stdout
        assert "mssante" not in status, status
        assert _mssante_processes(host) == []
        for gone in ("/etc/postfix-mssante", "/var/spool/postfix-mssante", "/var/lib/mssante/trustlist"):
            assert not host.fs(gone).exists() or not any(host.fs(gone).iterdir()), gone
        assert any(host.fs("/var/lib/mssante/journal").iterdir())
        assert host.fs("/etc/mssante/journal/signing.key").exists()
        verify = [
            "/opt/mssante/bin/mssante-journal", "verify", "--dir", "/var/lib/mssante/journal",
            "--public-key", "/etc/mssante/journal/signing.pub",
        ]  # fmt: skip
        host.run(verify)
        n = postconf_n(host.run(["postconf", "-c", "/etc/postfix", "-n"]).stdout)
        assert not MULTI_KEYS & set(n)
        assert host.answers(host.ordinary)
        assert not host.answers(host.address)

        again = host.playbook("uninstall")
        assert recap(again) | {"ok": 0} == {"ok": 0, "changed": 0, "unreachable": 0, "failed": 0}, (
            changed_tasks(again)
        )
    finally:
        host.close()


def test_audit_after_conversion_passes_the_postfix_requirements(
    converted: tuple[ConvertHost, dict[str, Any]],
) -> None:
    """The read-only audit agrees with the conversion (issue 11): every must-pass ID that the Postfix
    role is responsible for passes. TRUST-1/3/8 belong to the trust-list role, not run here."""
    host, _ = converted
    report = host.work / "audit"
    result = host.playbook("audit", "-e", f"mssante_audit_report_dir={report}")
    assert recap(result)["failed"] == 0, result.stdout[-4000:]
    checks = {
        c["id"]: c for c in json.loads((report / "report.json").read_text())["hosts"]["localhost"]["checks"]
    }
    postfix_ids = {
        "TRUST-6",
        "TRUST-7",
        "TLS-1",
        "TLS-2",
        "TLS-3",
        "TLS-5",
        "AUTH-3",
        "MSG-2",
        "SEAL-1",
        "OPS-1",
    }
    assert {rid: checks[rid]["evidence"] for rid in postfix_ids if checks[rid]["status"] != "pass"} == {}
