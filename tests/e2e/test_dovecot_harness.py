"""A real Dovecot with the mssante_dovecot role's configuration, for the Dovecot end-to-end tests.

No tests here: the fixtures and client helpers used by ``test_dovecot_*.py``. A host is built under a
0755 directory in /var/tmp: an "ordinary" Dovecot configuration shaped like Debian's (dovecot.conf
including conf.d/*.conf, an ordinary user with a password), the role's templates rendered into it exactly
as the role renders them, the test PKI's CA bundles with their CRLs, a local OAuth introspection server,
and Dovecot started in the foreground on random loopback addresses.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import imaplib
import importlib.util
import json
import os
import random
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2

from mssante.lab.pki import Pki, ensure_pki

ROOT = Path(__file__).resolve().parents[2]
ROLE = ROOT / "roles" / "mssante_dovecot"
DOMAIN = "hopital-a.mssante.test"
ORDINARY_USER, ORDINARY_PASSWORD = "alice", "ordinary-secret"
PERSON = "810001234567"  # the test PKI's personal certificate CN, also the person's OAuth subject
PERSON_PASSWORD = "transition-secret"
MAIL_UID = 8  # Debian's "mail" user
WAIT_SECONDS = 20.0


def _load_filter() -> Callable[..., dict[str, Any]]:
    spec = importlib.util.spec_from_file_location(
        "mssante_dovecot_filters", ROLE / "filter_plugins" / "mssante_dovecot.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.dovecot_model  # type: ignore[no-any-return]


dovecot_model = _load_filter()


def random_loopback() -> str:
    """A random 127.x.y.z address, so parallel test runs never share a listener."""
    return f"127.{random.randint(1, 254)}.{random.randint(1, 254)}.{random.randint(2, 254)}"


def mailboxes(pki: Pki) -> list[dict[str, Any]]:
    return [
        {"address": f"dr.martin@{DOMAIN}", "type": "PER", "owners": [PERSON], "cert_cns": []},
        {"address": f"dpi@{DOMAIN}", "type": "APP", "owners": ["dpi-app"], "cert_cns": [pki.dpi.cn]},
        {"address": f"secretariat@{DOMAIN}", "type": "ORG", "owners": [PERSON], "cert_cns": []},
        {"address": f"cabinet@{DOMAIN}", "type": "CAB", "owners": [PERSON], "cert_cns": []},
    ]


def role_vars(base: Path, pki: Pki, addresses: dict[str, str], introspection_url: str) -> dict[str, Any]:
    """The role's variables for this test host (the same names as roles/mssante_dovecot/defaults)."""
    listeners = [
        {
            "name": "mssante_app_imap",
            "address": addresses["app"],
            "port": 143,
            "tls": "starttls",
            "client_ca": "app",
        },
        {
            "name": "mssante_app_imaps",
            "address": addresses["app"],
            "port": 993,
            "tls": "implicit",
            "client_ca": "app",
        },
        {
            "name": "mssante_personal_imap",
            "address": addresses["personal"],
            "port": 143,
            "tls": "starttls",
            "client_ca": "personal",
        },
    ]
    transition = [{"cn": PERSON, "password_hash": _crypt(PERSON_PASSWORD)}]
    mail_root = str(base / "vmail")
    model = dovecot_model(
        mailboxes(pki), [DOMAIN], listeners, mail_root, f"{mail_root}/last-login.dict", transition
    )
    return {
        "mssante_dovecot_model": model,
        "mssante_dovecot_mssante_dir": str(base / "etc/dovecot/mssante"),
        "mssante_dovecot_listeners": listeners,
        "mssante_dovecot_transition_password_cert": True,
        "mssante_dovecot_transition_users": transition,
        "mssante_dovecot_auth_verbose": False,
        "mssante_dovecot_personal_certificate_login": True,
        "mssante_dovecot_oauth2": {
            "introspection_url": introspection_url,
            "introspection_mode": "post",
            "username_attribute": "sub",
            "timeout_msecs": 5000,
        },
        "mssante_dovecot_mail_uid": MAIL_UID,
        "mssante_dovecot_mail_gid": MAIL_UID,
        "mssante_dovecot_auth_socket": str(base / "spool/private/dovecot-auth"),
        "mssante_dovecot_lmtp_socket": str(base / "spool/private/dovecot-lmtp"),
        "mssante_dovecot_postfix_user": "postfix",
        "mssante_dovecot_postfix_group": "postfix",
        "mssante_dovecot_tls_cert": str(pki.hospital.fullchain),
        "mssante_dovecot_tls_key": str(pki.hospital.key),
        "mssante_dovecot_ssl_min_protocol": "TLSv1.2",
        "mssante_dovecot_ssl_cipher_list": "ECDHE+AESGCM:ECDHE+CHACHA20",
    }


