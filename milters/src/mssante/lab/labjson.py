"""DIR/lab.json: what the running lab is, for scripts and tests (docs/lab-json.md).

``validate`` checks a document against the documented shape and returns every problem found, so a
test (or a script about to rely on it) sees all of them at once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from mssante.lab.pki import Leaf

SCHEMA = 1
HOST_NAMES = ("hospital", "peer", "other", "internet")
MAILBOX_TYPES = ("PER", "ORG", "APP")


def mailbox(
    address: str, kind: str, leaf: Leaf | None = None, password: str | None = None, maildir: str | None = None
) -> dict[str, Any]:
    """One mailbox entry; ``leaf`` gives its client certificate (fullchain) and key."""
    entry: dict[str, Any] = {
        "address": address,
        "type": kind,
        "password": password,
        "cert": str(leaf.fullchain) if leaf else None,
        "key": str(leaf.key) if leaf else None,
    }
    if maildir is not None:
        entry["maildir"] = maildir
    return entry


def certificate(leaf: Leaf) -> dict[str, Any]:
    """A ``C`` entry: certificate (leaf + issuing CA), key, CN and the trust-space domain listing it."""
    return {"cert": str(leaf.fullchain), "key": str(leaf.key), "cn": leaf.cn, "domain": leaf.domain}


# ---- validation -----------------------------------------------------------------------------------
def _is_str(value: object) -> bool:
    return isinstance(value, str) and bool(value)


def _is_path(value: object) -> bool:
    return isinstance(value, str) and value.startswith("/")


def _opt(check: Any) -> Any:
    return lambda value: value is None or check(value)


def _is_port(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value < 65536


def _is_list_of(check: Any) -> Any:
    return lambda value: isinstance(value, list) and all(check(item) for item in value)


def _check(problems: list[str], where: str, data: object, fields: Mapping[str, Any]) -> None:
    if not isinstance(data, dict):
        problems.append(f"{where}: not an object")
        return
    for key, check in fields.items():
        if key not in data:
            problems.append(f"{where}.{key}: missing")
        elif not check(data[key]):
            problems.append(f"{where}.{key}: unexpected value {data[key]!r}")


_MAILBOX = {
    "address": lambda v: _is_str(v) and "@" in v,
    "type": lambda v: v in MAILBOX_TYPES,
    "password": _opt(_is_str),
    "cert": _opt(_is_path),
    "key": _opt(_is_path),
}
_HOST = {
    "netns": _opt(_is_str),
    "enter": _is_list_of(_is_str),
    "pid": lambda v: isinstance(v, int) and v > 0,
    "address": _is_str,
    "ordinary_address": _opt(_is_str),
    "personal_address": _opt(_is_str),
    "smtp_port": _is_port,
    "submission_port": _opt(_is_port),
    "imap_port": _opt(_is_port),
    "mssante_domains": _is_list_of(_is_str),
    "internet_domains": _is_list_of(_is_str),
    "mailboxes": lambda v: isinstance(v, list),
}
_CERT = {"cert": _is_path, "key": _is_path, "cn": _is_str, "domain": _is_str}


def _validate_hosts(problems: list[str], hosts: object) -> None:
    if not isinstance(hosts, dict) or sorted(hosts) != sorted(HOST_NAMES):
        problems.append(f"hosts: expected exactly {list(HOST_NAMES)}")
        return
    for name, host in hosts.items():
        _check(problems, f"hosts.{name}", host, _HOST)
        for index, box in enumerate(host.get("mailboxes") or [] if isinstance(host, dict) else []):
            _check(problems, f"hosts.{name}.mailboxes[{index}]", box, _MAILBOX)


def _validate_pki(problems: list[str], pki: object) -> None:
    _check(
        problems,
        "pki",
        pki,
        {
            "ca_chain": _is_path,
            "personal_ca": _is_path,
            "crls": _is_list_of(_is_path),
            "trustlist_signer_ca": _is_path,
            "operators": lambda v: isinstance(v, dict) and sorted(v) == ["hospital", "other", "peer"],
        },
    )
    if not isinstance(pki, dict):
        return
    for name in ("impostor", "expired", "revoked"):
        _check(problems, f"pki.{name}", pki.get(name), _CERT)
    for name, entry in (pki.get("operators") or {}).items():
        _check(problems, f"pki.operators.{name}", entry, _CERT)


def validate(data: object) -> list[str]:
    """Every way ``data`` departs from the documented lab.json shape ([] when it conforms)."""
    problems: list[str] = []
    if not isinstance(data, dict):
        return ["lab.json: not an object"]
    _check(
        problems,
        "lab",
        data,
        {
            "schema": lambda v: v == SCHEMA,
            "metrics_urls": lambda v: isinstance(v, dict) and all(_is_str(url) for url in v.values()),
            "journal_dir": _is_path,
            "milter_config": _is_path,
        },
    )
    _validate_hosts(problems, data.get("hosts"))
    _validate_pki(problems, data.get("pki"))
    _check(
        problems,
        "trustlist",
        data.get("trustlist"),
        {"source": _is_path, "compiled_dir": _is_path, "signer": _is_str},
    )
    oauth_fields = {"token_command": _opt(_is_list_of(_is_str)), "introspection_url": _opt(_is_str)}
    _check(problems, "oauth", data.get("oauth"), oauth_fields)
    return problems


def addresses(data: Mapping[str, Any], host: str) -> Sequence[str]:
    """The addresses of ``host`` in a lab.json document (its MSSanté one first)."""
    entry = data["hosts"][host]
    return [entry["address"], *([entry["ordinary_address"]] if entry["ordinary_address"] else [])]
