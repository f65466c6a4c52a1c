#!/usr/bin/python3
"""Ansible module: smoke-test the MSSanté LMTP service after a Dovecot reload.

Connects to the socket the MSSanté Postfix instance delivers to, expects Dovecot's LMTP greeting and a
successful LHLO, then QUIT: nothing is delivered. It fails when the socket is missing (for instance
``lmtp`` is not among Dovecot's protocols, which disables the MSSanté LMTP service too).
"""

from __future__ import annotations

import smtplib

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: mssante_lmtp_smoke
short_description: Smoke-test the MSSanté LMTP socket (greeting and LHLO, no delivery)
options:
  socket: {type: str, required: true, description: path of the LMTP unix socket}
  timeout: {type: int, default: 20, description: seconds per operation}
"""


def smoke(path: str, timeout: int) -> dict:
    client = smtplib.LMTP(timeout=timeout)
    code, greeting = client.connect(path)
    if code != 220:
        raise RuntimeError(f"unexpected greeting {code} {greeting!r}")
    code, _ = client.ehlo("mssante-smoke")
    if code != 250:
        raise RuntimeError(f"LHLO answered {code}")
    client.quit()
    return {"greeting": greeting.decode("utf-8", "replace")}


def main() -> None:
    module = AnsibleModule(
        argument_spec={"socket": {"type": "str", "required": True}, "timeout": {"type": "int", "default": 20}},
        supports_check_mode=True,
    )
    if module.check_mode:
        module.exit_json(changed=False, skipped=True)
    try:
        facts = smoke(module.params["socket"], module.params["timeout"])
    except (OSError, smtplib.SMTPException, RuntimeError) as exc:
        module.fail_json(msg=f"{module.params['socket']}: {exc}")
    module.exit_json(changed=False, **facts)


if __name__ == "__main__":
    main()