def _crypt(password: str) -> str:
    out = subprocess.run(
        ["doveadm", "pw", "-s", "SHA512-CRYPT", "-p", password], check=True, capture_output=True, text=True
    )
    return out.stdout.strip()


def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(ROLE / "templates")),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render_template(relative: str, variables: dict[str, Any], target: Path, mode: int = 0o644) -> Path:
    """Render one role template (path relative to templates/, without .j2) to ``target``."""
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(_environment().get_template(relative + ".j2").render(**variables), encoding="utf-8")
    target.chmod(mode)
    return target


def render_role(variables: dict[str, Any], dest_root: Path) -> list[Path]:
    """Render every role template under ``dest_root`` (templates mirror host paths)."""
    env = _environment()
    written = []
    for template in sorted((ROLE / "templates" / "etc/dovecot").rglob("*.j2")):
        relative = template.relative_to(ROLE / "templates")
        target = dest_root / str(relative)[: -len(".j2")]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(env.get_template(str(relative)).render(**variables), encoding="utf-8")
        written.append(target)
    return written


ORDINARY_DOVECOT_CONF = """\
# An ordinary hospital Dovecot, shaped like Debian's: the role must leave it byte-identical.
protocols = imap lmtp
listen = {listen}
base_dir = {base}/run
state_dir = {base}/state
instance_name = mssante-test-{tag}
log_path = {base}/dovecot.log
default_internal_user = dovecot
default_login_user = dovenull
!include conf.d/*.conf
"""

ORDINARY_CONF_D = {
    "10-auth.conf": """\
disable_plaintext_auth = yes
auth_mechanisms = plain login
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {base}/etc/dovecot/ordinary.passwd
}}
userdb {{
  driver = static
  args = uid={uid} gid={uid} home={base}/ordinary/%n
}}
""",
    "10-mail.conf": """\
mail_location = maildir:~/Maildir
first_valid_uid = {uid}
namespace inbox {{
  inbox = yes
}}
mail_privileged_group = mail
""",
    "10-ssl.conf": """\
ssl = yes
ssl_cert = <{cert}
ssl_key = <{key}
# A legacy ordinary listener that still accepts TLS 1.0/1.1: the control of the TLS-1 refusal test.
ssl_min_protocol = TLSv1
ssl_cipher_list = DEFAULT:@SECLEVEL=0
""",
    "10-logging.conf": "auth_verbose = no\n",
    # Ordinary deliveries run the users' Sieve scripts (Pigeonhole, as Debian's 20-lmtp.conf and
    # 90-sieve.conf suggest); redirects and vacation replies leave through the ordinary instance's
    # sendmail(1), here a sink that records every invocation (SENDMAIL_SINK).
    "15-lda.conf": "sendmail_path = {base}/bin/sendmail\n",
    "20-lmtp.conf": (
        "protocol lmtp {{\n  mail_plugins = $mail_plugins sieve\n}}\n"
        "plugin {{\n  sieve = file:~/sieve;active=~/.dovecot.sieve\n"
        "  sieve_before = {base}/etc/dovecot/sieve-before/archive.sieve\n}}\n"
    ),
}

# An administrator's script run before every user's own (sieve_before): a copy to an outside archive.
ARCHIVE_ADDRESS = "archive@outside.example"
SIEVE_BEFORE = f'require ["copy"];\nredirect :copy "{ARCHIVE_ADDRESS}";\n'

# The ordinary instance's sendmail(1) as Dovecot runs it (as the mailbox's user): one file per call,
# its arguments on the first line, then the message.
SENDMAIL_SINK = """#!/bin/sh
out=$(mktemp "$(dirname "$0")/../sendmail-sink/call.XXXXXX") || exit 75
{ printf 'argv:'; printf ' %s' "$@"; printf '\\n'; cat; } > "$out"
"""


