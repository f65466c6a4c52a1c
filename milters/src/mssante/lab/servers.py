"""The mail servers of the lab hosts, at Debian's default paths inside each host (docs/lab-json.md).

Every host runs Postfix from /etc/postfix (queue /var/spool/postfix, log /var/log/postfix.log, no
chroot: no init script copies files into one). The hospital also runs Dovecot from /etc/dovecot
(Debian's files, with ``10-auth.conf`` switched from PAM to a passwd-file and ``local.conf``).
Configuration is written when a host is created ("seeded") and left alone afterwards, so a later
``up`` never undoes what the roles changed; ``ensure_*`` only starts what is not running.
"""

from __future__ import annotations

import grp
import os
import pwd
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mssante.lab.hosts import Host
from mssante.lab.system import alive, listening, wait_until

POSTFIX_LOG = "/var/log/postfix.log"
DOVECOT_LOG = "/var/log/dovecot.log"
VMAIL_BASE = "/var/mail/vhosts"
MAIL_USER = "mail"  # Debian's uid 8 owns the lab's Maildirs

_SERVICES = (
    "pickup unix n - n 60 1 pickup",
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
    "proxywrite unix - - n - 1 proxymap",
    "smtp unix - - n - - smtp",
    "relay unix - - n - - smtp",
    "showq unix n - n - - showq",
    "error unix - - n - - error",
    "retry unix - - n - - error",
    "discard unix - - n - - discard",
    "local unix - n n - - local",
    "virtual unix - n n - - virtual",
    "lmtp unix - - n - - lmtp",
    "anvil unix - - n - 1 anvil",
    "scache unix - - n - 1 scache",
    "postlog unix-dgram n - n - 1 postlogd",
)
_SUBMISSION = (
    "submission inet n - n - - smtpd\n"
    "  -o syslog_name=postfix/submission\n"
    "  -o smtpd_tls_security_level=encrypt\n"
    "  -o smtpd_sasl_auth_enable=yes\n"
    "  -o smtpd_client_restrictions=permit_sasl_authenticated,reject\n"
)


@dataclass(frozen=True)
class MailServer:
    """What one host's Postfix serves: its names, addresses, domains, mailboxes and TLS."""

    hostname: str
    listen: Sequence[str]  # addresses of its smtpd (port 25), besides 127.0.0.1
    domains: Sequence[str]
    mailboxes: Sequence[str]  # addresses delivered into Maildirs (or over LMTP to Dovecot)
    tls: Mapping[str, str]  # Postfix TLS settings of this host
    restrictions: Mapping[str, str]
    transport: Mapping[str, str] = field(default_factory=dict)  # domain -> transport (else default)
    tls_policy: Mapping[str, str] = field(default_factory=dict)  # domain -> policy
    default_transport: str = "smtp"
    lmtp: bool = False  # deliver to Dovecot over LMTP (the hospital) rather than virtual(8)
    submission: bool = False


def main_cf(server: MailServer) -> dict[str, str]:
    uid = str(pwd.getpwnam(MAIL_USER).pw_uid)
    settings = {
        "compatibility_level": "3.6",
        "myhostname": server.hostname,
        "mydomain": server.hostname.split(".", 1)[1],
        "myorigin": "$mydomain",
        "mydestination": "localhost",
        "inet_interfaces": ", ".join([*server.listen, "127.0.0.1"]),
        "inet_protocols": "ipv4",
        "mynetworks": "127.0.0.0/8",
        "smtpd_peername_lookup": "no",
        "maillog_file": POSTFIX_LOG,
        "maillog_file_prefixes": "/var/log",
        "alias_maps": "",
        "alias_database": "",
        "biff": "no",
        "smtputf8_enable": "no",
        "virtual_mailbox_domains": ", ".join(server.domains),
        "virtual_mailbox_maps": "texthash:/etc/postfix/vmailbox",
        "virtual_mailbox_base": VMAIL_BASE,
        "virtual_uid_maps": f"static:{uid}",
        "virtual_gid_maps": f"static:{uid}",
        "virtual_minimum_uid": uid,
        "default_transport": server.default_transport,
        "transport_maps": "texthash:/etc/postfix/transport" if server.transport else "",
        "smtp_tls_policy_maps": "texthash:/etc/postfix/tls_policy" if server.tls_policy else "",
        "smtpd_tls_received_header": "yes",
        "smtpd_tls_loglevel": "1",
        "smtp_tls_loglevel": "1",
        **server.tls,
        **server.restrictions,
    }
    if server.lmtp:
        settings["virtual_transport"] = "lmtp:unix:private/dovecot-lmtp"
        settings["smtpd_sasl_type"] = "dovecot"
        settings["smtpd_sasl_path"] = "private/auth"
    return settings


def _maps(server: MailServer) -> dict[str, str]:
    mailboxes = "".join(
        f"{box} {box.split('@')[1]}/{box.split('@')[0]}/\n" for box in sorted(server.mailboxes)
    )
    files = {"vmailbox": mailboxes}
    if server.transport:
        files["transport"] = "".join(f"{key} {value}\n" for key, value in sorted(server.transport.items()))
    if server.tls_policy:
        files["tls_policy"] = "".join(f"{key} {value}\n" for key, value in sorted(server.tls_policy.items()))
    return files


