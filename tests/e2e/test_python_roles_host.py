"""The Python-side roles run for real on a test host (tests/support/hosts.py).

`mssante`, `mssante_journal`, `mssante_trustlist` and `mssante_milter` are applied with the dev venv's
ansible-playbook inside a ``TestHost``: its own mount, network and UTS namespaces with copy-on-write
/etc, /var/lib, /run, /opt, /var/log and /var/spool, so the roles use their default paths as on a
real host (the `mssante` user and group included) and this machine is left alone. There is no
systemd as PID 1 here, so `mssante_service_manager: auto` picks supervisor: the test checks that
supervisord keeps the services up and restarts one killed with SIGKILL, and that a second run
changes nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from tests.support.common import tail, wait_until
from tests.support.hosts import TestHost

from mssante.lab.pki import Pki
from mssante.revocation.learned import fingerprint

pytestmark = pytest.mark.devonly

REPO = Path(__file__).resolve().parents[2]
SAMPLE_LIST = Path(__file__).resolve().parents[1] / "data" / "listeblanche-sample.xml"
# The host paths the roles write (check mode must leave them as they were).
WRITTEN = (
    "/etc/mssante",
    "/var/lib/mssante",
    "/run/mssante",
    "/opt/mssante",
    "/var/log/mssante",
    "/etc/supervisor",
    "/var/spool/postfix-mssante",
)
# The host's supervisord configuration: Debian's, with its socket and pid file kept in
# /etc/supervisor and its logs in /var/log/mssante.
SUPERVISORD_CONF = """\
[unix_http_server]
file=/etc/supervisor/supervisor.sock
chmod=0700

[supervisord]
logfile=/var/log/mssante/supervisord.log
pidfile=/etc/supervisor/supervisord.pid
childlogdir=/var/log/mssante

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix:///etc/supervisor/supervisor.sock

