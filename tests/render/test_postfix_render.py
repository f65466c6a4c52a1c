"""Render-level tests of role mssante_postfix: its data, filters and the mssante_postconf module.

The module tests drive the real module file with the real `postconf` on a temporary directory
(check mode, diff, idempotence, `state: absent`, claim removal). Requirements: TRUST-7, TLS-1, TLS-2, AUTH-3.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
ROLE = REPO / "roles" / "mssante_postfix"
MODULE = ROLE / "library" / "mssante_postconf.py"
MILTER_SETTINGS = REPO / "milters" / "src" / "mssante" / "milter" / "postfix_settings.yml"


def _filters() -> Any:
    spec = importlib.util.spec_from_file_location(
        "mssante_postfix_filters", ROLE / "filter_plugins" / "mssante_postfix.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _defaults() -> dict[str, Any]:
    return dict(yaml.safe_load((ROLE / "defaults" / "main.yml").read_text()))


def test_trust7_milter_attached_fail_closed_from_milter_data() -> None:
    """TRUST-7: the milter's own declared settings give smtpd_milters with default_action=tempfail."""
    settings = yaml.safe_load(MILTER_SETTINGS.read_text())
    entries = {e["name"]: e["value"] for e in _filters().milter_main(settings, "unix:mssante/milter.sock")}
    assert entries["smtpd_milters"].startswith("{ unix:mssante/milter.sock, ")
    assert "default_action=tempfail" in entries["smtpd_milters"]
    assert entries["milter_protocol"] == "6"
    assert "{cert_subject}" in entries["milter_helo_macros"].split()


def test_trust7_tls1_tls2_sealed_defaults_present() -> None:
    """TRUST-7, TLS-1, TLS-2: the clean base names every sealed setting of design.md."""
    main = {e["name"]: e["value"] for e in _defaults()["mssante_postfix_main_default"]}
    for name in ("default_transport", "local_transport", "relay_transport"):
        assert main[name].startswith("error:")
    for name in (
        "relayhost",
        "mydestination",
        "alias_maps",
        "authorized_submit_users",
        "smtp_tls_CApath",
        "smtpd_tls_CApath",
        "smtpd_forbid_bare_newline_exclusions",
    ):
        assert main[name] == ""
    assert main["smtpd_tls_security_level"] == "encrypt" and main["smtpd_tls_ask_ccert"] == "yes"
    assert main["smtpd_forbid_bare_newline"] == "reject" and main["enable_long_queue_ids"] == "yes"
    assert main["smtp_tls_connection_reuse"] == "yes" and main["disable_mime_output_conversion"] == "yes"
    assert main["tls_high_cipherlist"] == "{{ mssante_postfix_tls_cipherlist }}"
    master = {e["name"] for e in _defaults()["mssante_postfix_master_default"]}
    assert not {"pickup/unix", "local/unix", "virtual/unix", "relay/unix"} & master
    assert {"mssante/unix", "tlsproxy/unix", "postlog/unix-dgram"} <= master


def test_tls4_port_25_applies_the_fingerprint_deny_list() -> None:
    """TLS-4: SHA-256 certificate fingerprints looked up in the revocation deny-list on port 25 only;
    port 587 keeps its own client restrictions (SASL or application certificate)."""
    defaults = _defaults()
    main = {e["name"]: e["value"] for e in defaults["mssante_postfix_main_default"]}
    assert main["smtpd_tls_fingerprint_digest"] == "sha256"
    assert main["smtpd_client_restrictions"] == (
        "check_ccert_access hash:{{ mssante_postfix_ccert_access_map | trim }}"
    )
    assert "mssante_revocation_deny_list" in defaults["mssante_postfix_ccert_access_map"]
    [submission] = [
        e for e in defaults["mssante_postfix_master_default"] if e["name"].endswith("submission_port }}/inet")
    ]
    assert any(
        a.startswith("-o smtpd_client_restrictions=permit_sasl_authenticated") for a in submission["args"]
    )
    tasks = yaml.safe_load((ROLE / "tasks" / "directories.yml").read_text())
    creates = [
        t
        for t in tasks
        if "ansible.builtin.copy" in t and "ccert_access_map" in t["ansible.builtin.copy"]["dest"]
    ]
    assert creates and creates[0]["ansible.builtin.copy"]["force"] is False  # never replaces the job's map


