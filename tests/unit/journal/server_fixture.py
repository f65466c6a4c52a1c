"""A real `mssante-journal serve` process for tests (loopback metrics, temporary directory)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from tests.support.common import free_port, random_loopback, wait_until

SRC = Path(__file__).resolve().parents[3] / "milters" / "src"


def env() -> dict[str, str]:
    values = dict(os.environ)
    values["PYTHONPATH"] = (
        f"{SRC}{os.pathsep}{values['PYTHONPATH']}" if values.get("PYTHONPATH") else str(SRC)
    )
    return values


def journal_cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "mssante.journal", *args],
        env=env(),
        capture_output=True,
        check=False,
        text=True,
        timeout=120,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"{args}: {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result


class Server:
    """keygen once, then start/kill/stop the owner process on the same directory."""

    def __init__(self, tmp: Path, interval: float = 0.2) -> None:
        self.tmp = tmp
        self.dir = tmp / "journal"
        self.socket = tmp / "journal.sock"
        self.interval = interval
        self.metrics = (random_loopback(), 0)
        self.proc: subprocess.Popen[str] | None = None
        journal_cli("keygen", *self.common())

    def common(self) -> list[str]:
        return [
            "--dir",
            str(self.dir),
            "--host-id",
            "hospital-1",
            "--socket",
            str(self.socket),
            "--signing-key",
            str(self.tmp / "signing.key"),
            "--public-key",
            str(self.tmp / "signing.pub"),
        ]

    def start(self, metrics: bool = False) -> None:
        args = [*self.common(), "--checkpoint-interval", str(self.interval)]
        if metrics:
            self.metrics = (self.metrics[0], free_port(self.metrics[0]))
            args += ["--metrics-listen", f"{self.metrics[0]}:{self.metrics[1]}"]
        log = (self.tmp / "server.log").open("a")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mssante.journal", "serve", *args],
            env=env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
        log.close()
        wait_until(self._ready, 30, "the journal server's socket")

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError("journal server exited:\n" + (self.tmp / "server.log").read_text())
        return self._socket_listening()

    def _socket_listening(self) -> bool:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            try:
                sock.connect(str(self.socket))
            except OSError:
                return False
        return True

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
            self.proc = None
