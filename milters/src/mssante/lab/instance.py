"""The lab's Postfix instance: mutual TLS with the test PKI, delivery into local Maildirs (docs/lab.md).

A clean instance (`postfix -c DIR`) built from Postfix's defaults plus the settings below: port
"25" (a loopback address and port kept in state.json) requires TLS, asks for a client certificate,
verifies it against the IGC-Santé chain only and accepts mail only from clients whose certificate
verified; the hospital's domain is delivered by virtual(8) into ``mail/``; everything else is refused.
"""

from __future__ import annotations

import json
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mssante.lab.pki import Pki

LOCAL_DOMAIN = "hopital-a.mssante.test"
MAILBOXES = ("dr.martin",)
MAIL_USER = "mail"


@dataclass(frozen=True)
class LabPaths:
    """Where everything of the lab lives (one directory, removed by `down`)."""

    root: Path

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    @property
    def config_dir(self) -> Path:
        return self.root / "postfix" / "etc"

    @property
    def queue_dir(self) -> Path:
        return self.root / "postfix" / "spool"

    @property
    def data_dir(self) -> Path:
        return self.root / "postfix" / "data"

    @property
    def log_file(self) -> Path:
        return self.root / "postfix" / "log" / "maillog"

    @property
    def mail_dir(self) -> Path:
        return self.root / "mail"

    @property
    def state(self) -> Path:
        return self.root / "state.json"


@dataclass(frozen=True)
class Endpoint:
    address: str
    port: int


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``predicate()`` until true; TimeoutError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.05)


def endpoint(paths: LabPaths) -> Endpoint:
    """The lab's listener, chosen once (a random 127.x.y.z and a free port) and kept in state.json."""
    try:
        data = json.loads(paths.state.read_text())
        return Endpoint(str(data["address"]), int(data["port"]))
    except (OSError, ValueError, KeyError):
        pass
    address = f"127.{1 + secrets.randbelow(254)}.{secrets.randbelow(256)}.{1 + secrets.randbelow(254)}"
    with socket.socket() as sock:
        sock.bind((address, 0))
        port = int(sock.getsockname()[1])
    paths.state.write_text(json.dumps({"address": address, "port": port}) + "\n")
    return Endpoint(address, port)


def main_cf(paths: LabPaths, pki: Pki, listen: Endpoint) -> str:
    uid = pwd.getpwnam(MAIL_USER).pw_uid
    settings = {
        "compatibility_level": "3.6",
        "queue_directory": str(paths.queue_dir),
        "data_directory": str(paths.data_dir),
        "multi_instance_name": "postfix-lab",
        "syslog_name": "postfix-lab",
        "maillog_file": str(paths.log_file),
        "maillog_file_prefixes": str(paths.log_file.parent),
        "inet_interfaces": "loopback-only",
        "inet_protocols": "ipv4",
        "smtp_bind_address": listen.address,
        "smtpd_peername_lookup": "no",
        "myhostname": pki.hospital.cn,
        "mydestination": "",
        "mynetworks": "",
        "relay_domains": "",
        "relayhost": "",
        "alias_maps": "",
        "alias_database": "",
        "local_recipient_maps": "",
        "default_transport": "error:5.7.1 domain not in the MSSante trust space (lab)",
        "virtual_mailbox_domains": LOCAL_DOMAIN,
        "virtual_mailbox_base": str(paths.mail_dir),
        "virtual_mailbox_maps": f"texthash:{paths.config_dir / 'mailboxes'}",
        "virtual_uid_maps": f"static:{uid}",
        "virtual_gid_maps": f"static:{uid}",
        "virtual_minimum_uid": str(uid),
        "smtpd_tls_chain_files": f"{pki.hospital.key}, {pki.hospital.fullchain}",
        "smtpd_tls_security_level": "encrypt",
        "smtpd_tls_ask_ccert": "yes",
        "smtpd_tls_CAfile": str(pki.chain),
        "smtpd_tls_CApath": "",
        "smtpd_tls_protocols": ">=TLSv1.2",
        "smtpd_tls_mandatory_protocols": ">=TLSv1.2",
        "smtpd_tls_received_header": "yes",
        "smtpd_tls_loglevel": "1",
        "smtpd_recipient_restrictions": "permit_tls_all_clientcerts, reject",
        "disable_mime_output_conversion": "yes",
        "biff": "no",
    }
    return "".join(f"{key} = {value}\n" for key, value in settings.items())


