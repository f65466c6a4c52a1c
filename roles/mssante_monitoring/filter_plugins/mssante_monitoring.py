"""Filter building the certificate checker's service entry for role mssante's services list."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def mssante_monitoring_certcheck_argv(
    python: str,
    certificates: Mapping[str, Any],
    crls: Sequence[Mapping[str, Any]],
    textfile: str = "",
    listen: str = "",
) -> list[str]:
    """The argv of ``python -m mssante.certcheck`` with explicit files (no shell, no quoting)."""
    argv = [str(python), "-m", "mssante.certcheck"]
    for kind, path in sorted(certificates.items()):
        if path:
            argv += ["--certificate", f"{kind}={path}"]
    for crl in crls:
        issuer = crl.get("issuer") or ""
        argv += ["--crl", f"{crl['ca']}={crl['crl']}" + (f",{issuer}" if issuer else "")]
    if listen:
        argv += ["--listen", str(listen)]
    else:
        argv += ["--textfile", str(textfile)]
    return argv


class FilterModule:
    """Ansible entry point."""

    def filters(self) -> dict[str, object]:
        return {"mssante_monitoring_certcheck_argv": mssante_monitoring_certcheck_argv}