[include]
files = /etc/supervisor/conf.d/*.conf
"""


@pytest.fixture
def host(host_factory: Callable[[str], TestHost]) -> TestHost:
    """A fresh test host whose supervisord (not started) uses SUPERVISORD_CONF."""
    made = host_factory("roles")
    conf = made.fs("/etc/supervisor")
    (conf / "conf.d").mkdir(parents=True, exist_ok=True)
    (conf / "supervisord.conf").write_text(SUPERVISORD_CONF, encoding="utf-8")
    return made


def supervisorctl(host: TestHost, *args: str) -> subprocess.CompletedProcess[str]:
    return host.run(["supervisorctl", "-c", "/etc/supervisor/supervisord.conf", *args], check=False)


def snapshot(root: Path) -> dict[str, str]:
    """Every entry under ``root``: a file's SHA-256, or its kind."""
    if not root.exists():
        return {}
    result = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink():
            result[rel] = "-> " + os.readlink(path)
        elif path.is_file():
            result[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            result[rel] = "dir" if path.is_dir() else "special"
    return result


def _write_play(base: Path, extra: dict[str, object] | None = None) -> tuple[Path, Path]:
    # A snapshot of milters/, so that both runs build the wheel from the same sources while the
    # checkout changes under them (the role rebuilds and reinstalls on any change, by design).
    source = base / "milters"
    shutil.copytree(
        REPO / "milters", source, ignore=shutil.ignore_patterns(".*", "__pycache__", "*.egg-info")
    )
    inventory = base / "inventory.yml"
    ca = Path("/etc/ssl/certs/ca-certificates.crt")
    inventory.write_text(
        yaml.safe_dump(
            {
                "all": {
                    "hosts": {
                        "testhost": {
                            "ansible_connection": "local",
                            "ansible_python_interpreter": "/usr/bin/python3",
                            "mssante_host_id": "test-host-1",
                            "mssante_wheel_source_dir": str(source),
                            "mssante_domains": ["hopital-exemple.mssante.fr"],
                            "mssante_igc_chain": str(ca),
                            "mssante_trustlist_source": str(SAMPLE_LIST),
                            "mssante_trustlist_require_signature": False,
                            "mssante_mailboxes": [
                                {
                                    "address": "dr.martin@hopital-exemple.mssante.fr",
                                    "type": "PER",
                                    "owners": ["dr.martin"],
                                    "rpps": "10001234567",
                                },
                                {
                                    "address": "dpi@hopital-exemple.mssante.fr",
                                    "type": "APP",
                                    "owners": ["dpi-app"],
                                    "cert_cns": ["dpi.hopital-exemple.fr"],
                                    "structure_id": "1000000001",
                                    "red_list": True,
                                },
                            ],
                            **(extra or {}),
                        }
                    }
                }
            }
        ),
        encoding="utf-8",
    )
    play = base / "play.yml"
    play.write_text(
        "- name: Python side of the MSSanté operator\n"
        "  hosts: all\n"
        "  gather_facts: false\n"
        "  roles: [mssante, mssante_journal, mssante_trustlist, mssante_milter]\n",
        encoding="utf-8",
    )
    return inventory, play


def _playbook(host: TestHost, inventory: Path, play: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    bin_dir = Path(sys.executable).parent
    env = {
        "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
        "ANSIBLE_ROLES_PATH": str(REPO / "roles"),
        "ANSIBLE_STDOUT_CALLBACK": "default",
        "ANSIBLE_NOCOLOR": "1",
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
    }
    argv = [str(bin_dir / "ansible-playbook"), "-i", str(inventory), str(play), *extra]
    return host.run(argv, check=False, timeout=600, env=env)


def _recap(output: str) -> dict[str, int]:
    for line in output.splitlines():
        if line.startswith("testhost") and "ok=" in line:
            return {k: int(v) for k, v in (item.split("=") for item in line.split(":", 1)[1].split())}
    raise AssertionError(f"no play recap in:\n{tail(output)}")


def _status(host: TestHost) -> dict[str, tuple[str, int | None]]:
    out = supervisorctl(host, "status").stdout
    states: dict[str, tuple[str, int | None]] = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 2:
            pid = int(parts[3].rstrip(",")) if len(parts) > 3 and parts[2] == "pid" else None
            states[parts[0]] = (parts[1], pid)
    return states


def _revocation_inventory(base: Path, pki: Pki) -> dict[str, object]:
    """The revocation job with the test PKI's CRL (copied where the `mssante` user reads it), no
    probing (the sample list names internet hosts), its first run one second after supervisord starts."""
    crls = base / "crls"
    crls.mkdir(mode=0o755)
    for source in (pki.intermediate.crl, pki.chain):
        shutil.copy(source, crls / source.name)
        (crls / source.name).chmod(0o644)
    return {
        "mssante_revocation_crls": [
            {
                "ca": "igc_org",
                "url": f"file://{crls / pki.intermediate.crl.name}",
                "issuer": str(crls / pki.chain.name),
            }
        ],
        "mssante_revocation_probe": False,
        "mssante_revocation_schedule": {
            "on_calendar": "*-*-* 00/6:45:00", "interval_seconds": 21600, "initial_delay_seconds": 1
        },
    }  # fmt: skip


def _check_revocation_job(host: TestHost, base: Path, pki: Pki) -> None:
    """TLS-4: the periodic job runs under supervisor as `mssante`, keeps the verified CRL, writes the
    deny-list and its metrics; a certificate seeded by root (as the lab does) is denied at the next run."""
    deny_list = host.fs("/var/lib/mssante/revocation/ccert_access")
    metrics = host.fs("/var/lib/mssante/metrics/mssante_revocation.prom")
    wait_until(metrics.exists, timeout=60, what="the revocation job's first run")
    assert (
        host.fs("/var/lib/mssante/revocation/crls/igc_org.crl").read_bytes()
        == pki.intermediate.crl.read_bytes()
    )
    assert "mssante_revocation_denied_certificates 0.0" in metrics.read_text(encoding="utf-8")
    assert host.fs("/var/lib/mssante/revocation/ccert_access.db").exists()
    revoked = fingerprint(x509.load_pem_x509_certificate(pki.revoked.cert.read_bytes()))
    assert revoked not in deny_list.read_text(encoding="utf-8")  # control: nothing learned yet
    seed = base / "crls" / "served-earlier.pem"
    shutil.copy(pki.revoked.cert, seed)
    seed.chmod(0o644)
    host.run(["/opt/mssante/bin/mssante-revocation", "learn", "--config", "/etc/mssante/mssante.yml",
              "--seed", str(seed), "--cn", pki.revoked.cn])  # fmt: skip
    assert supervisorctl(host, "restart", "mssante-revocation").returncode == 0
    wait_until(lambda: revoked in deny_list.read_text(encoding="utf-8"), timeout=60, what="the deny-list")
    wait_until(
        lambda: "mssante_revocation_denied_certificates 1.0" in metrics.read_text(encoding="utf-8"),
        timeout=30, what="the revocation metrics",
    )  # fmt: skip
    owner = host.run(["stat", "-c", "%U", "/var/lib/mssante/revocation/ccert_access.db"]).stdout.strip()
    assert owner == "mssante"  # written by the job, not by root
    log = host.fs("/var/log/mssante/mssante-revocation.log").read_text(encoding="utf-8")
    assert "1 revoked of 1 learned" in log


@pytest.mark.timeout(1500)
def test_python_roles_converge_run_services_and_are_idempotent(
    host: TestHost, base_dir: Path, pki: Pki
) -> None:
    """The roles install the runtime, validate the config, keep services up; idempotent, check-safe."""
    inventory, play = _write_play(base_dir, _revocation_inventory(base_dir, pki))
    first = _playbook(host, inventory, play)
    assert first.returncode == 0, tail(first.stdout, 120) + tail(first.stderr)

    # The wheel runs with the host runtime (Debian's python3 + packages through the venv).
    venv_python = "/opt/mssante/bin/python"
    assert (
        host.run([venv_python, "-c", "import sys; print(sys.version_info[:2])"]).stdout.strip() == "(3, 11)"
    )
    milter_help = host.run(["/opt/mssante/bin/mssante-milter", "--help"])
    assert "check-config" in milter_help.stdout
    origin = host.run(
        [venv_python, "-c", "import Milter, cryptography; print(Milter.__file__, cryptography.__version__)"]
    )
    assert "/usr/lib/python3/dist-packages/" in origin.stdout

    # The configuration is the contract of docs/configuration.md and passes check-config.
    config = yaml.safe_load(host.fs("/etc/mssante/mssante.yml").read_text(encoding="utf-8"))
    assert config["host_id"] == "test-host-1"
    assert config["trustlist"]["local_domains"] == ["hopital-exemple.mssante.fr"]
    assert config["milter"]["trustlist_dir"] == "/var/lib/mssante/trustlist/current"
    host.run([venv_python, "-m", "mssante.milter", "check-config", "/etc/mssante/mssante.yml"])
    table = json.loads(host.fs("/etc/mssante/mailboxes.json").read_text(encoding="utf-8"))
    assert table["schema"] == 1
    assert [m["type"] for m in table["mailboxes"]] == ["PER", "APP"]

    # The journal key exists, private to the journal owner; the trust list is compiled.
    key = host.fs("/etc/mssante/journal/signing.key").stat()
    assert oct(key.st_mode & 0o777) == "0o600"
    assert host.fs("/var/lib/mssante/trustlist/current").is_symlink()
    assert (host.fs("/var/lib/mssante/trustlist/current") / "index.json").exists() or (
        host.fs("/var/lib/mssante/trustlist")
        / os.readlink(host.fs("/var/lib/mssante/trustlist/current"))
        / "index.json"
    ).exists()

    # supervisord keeps every service and periodic loop running; the milter's socket is up.
    states = _status(host)
    expected = {
        "mssante-journal",
        "mssante-journal-verify",
        "mssante-trustlist-refresh",
        "mssante-milter",
        "mssante-revocation",
    }
    assert expected <= set(states), states
    assert all(states[name][0] == "RUNNING" for name in expected), states
    assert (
        host.run(["test", "-S", "/var/spool/postfix-mssante/mssante/milter.sock"], check=False).returncode
        == 0
    )
    _check_revocation_job(host, base_dir, pki)

    # A service killed with SIGKILL is restarted.
    _, old_pid = states["mssante-milter"]
    assert old_pid is not None
    os.kill(old_pid, signal.SIGKILL)
    restarted = wait_until(
        lambda: (s := _status(host).get("mssante-milter")) and s[0] == "RUNNING" and s[1] != old_pid and s,
        timeout=60,
        what="mssante-milter restarted by supervisord",
    )
    assert restarted

    # playbooks/trustlist.yml runs the refresh job now: the list is unchanged, which is a success.
    refresh = _playbook(host, inventory, REPO / "playbooks" / "trustlist.yml", "-e", "mssante_hosts=all")
    assert refresh.returncode == 0, tail(refresh.stdout, 80)
    assert "unchanged" in refresh.stdout

    # Second run: nothing changes.
    second = _playbook(host, inventory, play)
    assert second.returncode == 0, tail(second.stdout, 120)
    recap = _recap(second.stdout)
    assert recap["changed"] == 0, tail(second.stdout, 200)

    # Check mode on the converged host: succeeds, reports nothing to change, and changes nothing.
    milter_pid = _status(host)["mssante-milter"][1]
    check = _playbook(host, inventory, play, "--check", "--diff")
    assert check.returncode == 0, tail(check.stdout, 120)
    assert _recap(check.stdout)["changed"] == 0, tail(check.stdout, 200)
    assert _status(host)["mssante-milter"][1] == milter_pid


@pytest.mark.timeout(900)
def test_python_roles_check_mode_on_a_fresh_host_changes_nothing(host: TestHost, base_dir: Path) -> None:
    """`--check --diff` on a host never converted succeeds and writes nothing (design.md, principle 2)."""
    inventory, play = _write_play(base_dir)
    before = {target: snapshot(host.fs(target)) for target in WRITTEN}
    assert before["/etc/mssante"] == {} and before["/opt/mssante"] == {}  # a fresh host
    check = _playbook(host, inventory, play, "--check", "--diff")
    assert check.returncode == 0, tail(check.stdout, 120) + tail(check.stderr)
    assert _recap(check.stdout)["changed"] > 0  # control: it did find what a real run would change
    for target in WRITTEN:
        assert snapshot(host.fs(target)) == before[target], f"check mode wrote under {target}"
    assert supervisorctl(host, "pid").returncode != 0  # no supervisord was started
