"""Filters turning an argument vector into a command line for systemd, supervisor and sh.

The services are declared once as argv lists (defaults/main.yml, `mssante_services`); each service
manager has its own quoting rules, applied here so that no template quotes by hand.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable

_SYSTEMD_SAFE = re.compile(r"^[A-Za-z0-9_@%+=:,./-]+$")


def _systemd_word(word: str) -> str:
    escaped = word.replace("%", "%%").replace("$", "$$")
    if _SYSTEMD_SAFE.match(word):
        return escaped
    escaped = escaped.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def mssante_systemd_exec(argv: Iterable[object]) -> str:
    """An ExecStart= line: words quoted for systemd, `%` specifiers and `$` expansion disabled."""
    return " ".join(_systemd_word(str(word)) for word in argv)


def mssante_supervisor_command(argv: Iterable[object]) -> str:
    """A supervisor `command=`: POSIX shell quoting (supervisor splits with shlex), `%` doubled."""
    return " ".join(shlex.quote(str(word)) for word in argv).replace("%", "%%")


def mssante_sh_command(argv: Iterable[object]) -> str:
    """A command line for /bin/sh."""
    return " ".join(shlex.quote(str(word)) for word in argv)


class FilterModule:
    """Ansible entry point."""

    def filters(self) -> dict[str, object]:
        return {
            "mssante_systemd_exec": mssante_systemd_exec,
            "mssante_supervisor_command": mssante_supervisor_command,
            "mssante_sh_command": mssante_sh_command,
        }
