"""Filters for the audit role's one-screen summary."""

from __future__ import annotations

from typing import Any, Callable, Dict


def mssante_audit_line(check: Dict[str, Any]) -> str:
    """One summary line: ``TLS-1      PASS  evidence``."""
    return "%-8s %-7s %s" % (check["id"], check["status"].upper(), check["evidence"])


class FilterModule:
    def filters(self) -> Dict[str, Callable[..., Any]]:
        return {"mssante_audit_line": mssante_audit_line}
