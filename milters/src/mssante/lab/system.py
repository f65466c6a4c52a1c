"""Small system helpers of the lab: run a command, wait for a condition, see a listening socket."""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


class CommandError(RuntimeError):
    """A command the lab ran failed; the message carries its output."""


def run_command(
    argv: Sequence[str],
    *,
    input: str | None = None,
    check: bool = True,
    timeout: float = 60,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` and return its output; CommandError when ``check`` and it failed."""
    full_env = None if env is None else {**os.environ, **env}
    # Output goes to files, not pipes: a daemon started by the command keeps its stdio open.
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        completed = subprocess.run(
            list(argv),
            input=None if input is None else input.encode(),
            stdin=None if input is not None else subprocess.DEVNULL,
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


def quiet(argv: Sequence[str]) -> None:
    """Run ``argv`` and ignore its failure (cleanup of what may already be gone)."""
    run_command(argv, check=False)


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


def _hex_endpoint(address: str, port: int) -> str:
    packed = socket.inet_aton(address)
    return f"{int.from_bytes(packed, 'little'):08X}:{port:04X}"


def listening(address: str, port: int, proc_net: Path = Path("/proc/net"), udp: bool = False) -> bool:
    """Whether a socket listens on ``address:port`` (or the wildcard) in the netns of ``proc_net``.

    Reads /proc/net/tcp (or udp) rather than connecting, so a check never opens an SMTP session.
    """
    wanted = {_hex_endpoint(address, port), _hex_endpoint("0.0.0.0", port)}  # noqa: S104 (reads, binds nothing)
    try:
        lines = (proc_net / ("udp" if udp else "tcp")).read_text().splitlines()[1:]
    except OSError:
        return False
    state = "07" if udp else "0A"  # UDP sockets bound and unconnected; TCP LISTEN
    for line in lines:
        fields = line.split()
        if len(fields) > 3 and fields[3] == state and fields[1] in wanted:
            return True
    return False


def alive(pid: int | None) -> bool:
    """Whether process ``pid`` exists (and is not a zombie)."""
    if pid is None or pid <= 0:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"
