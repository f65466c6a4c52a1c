"""lab.json (docs/lab-json.md): the document `up` writes, checked by labjson.validate (issue 9)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from mssante.lab import labjson
from mssante.lab.dns import DnsServer
from mssante.lab.hosts import HostNetwork
from mssante.lab.pki import Pki
from mssante.lab.world_spec import ORDINARY_USERS, build_lab_json, outside, zone

ROOT = Path("/srv/lab-unit")


def _network() -> HostNetwork:
    hosts = [
        {
            "name": name,
            "address": f"10.200.7.{index + 2}",
            "base": str(ROOT / name),
            "netns": f"mst-abc123-{name}",
            "veth": f"mvabc123{index + 2:02d}",
            "pid": 4242 + index,
        }
        for index, name in enumerate(labjson.HOST_NAMES)
    ]
    return HostNetwork.from_json({"tag": "abc123", "prefix": "10.200.7", "hosts": hosts})


@pytest.fixture
def document(pki: Pki) -> dict[str, Any]:
    network = _network()
    passwords = {user: "secret" for user, _ in ORDINARY_USERS}
    return build_lab_json(ROOT, network, pki, DnsServer(ROOT / "dns", network.gateway), passwords)


def test_lab_json_conforms_to_the_documented_shape(document: dict[str, Any], pki: Pki) -> None:
    assert labjson.validate(document) == []
    hospital = document["hosts"]["hospital"]
    assert hospital["address"] == "10.200.7.20" and hospital["ordinary_address"] == "10.200.7.2"
    assert hospital["pid"] == 4242
    assert hospital["enter"][:1] == ["nsenter"] and hospital["enter"][-1] == "--"
    assert {box["type"] for box in hospital["mailboxes"]} == {"PER", "ORG", "APP"}
    assert document["pki"]["operators"]["peer"]["cn"] == pki.peer.cn
    assert document["journal_dir"] == "/srv/lab-unit/hospital/upper/var_lib/mssante/journal"


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda d: d["hosts"].pop("other"), "hosts: expected exactly"),
        (lambda d: d["hosts"]["peer"].pop("pid"), "hosts.peer.pid: missing"),
        (lambda d: d["hosts"]["peer"].update(smtp_port=0), "hosts.peer.smtp_port: unexpected"),
        (lambda d: d["hosts"]["hospital"]["mailboxes"][0].update(type="XYZ"), "mailboxes[0].type"),
        (lambda d: d["pki"].update(crls=["relative.pem"]), "pki.crls: unexpected"),
        (lambda d: d["pki"]["expired"].pop("cn"), "pki.expired.cn: missing"),
        (lambda d: d["trustlist"].update(signer=""), "trustlist.signer: unexpected"),
        (lambda d: d["oauth"].update(token_command="not a list"), "oauth.token_command: unexpected"),
        (lambda d: d.update(schema=2), "lab.schema: unexpected"),
    ],
)
def test_lab_json_validate_names_each_departure(document: dict[str, Any], change: Any, problem: str) -> None:
    broken = copy.deepcopy(document)
    change(broken)
    problems = labjson.validate(broken)
    assert len(problems) == 1 and problem in problems[0], problems


def test_lab_paths_seen_from_outside_and_dns_records() -> None:
    network = _network()
    hospital = network.hosts[0]
    assert (
        outside(hospital, "/etc/mssante/mssante.yml")
        == "/srv/lab-unit/hospital/upper/etc/mssante/mssante.yml"
    )
    assert outside(hospital, "/var/spool/postfix/pid") == "/srv/lab-unit/hospital/upper/var_spool/postfix/pid"
    assert outside(hospital, "/usr/bin/python3") == "/usr/bin/python3"  # not overlaid: the machine's
    records = zone(network)
    assert records.mx["hopital-a.mssante.test"] == "mx.hopital-a.test"
    assert records.addresses["mx.hopital-a.test"] == "10.200.7.20"
    assert records.addresses["mail.hopital-a.test"] == "10.200.7.2"
