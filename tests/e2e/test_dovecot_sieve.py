"""End-to-end: Sieve redirects and vacation replies never run for MSSanté mailboxes (design.md, issue 7).

The ordinary configuration of the test host runs Pigeonhole's Sieve at every LMTP delivery, as a
hospital's Dovecot typically does: each user's own script, and an administrator's ``sieve_before``
script that copies every message to an outside archive. What Sieve sends goes to the ordinary
instance's sendmail(1), here a sink recording each call. A redirect, a copy or a vacation reply from
an MSSanté mailbox would leave the trust space through it.

The role delivers MSSanté mailboxes through LMTP processes of their own that never load Sieve
(Pigeonhole's plugin, once loaded, runs for every recipient of its process whatever the user's
``mail_plugins``), and as a second line gives MSSanté users no personal Sieve and a sending path that
fails. The controls deliver the same message with the same script to an ordinary user through the
ordinary LMTP service, whose redirect, archive copy and vacation reply do reach the sink.
"""

from __future__ import annotations

import os
import smtplib
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.e2e.test_dovecot_harness import (
    ARCHIVE_ADDRESS,
    DOMAIN,
    MAIL_UID,
    ORDINARY_USER,
    PERSON,
    WAIT_SECONDS,
    DovecotHost,
    running_host,
    shared_pki,
)

MSSANTE_BOX = f"dr.martin@{DOMAIN}"
ORDINARY_ADDRESS = f"{ORDINARY_USER}@hopital-a.test"  # the ordinary user's address, for vacation
OUTSIDE = "elsewhere@outside.example"
SCRIPT = f"""require ["vacation"];
vacation :days 1 :addresses ["{ORDINARY_ADDRESS}", "{MSSANTE_BOX}"] :subject "Absent" "Je suis absent.";
redirect "{OUTSIDE}";
"""


@pytest.fixture(scope="module")
def sieve_host() -> Iterator[DovecotHost]:
    with running_host(shared_pki()) as host:
        yield host


def _install_script(home: Path) -> None:
    home.mkdir(parents=True, exist_ok=True)
    script = home / ".dovecot.sieve"
    script.write_text(SCRIPT)
    for path in (home, script):
        os.chown(path, MAIL_UID, MAIL_UID)


def _sender(marker: str) -> str:
    """A sender of its own per test: vacation answers a sender once per :days."""
    return f"dr.durand.{marker[:8]}@clinique-b.mssante.test"


def _message(marker: str) -> bytes:
    return (
        f"From: <{_sender(marker)}>\r\nTo: <{MSSANTE_BOX}>, <{ORDINARY_ADDRESS}>\r\n"
        f"Message-ID: <{marker}@clinique-b.mssante.test>\r\nSubject: sieve {marker}\r\n\r\nBonjour\r\n"
    ).encode()


def _kept(home: Path, marker: str) -> bool:
    maildir = home / "Maildir"
    files = [path for sub in ("new", "cur") for path in (maildir / sub).glob("*")]
    return any(marker.encode() in path.read_bytes() for path in files)


def _wait_calls(host: DovecotHost, marker: str, count: int) -> list[str]:
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        calls = [call for call in host.sendmail_calls if marker in call]
        if len(calls) >= count:
            return calls
        time.sleep(0.05)
    raise AssertionError(f"sendmail calls for {marker}: {host.sendmail_calls}\n{host.log[-3000:]}")


def _ordinary_lmtp(host: DovecotHost) -> smtplib.LMTP:
    """The ordinary LMTP service's socket (Dovecot's default ``lmtp`` listener under base_dir)."""
    return smtplib.LMTP(str(host.base / "run" / "lmtp"))


def _sent_for_mssante(call: str) -> bool:
    """Whether a sendmail(1) call was made for the MSSanté mailbox: its redirect (Delivered-To,
    X-Sieve-Redirected-From) or its vacation reply (From)."""
    headers = call.split("\n\n", 1)[0].splitlines()
    names = ("delivered-to:", "x-sieve-redirected-from:", "from:")
    return any(line.lower().startswith(names) and MSSANTE_BOX in line for line in headers)


def _recipients(call: str) -> list[str]:
    """The recipients of one sendmail(1) call (after ``--`` on its argument line)."""
    return call.splitlines()[0].partition(" -- ")[2].split()


