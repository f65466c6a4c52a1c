#!/usr/bin/python3
"""Ansible module: smoke-test one MSSanté IMAP listener after a Dovecot reload.

STARTTLS (or implicit TLS) with the server certificate verified against ``ca_file`` and TLS >= 1.2;
before TLS the listener must advertise LOGINDISABLED (no authentication before TLS, TLS-5); after TLS it
must offer AUTH=XOAUTH2. With ``client_cert``/``client_key`` (an application certificate) it also logs in
with EXTERNAL and selects INBOX: a real login.
"""

from __future__ import annotations

import imaplib
import ssl

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: mssante_imap_smoke
short_description: Smoke-test an MSSanté IMAP listener (TLS, capabilities, optional certificate login)
options:
  host: {type: str, required: true, description: listener address}
  port: {type: int, required: true, description: listener port}
  tls: {type: str, default: starttls, choices: [starttls, implicit], description: how TLS starts}
  ca_file: {type: str, required: true, description: CA file the server certificate must verify against}
  client_cert: {type: str, default: "", description: client certificate for an EXTERNAL login}
  client_key: {type: str, default: "", description: its key}
  timeout: {type: int, default: 20, description: seconds per network operation}
"""


def _context(params: dict) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=params["ca_file"])
    context.check_hostname = False
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if params["client_cert"]:
        context.load_cert_chain(params["client_cert"], params["client_key"] or None)
    return context


def smoke(params: dict) -> dict:
    context = _context(params)
    facts: dict = {}
    if params["tls"] == "implicit":
        client = imaplib.IMAP4_SSL(
            params["host"], params["port"], ssl_context=context, timeout=params["timeout"]
        )
    else:
        client = imaplib.IMAP4(params["host"], params["port"], timeout=params["timeout"])
        if "LOGINDISABLED" not in client.capabilities:
            raise RuntimeError("authentication is offered before STARTTLS (LOGINDISABLED missing)")
        client.starttls(ssl_context=context)
    facts["tls_version"] = client.sock.version()
    caps = client.capabilities
    facts["capabilities"] = list(caps)
    if "AUTH=XOAUTH2" not in caps:
        raise RuntimeError("AUTH=XOAUTH2 is not offered after TLS")
    if params["client_cert"]:
        client.authenticate("EXTERNAL", lambda _challenge: b"")
        typ, _ = client.select("INBOX")
        if typ != "OK":
            raise RuntimeError("certificate login succeeded but INBOX cannot be selected")
        facts["login"] = "EXTERNAL"
    client.logout()
    return facts


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "host": {"type": "str", "required": True},
            "port": {"type": "int", "required": True},
            "tls": {"type": "str", "default": "starttls", "choices": ["starttls", "implicit"]},
            "ca_file": {"type": "str", "required": True},
            "client_cert": {"type": "str", "default": ""},
            "client_key": {"type": "str", "default": ""},
            "timeout": {"type": "int", "default": 20},
        },
        supports_check_mode=True,
    )
    if module.check_mode:
        module.exit_json(changed=False, skipped=True)
    try:
        facts = smoke(module.params)
    except (OSError, ssl.SSLError, imaplib.IMAP4.error, RuntimeError) as exc:
        module.fail_json(msg=f"{module.params['host']}:{module.params['port']}: {exc}")
    module.exit_json(changed=False, **facts)


if __name__ == "__main__":
    main()
