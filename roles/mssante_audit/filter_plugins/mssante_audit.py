"""Filters of the audit role: the one-screen summary, and the IMAP listeners to probe."""

from __future__ import annotations

from typing import Any, Callable, Dict, List


def mssante_audit_line(check: Dict[str, Any]) -> str:
    """One summary line: ``TLS-1      PASS  evidence``."""
    return "%-8s %-7s %s" % (check["id"], check["status"].upper(), check["evidence"])


def mssante_audit_imap_listeners(listeners: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """The probes for the mssante_dovecot role's listeners (``mssante_dovecot_listeners``): each
    ``{address, port, tls: starttls|implicit}`` becomes ``{protocol: imap|imaps, host, port}``."""
    return [
        {
            "protocol": "imaps" if item.get("tls") == "implicit" else "imap",
            "host": str(item["address"]),
            "port": int(item["port"]),
        }
        for item in listeners or []
    ]


class FilterModule:
    def filters(self) -> Dict[str, Callable[..., Any]]:
        return {
            "mssante_audit_line": mssante_audit_line,
            "mssante_audit_imap_listeners": mssante_audit_imap_listeners,
        }
