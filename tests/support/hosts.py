"""Test hosts: each its own network, mount and UTS namespaces, so a role runs against default paths.

A ``HostNetwork`` is a bridge in the root namespace with a random 10.x.y.0/24; the root namespace
holds ``gateway`` (.1), so tests reach every host and hosts reach servers bound to the gateway. Each
``TestHost`` gets a veth (``eth0`` inside, .2, .3, ...), its own hostname, and copy-on-write views of
/etc, /var/{spool,lib,log,mail,cache}, /run, /opt, /srv, /usr/local, /root and /home: overlays whose
upper layers live in the host's directory. A host therefore starts as a copy of this machine (Postfix
and Dovecot installed, not configured) and whatever it writes (/etc/postfix*, spools, /etc/dovecot,
/etc/mssante, state) stays in it. Names carry a random tag, so a running lab is never disturbed.
"""

from __future__ import annotations

import contextlib
import os
import random
import secrets
import signal
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.common import make_base_dir, remove_base_dir, run_command, wait_until

OVERLAYS = (
    "/etc",
    "/var/spool",
    "/var/lib",
    "/var/log",
    "/var/mail",
    "/var/cache",
    "/run",
    "/opt",
    "/srv",
    "/usr/local",
    "/root",
    "/home",
)


def _subnet_in_use(prefix: str) -> bool:
    routes = run_command(["ip", "-4", "route", "show", "table", "all"]).stdout
    addresses = run_command(["ip", "-4", "-o", "addr", "show"]).stdout
    return f"{prefix}." in routes or f"{prefix}." in addresses


def _quiet(argv: Sequence[str]) -> None:
    run_command(argv, check=False)


