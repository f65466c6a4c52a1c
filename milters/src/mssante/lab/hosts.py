"""Lab and test hosts: each its own network, mount and UTS namespaces, so a role runs against default paths.

A ``HostNetwork`` is a bridge with a 10.x.y.0/24 whose ``gateway`` (.1) is the root namespace's. Each
``Host`` gets a veth (``eth0`` inside, .2, .3, ...), its own hostname, and copy-on-write overlays of
the directories in OVERLAYS whose upper layers live in the host's directory: a host starts as a copy
of this machine (Postfix and Dovecot installed, not configured) and keeps what it writes. Names carry
a tag, so a running lab is never disturbed by tests.

The mount and UTS namespaces are bind-mounted onto files under the host's directory (``ns/``) and the
network namespace is ``ip netns``'s, so a host outlives the process that built it: an anchor process
(``sleep infinity``, own session) keeps it visible in /proc, and ``to_json`` / ``from_json`` let a
later process (``status``, ``down``, a rerun) find it again."""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from mssante.lab.system import alive, quiet, run_command, wait_until

OVERLAYS = (
    "/etc",
    "/var/spool",
    "/var/lib",
    "/var/log",
    "/var/mail",
    "/var/cache",
    "/var/backups",
    "/run",
    "/opt",
    "/srv",
    "/usr/local",
    "/root",
    "/home",
)
# Hosts of tests live under a 0755 directory the `postfix` and `dovecot` users can traverse.
BASE_PARENT = Path("/var/tmp")
KEEP_ENV = "MSSANTE_KEEP_TEST_DIRS"
TAG_PATTERN = re.compile(r"[a-z0-9]{1,6}")


def _subnet_in_use(prefix: str) -> bool:
    routes = run_command(["ip", "-4", "route", "show", "table", "all"]).stdout
    addresses = run_command(["ip", "-4", "-o", "addr", "show"]).stdout
    return f"{prefix}." in routes or f"{prefix}." in addresses


def _make_base_dir(prefix: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix=f"mssante-{prefix}-", dir=BASE_PARENT))
    path.chmod(0o755)
    return path


@dataclass
class Host:
    """One host: ``run`` executes inside its namespaces, ``fs`` maps its paths for this process."""

    __test__: ClassVar[bool] = False  # not a pytest test class (tests import it as TestHost)

    name: str
    address: str
    network: HostNetwork
    base: Path
    netns: str
    veth: str
    anchor: subprocess.Popen[bytes] | None = None
    anchor_pid: int | None = None  # the anchor of a host found again from its JSON description
    keep_base: bool = False  # a lab host's directory is removed by the lab, not by destroy()
    overlays: tuple[str, ...] = OVERLAYS  # the machine's directories the host gets its own view of

    @property
    def fqdn(self) -> str:
        return f"{self.name}.lab.test"

    @property
    def mnt_file(self) -> Path:
        return self.base / "ns" / "mnt"

    @property
    def uts_file(self) -> Path:
        return self.base / "ns" / "uts"

    @property
    def pid(self) -> int:
        """The anchor process, inside the host's namespaces (``nsenter --target PID``)."""
        pid = self.anchor.pid if self.anchor is not None else self.anchor_pid
        assert pid is not None, f"host {self.name} has no anchor process"
        return pid

    def enter(self, cwd: str = "/") -> list[str]:
        """The argv prefix that runs a command inside the host, in ``cwd``."""
        return [
            "nsenter",
            f"--mount={self.mnt_file}",
            f"--uts={self.uts_file}",
            f"--net=/run/netns/{self.netns}",
            f"--wd={cwd}",
            "--",
        ]

    def nsenter(self, argv: Sequence[str], cwd: str = "/") -> list[str]:
        """``argv`` prefixed with the nsenter call that runs it inside the host, in ``cwd``."""
        return [*self.enter(cwd), *argv]

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
        return Path(f"/proc/{self.pid}/root") / str(path).lstrip("/")

    @property
    def proc_net(self) -> Path:
        return Path(f"/proc/{self.pid}/net")

    def add_address(self, address: str) -> bool:
        """Another address on the host's ``eth0`` (e.g. for another Postfix instance); True when added."""
        present = run_command(["ip", "-n", self.netns, "-4", "-o", "addr", "show", "dev", "eth0"]).stdout
        if f" {address}/" in present:
            return False
        run_command(["ip", "-n", self.netns, "addr", "add", f"{address}/24", "dev", "eth0"])
        return True

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
        for lower in self.overlays:
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
        self.anchor = subprocess.Popen(
            self.nsenter(["sleep", "infinity"]),
            start_new_session=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
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

    def is_up(self) -> bool:
        """Whether the namespaces exist and the anchor runs inside them."""
        pid = self.anchor.pid if self.anchor is not None else self.anchor_pid
        if pid is None or not alive(pid) or not Path(f"/run/netns/{self.netns}").exists():
            return False
        try:
            return os.stat(f"/proc/{pid}/ns/mnt").st_ino == os.stat(self.mnt_file).st_ino
        except OSError:
            return False

    def namespaces_exist(self) -> bool:
        """Whether the network namespace and the bind-mounted mount and UTS namespaces still exist."""
        netns = Path(f"/run/netns/{self.netns}")
        return netns.exists() and os.path.ismount(self.mnt_file) and os.path.ismount(self.uts_file)

    def revive(self) -> bool:
        """Start a new anchor when the namespaces exist but the anchor is gone; True when it did."""
        if self.is_up() or not self.namespaces_exist():
            return False
        self.anchor_pid = None
        self._start_anchor()
        return True

    def namespace_pids(self) -> list[int]:
        """Every process inside the host's mount or network namespace."""
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
            for pid in self.namespace_pids():
                with contextlib.suppress(OSError):
                    os.kill(pid, sig)
            try:
                wait_until(lambda: not self.namespace_pids(), 5, f"processes of host {self.name} to exit")
                break
            except TimeoutError:
                continue
        if self.anchor is not None:
            self.anchor.wait(timeout=5)

    def destroy(self) -> None:
        """Kill what runs inside, remove the namespaces, the veth and (unless kept) the host's directory."""
        self._kill_all()
        for path in (self.mnt_file, self.uts_file, self.base / "ns"):
            quiet(["umount", str(path)])
        quiet(["ip", "netns", "del", self.netns])
        quiet(["ip", "link", "del", self.veth])
        if not self.keep_base and not os.environ.get(KEEP_ENV):
            shutil.rmtree(self.base, ignore_errors=True)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "address": self.address,
            "base": str(self.base),
            "netns": self.netns,
            "veth": self.veth,
            "pid": self.pid,
        }


