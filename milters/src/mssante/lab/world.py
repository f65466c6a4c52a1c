"""The lab's four hosts and what runs in them (docs/lab.md, docs/lab-json.md).

``up`` builds, or finds again and completes, the test PKI, the signed trust list, a bridge with the
hosts hospital, peer, other and internet (each its own namespaces, state under DIR/<host>/), the DNS
server, and the mail servers; it writes DIR/lab.json. ``down`` removes all of it; ``status`` says what
runs. DIR/state.json (internal) records the network as soon as each host exists, so a failed or
interrupted ``up`` is found again by the next ``up`` or ``down``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mssante.lab import dns, hosts, oauth, servers
from mssante.lab.hosts import Host, HostNetwork
from mssante.lab.pki import Pki, ensure_pki
from mssante.lab.system import quiet, run_command
from mssante.lab.trustlist import LIST_DIR, LIST_FILE, write_lab_list
from mssante.lab.world_spec import (
    ORDINARY_USERS,
    build_lab_json,
    ensure_public_certs,
    mail_servers,
    mailstore,
    mssante_address,
    personal_address,
    zone,
)

HOST_NAMES = ("hospital", "peer", "other", "internet")
SEEDED = "seeded"  # marks a host whose servers were configured (a host without it is rebuilt)


@dataclass(frozen=True)
class LabDir:
    root: Path

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    @property
    def trustlist(self) -> Path:
        return self.root / LIST_DIR / LIST_FILE

    @property
    def state(self) -> Path:
        return self.root / "state.json"

    @property
    def lab_json(self) -> Path:
        return self.root / "lab.json"

    @property
    def secrets(self) -> Path:
        return self.root / "secrets.json"

    def dns(self, network: HostNetwork) -> dns.DnsServer:
        return dns.DnsServer(self.root / "dns", network.gateway)


def default_tag(root: Path) -> str:
    """The tag of a lab directory: 6 hex digits of its absolute path (so two labs never collide)."""
    return hashlib.sha256(str(root.absolute()).encode()).hexdigest()[:6]


# A checkout (hence .lab) often lies in a home directory: the hosts then share that one with the
# machine. Under any other overlaid directory, the lab directory is refused.
SHAREABLE = ("/root", "/home")


class LabDirError(ValueError):
    """The lab directory cannot hold a lab (it lies under a directory the hosts overlay)."""


def _shared_overlays(root: Path) -> tuple[str, ...]:
    """The overlaid directories holding ``root`` that the hosts must share; LabDirError if not allowed."""
    holding = [lower for lower in hosts.OVERLAYS if root == Path(lower) or Path(lower) in root.parents]
    for lower in holding:
        if lower not in SHAREABLE or root == Path(lower):
            raise LabDirError(f"{root}: the lab directory must not be under {lower} (overlaid in the hosts)")
    return tuple(holding)


def _load_state(lab: LabDir) -> dict[str, Any] | None:
    try:
        state = dict(json.loads(lab.state.read_text()))
    except (OSError, ValueError):
        return None
    return state if "tag" in state and "hosts" in state else None  # not an older lab's state.json


def _save_state(lab: LabDir, network: HostNetwork) -> None:
    lab.state.write_text(json.dumps(network.to_json(), indent=2) + "\n")


def _passwords(lab: LabDir, users: list[str]) -> dict[str, str]:
    try:
        known = dict(json.loads(lab.secrets.read_text()))
    except (OSError, ValueError):
        known = {}
    wanted = {user: str(known.get(user) or secrets.token_urlsafe(12)) for user in users}
    if wanted != known:
        lab.secrets.write_text(json.dumps(wanted, indent=2) + "\n")
        lab.secrets.chmod(0o600)
    return wanted


def _running_network(lab: LabDir) -> tuple[HostNetwork, bool] | None:
    """The network of a previous complete ``up`` while its namespaces exist, else None.

    An anchor process that died is started again (the second item is then True).
    """
    state = _load_state(lab)
    if state is None:
        return None
    network = HostNetwork.from_json(state)
    names = [host.name for host in network.hosts]
    if names != list(HOST_NAMES) or not network.bridge_exists():
        return None
    if not all(host.namespaces_exist() and (host.base / SEEDED).exists() for host in network.hosts):
        return None
    revived = [host.revive() for host in network.hosts]
    if any(revived):
        _save_state(lab, network)
    return network, any(revived)


def sweep(lab: LabDir, tag: str) -> bool:
    """Remove whatever a lab with ``tag`` left in the kernel; True when something was found."""
    found = False
    state = _load_state(lab)
    if state is not None:
        network = HostNetwork.from_json(state)
        found = bool(network.hosts) or network.bridge_exists()
        network.destroy()
    netns = run_command(["ip", "netns", "list"], check=False).stdout.split()
    for name in [entry for entry in netns if entry.startswith(f"mst-{tag}-")]:
        found = True
        quiet(["ip", "netns", "del", name])
    links = Path("/sys/class/net")
    for link in [entry.name for entry in links.iterdir() if entry.name.startswith((f"mv{tag}", f"mb{tag}"))]:
        found = True
        quiet(["ip", "link", "del", link])
    legacy = lab.root / "postfix" / "etc"  # the single-instance lab of earlier versions
    if (legacy / "main.cf").exists():
        quiet(["postfix", "-c", str(legacy), "stop"])
    for ns_dir in lab.root.glob("*/ns"):
        for path in (ns_dir / "mnt", ns_dir / "uts", ns_dir):
            quiet(["umount", str(path)])
    return found


def _build_network(lab: LabDir, tag: str) -> HostNetwork:
    network = HostNetwork.create(tag)
    try:
        for name in HOST_NAMES:
            base = lab.root / name
            if base.exists():
                shutil.rmtree(base)
            network.add_host(name, base=base, shared=_shared_overlays(lab.root))
            _save_state(lab, network)
    except BaseException:
        network.destroy()
        raise
    return network


def _seed(host: Host, network: HostNetwork, pki: Pki, passwords: dict[str, str], public: Path) -> None:
    host.fs("/etc/resolv.conf").write_text(f"nameserver {network.gateway}\noptions timeout:2 attempts:2\n")
    servers.seed_postfix(host, mail_servers(network, pki, public)[host.name])
    if host.name == "hospital":
        servers.seed_dovecot(host, mailstore(network, public, passwords))


def _ensure_services(lab: LabDir, network: HostNetwork) -> bool:
    changed = False
    for host in network.hosts:
        listen = [host.address]
        changed |= servers.ensure_postfix(host, listen)
        if host.name == "hospital":
            changed |= servers.ensure_dovecot(host, host.address)
            changed |= oauth.ensure_introspection(host, lab.root)
    return changed


def up(root: Path, tag: str | None = None) -> dict[str, Any]:
    """Build or complete the lab under ``root``; the result says whether anything changed."""
    root = root.absolute()
    _shared_overlays(root)
    lab = LabDir(root)
    root.mkdir(mode=0o755, parents=True, exist_ok=True)
    root.chmod(0o755)
    pki = ensure_pki(lab.pki)
    changed = bool(pki.changed)
    changed |= write_lab_list(pki, lab.trustlist)
    public = root / "public-tls"
    changed |= ensure_public_certs(pki, public)
    passwords = _passwords(lab, [box for box, _ in ORDINARY_USERS])
    running = _running_network(lab)
    if running is None:
        state = _load_state(lab)
        tag = tag or (str(state["tag"]) if state else default_tag(root))
        sweep(lab, tag)
        network = _build_network(lab, tag)
        for host in network.hosts:
            _seed(host, network, pki, passwords, public)
            (host.base / SEEDED).touch()
        changed = True
    else:
        network, revived = running
        changed |= revived
    for extra in (mssante_address(network), personal_address(network)):
        changed |= network.hosts[0].add_address(extra)
    server = lab.dns(network)
    changed |= dns.ensure_running(server, dns.write_config(server, zone(network)))
    changed |= _ensure_services(lab, network)
    document = build_lab_json(root, network, pki, server, passwords)
    changed |= _write_if_different(lab.lab_json, json.dumps(document, indent=2, sort_keys=True) + "\n")
    return {"changed": changed, "lab_json": str(lab.lab_json), "summary": summary(document), "lab": document}


def _write_if_different(path: Path, text: str) -> bool:
    if path.exists() and path.read_text() == text:
        return False
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return True


def summary(document: dict[str, Any]) -> list[str]:
    lines = []
    for name, host in document["hosts"].items():
        domains = ", ".join(host["mssante_domains"] + host["internet_domains"])
        ordinary = f" (ordinary {host['ordinary_address']})" if host["ordinary_address"] else ""
        lines.append(f"{name}: {host['address']}{ordinary}, {domains}; enter: {' '.join(host['enter'])}")
    lines.append(f"DNS: {document['dns']['server']} (dnsmasq, lab names only)")
    lines.append(f"trust list: {document['trustlist']['source']} signed by {document['trustlist']['signer']}")
    return lines


def down(root: Path, tag: str | None = None) -> dict[str, Any]:
    """Stop and remove everything of the lab under ``root``; changed when something was there."""
    root = root.absolute()
    lab = LabDir(root)
    state = _load_state(lab)
    existed = root.exists()
    if state is not None:
        with contextlib.suppress(ValueError):
            network = HostNetwork(tag=str(state["tag"]), prefix=str(state["prefix"]))
            dns.stop(lab.dns(network))
    tag = tag or (str(state["tag"]) if state else default_tag(root))
    existed |= sweep(lab, tag)
    shutil.rmtree(root, ignore_errors=True)
    return {"changed": existed, "lab": str(root)}


def status(root: Path) -> dict[str, Any]:
    """What runs of the lab under ``root``."""
    root = root.absolute()
    lab = LabDir(root)
    state = _load_state(lab)
    if state is None:
        return {"changed": False, "running": False, "lab": str(root), "exists": root.exists(), "hosts": {}}
    network = HostNetwork.from_json(state)
    report: dict[str, Any] = {}
    for host in network.hosts:
        running = host.is_up()
        report[host.name] = {
            "up": running,
            "postfix": running and servers.postfix_pid(host) is not None,
        }
        if host.name == "hospital":
            report[host.name]["dovecot"] = running and servers.dovecot_pid(host) is not None
            report[host.name]["introspection"] = running and oauth.introspection_pid(host, root) is not None
    dns_running = lab.dns(network).pid() is not None
    running = dns_running and bool(report) and all(all(item.values()) for item in report.values())
    return {
        "changed": False,
        "running": running,
        "lab": str(root),
        "exists": True,
        "tag": network.tag,
        "dns": dns_running,
        "hosts": report,
    }