@dataclass
class TestHost:
    """One host: ``run`` executes inside its namespaces, ``fs`` maps its paths for this process."""

    __test__ = False  # not a pytest test class

    name: str
    address: str
    network: HostNetwork
    base: Path
    netns: str
    veth: str
    anchor: subprocess.Popen[bytes] | None = None

    @property
    def fqdn(self) -> str:
        return f"{self.name}.lab.test"

    @property
    def mnt_file(self) -> Path:
        return self.base / "ns" / "mnt"

    @property
    def uts_file(self) -> Path:
        return self.base / "ns" / "uts"

    def nsenter(self, argv: Sequence[str], cwd: str = "/") -> list[str]:
        """``argv`` prefixed with the nsenter call that runs it inside the host, in ``cwd``."""
        return [
            "nsenter",
            f"--mount={self.mnt_file}",
            f"--uts={self.uts_file}",
            f"--net=/run/netns/{self.netns}",
            f"--wd={cwd}",
            "--",
            *argv,
        ]

    def run(
        self,
        argv: Sequence[str],
        *,
        input: str | None = None,
        check: bool = True,
        timeout: float = 60,
        env: Mapping[str, str] | None = None,
        cwd: str = "/",
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside the host (its files, network and hostname); CommandError on failure."""
        return run_command(self.nsenter(argv, cwd), input=input, check=check, timeout=timeout, env=env)

    def popen(self, argv: Sequence[str], **kwargs: object) -> subprocess.Popen[bytes]:
        """Start a long-running process inside the host; teardown kills whatever is left."""
        return subprocess.Popen(self.nsenter(argv), **kwargs)  # type: ignore[call-overload,no-any-return]

    def fs(self, path: Path | str) -> Path:
        """``path`` as the host sees it, reachable from outside through its anchor process."""
        assert self.anchor is not None
        return Path(f"/proc/{self.anchor.pid}/root") / str(path).lstrip("/")

    @property
    def proc_net(self) -> Path:
        assert self.anchor is not None
        return Path(f"/proc/{self.anchor.pid}/net")

    # ---- life cycle -----------------------------------------------------------------------------
    def _create_network(self) -> None:
        inner = f"{self.veth}p"
        run_command(["ip", "netns", "add", self.netns])
        run_command(["ip", "link", "add", self.veth, "type", "veth", "peer", "name", inner])
        run_command(["ip", "link", "set", inner, "netns", self.netns])
        run_command(["ip", "link", "set", self.veth, "master", self.network.bridge, "up"])
        ns = ["ip", "-n", self.netns]
        run_command([*ns, "link", "set", inner, "name", "eth0"])
        run_command([*ns, "addr", "add", f"{self.address}/24", "dev", "eth0"])
        run_command([*ns, "link", "set", "eth0", "up"])
        run_command([*ns, "link", "set", "lo", "up"])
        run_command([*ns, "route", "add", "default", "via", self.network.gateway])

    def _create_mounts(self) -> None:
        ns_dir = self.base / "ns"
        ns_dir.mkdir()
        run_command(["mount", "--bind", str(ns_dir), str(ns_dir)])
        run_command(["mount", "--make-private", str(ns_dir)])
        self.mnt_file.touch()
        self.uts_file.touch()
        script = [f"hostname {self.name}"]
        for lower in OVERLAYS:
            if not Path(lower).is_dir() or Path(lower).is_symlink():
                continue
            key = lower.strip("/").replace("/", "_")
            upper, work = self.base / "upper" / key, self.base / "work" / key
            upper.mkdir(parents=True)
            work.mkdir(parents=True)
            options = f"lowerdir={lower},upperdir={upper},workdir={work}"
            script.append(f"mount -t overlay overlay -o {options} {lower}")
        run_command(
            [
                "unshare",
                f"--mount={self.mnt_file}",
                f"--uts={self.uts_file}",
                "--propagation",
                "private",
                "sh",
                "-ec",
                "; ".join(script),
            ]
        )

    def _start_anchor(self) -> None:
        self.anchor = subprocess.Popen(self.nsenter(["sleep", "infinity"]), start_new_session=True)
        wanted = os.stat(self.mnt_file).st_ino
        anchor = self.anchor

        def entered() -> bool:
            try:
                return os.stat(f"/proc/{anchor.pid}/ns/mnt").st_ino == wanted
            except OSError:
                return False

        wait_until(entered, 10, f"host {self.name}'s anchor process")

    def _write_identity(self) -> None:
        self.fs("/etc/hostname").write_text(f"{self.name}\n")
        hosts = self.fs("/etc/hosts")
        lines = ["127.0.0.1 localhost\n", f"{self.address} {self.fqdn} {self.name}\n"]
        lines += [
            f"{peer.address} {peer.fqdn} {peer.name}\n" for peer in self.network.hosts if peer is not self
        ]
        hosts.write_text("".join(lines))

    def create(self) -> None:
        self._create_network()
        self._create_mounts()
        self._start_anchor()
        self._write_identity()

    def _namespace_pids(self) -> list[int]:
        inodes = set()
        for path in (self.mnt_file, Path(f"/run/netns/{self.netns}")):
            with contextlib.suppress(OSError):
                inodes.add(os.stat(path).st_ino)
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                mine = {os.stat(entry / "ns" / kind).st_ino for kind in ("mnt", "net")}
            except OSError:
                continue
            if mine & inodes and int(entry.name) != os.getpid():
                pids.append(int(entry.name))
        return pids

    def _kill_all(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in self._namespace_pids():
                with contextlib.suppress(OSError):
                    os.kill(pid, sig)
            try:
                wait_until(lambda: not self._namespace_pids(), 5, f"processes of host {self.name} to exit")
                break
            except TimeoutError:
                continue
        if self.anchor is not None:
            self.anchor.wait(timeout=5)

    def destroy(self) -> None:
        """Kill what runs inside, remove the namespaces, the veth and the host's directory."""
        self._kill_all()
        for path in (self.mnt_file, self.uts_file, self.base / "ns"):
            _quiet(["umount", str(path)])
        _quiet(["ip", "netns", "del", self.netns])
        _quiet(["ip", "link", "del", self.veth])
        remove_base_dir(self.base)


@dataclass
class HostNetwork:
    """A bridge joining test hosts and the root namespace (which holds ``gateway``)."""

    tag: str
    prefix: str
    hosts: list[TestHost] = field(default_factory=list)

    @property
    def bridge(self) -> str:
        return f"mb{self.tag}"

    @property
    def gateway(self) -> str:
        return f"{self.prefix}.1"

    @classmethod
    def create(cls) -> HostNetwork:
        for _ in range(50):
            prefix = f"10.{random.randint(100, 254)}.{random.randint(0, 255)}"
            if not _subnet_in_use(prefix):
                break
        else:
            raise RuntimeError("no free 10.x.y.0/24 for a test network")
        network = cls(tag=secrets.token_hex(3), prefix=prefix)
        run_command(["ip", "link", "add", "name", network.bridge, "type", "bridge"])
        run_command(["ip", "addr", "add", f"{network.gateway}/24", "dev", network.bridge])
        run_command(["ip", "link", "set", network.bridge, "up"])
        return network

    def add_host(self, name: str) -> TestHost:
        """A new host ``name`` (short, e.g. "hospital") at the next address of the network."""
        index = len(self.hosts) + 2
        host = TestHost(
            name=name,
            address=f"{self.prefix}.{index}",
            network=self,
            base=make_base_dir(f"host-{name}"),
            netns=f"mst-{self.tag}-{name}",
            veth=f"mv{self.tag}{index:02d}",
        )
        self.hosts.append(host)
        try:
            host.create()
        except BaseException:
            host.destroy()
            self.hosts.remove(host)
            raise
        return host

    def destroy(self) -> None:
        for host in reversed(self.hosts):
            host.destroy()
        self.hosts.clear()
        _quiet(["ip", "link", "del", self.bridge])