@dataclass
class HostNetwork:
    """A bridge joining hosts and the root namespace (which holds ``gateway``)."""

    tag: str
    prefix: str
    hosts: list[Host] = field(default_factory=list)

    @property
    def bridge(self) -> str:
        return f"mb{self.tag}"

    @property
    def gateway(self) -> str:
        return f"{self.prefix}.1"

    @classmethod
    def create(cls, tag: str | None = None) -> HostNetwork:
        """A new bridge with a free random 10.x.y.0/24; ``tag`` (1-6 of [a-z0-9]) names its links."""
        tag = tag if tag is not None else secrets.token_hex(3)
        if not TAG_PATTERN.fullmatch(tag):
            raise ValueError(f"tag {tag!r}: 1 to 6 characters among a-z and 0-9")
        for _ in range(50):
            prefix = f"10.{100 + secrets.randbelow(155)}.{secrets.randbelow(256)}"
            if not _subnet_in_use(prefix):
                break
        else:
            raise RuntimeError("no free 10.x.y.0/24 for a host network")
        network = cls(tag=tag, prefix=prefix)
        run_command(["ip", "link", "add", "name", network.bridge, "type", "bridge"])
        run_command(["ip", "addr", "add", f"{network.gateway}/24", "dev", network.bridge])
        run_command(["ip", "link", "set", network.bridge, "up"])
        return network

    def bridge_exists(self) -> bool:
        return Path(f"/sys/class/net/{self.bridge}").exists()

    def add_host(self, name: str, base: Path | None = None, shared: Sequence[str] = ()) -> Host:
        """A new host ``name`` (short, e.g. "hospital") at the next address of the network.

        Its directory is ``base`` (created; kept by ``destroy``) or a fresh one under /var/tmp;
        ``shared`` names entries of OVERLAYS the host sees as the machine's (e.g. the one holding
        ``base``: an overlay's upper layer cannot lie inside its lower one).
        """
        index = len(self.hosts) + 2
        if base is not None:
            base.mkdir(mode=0o755, parents=True)
        host = Host(
            name=name,
            address=f"{self.prefix}.{index}",
            network=self,
            base=base if base is not None else _make_base_dir(f"host-{name}"),
            netns=f"mst-{self.tag}-{name}",
            veth=f"mv{self.tag}{index:02d}",
            keep_base=base is not None,
            overlays=tuple(lower for lower in OVERLAYS if lower not in shared),
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
        quiet(["ip", "link", "del", self.bridge])

    def to_json(self) -> dict[str, Any]:
        return {
            "tag": self.tag,
            "prefix": self.prefix,
            "bridge": self.bridge,
            "gateway": self.gateway,
            "hosts": [host.to_json() for host in self.hosts],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> HostNetwork:
        """The network a previous process described with ``to_json`` (whatever still runs of it)."""
        network = cls(tag=str(data["tag"]), prefix=str(data["prefix"]))
        for item in data["hosts"]:
            network.hosts.append(
                Host(
                    name=str(item["name"]),
                    address=str(item["address"]),
                    network=network,
                    base=Path(item["base"]),
                    netns=str(item["netns"]),
                    veth=str(item["veth"]),
                    anchor_pid=int(item["pid"]),
                    keep_base=True,
                )
            )
        return network