@dataclass
class DovecotHost:
    """A running Dovecot with its files, addresses and helpers."""

    base: Path
    pki: Pki
    addresses: dict[str, str]
    tokens_file: Path
    variables: dict[str, Any]
    process: subprocess.Popen[bytes] | None = None
    introspect: subprocess.Popen[bytes] | None = None
    rendered: list[Path] = field(default_factory=list)

    @property
    def config(self) -> Path:
        return self.base / "etc/dovecot/dovecot.conf"

    @property
    def sendmail_calls(self) -> list[str]:
        """Every message Dovecot handed to the ordinary sendmail(1) (SENDMAIL_SINK), as text."""
        calls = sorted((self.base / "sendmail-sink").glob("call.*"), key=lambda p: p.stat().st_mtime_ns)
        return [path.read_text(errors="replace") for path in calls]

    @property
    def log(self) -> str:
        path = self.base / "dovecot.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def add_token(self, token: str, sub: str, expires_in: float) -> None:
        document = json.loads(self.tokens_file.read_text())
        document["tokens"][token] = {"sub": sub, "exp": int(time.time() + expires_in), "scope": "openid"}
        tmp = self.tokens_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(document))
        tmp.replace(self.tokens_file)

    def doveconf(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["doveconf", "-c", str(self.config), *args], check=False, capture_output=True, text=True
        )

    def doveadm(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["doveadm", "-c", str(self.config), *args], check=False, capture_output=True, text=True
        )

    def reload(self) -> None:
        out = self.doveadm("reload")
        assert out.returncode == 0, out.stderr

    def wait_log(self, needle: str, timeout: float = WAIT_SECONDS) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log
            if needle in text:
                return text
            time.sleep(0.05)
        raise AssertionError(f"{needle!r} never appeared in the Dovecot log:\n{self.log[-3000:]}")


def _write_ca_bundles(host_etc: Path, pki: Pki) -> None:
    """ca-<set>.pem: the CA certificates of one client-certificate CA set followed by their CRLs."""
    mssante = host_etc / "mssante"
    mssante.mkdir(parents=True, exist_ok=True)
    sets = {
        "app": (pki.chain, [pki.intermediate.crl, pki.root.crl]),
        "personal": (pki.personal_chain, [pki.personal_ca.crl, pki.root.crl]),
    }
    for name, (chain, crls) in sets.items():
        data = chain.read_bytes() + b"".join(crl.read_bytes() for crl in crls)
        (mssante / f"ca-{name}.pem").write_bytes(data)


def _wait_port(address: str, port: int, process: subprocess.Popen[bytes], log: Callable[[], str]) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"process exited ({process.returncode}):\n{log()[-3000:]}")
        with contextlib.suppress(OSError), socket.create_connection((address, port), timeout=1):
            return
        time.sleep(0.05)
    raise AssertionError(f"{address}:{port} never listened:\n{log()[-3000:]}")


def _start_introspection(base: Path, address: str, tokens: Path) -> tuple[subprocess.Popen[bytes], str]:
    ready = base / "introspect.ready"
    env = dict(os.environ, PYTHONPATH=str(ROOT / "milters" / "src"))
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mssante.oauth.introspect",
            "--listen",
            f"{address}:0",
            "--tokens",
            str(tokens),
            "--ready-file",
            str(ready),
        ],
        env=env,
    )
    deadline = time.monotonic() + WAIT_SECONDS
    while not ready.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise AssertionError("the introspection server did not start")
        time.sleep(0.05)
    return process, ready.read_text().strip()


