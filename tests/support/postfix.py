"""A real Postfix instance for tests: `postfix -c DIR`, its own queue, log and listeners.

main.cf starts from Postfix's defaults plus the few settings that isolate the instance (directories,
names, log file, addresses); master.cf holds the usual internal services (no chroot) and one smtpd
listener on ``address:port``. Callers add their own settings (``postconf``) and services.
"""

from __future__ import annotations

import contextlib
import functools
import grp
import json
import os
import pwd
import re
import shlex
import signal
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.common import LOCAL, CommandError, Runner, listening, tail, wait_until
from tests.support.postfix_settings import (
    FAST_RETRY,
    INTERNAL_SERVICES,
    QUEUE_DIRS,
    smtp_tls_settings,
    smtpd_tls_settings,
)

__all__ = ["FAST_RETRY", "PostfixError", "PostfixInstance", "smtp_tls_settings", "smtpd_tls_settings"]


class PostfixError(RuntimeError):
    """Postfix refused to start, reload or pass `postfix check`; the message holds the log tail."""


def _option(name: str, value: str) -> str:
    if re.search(r"[\s{}]", value) or value == "":
        return f"-o {{ {name} = {value} }}"
    return f"-o {name}={value}"


@dataclass
class PostfixInstance:
    """One Postfix instance. Use :meth:`create` (under a temp dir) or :meth:`default_paths` (a TestHost)."""

    name: str
    address: str
    port: int
    config_dir: Path
    queue_dir: Path
    data_dir: Path
    log_file: Path
    runner: Runner = LOCAL
    inet_listeners: list[tuple[str, int]] = field(default_factory=list)

    # ---- construction -------------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        base: Path,
        name: str,
        *,
        address: str,
        port: int,
        settings: Mapping[str, str] | None = None,
        smtpd_options: Mapping[str, str] | None = None,
        runner: Runner = LOCAL,
    ) -> PostfixInstance:
        """Write a clean instance under ``base`` (etc/, spool/, data/, log/); not started yet."""
        instance = cls(
            name=name,
            address=address,
            port=port,
            config_dir=base / "etc",
            queue_dir=base / "spool",
            data_dir=base / "data",
            log_file=base / "log" / "maillog",
            runner=runner,
        )
        instance.write_clean_config(settings, smtpd_options, multi_instance=True)
        return instance

    @classmethod
    def default_paths(
        cls,
        runner: Runner,
        *,
        address: str,
        port: int = 25,
        settings: Mapping[str, str] | None = None,
        smtpd_options: Mapping[str, str] | None = None,
    ) -> PostfixInstance:
        """The default instance at Debian's paths (/etc/postfix, /var/spool/postfix), e.g. in a TestHost."""
        instance = cls(
            name="postfix",
            address=address,
            port=port,
            config_dir=Path("/etc/postfix"),
            queue_dir=Path("/var/spool/postfix"),
            data_dir=Path("/var/lib/postfix"),
            log_file=Path("/var/log/postfix.log"),
            runner=runner,
        )
        instance.write_clean_config(settings, smtpd_options, multi_instance=False)
        return instance

    def base_settings(self, multi_instance: bool) -> dict[str, str]:
        settings = {
            "compatibility_level": "3.6",
            "queue_directory": str(self.queue_dir),
            "data_directory": str(self.data_dir),
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            "syslog_name": "postfix" if not multi_instance else f"postfix-{self.name}",
            "maillog_file": str(self.log_file),
            "maillog_file_prefixes": str(self.log_file.parent),
            # Postfix only accepts interface addresses here; the listeners bind their own address.
            "inet_interfaces": "loopback-only" if multi_instance else self.address,
            "inet_protocols": "ipv4",
            "smtp_bind_address": self.address,
            "smtpd_peername_lookup": "no",
            "myhostname": f"{self.name}.test",
            "mydestination": "",
            "mynetworks": "",
            "relay_domains": "",
            "alias_maps": "",
            "alias_database": "",
            "local_recipient_maps": "",
            "biff": "no",
        }
        if multi_instance:
            settings["multi_instance_name"] = f"postfix-{self.name}"
        return settings

    def write_clean_config(
        self,
        settings: Mapping[str, str] | None,
        smtpd_options: Mapping[str, str] | None,
        *,
        multi_instance: bool,
    ) -> None:
        for directory in (self.config_dir, self.queue_dir, self.data_dir, self.log_file.parent):
            self.runner.fs(directory).mkdir(mode=0o755, parents=True, exist_ok=True)
        owner = pwd.getpwnam("postfix")
        os.chown(self.runner.fs(self.data_dir), owner.pw_uid, owner.pw_gid)
        merged = {**self.base_settings(multi_instance), **(settings or {})}
        main = "".join(f"{key} = {value}\n" for key, value in merged.items())
        self.runner.fs(self.config_dir / "main.cf").write_text(main)
        lines = [" ".join(entry) for entry in INTERNAL_SERVICES]
        self.runner.fs(self.config_dir / "master.cf").write_text("\n".join(lines) + "\n")
        self.inet_listeners = []
        self.add_smtpd_listener(self.port, smtpd_options or {})

    # ---- configuration ------------------------------------------------------------------------
    def postconf(self, settings: Mapping[str, str]) -> None:
        """Set main.cf parameters (``postconf -e``); takes effect at the next start or reload."""
        if settings:
            pairs = [f"{key} = {value}" for key, value in settings.items()]
            self.runner.run(["postconf", "-c", str(self.config_dir), "-e", *pairs])

    def postconf_value(self, name: str) -> str:
        return self.runner.run(["postconf", "-c", str(self.config_dir), "-h", name]).stdout.rstrip("\n")

    def add_master_service(
        self,
        service: str,
        kind: str,
        command: str,
        *,
        args: Iterable[str] = (),
        options: Mapping[str, str] | None = None,
        private: str = "-",
        unpriv: str = "-",
        chroot: str = "n",
        wakeup: str = "-",
        maxproc: str = "-",
    ) -> None:
        """Append a master.cf entry (``-o`` options quoted for values with spaces)."""
        fields = [service, kind, private, unpriv, chroot, wakeup, maxproc, command, *args]
        line = " ".join(fields)
        for key, value in (options or {}).items():
            line += "\n  " + _option(key, value)
        master = self.runner.fs(self.config_dir / "master.cf")
        master.write_text(master.read_text() + line + "\n")
        if kind == "inet":
            host, _, port = service.rpartition(":")
            self.inet_listeners.append((host or self.address, int(port)))

    def remove_master_service(self, service: str, kind: str) -> None:
        self.runner.run(["postconf", "-c", str(self.config_dir), "-MX", f"{service}/{kind}"])
        if kind == "inet":
            host, _, port = service.rpartition(":")
            self.inet_listeners.remove((host or self.address, int(port)))

    def add_smtpd_listener(self, port: int, options: Mapping[str, str] | None = None) -> int:
        """An smtpd listening on ``address:port`` with ``-o`` overrides; returns the port."""
        self.add_master_service(f"{self.address}:{port}", "inet", "smtpd", private="n", options=options)
        return port

    def postmap(self, path: Path | str, kind: str = "hash") -> None:
        self.runner.run(["postmap", "-c", str(self.config_dir), f"{kind}:{path}"])

    def write_map(self, name: str, entries: Mapping[str, str], kind: str = "hash") -> str:
        """Write ``config_dir/name`` from ``entries``, postmap it, return the ``kind:path`` for main.cf."""
        path = self.config_dir / name
        self.runner.fs(path).write_text("".join(f"{key} {value}\n" for key, value in entries.items()))
        if kind in ("hash", "btree", "lmdb", "cdb"):
            self.postmap(path, kind)
        return f"{kind}:{path}"

    # ---- life cycle -----------------------------------------------------------------------------
    def _postfix(self, action: str, check: bool = True) -> str:
        result = self.runner.run(["postfix", "-c", str(self.config_dir), action], check=False, timeout=60)
        if check and result.returncode != 0:
            raise PostfixError(
                f"postfix {action} failed ({result.returncode}): {result.stdout}{result.stderr}\n"
                f"{self.check(strict=False)}\n{self.log_tail()}"
            )
        return result.stdout + result.stderr

    def check(self, strict: bool = True) -> str:
        """`postfix check` through a pty (Postfix writes its warnings only to a terminal); its output.

        Raises PostfixError on failure, and with ``strict`` also on warnings.
        """
        command = shlex.join(["postfix", "-c", str(self.config_dir), "check"])
        result = self.runner.run(["script", "-qec", command, "/dev/null"], check=False)
        output = (result.stdout + result.stderr).replace("\r\n", "\n")
        if result.returncode != 0 or (strict and re.search(r"(warning|fatal|error):", output)):
            raise PostfixError(f"postfix check: {output}")
        return output

    def master_pid(self) -> int | None:
        try:
            text = self.runner.fs(self.queue_dir / "pid" / "master.pid").read_text().strip()
            pid = int(text)
            os.kill(pid, 0)
        except (OSError, ValueError):
            return None
        return pid

    def _describe_wait(self, what: str) -> str:
        return f"postfix {self.name} {what}\n{self.log_tail()}"

    def _wait_listeners(self, timeout: float) -> None:
        for address, port in self.inet_listeners:
            wait_until(
                functools.partial(listening, address, port, self.runner.proc_net),
                timeout,
                functools.partial(self._describe_wait, f"listening on {address}:{port}"),
            )

    def _prepare_queue(self) -> None:
        """Create the queue directories as `postfix check` would, and ask `postfix start` to skip its
        slow checks once (Postfix's own quick-start file): a fresh instance starts in well under a second."""
        owner, group = pwd.getpwnam("postfix"), grp.getgrnam("postdrop")
        for name, postfix_owned, postdrop, mode in QUEUE_DIRS:
            path = self.runner.fs(self.queue_dir / name)
            path.mkdir(exist_ok=True)
            os.chown(path, owner.pw_uid if postfix_owned else 0, group.gr_gid if postdrop else -1)
            path.chmod(mode)
        self.runner.fs(self.queue_dir / "quick-start").touch()

    def start(self, timeout: float = 30, quick: bool = True) -> None:
        """`postfix start`, then wait for the master and every inet listener.

        ``quick`` prepares the queue directories itself and skips `postfix start`'s integrity checks
        (use :meth:`check` to see warnings); ``quick=False`` runs them as a plain `postfix start` does.
        """
        if quick:
            self._prepare_queue()
        self._postfix("start")
        wait_until(self.master_pid, timeout, lambda: f"postfix {self.name} master\n{self.log_tail()}")
        self._wait_listeners(timeout)

    def reload(self, timeout: float = 30) -> None:
        mark = self.log_mark()
        self._postfix("reload")
        self.wait_log(r"reload -- version", timeout, since=mark)
        self._wait_listeners(timeout)

    def terminate(self) -> None:
        """Send the master SIGTERM (what `postfix stop` sends) without waiting; see :meth:`stop`."""
        pid = self.master_pid()
        if pid is not None:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGTERM)

    def stop(self, timeout: float = 20) -> None:
        """Stop the instance: SIGTERM to the master (without `postfix stop`'s one-second polling),
        then SIGKILL to its process group, so teardown never leaves it running."""
        pid = self.master_pid()
        if pid is None:
            return
        self.terminate()
        try:
            wait_until(lambda: self.master_pid() is None, timeout, f"postfix {self.name} to stop")
        except TimeoutError:
            for kill in (os.killpg, os.kill):  # the master leads its process group
                with contextlib.suppress(OSError):
                    kill(pid, signal.SIGKILL)

    @property
    def running(self) -> bool:
        return self.master_pid() is not None

    # ---- observation --------------------------------------------------------------------------
    def log_text(self, since: int = 0) -> str:
        try:
            with self.runner.fs(self.log_file).open("rb") as handle:
                handle.seek(since)
                return handle.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def log_mark(self) -> int:
        """The log's current size: pass it as ``since`` to wait only for lines written after now."""
        try:
            return self.runner.fs(self.log_file).stat().st_size
        except OSError:
            return 0

    def log_tail(self, lines: int = 60) -> str:
        return f"--- {self.log_file} (last {lines} lines)\n{tail(self.log_text(), lines)}"

    def wait_log(self, pattern: str, timeout: float = 20, since: int = 0) -> re.Match[str]:
        """Wait until a log line written after byte ``since`` matches ``pattern``; the match."""
        regex = re.compile(pattern, re.MULTILINE)
        return wait_until(
            lambda: regex.search(self.log_text(since)),
            timeout,
            lambda: f"/{pattern}/ in the log of postfix {self.name}\n{self.log_tail()}",
        )

    def queue(self) -> list[dict[str, Any]]:
        """`postqueue -j`: one dict per queued message."""
        result = self.runner.run(["postqueue", "-c", str(self.config_dir), "-j"], check=False)
        if result.returncode != 0:
            raise CommandError(f"postqueue -j: {result.stderr}")
        return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]

    def queue_ids(self) -> list[str]:
        return [str(entry["queue_id"]) for entry in self.queue()]

    def flush(self) -> None:
        self.runner.run(["postqueue", "-c", str(self.config_dir), "-f"])

    @property
    def hostport(self) -> str:
        """``[address]:port`` for a relayhost or transport next hop pointing here."""
        return f"[{self.address}]:{self.port}"
