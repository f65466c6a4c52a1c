"""The compiled maps at work in a running Postfix: routing and TLS policy of real deliveries.

Covers what the trust list gives the MSSanté instance (TRUST-1, TRUST-4, TRUST-7 routing and peer
name check): a listed domain goes through the ``mssante`` transport over verified TLS >= 1.2 to a
server presenting a listed CN; a listed domain whose server presents another (valid IGC-Santé)
certificate is deferred, never sent; an unlisted domain is bounced by the default ``error:``
transport. Postfix runs in a test host (tests/support/hosts.py) whose own /etc/hosts sends every
name to the sink, on the host network's gateway.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from tests.support.common import make_base_dir, remove_base_dir
from tests.support.hosts import HostNetwork
from tests.support.postfix import PostfixInstance
from tests.support.sink import Sink
from tests.unit.trustlist.helpers import SIGNER_CN, Entry, build_list, pki, sign_with

LISTED = "clinique-b.mssante.test"  # listed with the CN the sink presents
WRONG_CN = "wrong-cn.mssante.test"  # listed with another CN, served by the same sink
UNLISTED = "absent.mssante.test"  # resolvable, but not on the list
BOUNCE = "error:not in the MSSante trust space"


@dataclass
class Setup:
    postfix: PostfixInstance
    sink: Sink


@pytest.fixture(scope="module")
def setup() -> Iterator[Setup]:
    network = HostNetwork.create()
    base = make_base_dir("trustlist-delivery")
    peer = pki().peer
    sink = Sink(address=network.gateway, port=25, tls_cert=peer.fullchain, tls_key=peer.key)
    postfix: PostfixInstance | None = None
    try:
        sink.start()
        host = network.add_host("hospital")
        host.fs("/etc/hosts").write_text(
            f"127.0.0.1 localhost\n{sink.address} {LISTED} {WRONG_CN} {UNLISTED}\n", encoding="utf-8"
        )
        postfix = PostfixInstance.create(base, "tldeliv", address=host.address, port=25, runner=host)
        entries = [
            Entry(LISTED, f"CN={peer.cn},OU=1000000002,O=CLINIQUE B (TEST),C=FR"),
            Entry(WRONG_CN, "CN=mx.somewhere-else.test,OU=1000000009,O=AILLEURS (TEST),C=FR"),
        ]
        source = base / "liste.xml"
        source.write_bytes(sign_with(build_list(entries)))
        out = base / "trustlist"
        argv = [
            sys.executable, "-m", "mssante.trustlist", "compile", "--source", str(source), "--out", str(out),
            "--ca", str(pki().chain), "--signer", SIGNER_CN, "--postfix-config-dir", str(postfix.config_dir),
        ]  # fmt: skip
        compiled = subprocess.run(
            argv, capture_output=True, text=True, timeout=120, env=dict(os.environ), check=False
        )
        assert compiled.returncode == 0, compiled.stderr
        current = out / "current"
        postfix.postconf(
            {
                "transport_maps": f"hash:{current}/transport",
                "smtp_tls_policy_maps": f"hash:{current}/tls_policy",
                "default_transport": BOUNCE,
                "relay_transport": BOUNCE,
                "smtp_dns_support_level": "disabled",
                "smtp_host_lookup": "native",
                "smtp_tls_CAfile": str(pki().chain),
                "smtp_tls_CApath": "",
                "smtp_tls_loglevel": "1",
                "myorigin": "hopital-a.mssante.test",
            }
        )
        # Its own log name, so that the log shows which transport delivered.
        postfix.add_master_service(
            "mssante", "unix", "smtp", options={"syslog_name": "postfix-tldeliv/mssante"}
        )
        postfix.start()
        yield Setup(postfix, sink)
    finally:
        if postfix is not None:
            postfix.stop()
        sink.stop()
        network.destroy()
        remove_base_dir(base)


def submit(setup: Setup, recipient: str) -> int:
    mark = setup.postfix.log_mark()
    argv = [
        "sendmail",
        "-C",
        str(setup.postfix.config_dir),
        "-f",
        "dr.martin@hopital-a.mssante.test",
        recipient,
    ]
    message = f"From: dr.martin@hopital-a.mssante.test\nTo: {recipient}\nSubject: test\n\nHello.\n"
    setup.postfix.runner.run(argv, input=message)
    return mark


def line_source(setup: Setup, mark: int, recipient: str) -> str:
    """The log line (with its process name) that reports ``recipient``'s delivery."""
    return next(line for line in setup.postfix.log_text(mark).splitlines() if f"to=<{recipient}>" in line)


def test_trust7_listed_domain_delivered_over_verified_tls(setup: Setup) -> None:
    mark = submit(setup, f"a@{LISTED}")
    line = setup.postfix.wait_log(rf"to=<a@{LISTED}>.*status=\w+.*", timeout=60, since=mark).group(0)
    assert "status=sent" in line, line
    assert "postfix-tldeliv/mssante/smtp[" in line_source(setup, mark, f"a@{LISTED}")  # the mssante transport
    assert f"Verified TLS connection established to {LISTED}" in setup.postfix.log_text(mark)
    received = [m for m in setup.sink.wait_for(1) if f"a@{LISTED}" in m.rcpt_tos]
    assert received and received[0].tls_version in ("TLSv1.2", "TLSv1.3")


def test_trust4_listed_domain_with_another_certificate_deferred(setup: Setup) -> None:
    before = len(setup.sink.messages)
    mark = submit(setup, f"b@{WRONG_CN}")
    line = setup.postfix.wait_log(rf"to=<b@{WRONG_CN}>.*status=\w+.*", timeout=60, since=mark).group(0)
    assert "status=deferred" in line and "certificate" in line.lower(), line
    assert not any(f"b@{WRONG_CN}" in m.rcpt_tos for m in setup.sink.messages[before:])


def test_trust1_unlisted_domain_bounced_not_sent(setup: Setup) -> None:
    mark = submit(setup, f"c@{UNLISTED}")
    line = setup.postfix.wait_log(rf"to=<c@{UNLISTED}>.*status=\w+.*", timeout=60, since=mark).group(0)
    assert "status=bounced" in line and "not in the MSSante trust space" in line, line
    assert not any(f"c@{UNLISTED}" in m.rcpt_tos for m in setup.sink.messages)
