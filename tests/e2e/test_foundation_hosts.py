"""Test hosts (design.md: each host its own network and mount namespaces, default paths inside)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from tests.conftest import HostFactory, SinkFactory
from tests.support.common import free_port, run_command
from tests.support.hosts import HostNetwork, TestHost
from tests.support.postfix import PostfixInstance
from tests.support.smtpclient import message, send


def _relaying_postfix(host: TestHost, relayhost: str) -> PostfixInstance:
    """Postfix at Debian's default paths inside ``host``, relaying example.test to ``relayhost``."""
    return PostfixInstance.default_paths(
        host,
        address=host.address,
        settings={
            "myhostname": host.fqdn,
            "relay_domains": "example.test",
            "relayhost": relayhost,
            "smtpd_relay_restrictions": "permit_auth_destination, reject",
        },
    )


def test_hosts_run_postfix_at_default_paths_reached_from_outside(
    host_factory: HostFactory, sink_factory: SinkFactory, host_network: HostNetwork
) -> None:
    """Two hosts each run Postfix from /etc/postfix and /var/spool/postfix; a message crosses
    root namespace -> hospital -> relay -> sink (on the bridge's gateway address)."""
    machine_main_cf = Path("/etc/postfix/main.cf")
    before = machine_main_cf.read_bytes() if machine_main_cf.exists() else None
    sink = sink_factory(address=host_network.gateway, port=free_port(host_network.gateway))
    hospital, relay = host_factory("hospital"), host_factory("relay")
    relay_postfix = _relaying_postfix(relay, sink.hostport)
    hospital_postfix = _relaying_postfix(hospital, f"[{relay.address}]:25")
    try:
        relay_postfix.start()
        hospital_postfix.start()
        transcript = send(
            hospital.address,
            25,
            sender="a@hopital-a.test",
            recipients=["b@example.test"],
            message=message("a@hopital-a.test", "b@example.test", subject="across hosts"),
            starttls=False,
        )
        assert transcript.delivered, transcript
        (received,) = sink.wait_for(1)
        assert received.peer[0] == relay.address
        assert b"by hospital.lab.test" in received.data
        assert b"by relay.lab.test" in received.data
        # Each host sees its own /etc/postfix/main.cf at the default path (no -c needed).
        assert hospital.run(["postconf", "-h", "relayhost"]).stdout.strip() == f"[{relay.address}]:25"
        assert relay.run(["postconf", "-h", "relayhost"]).stdout.strip() == sink.hostport
        assert hospital.run(["hostname"]).stdout.strip() == "hospital"
    finally:
        hospital_postfix.stop()
        relay_postfix.stop()
        print(hospital_postfix.log_tail(), relay_postfix.log_tail())
    after = machine_main_cf.read_bytes() if machine_main_cf.exists() else None
    assert after == before, "the machine's own /etc/postfix was touched"


def test_host_teardown_removes_processes_namespaces_and_links() -> None:
    network = HostNetwork.create()
    try:
        host = network.add_host("ephemeral")
        sleeper = host.popen(["sleep", "300"])
        host.run(["sh", "-c", "mkdir -p /etc/mssante && echo test > /etc/mssante/marker"])
        assert host.fs("/etc/mssante/marker").read_text() == "test\n"
        assert not Path("/etc/mssante/marker").exists()
        netns, veth, base = host.netns, host.veth, host.base
    finally:
        network.destroy()
    assert sleeper.wait(timeout=10) != 0
    assert netns not in run_command(["ip", "netns", "list"]).stdout
    assert run_command(["ip", "link", "show", veth], check=False).returncode != 0
    assert run_command(["ip", "link", "show", network.bridge], check=False).returncode != 0
    assert str(base) not in Path("/proc/self/mounts").read_text()
    assert not base.exists() or os.environ.get("MSSANTE_KEEP_TEST_DIRS")


@pytest.mark.devonly
def test_ansible_runs_inside_a_host_against_default_paths(host_factory: HostFactory, base_dir: Path) -> None:
    """A playbook run inside a host (local connection) writes the host's /etc, not the machine's."""
    host = host_factory("managed")
    marker = f"# test host {host.netns}"
    playbook = base_dir / "play.yml"
    playbook.write_text(
        "- hosts: localhost\n"
        "  gather_facts: false\n"
        "  tasks:\n"
        "    - ansible.builtin.copy:\n"
        "        dest: /etc/postfix-mssante/main.cf\n"
        f'        content: "{marker}\\n"\n'
        "        mode: '0644'\n"
    )
    ansible = Path(sys.executable).parent / "ansible-playbook"
    argv = [str(ansible), "-i", "localhost,", "-c", "local", str(playbook)]
    env = {"ANSIBLE_PYTHON_INTERPRETER": sys.executable}
    assert "changed=1" in host.run(argv, env=env, timeout=180).stdout
    assert "changed=0" in host.run(argv, env=env, timeout=180).stdout
    assert host.fs("/etc/postfix-mssante/main.cf").read_text() == f"{marker}\n"
    machine = Path("/etc/postfix-mssante/main.cf")
    assert not machine.exists() or marker not in machine.read_text()
