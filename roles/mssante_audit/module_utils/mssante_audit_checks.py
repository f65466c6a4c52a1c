# -*- coding: utf-8 -*-
"""Judge gathered observations against the MSSanté requirements: one result per requirement ID.

Pure functions of the facts (mssante_audit_gather.py); no I/O, standard library only, so that the
controller's tests can run them on recorded facts. Statuses: pass, fail, not_applicable, unknown.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Any, Callable, Dict, List, Optional, Tuple

PASS, FAIL, NA, UNKNOWN = "pass", "fail", "not_applicable", "unknown"
STRONG_CIPHER = re.compile(r"^(TLS_(AES_\d+_GCM|CHACHA20_POLY1305)_SHA\d+|ECDHE-(RSA|ECDSA)-(AES\d+-GCM|CHACHA20-POLY1305)-SHA\d*)$")
TRUSTLIST_MAX_AGE = 36 * 3600
VERIFY_MAX_AGE = 36 * 3600
Result = Tuple[str, str, str]  # status, evidence, how to fix
Facts = Dict[str, Any]


def _no_instance(facts: Facts) -> Optional[Result]:
    if not facts.get("mssante_present"):
        return FAIL, "no MSSanté Postfix instance (no main.cf in its configuration directory)", "run playbooks/site.yml"
    return None


def _pems(text: Optional[str]) -> List[str]:
    return re.findall(r"-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----", text or "")


def _listeners(facts: Facts) -> List[Dict[str, Any]]:
    return list(facts.get("listeners") or [])


def _name(listener: Dict[str, Any]) -> str:
    return "%s %s:%s" % (listener["protocol"], listener["host"], listener["port"])


def _unobservable(facts: Facts) -> Optional[Result]:
    """UNKNOWN when a listener cannot be observed (down, or failing closed at EHLO)."""
    blind = ["%s (%s)" % (_name(x), x["default"]["error"] or "no session")
             for x in _listeners(facts) if not x["default"]["connected"] or x["default"]["greeting_code"] >= 400]
    if blind:
        return UNKNOWN, "could not observe: " + "; ".join(blind), "start the service (see TRUST-6 for the milter)"
    return None


def trust1(facts: Facts) -> Result:
    if facts.get("trustlist_domains", 0) > 0:
        return PASS, "compiled trust list with %d domains" % facts["trustlist_domains"], ""
    return FAIL, "no compiled trust list (index.json missing or empty)", "run playbooks/trustlist.yml"


def trust2(facts: Facts) -> Result:
    config = facts.get("mssante_config") or ""
    source = re.search(r"^\s*source:\s*(\S+)", config, re.M)
    if source is None:
        return FAIL, "no trust list source configured", "set mssante_trustlist_source"
    value = source.group(1).strip("'\"")
    if value.startswith("http://"):
        return FAIL, "trust list fetched over plain HTTP: %s" % value, "use the HTTPS URL"
    if value.startswith("https://") and not re.search(r"^\s*ca_file:\s*/\S+", config, re.M):
        return FAIL, "HTTPS source without a CA file (IGC-Santé chain)", "set mssante_trustlist_ca_file"
    return PASS, "source %s" % value, ""


def trust3(facts: Facts) -> Result:
    status = facts.get("trustlist_status") or {}
    config = facts.get("mssante_config") or ""
    if re.search(r"^\s*require_signature:\s*(false|no)\b", config, re.M | re.I):
        return FAIL, "the trust list signature is not required", "set mssante_trustlist_require_signature: true"
    signer = status.get("signer") if isinstance(status, dict) else None
    if not signer:
        return FAIL, "no verified signer recorded in status.json", "compile a signed list with a pinned signer"
    return PASS, "signed by the pinned signer %s" % signer, ""


def trust6(facts: Facts) -> Result:
    missing = _no_instance(facts)
    if missing:
        return missing
    m, chain, problems = facts["mssante"], _pems(facts.get("igc_chain")), []
    if not chain:
        problems.append("the IGC-Santé chain file is unreadable")
    elif sorted(_pems(facts.get("smtpd_ca"))) != sorted(chain):
        problems.append("smtpd_tls_CAfile does not hold exactly the IGC-Santé chain")
    if m.get("smtpd_tls_CApath"):
        problems.append("smtpd_tls_CApath is set (%s)" % m["smtpd_tls_CApath"])
    if m.get("tls_append_default_CA", "no") != "no":
        problems.append("tls_append_default_CA is on (system CAs trusted)")
    if m.get("smtpd_tls_ask_ccert") != "yes":
        problems.append("smtpd_tls_ask_ccert is not yes")
    for listener in _listeners(facts):
        if listener["protocol"] == "smtp" and listener["default"]["greeting_code"] >= 400:
            problems.append("%s answers %d to EHLO: the milter is down or unreachable (it fails closed)"
                            % (_name(listener), listener["default"]["greeting_code"]))
        if listener["port"] == 25 and listener["default"]["mail_before_tls"] == 250:
            problems.append("port 25 accepts MAIL before STARTTLS")
    if "default_action=tempfail" not in m.get("smtpd_milters", ""):
        problems.append("the MSSanté milter is not attached with default_action=tempfail")
    if problems:
        return FAIL, "; ".join(problems), "re-run playbooks/site.yml (mssante_postfix)"
    return PASS, "client certificates verified against the IGC-Santé chain only; milter fails closed", ""


def trust7(facts: Facts) -> Result:
    missing = _no_instance(facts)
    if missing:
        return missing
    m, problems = facts["mssante"], []
    for name in ("default_transport", "local_transport", "relay_transport"):
        if not m.get(name, "").startswith("error:"):
            problems.append("%s = %s (not an error: transport)" % (name, m.get(name)))
    if m.get("relayhost"):
        problems.append("relayhost = %s" % m["relayhost"])
    if sorted(_pems(facts.get("smtp_ca"))) != sorted(_pems(facts.get("igc_chain"))) or m.get("smtp_tls_CApath"):
        problems.append("the SMTP client trusts other anchors than the IGC-Santé chain")
    policy = facts.get("tls_policy_sample") or ""
    if facts.get("trustlist_sample") and not (policy.startswith("secure") and "match=" in policy):
        problems.append("TLS policy of a listed domain is %r, not secure with match=" % policy)
    if problems:
        return FAIL, "; ".join(problems), "re-run playbooks/site.yml (mssante_postfix)"
    return PASS, "sealed routing; secure TLS policy with listed CNs (%s)" % policy, ""


def trust8(facts: Facts) -> Result:
    status = facts.get("trustlist_status")
    if not isinstance(status, dict) or not status.get("last_success"):
        return FAIL, "no successful trust list update recorded", "check the trust list timer"
    age = facts["time"] - _epoch(status["last_success"])
    if age > TRUSTLIST_MAX_AGE:
        return FAIL, "last successful update %.0f h ago" % (age / 3600), "check the trust list timer and source"
    return PASS, "last successful update %.1f h ago, outcome %s" % (age / 3600, status.get("outcome")), ""


def _version_refused(listener: Dict[str, Any], key: str) -> bool:
    return not listener[key]["version"]


def tls1(facts: Facts) -> Result:
    blind = _unobservable(facts)
    if blind:
        return blind
    listeners = _listeners(facts)
    if not listeners:
        return FAIL, "no MSSanté listener found", "run playbooks/site.yml"
    old = [_name(x) for x in listeners if not _version_refused(x, "tls1_1")]
    broken = [_name(x) for x in listeners if x["default"]["version"] not in ("TLSv1.2", "TLSv1.3")]
    if old or broken:
        evidence = ["TLS 1.1 accepted on " + ", ".join(old)] if old else []
        evidence += ["no TLS >= 1.2 session on " + ", ".join(broken)] if broken else []
        return FAIL, "; ".join(evidence), "require TLS >= 1.2 (mssante_postfix_tls_protocols)"
    return PASS, "TLS 1.1 refused, TLS >= 1.2 negotiated on %d listeners" % len(listeners), ""


def tls2(facts: Facts) -> Result:
    blind = _unobservable(facts)
    if blind:
        return blind
    listeners, bad = _listeners(facts), []
    for listener in listeners:
        weak = [name for name, probe in sorted(listener["weak"].items()) if probe["version"]]
        negotiated = listener["default"]["cipher"]
        if weak:
            bad.append("%s accepts %s" % (_name(listener), ", ".join(weak)))
        elif negotiated and not STRONG_CIPHER.match(negotiated):
            bad.append("%s negotiates %s" % (_name(listener), negotiated))
    if not listeners:
        return FAIL, "no MSSanté listener found", "run playbooks/site.yml"
    if bad:
        return FAIL, "; ".join(bad), "restrict the cipher list (mssante_postfix_tls_cipherlist)"
    return PASS, "only ECDHE AEAD suites (TLS 1.2) and TLS 1.3 defaults", ""


def tls3(facts: Facts) -> Result:
    blind = _unobservable(facts)
    if blind:
        return blind
    served = facts.get("served_certificates") or []
    if not served:
        return FAIL, "no MSSanté listener served a certificate", "configure the IGC-Santé server certificate"
    bad = []
    for cert in served:
        if not cert["verified"]:
            bad.append("a served certificate does not chain to the IGC-Santé chain")
        if not cert["rsa"] or cert["key_bits"] < 2048:
            bad.append("a served key is not RSA >= 2048 bits (%s bits)" % cert["key_bits"])
        if not re.match(r"sha(256|384|512)", cert["signature"], re.I):
            bad.append("a served certificate is signed with %s" % cert["signature"])
    if bad:
        return FAIL, "; ".join(sorted(set(bad))), "install the IGC-Santé server certificate (mssante_tls_cert)"
    return PASS, "%d served certificate(s): IGC-Santé chain, RSA >= 2048, SHA-2" % len(served), ""


def tls4(facts: Facts) -> Result:
    crls = facts.get("crls") or {}
    if not crls:
        return FAIL, "no CRL kept for the IGC-Santé CAs", "configure revocation CRLs (docs/revocation.md)"
    stale = [path for path, next_update in crls.items() if not next_update or _epoch(next_update) <= facts["time"]]
    if stale:
        return FAIL, "CRL past its next update or unreadable: " + ", ".join(stale), "refresh the CRLs"
    if "check_ccert_access" not in facts["mssante"].get("smtpd_client_restrictions", ""):
        return FAIL, "no fingerprint deny-list on port 25 (check_ccert_access)", "re-run playbooks/site.yml"
    return PASS, "%d CRL(s) current; deny-list applied" % len(crls), ""


def tls5(facts: Facts) -> Result:
    blind = _unobservable(facts)
    if blind:
        return blind
    listeners, bad = _listeners(facts), []
    for listener in listeners:
        before = [c.lower() for c in listener["default"]["before_tls"]]
        if any(c.startswith("auth") for c in before) or (listener["protocol"] == "imap" and "logindisabled" not in before):
            bad.append("%s offers authentication before TLS" % _name(listener))
        if listener["port"] == 587 and listener["default"]["mail_before_tls"] == 250:
            bad.append("%s accepts MAIL before STARTTLS" % _name(listener))
    if not listeners:
        return FAIL, "no MSSanté listener found", "run playbooks/site.yml"
    if bad:
        return FAIL, "; ".join(bad), "require TLS before authentication (smtpd_tls_auth_only, disable_plaintext_auth)"
    return PASS, "STARTTLS offered, no authentication before TLS", ""


def auth1(facts: Facts) -> Result:
    blind = _unobservable(facts)
    if blind:
        return blind
    offered = set()
    for listener in _listeners(facts):
        for capability in listener["default"]["after_tls"]:
            lower = capability.lower()
            if lower.startswith("auth"):
                offered.update(m.upper() for m in lower.replace("auth=", " ").replace("auth ", " ").split())
    weak = sorted(offered & {"PLAIN", "LOGIN", "CRAM-MD5", "DIGEST-MD5", "SCRAM-SHA-1", "SCRAM-SHA-256"})
    if weak:
        return FAIL, "password mechanisms offered: %s" % ", ".join(weak), "offer only XOAUTH2/OAUTHBEARER/EXTERNAL"
    if not offered:
        return UNKNOWN, "no authentication offered on the MSSanté listeners", "enable submission with Dovecot SASL"
    return PASS, "mechanisms: %s" % ", ".join(sorted(offered)), ""


def auth3(facts: Facts) -> Result:
    missing = _no_instance(facts)
    if missing:
        return missing
    m = facts["mssante"]
    restrictions = " ".join(m.get(n, "") for n in ("smtpd_sender_restrictions", "smtpd_recipient_restrictions"))
    for service in facts.get("mssante_services") or []:
        restrictions += " " + " ".join(service.get("options", {}).values())
    if not m.get("smtpd_sender_login_maps") or "reject_authenticated_sender_login_mismatch" not in restrictions:
        return FAIL, "no sender/login check (smtpd_sender_login_maps + reject_authenticated_sender_login_mismatch)", "re-run playbooks/site.yml"
    return PASS, "sender/login map with reject_authenticated_sender_login_mismatch", ""


def trace2(facts: Facts) -> Result:
    result = facts.get("journal_verify")
    if not isinstance(result, dict):
        return FAIL, "no journal self-verification result", "check the journal self-verification timer"
    if result.get("ok") is not True:
        problems = "; ".join(str(p.get("detail", p)) for p in result.get("problems") or [] if isinstance(p, dict))
        return FAIL, "journal self-verification failed: %s" % (problems or "no detail"), "see docs/auditing.md"
    when = result.get("time")
    if not isinstance(when, (int, float)) or facts["time"] - when > VERIFY_MAX_AGE:
        return FAIL, "journal self-verification is stale or undated", "check the journal self-verification timer"
    return PASS, "journal verified: %s records" % result.get("records", "?"), ""


def msg2(facts: Facts) -> Result:
    missing = _no_instance(facts)
    if missing:
        return missing
    m, problems = facts["mssante"], []
    if m.get("disable_mime_output_conversion") != "yes":
        problems.append("MIME output conversion is on")
    for name in ("header_checks", "body_checks", "smtp_header_checks", "smtp_body_checks"):
        if m.get(name):
            problems.append("%s rewrites content" % name)
    if m.get("smtpd_forbid_bare_newline") != "reject" or m.get("smtpd_forbid_bare_newline_exclusions"):
        problems.append("bare newlines are not rejected without exclusions")
    if problems:
        return FAIL, "; ".join(problems), "re-run playbooks/site.yml (mssante_postfix)"
    return PASS, "messages relayed byte for byte", ""


def seal1(facts: Facts) -> Result:
    claims = []
    for name, value in sorted((facts.get("ordinary") or {}).items()):
        if name == "multi_instance_directories":
            continue
        words = set(re.split(r"[\s,]+", value.lower()))
        claims += ["%s in %s" % (d, name) for d in facts.get("mssante_domains") or [] if d.lower() in words]
    if claims:
        return FAIL, "the ordinary instance claims MSSanté domains: " + "; ".join(claims), "run playbooks/site.yml"
    return PASS, "the ordinary instance claims no MSSanté domain", ""


def ops1(facts: Facts) -> Result:
    if facts.get("backups"):
        return PASS, "%d backup manifest(s)" % len(facts["backups"]), ""
    return FAIL, "no configuration backup found", "run playbooks/site.yml (it backs up before any change)"


CHECKS: List[Tuple[str, str, Callable[[Facts], Result]]] = [
    ("TRUST-1", "Only trust-list domains belong to the trust space", trust1),
    ("TRUST-2", "Trust list fetched over verified HTTPS or from a local file", trust2),
    ("TRUST-3", "Trust list signature verified against a pinned signer", trust3),
    ("TRUST-6", "Inbound: peer certificates verified against IGC-Santé only, milter fails closed", trust6),
    ("TRUST-7", "Outbound: sealed routing, secure TLS to listed CNs", trust7),
    ("TRUST-8", "Trust list refreshed at least daily", trust8),
    ("TLS-1", "TLS 1.2 minimum on every MSSanté listener", tls1),
    ("TLS-2", "Only strong cipher suites", tls2),
    ("TLS-3", "IGC-Santé server certificate; IGC-Santé the only client CA", tls3),
    ("TLS-4", "Revocation: current CRLs and the fingerprint deny-list", tls4),
    ("TLS-5", "STARTTLS before any authentication", tls5),
    ("AUTH-1", "No password-only authentication", auth1),
    ("AUTH-3", "Senders may only use addresses they own", auth3),
    ("TRACE-2", "The journal verifies (integrity, completeness)", trace2),
    ("MSG-2", "Messages relayed byte for byte", msg2),
    ("SEAL-1", "The ordinary instance does not claim MSSanté domains", seal1),
    ("OPS-1", "Configuration backups present", ops1),
]
# Requirements a running server cannot show by itself: (title, why), reported as not applicable.
NOT_OBSERVABLE = {
    "TRUST-4": ("One entry per (domain, operator certificate)", "a property of the trust-list compiler, proven by its tests"),
    "TRUST-5": ("Names compared case-insensitively, IDN in both forms", "a property of the trust-list compiler, proven by its tests"),
    "AUTH-2": ("Application mailboxes log in with an IGC-Santé certificate", "needs an application certificate to log in with"),
    "AUTH-4": ("Shared mailboxes traceable to a person", "needs logins to observe (see Dovecot's logs)"),
    "TRACE-1": ("Every exchange traced", "needs a message to observe; see mssante-journal trace"),
    "TRACE-3": ("Bounded, configurable retention", "retention is configuration; see journal.retention_days"),
    "TRACE-4": ("Inactive mailboxes deleted after notice", "needs a year of logins"),
    "MSG-1": ("Patient mailboxes of Mon espace santé", "a property of the trust list"),
    "MSG-3": ("MDNs and IHE_XDM never rewritten", "proven by the end-to-end tests"),
    "MSG-4": ("The appliance's own headers removed from incoming mail", "needs a message to observe"),
    "DIR-1": ("Mailboxes published in the national directory", "directory publication is not part of this appliance yet"),
    "STAT-1": ("Usage indicators deposited with ANS", "indicators are not part of this appliance yet"),
}


def evaluate(facts: Facts) -> List[Dict[str, str]]:
    results = []
    for rid, title, check in CHECKS:
        try:
            status, evidence, fix = check(facts)
        except (KeyError, TypeError, ValueError) as exc:
            status, evidence, fix = UNKNOWN, "could not judge: %s" % exc, "report this to the maintainers"
        results.append({"id": rid, "title": title, "status": status, "evidence": evidence, "fix": fix})
    for rid, (title, why) in sorted(NOT_OBSERVABLE.items()):
        results.append({"id": rid, "title": title, "status": NA, "evidence": why, "fix": ""})
    return results


def _epoch(text: str) -> float:
    """Seconds since the epoch of an ISO 8601 time or an OpenSSL date ("Nov 25 18:00:00 2026 GMT")."""
    value = text.strip()
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        parsed = datetime.strptime(value.replace(" GMT", ""), "%b %d %H:%M:%S %Y")
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.timestamp()