def test_every_default_is_typed_in_argument_specs() -> None:
    specs = yaml.safe_load((ROLE / "meta" / "argument_specs.yml").read_text())
    options = specs["argument_specs"]["main"]["options"]
    missing = [name for name in _defaults() if name not in options]
    assert missing == []


# ---------------------------------------------------------------------------------------------
# The module, for real (needs ansible: dev venv)
# ---------------------------------------------------------------------------------------------


def run_module(args: dict[str, Any], tmp: Path, check: bool = False) -> dict[str, Any]:
    args = dict(args, _ansible_check_mode=check, _ansible_diff=True)
    path = tmp / "args.json"
    path.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": args}))
    result = subprocess.run(
        [sys.executable, str(MODULE), str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    out = json.loads(result.stdout)
    assert not out.get("failed"), out
    return dict(out)


@pytest.fixture
def live(tmp_path: Path) -> Path:
    directory = tmp_path / "postfix"
    directory.mkdir()
    (directory / "main.cf").write_text(
        "# hospital\nmyhostname = mail.hopital-a.test\n"
        "mydestination = $myhostname, localhost,\n    hopital-a.test, hopital-a.mssante.test\n"
        f"transport_maps = hash:{directory}/transport\nmessage_size_limit=52428800\n"
    )
    (directory / "master.cf").write_text("smtp inet n - y - - smtpd\n")
    (directory / "transport").write_text(
        "# routes\nhopital-a.mssante.test smtp:[127.9.9.9]\n  # continued\n"
        ".hopital-a.mssante.test smtp:[127.9.9.9]\n"
        "labo.example smtp:[127.8.8.8]\n"
    )
    return directory


@pytest.mark.devonly
def test_postconf_module_check_mode_diff_then_idempotent(live: Path, tmp_path: Path) -> None:
    """Check mode reports the diff and writes nothing; the real run writes; a second run is unchanged."""
    args = {
        "config_dir": str(live),
        "main": [
            {"name": "multi_instance_enable", "value": True},
            {"name": "message_size_limit", "state": "absent"},
        ],
        "remove_domain_claims": ["hopital-a.mssante.test"],
    }
    before = {p.name: p.read_bytes() for p in live.iterdir()}
    checked = run_module(args, tmp_path, check=True)
    assert checked["changed"] and sorted(checked["changed_files"]) == ["main.cf", "transport"]
    assert {p.name: p.read_bytes() for p in live.iterdir()} == before
    after_text = "".join(d["after"] for d in checked["diff"])
    assert "multi_instance_enable = yes" in after_text
    applied = run_module(args, tmp_path)
    assert applied["changed"] and applied["postmap"] == [{"name": "transport", "type": "hash"}]
    main = (live / "main.cf").read_text()
    assert "message_size_limit" not in main and "hopital-a.mssante.test" not in main
    assert "myhostname = mail.hopital-a.test" in main and "# hospital" in main
    transport = (live / "transport").read_text()
    assert transport == "# routes\n  # continued\nlabo.example smtp:[127.8.8.8]\n"  # comments stay
    subprocess.run(["postmap", "-c", str(live), f"hash:{live}/transport"], check=True)
    again = run_module(args, tmp_path)
    assert not again["changed"], again


@pytest.mark.devonly
def test_postconf_module_clean_base_ignores_live_settings(live: Path, tmp_path: Path) -> None:
    """The MSSanté instance is built from an empty base: nothing of the live main.cf survives."""
    stage = tmp_path / "stage"
    out = run_module(
        {
            "config_dir": str(live),
            "dest_dir": str(stage),
            "main_base": "empty",
            "master_base": "empty",
            "main": [{"name": "default_transport", "value": "error:no"}],
            "master": [
                {
                    "name": "mssante/unix",
                    "chroot": True,
                    "command": "smtp",
                    "args": ["-o syslog_name=postfix-mssante/mssante"],
                }
            ],
        },
        tmp_path,
    )
    assert out["changed"]
    assert (stage / "main.cf").read_text() == "default_transport = error:no\n"
    master = subprocess.run(
        ["postconf", "-c", str(stage), "-M"], capture_output=True, text=True, check=True
    ).stdout
    assert master.split() == [
        "mssante",
        "unix",
        "-",
        "-",
        "y",
        "-",
        "-",
        "smtp",
        "-o",
        "syslog_name=postfix-mssante/mssante",
    ]
    assert (live / "main.cf").read_text().startswith("# hospital")
