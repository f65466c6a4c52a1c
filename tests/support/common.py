"""Shared pieces of the test servers: bounded waits, loopback addresses, ports, runners, temp dirs."""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

# The lab's own helpers (product code, so `make lab` needs no tests tree), shared with the tests.
from mssante.lab.system import CommandError, listening, run_command, wait_until  # noqa: F401 (re-exported)

# Servers run under a 0755 directory that the `postfix` and `dovecot` users can traverse
# (pytest's tmp_path under /tmp/pytest-of-root is 0700).
BASE_PARENT = Path("/var/tmp")
KEEP_ENV = "MSSANTE_KEEP_TEST_DIRS"


def random_loopback() -> str:
    """A random address in 127.0.0.0/8, away from 127.0.0.x and 127.0.1.x (hostname entries)."""
    return f"127.{random.randint(1, 254)}.{random.randint(0, 255)}.{random.randint(1, 254)}"


def free_port(address: str) -> int:
    """A TCP port free on ``address`` right now (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((address, 0))
        return int(sock.getsockname()[1])


class Runner(Protocol):
    """Where a server's commands run and its files live: this machine, or a TestHost's namespaces."""

    def run(
        self,
        argv: Sequence[str],
        *,
        input: str | None = None,
        check: bool = True,
        timeout: float = 60,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]: ...

    def fs(self, path: Path | str) -> Path:
        """The path through which this process reaches the runner's file ``path``."""
        ...

    @property
    def proc_net(self) -> Path:
        """/proc/net of the runner's network namespace."""
        ...


class LocalRunner:
    """Runs commands on this machine, in the current namespaces."""

    def run(
        self,
        argv: Sequence[str],
        *,
        input: str | None = None,
        check: bool = True,
        timeout: float = 60,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        return run_command(argv, input=input, check=check, timeout=timeout, env=env)

    def fs(self, path: Path | str) -> Path:
        return Path(path)

    @property
    def proc_net(self) -> Path:
        return Path("/proc/net")


LOCAL = LocalRunner()


def make_base_dir(prefix: str) -> Path:
    """A fresh 0755 directory under /var/tmp for one server or test."""
    path = Path(tempfile.mkdtemp(prefix=f"mssante-{prefix}-", dir=BASE_PARENT))
    path.chmod(0o755)
    return path


def remove_base_dir(path: Path) -> None:
    """Remove a directory made by :func:`make_base_dir`, unless MSSANTE_KEEP_TEST_DIRS is set."""
    if not os.environ.get(KEEP_ENV):
        shutil.rmtree(path, ignore_errors=True)


def tail(text: str, lines: int = 60) -> str:
    return "\n".join(text.splitlines()[-lines:])
