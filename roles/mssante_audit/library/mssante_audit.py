#!/usr/bin/python
# -*- coding: utf-8 -*-
"""Ansible module: observe a mail server read-only and judge it against the MSSanté requirements."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: mssante_audit
short_description: Read-only MSSanté compliance observations of a Postfix/Dovecot host
description:
  - Reads the MSSanté and ordinary Postfix instances' settings with C(postconf), the compiled trust
    list, the journal's self-verification result, CRLs and backups, and opens TLS sessions on every
    MSSanté listener (TLS 1.1, TLS 1.2, weak suites, STARTTLS, capabilities). Sends no mail, writes nothing.
  - Returns one result per requirement ID (pass, fail, not_applicable, unknown) with its evidence.
options:
  postfix_config_dir: {description: The MSSanté instance's configuration directory., type: path, required: true}
  ordinary_config_dir: {description: The ordinary instance's configuration directory., type: path, required: true}
  mssante_domains: {description: The hospital's MSSanté domains., type: list, elements: str, default: []}
  igc_chain: {description: PEM file of the IGC-Santé chain., type: path, required: true}
  trustlist_dir: {description: The compiled trust list's current directory., type: path, required: true}
  mssante_config: {description: The Python side's configuration file., type: path, required: true}
  journal_verify_file: {description: The journal self-verification result file., type: path, required: true}
  crl_glob: {description: Glob of the kept IGC-Santé CRLs., type: str, required: true}
  backup_dir: {description: Where the conversion keeps its backups., type: path, required: true}
  dovecot_config: {description: Dovecot's main configuration file., type: path, default: /etc/dovecot/dovecot.conf}
  extra_listeners:
    description: Listeners to probe besides the MSSanté instance's SMTP services (Dovecot's IMAP ones).
    type: list
    elements: dict
    default: []
author: MSSanté operator appliance
"""

RETURN = r"""
checks:
  description: One result per requirement ID.
  returned: always
  type: list
  elements: dict
facts:
  description: What was observed (settings, probe results), without secrets or message content.
  returned: always
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.mssante_audit_checks import evaluate
from ansible.module_utils.mssante_audit_gather import gather


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "postfix_config_dir": {"type": "path", "required": True},
            "ordinary_config_dir": {"type": "path", "required": True},
            "mssante_domains": {"type": "list", "elements": "str", "default": []},
            "igc_chain": {"type": "path", "required": True},
            "trustlist_dir": {"type": "path", "required": True},
            "mssante_config": {"type": "path", "required": True},
            "journal_verify_file": {"type": "path", "required": True},
            "crl_glob": {"type": "str", "required": True},
            "backup_dir": {"type": "path", "required": True},
            "dovecot_config": {"type": "path", "default": "/etc/dovecot/dovecot.conf"},
            "extra_listeners": {"type": "list", "elements": "dict", "default": []},
        },
        supports_check_mode=True,
    )
    facts = gather(module.params)
    checks = evaluate(facts)
    for listener in facts.get("listeners", []):  # the certificates are summarised, not returned
        for probe in [listener["default"], listener["tls1_1"], listener["tls1_2"], *listener["weak"].values()]:
            probe.pop("cert_der_hex", None)
    module.exit_json(changed=False, checks=checks, facts=facts)


if __name__ == "__main__":
    main()