_SERVICES = (
    "cleanup unix n - n - 0 cleanup",
    "qmgr unix n - n 300 1 qmgr",
    "tlsmgr unix - - n 1000? 1 tlsmgr",
    "rewrite unix - - n - - trivial-rewrite",
    "bounce unix - - n - 0 bounce",
    "defer unix - - n - 0 bounce",
    "trace unix - - n - 0 bounce",
    "verify unix - - n - 1 verify",
    "flush unix n - n 1000? 0 flush",
    "proxymap unix - - n - - proxymap",
    "smtp unix - - n - - smtp",
    "showq unix n - n - - showq",
    "error unix - - n - - error",
    "retry unix - - n - - error",
    "discard unix - - n - - discard",
    "virtual unix - n n - - virtual",
    "anvil unix - - n - 1 anvil",
    "scache unix - - n - 1 scache",
    "postlog unix-dgram n - n - 1 postlogd",
)


def master_cf(listen: Endpoint) -> str:
    return "\n".join([f"{listen.address}:{listen.port} inet n - n - - smtpd", *_SERVICES]) + "\n"


def _write_if_different(path: Path, text: str) -> bool:
    if path.exists() and path.read_text() == text:
        return False
    path.write_text(text)
    return True


def configure(paths: LabPaths, pki: Pki, listen: Endpoint) -> bool:
    """Write the instance's directories and configuration; True when something changed."""
    for directory in (
        paths.config_dir,
        paths.queue_dir,
        paths.data_dir,
        paths.log_file.parent,
        paths.mail_dir,
    ):
        directory.mkdir(mode=0o755, parents=True, exist_ok=True)
    postfix, mail = pwd.getpwnam("postfix"), pwd.getpwnam(MAIL_USER)
    os.chown(paths.data_dir, postfix.pw_uid, postfix.pw_gid)
    os.chown(paths.mail_dir, mail.pw_uid, mail.pw_gid)
    mailboxes = "".join(f"{box}@{LOCAL_DOMAIN} {LOCAL_DOMAIN}/{box}/\n" for box in MAILBOXES)
    changed = _write_if_different(paths.config_dir / "mailboxes", mailboxes)
    changed |= _write_if_different(paths.config_dir / "main.cf", main_cf(paths, pki, listen))
    changed |= _write_if_different(paths.config_dir / "master.cf", master_cf(listen))
    return changed


def master_pid(paths: LabPaths) -> int | None:
    try:
        pid = int((paths.queue_dir / "pid" / "master.pid").read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def _postfix(paths: LabPaths, action: str) -> None:
    result = subprocess.run(
        ["postfix", "-c", str(paths.config_dir), action],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        check=False,
        timeout=120,
    )
    if result.returncode != 0:
        log = paths.log_file.read_text(errors="replace") if paths.log_file.exists() else ""
        raise RuntimeError(f"postfix {action} failed: {result.stderr}\n{log[-3000:]}")


def listening(listen: Endpoint) -> bool:
    packed = int.from_bytes(socket.inet_aton(listen.address), "little")
    wanted = f"{packed:08X}:{listen.port:04X}"
    lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    return any(line.split()[1] == wanted and line.split()[3] == "0A" for line in lines)


def ensure_running(paths: LabPaths, listen: Endpoint, reconfigured: bool) -> bool:
    """Start the instance, or reload it after a configuration change; True when it did either."""
    if master_pid(paths) is None:
        _postfix(paths, "start")
    elif reconfigured:
        _postfix(paths, "reload")
    else:
        return False
    wait_for(lambda: master_pid(paths) is not None and listening(listen), 30, "the lab's Postfix to listen")
    return True


def stop(paths: LabPaths) -> bool:
    """Stop the instance if it runs; True when it did."""
    pid = master_pid(paths)
    if pid is None:
        return False
    _postfix(paths, "stop")
    try:
        wait_for(lambda: master_pid(paths) is None, 30, "the lab's Postfix to stop")
    except TimeoutError:
        os.kill(pid, 9)
    return True


def remove(paths: LabPaths) -> bool:
    """Stop the instance and delete the lab directory; True when there was something to remove."""
    existed = paths.root.exists()
    stop(paths)
    shutil.rmtree(paths.root, ignore_errors=True)
    return existed
