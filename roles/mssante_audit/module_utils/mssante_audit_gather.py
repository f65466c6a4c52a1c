# -*- coding: utf-8 -*-
"""Gather, read-only, everything the audit checks look at (standard library only)."""

from __future__ import annotations

import glob
import json
import os
import time
from typing import Any, Dict, List, Optional

from ansible.module_utils.mssante_audit_probe import (
    certificate_facts,
    master_services,
    postconf,
    probe_listener,
    read_json,
    read_text,
    run,
)

MSSANTE_PARAMETERS = [
    "default_transport", "local_transport", "relay_transport", "relayhost", "mydestination",
    "alias_maps", "transport_maps", "smtp_tls_policy_maps", "smtp_tls_CAfile", "smtp_tls_CApath",
    "smtp_tls_security_level", "smtp_tls_mandatory_protocols", "smtp_tls_protocols",
    "smtp_tls_cert_file", "smtp_tls_connection_reuse", "smtpd_tls_CAfile", "smtpd_tls_CApath",
    "smtpd_tls_ask_ccert", "smtpd_tls_security_level", "smtpd_tls_auth_only", "tls_append_default_CA",
    "smtpd_tls_cert_file", "smtpd_tls_mandatory_protocols", "smtpd_tls_protocols",
    "smtpd_milters", "milter_default_action", "milter_protocol", "disable_mime_output_conversion",
    "smtpd_forbid_bare_newline", "smtpd_forbid_bare_newline_exclusions", "enable_long_queue_ids",
    "authorized_submit_users", "smtpd_sender_login_maps", "smtpd_sender_restrictions",
    "smtpd_recipient_restrictions", "smtpd_relay_restrictions", "smtpd_client_restrictions",
    "smtpd_tls_fingerprint_digest", "inet_interfaces", "header_checks", "body_checks", "smtp_header_checks",
    "smtp_body_checks", "virtual_alias_maps", "sender_bcc_maps", "recipient_bcc_maps", "always_bcc",
]
ORDINARY_CLAIMS = ["mydestination", "virtual_mailbox_domains", "virtual_alias_domains", "relay_domains"]


def _crl_next_update(path: str) -> Optional[str]:
    out = run(["openssl", "crl", "-noout", "-nextupdate", "-in", path]) or ""
    if "=" not in out:
        out = run(["openssl", "crl", "-noout", "-nextupdate", "-inform", "DER", "-in", path]) or ""
    return out.partition("=")[2].strip() or None


def _cert_end(path: str) -> Optional[str]:
    out = run(["openssl", "x509", "-noout", "-enddate", "-in", path]) or ""
    return out.partition("=")[2].strip() or None


def _map_lookup(config_dir: str, key: str, table: str) -> Optional[str]:
    if not table:
        return None
    out = run(["postmap", "-c", config_dir, "-q", key, table])
    return out.strip() if out is not None else None


def _listed_sample(index: Any) -> Optional[str]:
    if isinstance(index, dict):
        for name, entry in sorted((index.get("domains") or {}).items()):
            if isinstance(entry, dict) and not entry.get("local"):
                return name
    return None


def _listeners(services: List[Any], interfaces: str, extra: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    found = []
    for service in services:
        if service.kind == "inet" and service.command == "smtpd" and service.port in (25, 587):
            found.append({"protocol": "smtp", "host": service.host(interfaces), "port": service.port})
    found += [dict(item) for item in extra]
    return found


def gather(params: Dict[str, Any]) -> Dict[str, Any]:
    """Every observation, as JSON-ready data (no message content, no secrets)."""
    mssante_dir = params["postfix_config_dir"]
    mssante = postconf(mssante_dir, MSSANTE_PARAMETERS)
    services = master_services(mssante_dir)
    trust_dir = params["trustlist_dir"]
    index = read_json(os.path.join(trust_dir, "index.json"))
    sample = _listed_sample(index)
    ordinary = postconf(params["ordinary_config_dir"], ORDINARY_CLAIMS + ["multi_instance_directories"])
    policy_map = next((m for m in mssante.get("smtp_tls_policy_maps", "").replace(",", " ").split() if m), "")
    facts: Dict[str, Any] = {
        "time": time.time(),
        "mssante_present": bool(mssante),
        "mssante": mssante,
        "mssante_services": [vars(s) for s in services],
        "ordinary": ordinary,
        "mssante_domains": params["mssante_domains"],
        "igc_chain": read_text(params["igc_chain"]) if params["igc_chain"] else None,
        "smtpd_ca": read_text(mssante.get("smtpd_tls_CAfile", "")) if mssante.get("smtpd_tls_CAfile") else None,
        "smtp_ca": read_text(mssante.get("smtp_tls_CAfile", "")) if mssante.get("smtp_tls_CAfile") else None,
        "trustlist_status": read_json(os.path.join(trust_dir, "status.json")),
        "trustlist_domains": len((index or {}).get("domains") or {}) if isinstance(index, dict) else 0,
        "trustlist_sample": sample,
        "tls_policy_sample": _map_lookup(mssante_dir, sample, policy_map) if sample else None,
        "mssante_config": read_text(params["mssante_config"]),
        "journal_verify": read_json(params["journal_verify_file"]),
        "crls": {path: _crl_next_update(path) for path in sorted(glob.glob(params["crl_glob"]))},
        "operator_cert_end": _cert_end(mssante.get("smtpd_tls_cert_file", "")) if mssante.get("smtpd_tls_cert_file") else None,
        "backups": sorted(glob.glob(os.path.join(params["backup_dir"], "**", "*manifest*"), recursive=True)),
        "dovecot": run(["doveconf", "-c", params["dovecot_config"], "-n"]) if os.path.isfile(params["dovecot_config"]) else None,
    }
    facts["listeners"] = [
        probe_listener(item["protocol"], item["host"], int(item["port"]))
        for item in _listeners(services, mssante.get("inet_interfaces", ""), params["extra_listeners"])
    ]
    served = {x["default"]["cert_der_hex"] for x in facts["listeners"] if x["default"]["cert_der_hex"]}
    facts["served_certificates"] = [certificate_facts(der, params["igc_chain"]) for der in sorted(served)]
    return json.loads(json.dumps(facts, default=str))
