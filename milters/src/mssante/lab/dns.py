"""The lab's DNS: dnsmasq on the bridge's gateway address, answering only for the lab's names.

``write_config`` renders ``DIR/dns/dnsmasq.conf`` (``no-resolv``, ``no-hosts``, ``local=/test/``
so nothing leaves the machine, A and MX records for every lab domain); ``ensure_running`` starts or
restarts dnsmasq; ``query`` is a minimal stdlib resolver (A and MX) used by the checks and by
``python3 -m mssante.lab.dns TYPE NAME`` (which asks the nameserver of /etc/resolv.conf, e.g.
inside a lab host).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import struct
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from mssante.lab.system import alive, listening, run_command, wait_until

TYPES = {"A": 1, "MX": 15}


@dataclass(frozen=True)
class Zone:
    """The lab's records: host name -> address, mail domain -> MX host name."""

    addresses: Mapping[str, str]
    mx: Mapping[str, str]


@dataclass(frozen=True)
class DnsServer:
    directory: Path
    address: str

    @property
    def config(self) -> Path:
        return self.directory / "dnsmasq.conf"

    @property
    def pid_file(self) -> Path:
        return self.directory / "dnsmasq.pid"

    @property
    def log_file(self) -> Path:
        return self.directory / "dnsmasq.log"

    def pid(self) -> int | None:
        """The running dnsmasq of this lab (checked by its command line), or None."""
        try:
            pid = int(self.pid_file.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            return None
        return pid if alive(pid) and str(self.config).encode() in cmdline else None


def render(server: DnsServer, zone: Zone) -> str:
    lines = [
        "# The lab's DNS (mssante.lab.dns): only the lab's names, nothing forwarded.",
        "no-resolv",
        "no-hosts",
        "no-poll",
        "bind-interfaces",
        f"listen-address={server.address}",
        "port=53",
        "user=root",
        "local=/test/",
        f"pid-file={server.pid_file}",
        f"log-facility={server.log_file}",
        "log-queries",
    ]
    lines += [f"host-record={name},{address}" for name, address in sorted(zone.addresses.items())]
    lines += [f"mx-host={domain},{host},10" for domain, host in sorted(zone.mx.items())]
    return "\n".join(lines) + "\n"


def write_config(server: DnsServer, zone: Zone) -> bool:
    """Write the configuration; True when it changed."""
    server.directory.mkdir(mode=0o755, parents=True, exist_ok=True)
    text = render(server, zone)
    if server.config.exists() and server.config.read_text() == text:
        return False
    server.config.write_text(text)
    return True


def stop(server: DnsServer) -> bool:
    """Stop this lab's dnsmasq; True when it ran."""
    pid = server.pid()
    if pid is None:
        return False
    with contextlib.suppress(OSError):
        os.kill(pid, signal.SIGTERM)
    wait_until(lambda: not alive(pid), 10, "dnsmasq to stop")
    return True


def ensure_running(server: DnsServer, reconfigured: bool) -> bool:
    """Start dnsmasq, or restart it after a configuration change; True when it did either."""
    if server.pid() is not None and not reconfigured:
        return False
    stop(server)
    run_command(["dnsmasq", f"--conf-file={server.config}"])
    wait_until(
        lambda: server.pid() is not None and listening(server.address, 53, udp=True),
        10,
        lambda: f"dnsmasq on {server.address}: {_tail(server.log_file)}",
    )
    return True


def _tail(path: Path) -> str:
    try:
        return path.read_text(errors="replace")[-2000:]
    except OSError:
        return "(no log)"


# ---- a minimal resolver -------------------------------------------------------------------------
def _encode_name(name: str) -> bytes:
    labels = [label.encode("ascii") for label in name.rstrip(".").split(".")]
    return b"".join(bytes([len(label)]) + label for label in labels) + b"\0"


def _read_name(message: bytes, offset: int) -> tuple[str, int]:
    """The (possibly compressed) name at ``offset`` and the offset after it."""
    labels: list[str] = []
    end = None
    for _ in range(128):
        length = message[offset]
        if length & 0xC0 == 0xC0:
            end = end if end is not None else offset + 2
            offset = ((length & 0x3F) << 8) | message[offset + 1]
            continue
        if length == 0:
            return ".".join(labels), end if end is not None else offset + 1
        labels.append(message[offset + 1 : offset + 1 + length].decode("ascii"))
        offset += 1 + length
    raise ValueError("DNS name loop")


def _answers(message: bytes, ident: int, qtype: int) -> list[str]:
    got_id, flags, qdcount, ancount = struct.unpack("!HHHH", message[:8])
    if got_id != ident:
        raise ValueError("DNS answer for another query")
    if flags & 0x000F not in (0, 3):  # NOERROR or NXDOMAIN
        raise OSError(f"DNS server answered rcode {flags & 0x000F}")
    offset = 12
    for _ in range(qdcount):
        offset = _read_name(message, offset)[1] + 4
    results = []
    for _ in range(ancount):
        offset = _read_name(message, offset)[1]
        rtype, _class, _ttl, length = struct.unpack("!HHIH", message[offset : offset + 10])
        offset += 10
        if rtype == qtype == TYPES["A"]:
            results.append(socket.inet_ntoa(message[offset : offset + 4]))
        elif rtype == qtype == TYPES["MX"]:
            preference = struct.unpack("!H", message[offset : offset + 2])[0]
            results.append(f"{preference} {_read_name(message, offset + 2)[0]}")
        offset += length
    return sorted(results)


def query(server: str, name: str, kind: str, timeout: float = 3.0) -> list[str]:
    """The ``kind`` (A or MX) records of ``name`` from ``server`` over UDP; [] when there are none."""
    ident = secrets.randbelow(0x10000)
    packet = struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 0) + _encode_name(name)
    packet += struct.pack("!HH", TYPES[kind], 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(packet, (server, 53))
        answer, _ = sock.recvfrom(4096)
    return _answers(answer, ident, TYPES[kind])


def nameserver(resolv_conf: Path = Path("/etc/resolv.conf")) -> str:
    """The first nameserver of ``resolv_conf``."""
    for line in resolv_conf.read_text().splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0] == "nameserver":
            return fields[1]
    raise OSError(f"no nameserver in {resolv_conf}")


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2 or args[0] not in TYPES:
        sys.stderr.write("usage: python3 -m mssante.lab.dns A|MX NAME\n")
        return 2
    try:
        records = query(nameserver(), args[1], args[0])
    except OSError as error:
        sys.stderr.write(f"{args[1]} {args[0]}: {error}\n")
        return 1
    sys.stdout.write("".join(record + "\n" for record in records))
    return 0 if records else 1


if __name__ == "__main__":
    sys.exit(main())
