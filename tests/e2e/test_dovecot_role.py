"""The mssante_dovecot role run by ansible-playbook against a real Dovecot under a temp dir.

Converge on an ordinary Dovecot (its files stay byte-identical, its user still logs in, MSSanté logins
work), idempotence (a second run changes nothing), check mode (shows the diff, writes nothing) and
rollback (a failing smoke test restores the previous files). Requirements: TLS-1, TLS-5, AUTH-1, AUTH-2.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.e2e.test_dovecot_harness import (
    DOMAIN,
    MAIL_UID,
    ORDINARY_PASSWORD,
    ORDINARY_USER,
    PERSON,
    ROLE,
    ROOT,
    DovecotHost,
    _start_introspection,
    build_host,
    client_context,
    imap_starttls,
    mailboxes,
    make_token,
    shared_pki,
    start,
    stop,
    xoauth2,
)

# needs ansible-playbook (the development venv); a play takes minutes on a loaded machine
pytestmark = [pytest.mark.devonly, pytest.mark.timeout(1200)]
ANSIBLE_PLAYBOOK = ROOT / ".venv" / "bin" / "ansible-playbook"


@pytest.fixture(scope="module")
def ordinary_host() -> Iterator[DovecotHost]:
    """An ordinary Dovecot without any MSSanté file, running."""
    base = Path(tempfile.mkdtemp(prefix="mssante-dovecot-role-", dir="/var/tmp"))
    base.chmod(0o755)
    host = build_host(base, shared_pki())
    try:
        host.introspect, hostport = _start_introspection(base, host.addresses["app"], host.tokens_file)
        host.variables = {"introspection_url": f"http://{hostport}/introspect"}
        start(host, with_mssante=False)
        yield host
    finally:
        stop(host)
        if os.environ.get("MSSANTE_KEEP_TEST_DIRS") != "1":
            shutil.rmtree(base, ignore_errors=True)


def _listener(name: str, address: str, port: int, tls: str, client_ca: str) -> dict[str, Any]:
    return {"name": name, "address": address, "port": port, "tls": tls, "client_ca": client_ca}


def _inventory_vars(host: DovecotHost, **overrides: Any) -> dict[str, Any]:
    pki, base = host.pki, host.base
    conf = base / "etc/dovecot"
    a = host.addresses

    def ca(name: str, authority: Any) -> dict[str, str]:
        return {"name": name, "cert": str(authority.cert), "crl_url": f"file://{authority.crl}"}

    values = {
        "mssante_dovecot_config_dir": str(conf),
        "mssante_dovecot_stage_dir": str(base / "stage"),
        "mssante_dovecot_backup_dir": str(base / "backup"),
        "mssante_dovecot_crl_refresh_path": str(base / "sbin/mssante-dovecot-crl-refresh"),
        "mssante_dovecot_domains": [DOMAIN],
        "mssante_dovecot_mailboxes": mailboxes(pki),
        "mssante_dovecot_mail_root": str(base / "vmail"),
        "mssante_dovecot_mail_uid": MAIL_UID,
        "mssante_dovecot_mail_gid": MAIL_UID,
        "mssante_dovecot_create_mail_user": False,
        "mssante_dovecot_listeners": [
            {
                "name": "mssante_app_imap",
                "address": a["app"],
                "port": 143,
                "tls": "starttls",
                "client_ca": "app",
            },
            {
                "name": "mssante_app_imaps",
                "address": a["app"],
                "port": 993,
                "tls": "implicit",
                "client_ca": "app",
            },
            {
                "name": "mssante_per_imap",
                "address": a["personal"],
                "port": 143,
                "tls": "starttls",
                "client_ca": "personal",
            },
        ],
        "mssante_dovecot_tls_cert": str(pki.hospital.fullchain),
        "mssante_dovecot_tls_key": str(pki.hospital.key),
        "mssante_dovecot_client_ca_sets": {
            "app": [ca("organisations", pki.intermediate), ca("root", pki.root)],
            "personal": [ca("personnes", pki.personal_ca), ca("root", pki.root)],
        },
        "mssante_dovecot_oauth2": {
            "introspection_url": host.variables["introspection_url"],
            "introspection_mode": "post",
            "username_attribute": "sub",
            "tls_ca_cert_file": "",
        },
        "mssante_dovecot_auth_socket": str(base / "spool/private/dovecot-auth"),
        "mssante_dovecot_lmtp_socket": str(base / "spool/private/dovecot-lmtp"),
        "mssante_dovecot_postfix_user": "root",
        "mssante_dovecot_postfix_group": "root",
        "mssante_dovecot_reload_command": ["doveadm", "-c", str(conf / "dovecot.conf"), "reload"],
        "mssante_dovecot_smoke_ca_file": str(pki.chain),
        "mssante_dovecot_smoke_client_cert": str(pki.dpi.fullchain),
        "mssante_dovecot_smoke_client_key": str(pki.dpi.key),
    }
    values.update(overrides)
    return values


def _play(host: DovecotHost, values: dict[str, Any], *extra: str) -> subprocess.CompletedProcess[str]:
    run_dir = host.base / "ansible"
    run_dir.mkdir(exist_ok=True)
    (run_dir / "vars.json").write_text(json.dumps(values))
    (run_dir / "site.yml").write_text(
        f"- hosts: localhost\n  connection: local\n  gather_facts: false\n  roles:\n    - role: {ROLE}\n"
    )
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    argv = [str(ANSIBLE_PLAYBOOK), "-i", "localhost,", "-e", f"@{run_dir / 'vars.json'}"]
    argv += ["-e", "ansible_python_interpreter=/usr/bin/python3", *extra]
    return subprocess.run(
        [*argv, str(run_dir / "site.yml")], capture_output=True, text=True, check=False, env=env, timeout=300
    )


def _changed(result: subprocess.CompletedProcess[str]) -> int:
    match = re.search(r"localhost\s+:\s+ok=\d+\s+changed=(\d+)", result.stdout)
    assert match, result.stdout[-3000:]
    return int(match.group(1))


def _ordinary_digests(host: DovecotHost) -> dict[str, str]:
    conf = host.base / "etc/dovecot"
    files = [conf / "dovecot.conf", conf / "ordinary.passwd", *sorted((conf / "conf.d").glob("[1-8]*.conf"))]
    return {str(path): hashlib.sha256(path.read_bytes()).hexdigest() for path in files}


def _oauth_login(host: DovecotHost) -> None:
    token = make_token(3500)
    host.add_token(token, PERSON, 600)
    client = imap_starttls(host.addresses["personal"], client_context(host.pki))
    assert client.authenticate("XOAUTH2", xoauth2(PERSON, token))[0] == "OK"
    client.logout()


def _ordinary_login(host: DovecotHost) -> None:
    client = imap_starttls(host.addresses["ordinary"], client_context(host.pki))
    assert client.login(ORDINARY_USER, ORDINARY_PASSWORD)[0] == "OK"
    client.logout()


def test_role_converges_idempotent_and_leaves_ordinary_files_identical(ordinary_host: DovecotHost) -> None:
    before = _ordinary_digests(ordinary_host)
    _ordinary_login(ordinary_host)
    first = _play(ordinary_host, _inventory_vars(ordinary_host))
    assert first.returncode == 0, first.stdout[-4000:]
    assert _changed(first) > 0
    assert _ordinary_digests(ordinary_host) == before
    _ordinary_login(ordinary_host)
    _oauth_login(ordinary_host)
    second = _play(ordinary_host, _inventory_vars(ordinary_host))
    assert second.returncode == 0, second.stdout[-4000:]
    assert _changed(second) == 0, second.stdout[-4000:]


def test_role_check_mode_shows_the_diff_and_writes_nothing(ordinary_host: DovecotHost) -> None:
    assert _play(ordinary_host, _inventory_vars(ordinary_host)).returncode == 0
    users = ordinary_host.base / "etc/dovecot/mssante/users.passwd"
    before = users.read_bytes()
    extra = {"address": f"nouveau@{DOMAIN}", "type": "PER", "owners": ["810001111111"], "cert_cns": []}
    values = _inventory_vars(ordinary_host, mssante_dovecot_mailboxes=[*mailboxes(ordinary_host.pki), extra])
    result = _play(ordinary_host, values, "--check", "--diff")
    assert result.returncode == 0, result.stdout[-4000:]
    assert f"+nouveau@{DOMAIN}" in result.stdout
    assert users.read_bytes() == before


def test_role_rolls_back_when_the_smoke_test_fails(ordinary_host: DovecotHost) -> None:
    assert _play(ordinary_host, _inventory_vars(ordinary_host)).returncode == 0
    users = ordinary_host.base / "etc/dovecot/mssante/users.passwd"
    before = users.read_bytes()
    extra = {"address": f"autre@{DOMAIN}", "type": "PER", "owners": ["810002222222"], "cert_cns": []}
    values = _inventory_vars(
        ordinary_host,
        mssante_dovecot_mailboxes=[*mailboxes(ordinary_host.pki), extra],
        # A smoke CA that cannot verify the server certificate: the smoke test fails after the swap.
        mssante_dovecot_smoke_ca_file=str(ordinary_host.pki.foreign_ca.cert),
    )
    result = _play(ordinary_host, values)
    assert result.returncode != 0
    assert "rolled back" in result.stdout, result.stdout[-6000:]
    assert users.read_bytes() == before
    _oauth_login(ordinary_host)
    _ordinary_login(ordinary_host)
