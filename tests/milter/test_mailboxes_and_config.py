"""The mailbox table (AUTH-2, AUTH-3), the milter's config section, check-config and live reloads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import Milter
import pytest
from tests.milter.harness import (
    INDEX,
    LOCAL,
    MAILBOXES,
    PEER,
    PEER_CN,
    World,
    connect,
    write_mailboxes,
    write_trustlist,
)

from mssante import mailboxes
from mssante.milter import config as milter_config
from mssante.milter import postfix_settings
from mssante.milter.cli import libmilter_socket

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "milters" / "src")}


def test_auth3_mailbox_lookup_domain_case_insensitive_local_part_exact(tmp_path: Path) -> None:
    table = mailboxes.load(write_mailboxes(tmp_path / "m.json"))
    assert table.by_address(f"dr.martin@{LOCAL.upper()}") is not None
    assert table.by_address(f"<dr.martin@{LOCAL}>") is not None
    assert table.by_address(f"Dr.Martin@{LOCAL}") is None  # RFC 5321: the local part is exact
    assert [b.address for b in table.owned_by("dr.martin")] == [f"dr.martin@{LOCAL}", f"secretariat@{LOCAL}"]
    assert table.owned_by("DR.MARTIN") == ()
    assert [b.address for b in table.by_cert_cn("DPI.hopital-exemple.fr")] == [f"dpi@{LOCAL}"]
    assert len(table) == 3


def test_mailbox_idn_domain_is_stored_as_a_label(tmp_path: Path) -> None:
    data = {"schema": 1, "mailboxes": [{"address": "a@hôpital.mssante.fr", "type": "PER", "owners": ["a"]}]}
    table = mailboxes.parse(data)
    assert table.by_address("a@xn--hpital-ixa.mssante.fr") is not None
    assert table.by_address("a@HÔPITAL.mssante.fr") is not None


def test_mailbox_table_reports_every_problem() -> None:
    data = {
        "schema": 2,
        "mailboxes": [
            {"address": "no-domain", "type": "XYZ", "owners": "me"},
            {"address": f"a@{LOCAL}", "type": "PER", "owners": [], "red_list": "no", "extra": 1},
            {"address": f"a@{LOCAL}", "type": "PER", "owners": []},
            {"address": f"a@{LOCAL}", "type": "PER", "owners": []},
        ],
    }
    with pytest.raises(mailboxes.MailboxTableError) as info:
        mailboxes.parse(data)
    text = "\n".join(info.value.problems)
    expected = ["schema", "mailboxes[0].address", "mailboxes[0].type", "mailboxes[0].owners"]
    expected += ["mailboxes[1].red_list", "mailboxes[1].extra", "mailboxes[3].address: duplicate"]
    for fragment in expected:
        assert fragment in text


def _config(tmp_path: Path, milter: dict[str, object]) -> Path:
    path = tmp_path / "mssante.yml"
    doc = {
        "schema": 1,
        "host_id": "hospital-1",
        "mailboxes_file": str(write_mailboxes(tmp_path / "mailboxes.json")),
        "trustlist": {"out_dir": str(tmp_path / "tl")},
        "journal": {"socket": str(tmp_path / "journal.sock")},
        "milter": milter,
    }
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


def test_config_defaults_and_derived_paths(tmp_path: Path) -> None:
    config = milter_config.load(_config(tmp_path, {}))
    assert config.socket.startswith("unix:")
    assert config.trustlist_dir == tmp_path / "tl" / "current"
    assert (config.peer_port, config.submission_port) == (25, 587)
    assert config.metrics_listen == ("127.0.0.1", 9741)
    assert config.journal_socket == tmp_path / "journal.sock"


def test_check_config_lists_every_problem(tmp_path: Path) -> None:
    values = {"socket": "tcp:x", "peer_port": 0, "submission_port": "587", "metrics_listen": "x"}
    bad = _config(tmp_path, {**values, "typo": 1, "socket_umask": "999"})
    write_mailboxes(tmp_path / "mailboxes.json", {"schema": 1, "mailboxes": [{"address": "bad"}]})
    run = subprocess.run(
        [sys.executable, "-m", "mssante.milter", "check-config", str(bad)],
        check=False,
        capture_output=True,
        text=True,
        env=ENV,
    )
    assert run.returncode == 1
    for key in ("milter.socket", "milter.peer_port", "milter.submission_port", "milter.metrics_listen",
                "milter.typo", "milter.socket_umask", "mailboxes_file"):  # fmt: skip
        assert key in run.stderr
    good = _config(tmp_path, {"socket": "inet:127.0.0.1:8891"})
    command = [sys.executable, "-m", "mssante.milter", "check-config", str(good)]
    run = subprocess.run(command, check=False, capture_output=True, env=ENV)
    assert run.returncode == 0, run.stderr


def test_postfix_settings_declared_once() -> None:
    params = postfix_settings.render("unix:private/mssante-milter")
    assert params["milter_protocol"] == "6"
    assert params["smtpd_milters"].startswith("{ unix:private/mssante-milter,")
    assert "default_action=tempfail }" in params["smtpd_milters"]
    assert "{daemon_port}" in params["milter_connect_macros"]
    for macro in ("{tls_version}", "{cert_subject}", "{cert_issuer}", "{auth_authen}"):
        assert macro in params["milter_mail_macros"]
    assert "{rcpt_mailer}" in params["milter_rcpt_macros"]
    assert params["milter_end_of_data_macros"] == "i"


def test_libmilter_socket_forms() -> None:
    assert libmilter_socket("inet:127.0.0.1:8891") == "inet:8891@127.0.0.1"
    assert libmilter_socket("unix:/run/m.sock") == "unix:/run/m.sock"


def test_trust8_switch_picked_up_without_restart_transaction_keeps_snapshot(tmp_path: Path) -> None:
    """Trust list switch: a transaction in flight keeps its snapshot; the next one sees the new list."""
    world = World(tmp_path)
    world.live.trust.interval = 0.0
    world.live.boxes.interval = 0.0
    ctx = connect(world, cn=PEER_CN)
    assert ctx._envfrom(f"<dr.house@{PEER}>") == Milter.CONTINUE
    shrunk = {**INDEX, "domains": {k: v for k, v in INDEX["domains"].items() if k != PEER}}
    write_trustlist(world.base / "trustlist", shrunk, generation="gen-2")
    assert ctx._envrcpt(f"<dr.martin@{LOCAL}>") == Milter.CONTINUE  # same transaction, old snapshot
    ctx = connect(world, cn=PEER_CN)
    assert ctx._envfrom(f"<dr.house@{PEER}>") == Milter.REJECT  # new transaction, new list
    assert "sender-domain-not-listed" in " ".join(ctx._reply)


def test_auth3_mailbox_table_change_picked_up_bad_file_keeps_last_good(tmp_path: Path) -> None:
    world = World(tmp_path)
    world.live.boxes.interval = 0.0
    assert connect(world, port=587, auth="newcomer")._envfrom(f"<dr.martin@{LOCAL}>") == Milter.REJECT
    changed = json.loads(json.dumps(MAILBOXES))
    changed["mailboxes"][0]["owners"].append("newcomer")
    write_mailboxes(world.boxes, changed)
    assert connect(world, port=587, auth="newcomer")._envfrom(f"<dr.martin@{LOCAL}>") == Milter.CONTINUE
    world.boxes.write_text("{ not json", encoding="utf-8")
    assert connect(world, port=587, auth="newcomer")._envfrom(f"<dr.martin@{LOCAL}>") == Milter.CONTINUE
    assert world.sample("mssante_milter_errors_total", stage="mailboxes") >= 1
    assert world.sample("mssante_mailboxes") == 3


def test_cli_runs_as_module(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "mssante.milter", "postfix-settings", "--socket", "inet:127.0.0.1:1"]
    run = subprocess.run(command, check=False, capture_output=True, text=True, cwd=ROOT, env=ENV)
    assert run.returncode == 0
    assert "smtpd_milters = { inet:127.0.0.1:1," in run.stdout
