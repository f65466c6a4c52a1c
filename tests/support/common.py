"""Shared pieces of the test servers: bounded waits, loopback addresses, ports, runners, temp dirs."""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Protocol, TypeVar

T = TypeVar("T")

# Servers run under a 0755 directory that the `postfix` and `dovecot` users can traverse
# (pytest's tmp_path under /tmp/pytest-of-root is 0700).
BASE_PARENT = Path("/var/tmp")
KEEP_ENV = "MSSANTE_KEEP_TEST_DIRS"


def wait_until(
    predicate: Callable[[], T | None], timeout: float, what: str | Callable[[], str], interval: float = 0.05
) -> T:
    """Poll ``predicate`` until it returns a true value and return it; TimeoutError after ``timeout``.

    ``what`` names what is awaited in the error; a callable is evaluated only then (e.g. a log tail).
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            described = what() if callable(what) else what
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {described}")
        time.sleep(interval)


def random_loopback() -> str:
    """A random address in 127.0.0.0/8, away from 127.0.0.x and 127.0.1.x (hostname entries)."""
    return f"127.{random.randint(1, 254)}.{random.randint(0, 255)}.{random.randint(1, 254)}"


def free_port(address: str) -> int:
    """A TCP port free on ``address`` right now (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((address, 0))
        return int(sock.getsockname()[1])


def _hex_endpoint(address: str, port: int) -> str:
    packed = socket.inet_aton(address)
    return f"{int.from_bytes(packed, 'little'):08X}:{port:04X}"


def listening(address: str, port: int, proc_net: Path = Path("/proc/net")) -> bool:
    """Whether a TCP socket listens on ``address:port`` (or the wildcard) in the netns of ``proc_net``.

    Reads /proc/net/tcp rather than connecting, so a readiness check never opens an SMTP session.
    """
    wanted = {_hex_endpoint(address, port), _hex_endpoint("0.0.0.0", port)}
    try:
        lines = (proc_net / "tcp").read_text().splitlines()[1:]
    except OSError:
        return False
    for line in lines:
        fields = line.split()
        if len(fields) > 3 and fields[3] == "0A" and fields[1] in wanted:  # 0A: LISTEN
            return True
    return False


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


class CommandError(RuntimeError):
    """A command a fixture ran failed; the message carries its output."""


def run_command(
    argv: Sequence[str],
    *,
    input: str | None = None,
    check: bool = True,
    timeout: float = 60,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    full_env = None if env is None else {**os.environ, **env}
    # Output goes to files, not pipes: a daemon started by the command keeps its stdio open.
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        completed = subprocess.run(
            list(argv),
            input=None if input is None else input.encode(),
            stdout=out,
            stderr=err,
            timeout=timeout,
            env=full_env,
            check=False,
        )
        out.seek(0)
        err.seek(0)
        result = subprocess.CompletedProcess(
            completed.args,
            completed.returncode,
            out.read().decode(errors="replace"),
            err.read().decode(errors="replace"),
        )
    if check and result.returncode != 0:
        raise CommandError(
            f"{' '.join(argv)} exited {result.returncode}\nstdout: {result.stdout}\nstderr: {result.stderr}"
        )
    return result


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
