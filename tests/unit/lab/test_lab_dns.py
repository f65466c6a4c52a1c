"""The lab's minimal DNS client (mssante.lab.dns): answers parsed as dnsmasq sends them."""

from __future__ import annotations

import socket
import struct
from pathlib import Path

import pytest

from mssante.lab import dns
from mssante.lab.dns import DnsServer, Zone


def _answer(ident: int, name: str, records: list[tuple[int, bytes]], rcode: int = 0) -> bytes:
    header = struct.pack("!HHHHHH", ident, 0x8180 | rcode, 1, len(records), 0, 0)
    question = dns._encode_name(name) + struct.pack("!HH", 15, 1)
    body = b""
    for rtype, rdata in records:
        body += b"\xc0\x0c" + struct.pack("!HHIH", rtype, 1, 60, len(rdata)) + rdata
    return header + question + body


def test_mx_answer_with_compressed_names() -> None:
    # The exchange "mx" + pointer to the question's name (offset 12): mx.hopital-a.test
    rdata = struct.pack("!H", 10) + b"\x02mx\xc0\x0c"
    packet = _answer(7, "hopital-a.test", [(15, rdata)])
    assert dns._answers(packet, 7, 15) == ["10 mx.hopital-a.test"]


def test_a_answer_and_refusal() -> None:
    packet = _answer(9, "mx.labo-c.test", [(1, socket.inet_aton("10.1.2.3"))])
    assert dns._answers(packet, 9, 1) == ["10.1.2.3"]
    assert dns._answers(_answer(9, "x.test", [], rcode=3), 9, 1) == []  # NXDOMAIN: no records
    with pytest.raises(OSError, match="rcode 5"):
        dns._answers(_answer(9, "example.com", [], rcode=5), 9, 1)
    with pytest.raises(ValueError, match="another query"):
        dns._answers(packet, 10, 1)


def test_dnsmasq_config_answers_only_lab_names(tmp_path: Path) -> None:
    server = DnsServer(tmp_path, "10.9.8.1")
    text = dns.render(
        server, Zone({"mx.hopital-a.test": "10.9.8.20"}, {"hopital-a.mssante.test": "mx.hopital-a.test"})
    )
    lines = text.splitlines()
    for required in ("no-resolv", "no-hosts", "local=/test/", "listen-address=10.9.8.1", "bind-interfaces"):
        assert required in lines
    assert "host-record=mx.hopital-a.test,10.9.8.20" in lines
    assert "mx-host=hopital-a.mssante.test,mx.hopital-a.test,10" in lines
    assert not any(line.startswith("server=") for line in lines)