def build_host(base: Path, pki: Pki) -> DovecotHost:
    """Write the ordinary configuration, then the role's files, under ``base`` (nothing started)."""
    addresses = {"ordinary": random_loopback(), "app": random_loopback(), "personal": random_loopback()}
    while len(set(addresses.values())) < len(addresses):
        addresses["personal"] = random_loopback()
    etc = base / "etc/dovecot"
    (etc / "conf.d").mkdir(parents=True)
    for sub in ("run", "state", "spool/private", "ordinary", "vmail", "bin", "sendmail-sink"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    for sub in ("ordinary", "vmail", "sendmail-sink"):
        os.chown(base / sub, MAIL_UID, MAIL_UID)
    (base / "bin/sendmail").write_text(SENDMAIL_SINK)
    (base / "bin/sendmail").chmod(0o755)
    (etc / "sieve-before").mkdir()
    (etc / "sieve-before/archive.sieve").write_text(SIEVE_BEFORE)
    os.chown(etc / "sieve-before", MAIL_UID, MAIL_UID)  # where Sieve saves the compiled script
    tag = base.name.replace("_", "-")
    (etc / "dovecot.conf").write_text(
        ORDINARY_DOVECOT_CONF.format(listen=addresses["ordinary"], base=base, tag=tag)
    )
    fmt = {"base": base, "uid": MAIL_UID, "cert": pki.other.fullchain, "key": pki.other.key}
    for name, text in ORDINARY_CONF_D.items():
        (etc / "conf.d" / name).write_text(text.format(**fmt))
    (etc / "ordinary.passwd").write_text(f"{ORDINARY_USER}:{ORDINARY_PASSWORD}\n")
    tokens = base / "tokens.json"
    tokens.write_text(json.dumps({"tokens": {}}))
    return DovecotHost(base, pki, addresses, tokens, {})


def install_role(host: DovecotHost, introspection_url: str) -> None:
    host.variables = role_vars(host.base, host.pki, host.addresses, introspection_url)
    staging = host.base / "render"
    host.rendered = render_role(host.variables, staging)
    for path in host.rendered:
        target = host.base / path.relative_to(staging)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    _write_ca_bundles(host.base / "etc/dovecot", host.pki)


def grant_org_access(host: DovecotHost) -> None:
    """What the role's last tasks do: each ORG mailbox's ACL file, then the shared-mailbox dictionary."""
    mail_root = host.base / "vmail"
    for org in host.variables["mssante_dovecot_model"]["org_mailboxes"]:
        maildir = mail_root / org["address"] / "Maildir"
        maildir.mkdir(parents=True, exist_ok=True)
        for path in (maildir.parent, maildir):
            os.chown(path, MAIL_UID, MAIL_UID)
        acl = render_template("var/vmail/mssante/dovecot-acl", {"org": org}, maildir / "dovecot-acl", 0o600)
        os.chown(acl, MAIL_UID, MAIL_UID)
        out = host.doveadm("-o", "mail_plugins=acl", "acl", "recalc", "-u", org["address"])
        assert out.returncode == 0, out.stderr


def start(host: DovecotHost, *, with_mssante: bool = True) -> None:
    check = host.doveconf("-n")
    assert check.returncode == 0, check.stderr
    host.process = subprocess.Popen(["dovecot", "-F", "-c", str(host.config)])
    names = ("ordinary", "app", "personal") if with_mssante else ("ordinary",)
    for name in names:
        _wait_port(host.addresses[name], 143, host.process, lambda: host.log)


def stop(host: DovecotHost) -> None:
    for process in (host.process, host.introspect):
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=WAIT_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@functools.lru_cache(maxsize=1)
def shared_pki() -> Pki:
    """The shared test PKI (idempotent and locked, so parallel runs may share the directory)."""
    base = Path("/var/tmp/mssante-test-pki")
    base.mkdir(mode=0o755, exist_ok=True)
    return ensure_pki(base)


@contextlib.contextmanager
def running_host(pki: Pki, *, with_role: bool = True) -> Iterator[DovecotHost]:
    base = Path(tempfile.mkdtemp(prefix="mssante-dovecot-", dir="/var/tmp"))
    base.chmod(0o755)
    host = build_host(base, pki)
    try:
        if with_role:
            host.introspect, hostport = _start_introspection(base, host.addresses["app"], host.tokens_file)
            install_role(host, f"http://{hostport}/introspect")
        start(host)
        if with_role:
            grant_org_access(host)
        yield host
    finally:
        stop(host)
        if os.environ.get("MSSANTE_KEEP_TEST_DIRS") != "1":
            shutil.rmtree(base, ignore_errors=True)


# ----------------------------------------------------------------------------------------------------
# Client helpers
# ----------------------------------------------------------------------------------------------------


def client_context(
    pki: Pki,
    *,
    cert: Path | None = None,
    key: Path | None = None,
    tls_max: ssl.TLSVersion | None = None,
) -> ssl.SSLContext:
    """A client context trusting the IGC-Santé test chain, optionally presenting a certificate."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cafile=str(pki.chain))
    context.check_hostname = False
    if tls_max is not None:
        # OpenSSL 3 refuses TLS < 1.2 client-side at its default level: lower it, so that a refusal
        # can only come from the server.
        context.set_ciphers("DEFAULT:@SECLEVEL=0")
        with warnings.catch_warnings():  # TLS < 1.2 is deprecated: that is what the refusal test wants
            warnings.simplefilter("ignore", DeprecationWarning)
            context.minimum_version = ssl.TLSVersion.TLSv1
            context.maximum_version = tls_max
    if cert is not None:
        context.load_cert_chain(str(cert), str(key))
    return context


def imap_starttls(address: str, context: ssl.SSLContext, port: int = 143) -> imaplib.IMAP4:
    client = imaplib.IMAP4(address, port, timeout=WAIT_SECONDS)
    client.starttls(ssl_context=context)
    return client


def xoauth2(user: str, token: str) -> Callable[[bytes], bytes]:
    payload = f"user={user}\x01auth=Bearer {token}\x01\x01".encode()
    return lambda _challenge: payload


def sasl_plain(user: str, password: str) -> Callable[[bytes], bytes]:
    return lambda _challenge: f"\0{user}\0{password}".encode()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def make_token(size: int) -> str:
    """An opaque token of ``size`` characters (real Pro Santé Connect tokens are JWTs of several KB)."""
    return base64.urlsafe_b64encode(os.urandom(size)).decode("ascii")[:size]