def seed_postfix(host: Host, server: MailServer) -> None:
    """Write /etc/postfix (main.cf, master.cf, maps) and the Maildir base inside ``host``."""
    etc = host.fs("/etc/postfix")
    text = "".join(f"{key} = {value}\n" for key, value in main_cf(server).items())
    (etc / "main.cf").write_text("# Seeded by the MSSante lab (mssante.lab.servers).\n" + text)
    master = ["smtp inet n - n - - smtpd", *_SERVICES]
    (etc / "master.cf").write_text("\n".join(master) + "\n" + (_SUBMISSION if server.submission else ""))
    for name, content in _maps(server).items():
        (etc / name).write_text(content)
    base = host.fs(VMAIL_BASE)
    base.mkdir(mode=0o755, parents=True, exist_ok=True)
    account = pwd.getpwnam(MAIL_USER)
    os.chown(base, account.pw_uid, account.pw_gid)
    host.run(["postfix", "check"])


def postfix_pid(host: Host) -> int | None:
    try:
        pid = int(host.fs("/var/spool/postfix/pid/master.pid").read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if alive(pid) and pid in host.namespace_pids() else None


def ensure_postfix(host: Host, addresses: Sequence[str]) -> bool:
    """Start the host's Postfix unless it runs; True when it was started."""
    if postfix_pid(host) is not None:
        return False
    host.run(["postfix", "start"], timeout=120)
    wait_until(
        lambda: (
            postfix_pid(host) is not None
            and all(listening(address, 25, host.proc_net) for address in addresses)
        ),
        30,
        lambda: f"Postfix in {host.name}: {_tail(host.fs(POSTFIX_LOG))}",
    )
    return True


def _tail(path: Path) -> str:
    try:
        return path.read_text(errors="replace")[-3000:]
    except OSError:
        return "(no log)"


# ---- the hospital's Dovecot -----------------------------------------------------------------------
@dataclass(frozen=True)
class Mailstore:
    """The hospital's ordinary Dovecot: IMAP on its ordinary address, LMTP and SASL for Postfix."""

    address: str
    hostname: str
    cert: Path
    key: Path
    users: Mapping[str, str]  # address -> password


def local_conf(store: Mailstore) -> str:
    uid = pwd.getpwnam(MAIL_USER).pw_uid
    return f"""# Seeded by the MSSante lab (mssante.lab.servers): the hospital's ordinary Dovecot.
protocols = imap lmtp
listen = {store.address}, 127.0.0.1
log_path = {DOVECOT_LOG}
hostname = {store.hostname}
postmaster_address = postmaster@{store.hostname.split(".", 1)[1]}
ssl = required
ssl_min_protocol = TLSv1.2
disable_plaintext_auth = yes
mail_location = maildir:{VMAIL_BASE}/%d/%n
mail_uid = {MAIL_USER}
mail_gid = {MAIL_USER}
first_valid_uid = {uid}
service lmtp {{
  unix_listener /var/spool/postfix/private/dovecot-lmtp {{
    mode = 0600
    user = postfix
    group = postfix
  }}
}}
service auth {{
  unix_listener /var/spool/postfix/private/auth {{
    mode = 0660
    user = postfix
    group = postfix
  }}
}}
"""


def seed_dovecot(host: Host, store: Mailstore) -> None:
    """Switch Debian's Dovecot files to passwd-file users and write local.conf inside ``host``."""
    etc = host.fs("/etc/dovecot")
    auth = etc / "conf.d" / "10-auth.conf"
    text = auth.read_text()
    text = text.replace("\n!include auth-system.conf.ext", "\n#!include auth-system.conf.ext")
    text = text.replace("\n#!include auth-passwdfile.conf.ext", "\n!include auth-passwdfile.conf.ext")
    # Here, not in local.conf (read after conf.d/): a conversion appends its mechanisms in conf.d/99-*.
    text = text.replace("\nauth_mechanisms = plain\n", "\nauth_mechanisms = plain login\n")
    auth.write_text(text)
    # auth-passwdfile.conf.ext reads /etc/dovecot/users (scheme CRYPT: {PLAIN} prefixes are honoured).
    users = etc / "users"
    users.write_text("".join(f"{user}:{{PLAIN}}{password}::::::\n" for user, password in store.users.items()))
    os.chown(users, 0, grp.getgrnam("dovecot").gr_gid)
    users.chmod(0o640)
    # Debian's 10-ssl.conf reads /etc/dovecot/private/dovecot.{pem,key} (made by its postinst).
    (etc / "private" / "dovecot.pem").write_bytes(store.cert.read_bytes())
    key = etc / "private" / "dovecot.key"
    key.write_bytes(store.key.read_bytes())
    key.chmod(0o600)
    (etc / "local.conf").write_text(local_conf(store))
    host.run(["doveconf", "-n"])


def dovecot_pid(host: Host) -> int | None:
    try:
        pid = int(host.fs("/run/dovecot/master.pid").read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if alive(pid) and pid in host.namespace_pids() else None


def ensure_dovecot(host: Host, address: str) -> bool:
    """Start the host's Dovecot unless it runs; True when it was started."""
    if dovecot_pid(host) is not None:
        return False
    host.run(["dovecot"], timeout=60)
    wait_until(
        lambda: dovecot_pid(host) is not None and listening(address, 143, host.proc_net),
        30,
        lambda: f"Dovecot in {host.name}: {_tail(host.fs(DOVECOT_LOG))}",
    )
    return True