def test_sieve_redirect_and_vacation_from_mssante_mailbox_send_nothing(sieve_host: DovecotHost) -> None:
    mssante_home = sieve_host.base / "vmail" / MSSANTE_BOX
    ordinary_home = sieve_host.base / "ordinary" / ORDINARY_USER
    _install_script(mssante_home)
    _install_script(ordinary_home)
    marker = uuid.uuid4().hex
    with smtplib.LMTP(sieve_host.variables["mssante_dovecot_lmtp_socket"]) as lmtp:
        assert lmtp.sendmail(_sender(marker), [MSSANTE_BOX], _message(marker)) == {}
    # Control, after the MSSanté delivery has ended: the same message and script, an ordinary user.
    with _ordinary_lmtp(sieve_host) as lmtp:
        assert lmtp.sendmail(_sender(marker), [ORDINARY_USER], _message(marker)) == {}
    calls = _wait_calls(sieve_host, marker, 3)
    # The ordinary user's Sieve ran: the administrator's archive copy, the redirect, the vacation reply ...
    recipients = sorted(r for call in calls for r in _recipients(call))
    assert recipients == sorted([ARCHIVE_ADDRESS, OUTSIDE, _sender(marker)])
    assert not _kept(ordinary_home, marker)  # a redirect without :copy cancels the implicit keep
    # ... and nothing at all for the MSSanté mailbox: no call of its own, the message kept.
    assert len(calls) == 3, calls
    assert not any(_sent_for_mssante(call) for call in calls), calls
    assert _kept(mssante_home, marker), "the message was not kept in the MSSanté mailbox"
    assert not (mssante_home / ".dovecot.svbin").exists(), "the MSSanté mailbox's script was compiled"


def test_sieve_mssante_mailbox_misrouted_to_ordinary_lmtp_sends_nothing(sieve_host: DovecotHost) -> None:
    """Second line: delivered by mistake through the ordinary LMTP service, where Sieve is loaded, an
    MSSanté mailbox still runs no Sieve (``sieve_enabled=no`` from its userdb: neither its own script
    nor the administrator's archive copy) and keeps the message."""
    mssante_home = sieve_host.base / "vmail" / MSSANTE_BOX
    _install_script(mssante_home)
    _install_script(sieve_host.base / "ordinary" / ORDINARY_USER)
    marker = uuid.uuid4().hex
    with _ordinary_lmtp(sieve_host) as lmtp:
        assert lmtp.sendmail(_sender(marker), [MSSANTE_BOX], _message(marker)) == {}
        # Control: the same service and message for an ordinary user do send.
        assert lmtp.sendmail(_sender(marker), [ORDINARY_USER], _message(marker)) == {}
    calls = _wait_calls(sieve_host, marker, 3)
    assert len(calls) == 3 and not any(_sent_for_mssante(call) for call in calls), calls
    assert _kept(mssante_home, marker)
    # Third line, should anything still try to send for an MSSanté user: a host that never resolves.
    for name in (PERSON, MSSANTE_BOX, sieve_host.pki.dpi.cn):
        fields = sieve_host.doveadm("user", name).stdout
        assert "sieve_enabled\tno" in fields and "submission_host\tmssante-no-submission.invalid" in fields
    assert "sieve_enabled" not in sieve_host.doveadm("user", ORDINARY_USER).stdout


def test_sieve_mssante_lmtp_service_loads_no_plugin(sieve_host: DovecotHost) -> None:
    """First line on its own: the MSSanté LMTP service's processes never run Sieve, whoever the
    recipient. Even an ordinary user (whose userdb does not turn Sieve off) delivered through its socket
    runs no script: nothing is sent and the message is kept. The service overrides mail_plugins; the
    ordinary configuration still loads sieve for the ordinary LMTP service (the controls above)."""
    ordinary_home = sieve_host.base / "ordinary" / ORDINARY_USER
    _install_script(ordinary_home)
    marker = uuid.uuid4().hex
    with smtplib.LMTP(sieve_host.variables["mssante_dovecot_lmtp_socket"]) as lmtp:
        assert lmtp.sendmail(_sender(marker), [ORDINARY_USER], _message(marker)) == {}
    # Sieve sends during the delivery, before LMTP answers: nothing to wait for.
    assert not [call for call in sieve_host.sendmail_calls if marker in call]
    assert _kept(ordinary_home, marker)
    executable = sieve_host.doveconf("-h", "service/mssante-lmtp/executable").stdout.split()
    assert executable == ["lmtp", "-o", "mail_plugins="], executable
    ordinary = sieve_host.doveconf("-f", "protocol=lmtp", "-h", "mail_plugins").stdout.split()
    assert "sieve" in ordinary, ordinary
    plugins = sieve_host.doveadm("user", "-f", "mail_plugins", MSSANTE_BOX).stdout.strip()
    assert plugins == "acl,last_login"
