"""Settings shared by the Postfix fixture: master.cf services, queue layout, TLS presets."""

from __future__ import annotations

from pathlib import Path

# Internal services of a Postfix instance: (name, type, private, unpriv, chroot, wakeup, maxproc, command).
INTERNAL_SERVICES = (
    ("pickup", "unix", "n", "-", "n", "60", "1", "pickup"),
    ("cleanup", "unix", "n", "-", "n", "-", "0", "cleanup"),
    ("qmgr", "unix", "n", "-", "n", "300", "1", "qmgr"),
    ("tlsmgr", "unix", "-", "-", "n", "1000?", "1", "tlsmgr"),
    ("rewrite", "unix", "-", "-", "n", "-", "-", "trivial-rewrite"),
    ("bounce", "unix", "-", "-", "n", "-", "0", "bounce"),
    ("defer", "unix", "-", "-", "n", "-", "0", "bounce"),
    ("trace", "unix", "-", "-", "n", "-", "0", "bounce"),
    ("verify", "unix", "-", "-", "n", "-", "1", "verify"),
    ("flush", "unix", "n", "-", "n", "1000?", "0", "flush"),
    ("proxymap", "unix", "-", "-", "n", "-", "-", "proxymap"),
    ("proxywrite", "unix", "-", "-", "n", "-", "1", "proxymap"),
    ("smtp", "unix", "-", "-", "n", "-", "-", "smtp"),
    ("relay", "unix", "-", "-", "n", "-", "-", "smtp"),
    ("showq", "unix", "n", "-", "n", "-", "-", "showq"),
    ("error", "unix", "-", "-", "n", "-", "-", "error"),
    ("retry", "unix", "-", "-", "n", "-", "-", "error"),
    ("discard", "unix", "-", "-", "n", "-", "-", "discard"),
    ("lmtp", "unix", "-", "-", "n", "-", "-", "lmtp"),
    ("anvil", "unix", "-", "-", "n", "-", "1", "anvil"),
    ("scache", "unix", "-", "-", "n", "-", "1", "scache"),
    ("tlsproxy", "unix", "-", "-", "n", "-", "0", "tlsproxy"),
    ("postlog", "unix-dgram", "n", "-", "n", "-", "1", "postlogd"),
)

# Queue subdirectories as in Postfix's postfix-files: (name, owner is mail_owner, group postdrop, mode).
QUEUE_DIRS = (
    *((name, True, False, 0o700) for name in ("active", "bounce", "corrupt", "defer", "deferred", "flush")),
    *((name, True, False, 0o700) for name in ("hold", "incoming", "private", "saved", "trace")),
    ("maildrop", True, True, 0o730),
    ("public", True, True, 0o710),
    ("pid", False, False, 0o755),
)

# Short retry timers for tests that watch a deferral turn into a delivery; opt in with postconf(FAST_RETRY).
FAST_RETRY = {
    "queue_run_delay": "1s",
    "minimal_backoff_time": "1s",
    "maximal_backoff_time": "2s",
}


def smtpd_tls_settings(
    cert: Path, key: Path, ca_file: Path, *, level: str = "encrypt", ask_ccert: bool = True
) -> dict[str, str]:
    """main.cf settings for an smtpd that presents ``cert`` (a fullchain) and verifies client
    certificates against ``ca_file`` only (CApath empty), TLS >= 1.2; log lines say Trusted/Untrusted."""
    return {
        "smtpd_tls_chain_files": f"{key}, {cert}",
        "smtpd_tls_security_level": level,
        "smtpd_tls_ask_ccert": "yes" if ask_ccert else "no",
        "smtpd_tls_CAfile": str(ca_file),
        "smtpd_tls_CApath": "",
        "smtpd_tls_protocols": ">=TLSv1.2",
        "smtpd_tls_mandatory_protocols": ">=TLSv1.2",
        "smtpd_tls_loglevel": "1",
        "smtpd_tls_received_header": "yes",
    }


def smtp_tls_settings(
    cert: Path, key: Path, ca_file: Path, *, level: str = "secure", match: str | None = None
) -> dict[str, str]:
    """main.cf settings for the SMTP client: presents ``cert``, verifies servers against ``ca_file``
    only; with ``level=secure`` the server name must match ``match`` (e.g. the listed CNs)."""
    settings = {
        "smtp_tls_chain_files": f"{key}, {cert}",
        "smtp_tls_security_level": level,
        "smtp_tls_CAfile": str(ca_file),
        "smtp_tls_CApath": "",
        "smtp_tls_protocols": ">=TLSv1.2",
        "smtp_tls_mandatory_protocols": ">=TLSv1.2",
        "smtp_tls_loglevel": "1",
    }
    if match is not None:
        settings["smtp_tls_secure_cert_match"] = match
    return settings
