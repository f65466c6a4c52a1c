#!/usr/bin/python
"""Smoke test of an SMTP listener through a real transaction: EHLO, STARTTLS, MAIL, RCPT, RSET."""

from __future__ import annotations

import smtplib
import ssl
import time

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: mssante_smtp_smoke
short_description: Prove an SMTP listener alive through a real transaction
description:
  - Connects, says EHLO, upgrades with STARTTLS, says EHLO again, then MAIL, RCPT and RSET.
  - A listener is alive when every step answers 2xx, or when MAIL or RCPT get a policy refusal
    (5xx, such as the milter's C(550 5.7.1)). A 4xx answer (a milter that does not answer with
    C(default_action=tempfail)), a refused connection or a broken TLS handshake fails.
  - Never changes anything; runs in check mode too.
options:
  host: {description: Listener address., type: str, required: true}
  port: {description: Listener port., type: int, default: 25}
  starttls: {description: Require and use STARTTLS., type: bool, default: true}
  helo: {description: EHLO name., type: str, default: smoke.invalid}
  mail_from: {description: Envelope sender (empty for the null sender)., type: str, default: ""}
  rcpt_to: {description: Envelope recipient., type: str, required: true}
  ca_file:
    description: Trust anchors to verify the server certificate; no verification when unset.
    type: path
  client_cert: {description: Client certificate presented after STARTTLS., type: path}
  client_key: {description: Its key., type: path}
  timeout: {description: Seconds per step., type: float, default: 20}
  retries:
    description: Connection attempts while the listener comes up (one per second).
    type: int
    default: 10
author: MSSanté appliance
"""

EXAMPLES = r"""
- name: Smoke-test port 25
  mssante_smtp_smoke:
    host: 192.0.2.25
    port: 25
    rcpt_to: postmaster@hopital-exemple.mssante.fr
"""

RETURN = r"""
steps: {description: "Each step: command, code, reply text.", type: list, returned: always}
verdict: {description: "alive, policy (alive, refused by policy) or failed", type: str, returned: always}
"""


def _step(steps, name, code, text):
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    steps.append({"step": name, "code": code, "reply": text})
    return code


def _connect(params):
    last = None
    for _ in range(max(1, params["retries"])):
        try:
            client = smtplib.SMTP(timeout=params["timeout"])
            client._host = params["host"]  # STARTTLS needs it; connect() does not set it
            code, text = client.connect(params["host"], params["port"])
            return client, code, text
        except (OSError, smtplib.SMTPException) as exc:
            last = exc
            time.sleep(1)
    raise ConnectionError(f"cannot connect to {params['host']}:{params['port']}: {last}")


def _context(params):
    context = (
        ssl.create_default_context(cafile=params["ca_file"])
        if params["ca_file"]
        else ssl.create_default_context()
    )
    if not params["ca_file"]:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        context.check_hostname = False
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if params["client_cert"]:
        context.load_cert_chain(params["client_cert"], params["client_key"])
    return context


class _Failed(Exception):
    """A step got an unexpected answer (recorded in the steps)."""


def _expect(steps, name, reply, wanted):
    if _step(steps, name, *reply) != wanted:
        raise _Failed(name)


def _transaction(client, params, steps):
    """MAIL, RCPT (a 5xx policy refusal ends the transaction: alive), RSET."""
    verdict = "alive"
    for name, cmd in (
        ("MAIL", f"MAIL FROM:<{params['mail_from']}>"),
        ("RCPT", f"RCPT TO:<{params['rcpt_to']}>"),
    ):
        code = _step(steps, name, *client.docmd(cmd))
        if 500 <= code < 600:
            verdict = "policy"
            break
        if not 200 <= code < 300:
            raise _Failed(name)
    _expect(steps, "RSET", client.rset(), 250)
    return verdict


def run(params):
    steps = []
    client, code, text = _connect(params)
    try:
        _expect(steps, "banner", (code, text), 220)
        _expect(steps, "EHLO", client.ehlo(params["helo"]), 250)
        if params["starttls"]:
            _expect(steps, "STARTTLS", client.starttls(context=_context(params)), 220)
            _expect(steps, "EHLO", client.ehlo(params["helo"]), 250)
        verdict = _transaction(client, params, steps)
        client.quit()
        return steps, verdict
    except _Failed:
        return steps, "failed"
    finally:
        client.close()


def main():
    module = AnsibleModule(
        argument_spec={
            "host": {"type": "str", "required": True},
            "port": {"type": "int", "default": 25},
            "starttls": {"type": "bool", "default": True},
            "helo": {"type": "str", "default": "smoke.invalid"},
            "mail_from": {"type": "str", "default": ""},
            "rcpt_to": {"type": "str", "required": True},
            "ca_file": {"type": "path"},
            "client_cert": {"type": "path"},
            "client_key": {"type": "path"},
            "timeout": {"type": "float", "default": 20.0},
            "retries": {"type": "int", "default": 10},
        },
        required_together=[("client_cert", "client_key")],
        supports_check_mode=True,
    )
    try:
        steps, verdict = run(module.params)
    except smtplib.SMTPResponseException as exc:
        error = exc.smtp_error
        if isinstance(error, bytes):
            error = error.decode("utf-8", "replace")
        module.fail_json(msg=f"SMTP smoke test failed: {exc.smtp_code} {error}", verdict="failed", steps=[])
    except (TimeoutError, OSError, smtplib.SMTPException, ssl.SSLError, ConnectionError) as exc:
        module.fail_json(msg=f"SMTP smoke test failed: {exc}", verdict="failed", steps=[])
    if verdict == "failed":
        last = steps[-1] if steps else {}
        module.fail_json(
            msg=f"SMTP smoke test failed at {last.get('step')}: {last.get('code')} {last.get('reply')}",
            verdict=verdict,
            steps=steps,
        )
    module.exit_json(changed=False, verdict=verdict, steps=steps)


if __name__ == "__main__":
    main()
