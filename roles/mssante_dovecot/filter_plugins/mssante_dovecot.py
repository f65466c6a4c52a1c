"""Filters of the mssante_dovecot role: the Dovecot view of the mailbox table (docs/dovecot.md)."""

from __future__ import annotations

from typing import Any

TYPES = ("PER", "ORG", "APP", "CAB")
# Shared mailboxes (an organisation's, a practice's): their owners open them through the shared namespace.
SHARED_TYPES = ("ORG", "CAB")
CA_SETS = ("app", "personal")


# Defence in depth for MSSanté users, should one of their deliveries ever run in an LMTP process
# that loaded Sieve (the role gives them their own LMTP service without it: docs/dovecot.md, "Sieve"):
# no personal Sieve script, and every way Dovecot sends mail (Sieve redirect, vacation, notify) fails:
# submission_host takes precedence over sendmail_path and cannot be emptied from a userdb (an empty
# field reads as "yes"), so it names a host that never resolves. A delivery that tries to send is
# deferred, nothing leaves.
NO_SENDING_HOST = "mssante-no-submission.invalid"
NO_SIEVE_NO_SENDING = (
    f"userdb_sieve_enabled=no userdb_submission_host={NO_SENDING_HOST} userdb_sendmail_path=/bin/false"
)


class ModelError(ValueError):
    """The inventory cannot be turned into a Dovecot configuration; the message says why."""


def _names(mailbox: dict[str, Any], key: str) -> list[str]:
    values = mailbox.get(key) or []
    if not isinstance(values, list) or not all(isinstance(v, str) and v for v in values):
        raise ModelError(f"{mailbox.get('address')}: {key} must be a list of non-empty strings")
    return values


def _check_name(name: str, problems: list[str]) -> None:
    if any(ch.isspace() or ch in ":*?!" for ch in name) or name.startswith("valid/"):
        problems.append(f"{name!r}: a Dovecot login name cannot hold spaces, ':', '*', '?' or '!'")


def _users(mailboxes: list[dict[str, Any]], mail_root: str) -> tuple[list[dict[str, str]], list[str]]:
    """userdb entries (address, then owners of PER and CNs of APP mailboxes) and the APP CNs."""
    homes: dict[str, str] = {}
    app_cns: list[str] = []
    for mailbox in mailboxes:
        homes.setdefault(str(mailbox["address"]).lower(), f"{mail_root}/{str(mailbox['address']).lower()}")
    for mailbox in mailboxes:
        home = homes[str(mailbox["address"]).lower()]
        if mailbox["type"] == "PER":
            for owner in _names(mailbox, "owners"):
                homes.setdefault(owner, home)
        if mailbox["type"] == "APP":
            for cn in _names(mailbox, "cert_cns"):
                homes.setdefault(cn, home)
                app_cns.append(cn)
    return [{"name": name, "home": home} for name, home in homes.items()], sorted(set(app_cns))


def _listener_blocks(listeners: list[dict[str, Any]], problems: list[str]) -> dict[str, str]:
    """Listener address -> its client CA set (one set per address: Dovecot's `local` blocks)."""
    blocks: dict[str, str] = {}
    for listener in listeners:
        ca_set = listener.get("client_ca")
        if ca_set not in CA_SETS:
            problems.append(f"listener {listener.get('name')}: client_ca must be one of {CA_SETS}")
        elif blocks.setdefault(str(listener["address"]), ca_set) != ca_set:
            problems.append(f"address {listener['address']}: one address serves one client CA set")
        if ":" in str(listener.get("address", "")):
            problems.append(f"listener {listener.get('name')}: IPv6 addresses are not supported yet")
    return blocks


def dovecot_model(  # noqa: PLR0917  (an Ansible filter: Jinja passes its arguments by position)
    mailboxes: list[dict[str, Any]],
    domains: list[str],
    listeners: list[dict[str, Any]],
    mail_root: str,
    last_login_dict: str,
    transition_users: list[dict[str, Any]] | None = None,
    inbox_namespace: str = "inbox",
) -> dict[str, Any]:
    """Everything the templates need, computed once; raises ModelError listing every problem."""
    problems: list[str] = []
    for mailbox in mailboxes:
        if mailbox.get("type") not in TYPES or "@" not in str(mailbox.get("address", "")):
            problems.append(f"{mailbox.get('address')!r}: needs an address and a type among {TYPES}")
    if problems:
        raise ModelError("; ".join(problems))
    users, app_cns = _users(mailboxes, mail_root)
    names = {entry["name"] for entry in users}
    names.update(owner for m in mailboxes for owner in _names(m, "owners"))
    names.update(str(u["cn"]) for u in transition_users or [])
    for name in sorted(names):
        _check_name(name, problems)
    blocks = _listener_blocks(listeners, problems)
    if problems:
        raise ModelError("; ".join(problems))
    patterns = [f"*@{domain.lower()}" for domain in domains]
    fields = " ".join(
        (
            "userdb_mail=maildir:~/Maildir userdb_mail_plugins=acl,last_login",
            f"userdb_last_login_dict=file:{last_login_dict} userdb_last_login_key=last-login/%s/%u",
            f"userdb_acl=vfile userdb_acl_shared_dict=file:{mail_root}/shared-mailboxes.dict",
            f"userdb_namespace/mssante_shared/disabled=no userdb_namespace/{inbox_namespace}/separator=/",
            NO_SIEVE_NO_SENDING,
        )
    )
    return {
        "login_filter": " ".join([*patterns, *sorted(names)]),
        "users": users,
        "app_cns": app_cns,
        "app_addresses": sorted(address for address, ca_set in blocks.items() if ca_set == "app"),
        "personal_addresses": sorted(a for a, ca_set in blocks.items() if ca_set == "personal"),
        "org_mailboxes": [
            {"address": str(m["address"]).lower(), "owners": _names(m, "owners")}
            for m in mailboxes
            if m["type"] in SHARED_TYPES
        ],
        "person_owners": sorted({o for m in mailboxes if m["type"] == "PER" for o in _names(m, "owners")}),
        "local_blocks": sorted(blocks.items()),
        "user_fields": fields,
    }


class FilterModule:
    """Ansible entry point."""

    def filters(self) -> dict[str, Any]:
        return {"mssante_dovecot_model": dovecot_model}
