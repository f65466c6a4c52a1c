"""Render tests of the Python-side roles: templates rendered with jinja2 and the role defaults.

They run in both runtimes (jinja2 is in the dev venv and in Debian's python3-jinja2): the templates
use only jinja2 and a handful of Ansible filters, re-implemented in `_environment` exactly as far as
the templates need them. The Ansible-driven checks (argument_specs) are marked `devonly`.
"""

from __future__ import annotations

import configparser
import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jinja2
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
ROLE = REPO / "roles" / "mssante"
TEMPLATES = ROLE / "templates"


def _load_filter_plugin() -> dict[str, Callable[..., Any]]:
    spec = importlib.util.spec_from_file_location("mssante_argv", ROLE / "filter_plugins" / "mssante_argv.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    filters: dict[str, Callable[..., Any]] = module.FilterModule().filters()
    return filters


FILTERS = _load_filter_plugin()


def _to_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("yes", "true", "1", "on")
    return bool(value)


class _NotYet(Exception):
    """A value still holds a template: resolve it at a later pass (Ansible resolves lazily)."""


def _from_json(text: str) -> Any:
    if "{{" in text or "{%" in text:
        raise _NotYet
    return json.loads(text)


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, trim_blocks=True, keep_trailing_newline=True)
    env.filters.update(FILTERS)
    env.filters.update(
        {
            "bool": _to_bool,
            "quote": lambda s: shlex.quote(str(s)),
            "combine": lambda a, b: {**a, **b},
            "to_json": json.dumps,
            "from_json": _from_json,
            "dirname": os.path.dirname,
            "to_nice_json": lambda v, indent=4: json.dumps(
                v, indent=indent, sort_keys=True, ensure_ascii=False
            ),
            "to_nice_yaml": lambda v, indent=4, sort_keys=True: yaml.safe_dump(
                v, indent=indent, sort_keys=sort_keys, allow_unicode=True, default_flow_style=False
            ),
        }
    )
    return env


ENV = _environment()
SINGLE_EXPRESSION = re.compile(r"^\{\{(.*)\}\}$", re.S)


def _resolve(value: Any, variables: Mapping[str, Any]) -> Any:
    """Template a value as Ansible does: a lone expression keeps its native type."""
    if isinstance(value, str) and "{{" in value:
        match = SINGLE_EXPRESSION.match(value.strip())
        try:
            if match and "{{" not in match.group(1):
                return ENV.compile_expression(match.group(1))(**variables)
            return ENV.from_string(value).render(**variables)
        except _NotYet:
            return value
    if isinstance(value, list):
        return [_resolve(item, variables) for item in value]
    if isinstance(value, dict):
        return {key: _resolve(item, variables) for key, item in value.items()}
    return value


def role_variables(**overrides: Any) -> dict[str, Any]:
    """The role defaults with the inventory's overrides, resolved until nothing changes."""
    raw = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text(encoding="utf-8"))
    raw.update(overrides)
    variables: dict[str, Any] = {
        "inventory_hostname": "mss1.hopital-exemple.fr",
        "role_path": str(ROLE),
        **raw,
    }
    for _ in range(10):
        resolved = {key: _resolve(value, variables) for key, value in variables.items()}
        if resolved == variables:
            return variables
        variables = resolved
    raise AssertionError("defaults do not resolve")


def render(template: str, variables: Mapping[str, Any]) -> str:
    return (
        ENV.get_template(template)
        if False
        else ENV.from_string((TEMPLATES / template).read_text(encoding="utf-8")).render(**variables)
    )


INVENTORY: dict[str, Any] = {
    "mssante_host_id": "hospital-1",
    "mssante_domains": ["hopital-exemple.mssante.fr"],
    "mssante_trustlist_source": "https://listeblanche.example/listeblanchemssante.xml",
    "mssante_trustlist_signer": "CN=listeblanche.mssante.fr",
    "mssante_mailboxes": [
        {
            "address": "dr.martin@hopital-exemple.mssante.fr",
            "type": "PER",
            "owners": ["dr.martin"],
            "rpps": 10001234567,
        },
        {
            "address": "dpi@hopital-exemple.mssante.fr",
            "type": "APP",
            "owners": ["dpi-app"],
            "cert_cns": ["dpi.hopital-exemple.fr"],
            "structure_id": "1000000001",
            "red_list": True,
        },
    ],
}


def _contract_example() -> dict[str, Any]:
    text = (REPO / "docs" / "configuration.md").read_text(encoding="utf-8")
    block = re.search(r"```yaml\n(.*?)```", text, re.S)
    assert block is not None
    example: dict[str, Any] = yaml.safe_load(block.group(1))
    return example


# Keys of the contract that exist for tests only and are never rendered on a host.
TEST_ONLY_KEYS = {"milter": {"journal_file"}}


def test_config_file_is_valid_yaml_with_every_key_of_the_contract() -> None:
    """mssante.yml carries every key of docs/configuration.md, with the inventory's values."""
    variables = role_variables(**INVENTORY)
    config = yaml.safe_load(render("etc/mssante/mssante.yml.j2", variables))
    example = _contract_example()
    assert set(example) <= set(config)
    for name, section in example.items():
        if isinstance(section, dict):
            missing = set(section) - set(config[name]) - TEST_ONLY_KEYS.get(name, set())
            assert not missing, f"{name}: {missing}"
    assert config["schema"] == 1
    assert config["host_id"] == "hospital-1"
    assert config["mailboxes_file"] == "/etc/mssante/mailboxes.json"
    assert config["trustlist"]["local_domains"] == ["hopital-exemple.mssante.fr"]
    assert config["trustlist"]["require_signature"] is True
    assert config["trustlist"]["signer"] == "CN=listeblanche.mssante.fr"
    assert config["trustlist"]["proxy"] is None
    assert config["journal"]["dir"] == "/var/lib/mssante/journal"
    assert config["milter"]["trustlist_dir"] == "/var/lib/mssante/trustlist/current"
    assert config["milter"]["socket"] == "unix:/var/spool/postfix-mssante/mssante/milter.sock"


def test_config_paths_follow_the_path_variables() -> None:
    """Every host path is a variable: moving the state directory moves what lives in it."""
    config = yaml.safe_load(
        render("etc/mssante/mssante.yml.j2", role_variables(**INVENTORY, mssante_state_dir="/srv/mss"))
    )
    assert config["journal"]["dir"] == "/srv/mss/journal"
    assert config["trustlist"]["out_dir"] == "/srv/mss/trustlist"
    assert config["milter"]["trustlist_dir"] == "/srv/mss/trustlist/current"


def test_trace2_config_delivery_section_follows_the_instance(tmp_path: Path) -> None:
    """The delivery tracker follows the MSSanté instance's own log file and syslog_name."""
    variables = role_variables(
        **INVENTORY,
        mssante_postfix_maillog_file="/var/log/mss/postfix.log",
        mssante_postfix_instance_name="postfix-mss",
    )
    config_file = tmp_path / "mssante.yml"
    config_file.write_text(render("etc/mssante/mssante.yml.j2", variables))
    delivery = yaml.safe_load(config_file.read_text())["delivery"]
    assert delivery["log_file"] == "/var/log/mss/postfix.log"
    assert delivery["syslog_name"] == "postfix-mss"
    assert delivery["state_file"] == "/var/lib/mssante/delivery/state.json"
    env = {**os.environ, "PYTHONPATH": str(REPO / "milters" / "src")}
    argv = [sys.executable, "-m", "mssante.delivery", "check-config", str(config_file)]
    result = subprocess.run(argv, check=False, capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def _check_config(config: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO / "milters" / "src")}
    argv = [sys.executable, "-m", "mssante.milter", "check-config", str(config)]
    return subprocess.run(argv, check=False, capture_output=True, text=True, env=env, timeout=60)


def test_config_and_mailbox_table_pass_check_config(tmp_path: Path) -> None:
    """The rendered pair passes `mssante-milter check-config` (what the role's validate: runs)."""
    table = tmp_path / "mailboxes.json"
    variables = role_variables(**INVENTORY, mssante_mailboxes_file=str(table))
    table.write_text(render("etc/mssante/mailboxes.json.j2", variables), encoding="utf-8")
    config = tmp_path / "mssante.yml"
    config.write_text(render("etc/mssante/mssante.yml.j2", variables), encoding="utf-8")
    ok = _check_config(config)
    assert ok.returncode == 0, ok.stderr
    # Control: check-config does catch a broken file (the validate: step is not a no-op).
    text = config.read_text(encoding="utf-8")
    config.write_text(text.replace("peer_port: 25", "peer_port: 587"), encoding="utf-8")
    bad = _check_config(config)
    assert bad.returncode != 0
    assert "peer_port" in bad.stderr or "submission_port" in bad.stderr


def test_mailbox_table_is_schema_versioned_and_complete() -> None:
    """Each mailbox gets every field of the table, defaults filled in (docs/configuration.md)."""
    table = json.loads(render("etc/mssante/mailboxes.json.j2", role_variables(**INVENTORY)))
    assert table["schema"] == 1
    martin, dpi = table["mailboxes"]
    assert martin == {
        "address": "dr.martin@hopital-exemple.mssante.fr",
        "type": "PER",
        "owners": ["dr.martin"],
        "cert_cns": [],
        "rpps": "10001234567",
        "structure_id": None,
        "red_list": False,
    }
    assert dpi["cert_cns"] == ["dpi.hopital-exemple.fr"]
    assert dpi["red_list"] is True


def _unit(text: str) -> dict[str, dict[str, list[str]]]:
    """A systemd unit as {section: {key: [values]}} (keys may repeat)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for line in text.splitlines():
        if not line.strip() or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        assert current is not None, line
        key, _, value = line.partition("=")
        current.setdefault(key, []).append(value)
    return sections


# What role mssante_dovecot exports for the one list (its defaults, as a play holding both roles sees them).
DOVECOT_DEFAULTS = REPO / "roles" / "mssante_dovecot" / "defaults" / "main.yml"


def _with_dovecot(**overrides: Any) -> dict[str, Any]:
    dovecot = yaml.safe_load(DOVECOT_DEFAULTS.read_text(encoding="utf-8"))
    dovecot.update(
        mssante_tls_cert="/etc/mssante/tls/operator.crt", mssante_tls_key="/etc/mssante/tls/operator.key"
    )
    return role_variables(**{**dovecot, **INVENTORY, **overrides})


def _services() -> list[dict[str, Any]]:
    variables = _with_dovecot()
    services: list[dict[str, Any]] = variables["mssante_services_all"]
    return [{**variables, "mssante_service": service} for service in services]


SERVICE_NAMES = [
    "mssante-journal",
    "mssante-journal-verify",
    "mssante-trustlist-refresh",
    "mssante-milter",
    "mssante-delivery",
    "mssante-revocation",
    "mssante-activity",
    "mssante-dovecot-crl-refresh",
]


def test_the_service_list_declares_the_services_and_jobs() -> None:
    names = [v["mssante_service"]["name"] for v in _services()]
    assert names == SERVICE_NAMES
    roles = {v["mssante_service"]["name"]: v["mssante_service"]["role"] for v in _services()}
    assert roles["mssante-milter"] == roles["mssante-delivery"] == "mssante_milter"
    assert roles["mssante-trustlist-refresh"] == "mssante_trustlist"
    assert roles["mssante-revocation"] == "mssante_trustlist"  # it probes the compiled list's CNs
    assert roles["mssante-activity"] == roles["mssante-dovecot-crl-refresh"] == "mssante_dovecot"
    # Without role mssante_dovecot in the play, the list is the role's own plus the local additions.
    alone = role_variables(**INVENTORY, mssante_services_extra=[{"name": "local-job"}])
    assert [s["name"] for s in alone["mssante_services_all"]] == [*SERVICE_NAMES[:-1], "local-job"]


def test_tls4_revocation_job_runs_every_six_hours_and_writes_only_its_state() -> None:
    """TLS-4: `mssante-revocation run` as mssante, no reload (Postfix re-reads a changed map)."""
    [variables] = [v for v in _services() if v["mssante_service"]["name"] == "mssante-revocation"]
    service = variables["mssante_service"]
    assert service["command"] == [
        "/opt/mssante/bin/mssante-revocation", "run", "--config", "/etc/mssante/mssante.yml"
    ]  # fmt: skip
    assert (service["user"], "on_success" in service) == ("mssante", False)
    assert set(service["writable_paths"]) == {
        "/var/lib/mssante/revocation", "/var/lib/mssante/revocation/learned", "/var/lib/mssante/metrics"
    }  # fmt: skip
    timer = _unit(render("etc/systemd/system/mssante.timer.j2", variables))
    assert timer["Timer"]["OnCalendar"] == ["*-*-* 00/6:45:00"]
    unit = _unit(render("etc/systemd/system/mssante.service.j2", variables))
    assert unit["Service"]["User"] == ["mssante"] and unit["Service"]["CapabilityBoundingSet"] == [""]


def test_trace4_activity_job_notifies_only_with_a_command() -> None:
    """TRACE-4: `notify` with the configured command; without one, `report` (first sightings only)."""
    [variables] = [v for v in _services() if v["mssante_service"]["name"] == "mssante-activity"]
    argv = variables["mssante_service"]["command"]
    assert argv[:4] == ["/opt/mssante/bin/python", "-m", "mssante.activity", "report"]
    assert argv[argv.index("--last-login-dict") + 1] == "/var/vmail/mssante/last-login.dict"
    assert "--notify-command" not in argv
    notifying = _with_dovecot(mssante_activity_notify_command="/usr/local/sbin/notify-owner --fr")
    [service] = [s for s in notifying["mssante_services_all"] if s["name"] == "mssante-activity"]
    assert service["command"][3] == "notify"
    assert service["command"][-2:] == ["--notify-command", "/usr/local/sbin/notify-owner --fr"]
    unit = _unit(render("etc/systemd/system/mssante.service.j2", {**notifying, "mssante_service": service}))
    # Root only to read the mail user's dictionary: that one capability, nothing else.
    assert unit["Service"]["User"] == ["root"]
    assert unit["Service"]["CapabilityBoundingSet"] == ["CAP_DAC_READ_SEARCH"]
    assert unit["Service"]["ProtectSystem"] == ["strict"]


def test_tls4_config_revocation_section_follows_the_variables(tmp_path: Path) -> None:
    """TLS-4: the `revocation:` section, read back by `mssante-revocation` itself."""
    crls = [{"ca": "igc_sante_org", "url": "http://crl.example/org.crl"}]
    variables = role_variables(
        **INVENTORY, mssante_revocation_crls=crls, mssante_trustlist_proxy="http://proxy.example:3128"
    )
    config = yaml.safe_load(render("etc/mssante/mssante.yml.j2", variables))
    assert config["revocation"] == {
        "dir": "/var/lib/mssante/revocation",
        "learned_dir": "/var/lib/mssante/revocation/learned",
        "deny_list": "/var/lib/mssante/revocation/ccert_access",
        "crls": crls,
        "ca_file": "/etc/mssante/tls/igc-sante-chain.pem",
        "proxy": "http://proxy.example:3128",
        "probe": True,
        "probe_port": 25,
        "timeout_seconds": 30,
        "postfix_config_dir": "/etc/postfix-mssante",
        "textfile": "/var/lib/mssante/metrics/mssante_revocation.prom",
    }
    path = tmp_path / "mssante.yml"
    path.write_text(render("etc/mssante/mssante.yml.j2", variables), encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(REPO / "milters" / "src")}
    code = "import sys; from mssante.revocation.cli import load_settings; s = load_settings(sys.argv[1]); "
    code += "print(s.map_path, s.crls[0].issuer, s.proxy)"
    read = subprocess.run(
        [sys.executable, "-c", code, str(path)], env=env, capture_output=True, text=True, check=False
    )
    assert read.returncode == 0, read.stderr
    assert read.stdout.split() == [
        "/var/lib/mssante/revocation/ccert_access", "/etc/mssante/tls/igc-sante-chain.pem",
        "http://proxy.example:3128",
    ]  # fmt: skip
    moved = role_variables(**INVENTORY, mssante_state_dir="/srv/mss")
    config = yaml.safe_load(render("etc/mssante/mssante.yml.j2", moved))
    assert config["revocation"]["deny_list"] == "/srv/mss/revocation/ccert_access"


@pytest.mark.parametrize("variables", _services(), ids=SERVICE_NAMES)
def test_systemd_unit_for_every_service(variables: dict[str, Any]) -> None:
    """A service restarts on any exit; a periodic job is a oneshot run by a timer; all are hardened."""
    service = variables["mssante_service"]
    unit = _unit(render("etc/systemd/system/mssante.service.j2", variables))
    svc = unit["Service"]
    for key in ("NoNewPrivileges", "ProtectHome", "PrivateTmp", "PrivateDevices", "ProtectKernelTunables"):
        assert svc[key] == ["yes"], key
    assert svc["RestrictAddressFamilies"] == ["AF_UNIX AF_INET AF_INET6"]
    assert all(path.startswith("-/") for path in svc.get("ReadWritePaths", []))
    if "schedule" in service:
        assert svc["Type"] == ["oneshot"]
        assert svc["ExecStart"] == [f"/opt/mssante/libexec/{service['name']}"]
        assert "Install" not in unit
        timer = _unit(render("etc/systemd/system/mssante.timer.j2", variables))
        assert timer["Timer"]["OnCalendar"] == [service["schedule"]["on_calendar"]]
        assert timer["Timer"]["Persistent"] == ["true"]
        assert timer["Timer"]["Unit"] == [f"{service['name']}.service"]
        assert timer["Install"]["WantedBy"] == ["timers.target"]
    else:
        assert svc["Type"] == ["simple"]
        assert svc["Restart"] == ["always"]
        assert unit["Unit"]["StartLimitIntervalSec"] == ["0"]
        assert shlex.split(svc["ExecStart"][0]) == service["command"]
        assert svc["User"] == ["mssante"]
        assert svc["CapabilityBoundingSet"] == [""]
        assert svc["ProtectSystem"] == ["strict"]
        assert unit["Install"]["WantedBy"] == ["multi-user.target"]


def test_job_that_reloads_postfix_starts_as_root_and_drops_privileges() -> None:
    variables = next(v for v in _services() if v["mssante_service"]["name"] == "mssante-trustlist-refresh")
    unit = _unit(render("etc/systemd/system/mssante.service.j2", variables))
    assert unit["Service"]["User"] == ["root"]
    script = render("opt/mssante/libexec/mssante-job.j2", variables)
    assert (
        "setpriv --reuid=mssante --regid=mssante --init-groups -- /opt/mssante/bin/mssante-trustlist fetch"
        in script
    )
    assert "postmulti -i postfix-mssante -p reload" in script


@pytest.mark.parametrize("variables", _services(), ids=SERVICE_NAMES)
def test_supervisor_entry_for_every_service(variables: dict[str, Any]) -> None:
    """One program per service, restarted on any exit; a periodic job runs in the periodic loop."""
    service = variables["mssante_service"]
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string(render("etc/supervisor/conf.d/mssante-program.conf.j2", variables))
    program = parser[f"program:{service['name']}"]
    assert program["autostart"] == "true"
    assert program["autorestart"] == "true"
    assert program["stopasgroup"] == "true"
    assert program["killasgroup"] == "true"
    assert program["stdout_logfile"] == f"/var/log/mssante/{service['name']}.log"
    argv = shlex.split(program["command"].replace("%%", "%"))
    if "schedule" in service:
        schedule = service["schedule"]
        assert argv == [
            "/bin/sh",
            "/opt/mssante/libexec/mssante-periodic",
            str(schedule.get("initial_delay_seconds", 0)),
            str(schedule["interval_seconds"]),
            f"/opt/mssante/libexec/{service['name']}",
        ]
    else:
        assert argv == service["command"]
        assert program["user"] == "mssante"


def test_argv_quoting_survives_spaces_and_specifiers() -> None:
    argv = ["/opt/x/bin/tool", "--name", "a b", "100%", "$HOME", 'say "hi"']
    assert shlex.split(FILTERS["mssante_supervisor_command"](argv).replace("%%", "%")) == argv
    systemd = FILTERS["mssante_systemd_exec"](argv)
    assert systemd == '/opt/x/bin/tool --name "a b" 100%% "$$HOME" "say \\"hi\\""'
    assert shlex.split(FILTERS["mssante_sh_command"](argv)) == argv


def _job(tmp_path: Path, exit_code: int) -> tuple[subprocess.CompletedProcess[str], Path]:
    """The trust-list job script, with the fetch replaced by `exit N` and the reload by a marker."""
    marker = tmp_path / f"reloaded-{exit_code}"
    variables = role_variables(**INVENTORY, mssante_user="root", mssante_group="root")
    service = next(s for s in variables["mssante_services"] if s["name"] == "mssante-trustlist-refresh")
    service = {**service, "command": ["sh", "-c", f"exit {exit_code}"], "on_success": ["touch", str(marker)]}
    script = tmp_path / f"job-{exit_code}"
    script.write_text(render("opt/mssante/libexec/mssante-job.j2", {**variables, "mssante_service": service}))
    return subprocess.run(
        ["sh", str(script)], check=False, capture_output=True, text=True, timeout=30
    ), marker


def test_trust3_job_reloads_postfix_only_after_a_switch(tmp_path: Path) -> None:
    """Exit 0 (switched) reloads Postfix; 4 (unchanged) succeeds without a reload; 1 fails, no reload."""
    switched, marker = _job(tmp_path, 0)
    assert switched.returncode == 0 and marker.exists()
    unchanged, marker = _job(tmp_path, 4)
    assert unchanged.returncode == 0 and not marker.exists()
    refused, marker = _job(tmp_path, 1)
    assert refused.returncode == 1 and not marker.exists()
    assert "failed with exit code 1" in refused.stderr


def test_periodic_loop_runs_the_job_again_after_a_failure(tmp_path: Path) -> None:
    """The supervisor loop keeps running a job that fails, at its interval."""
    loop = tmp_path / "mssante-periodic"
    loop.write_text(render("opt/mssante/libexec/mssante-periodic.j2", role_variables(**INVENTORY)))
    runs = tmp_path / "runs"
    job = ["sh", "-c", f"echo run >> {runs}; exit 3"]
    proc = subprocess.Popen(["sh", str(loop), "0", "0.1", *job], stdout=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and (not runs.exists() or len(runs.read_text().splitlines()) < 3):
            time.sleep(0.05)
        assert runs.exists() and len(runs.read_text().splitlines()) >= 3
    finally:
        proc.kill()
        out, _ = proc.communicate(timeout=10)
    assert "exited with code 3" in out


ARGSPEC_PLAY = """
- name: Validate an inventory against the mssante role's argument_specs
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Validate
      ansible.builtin.validate_argument_spec:
        argument_spec: "{{{{ (lookup('file', '{spec}') | from_yaml).argument_specs.main.options }}}}"
        provided_arguments:
          mssante_mailboxes: {mailboxes}
"""


def _validate(tmp_path: Path, mailboxes: list[dict[str, Any]]) -> subprocess.CompletedProcess[str]:
    play = tmp_path / "play.yml"
    spec = ROLE / "meta" / "argument_specs.yml"
    play.write_text(ARGSPEC_PLAY.format(spec=spec, mailboxes=json.dumps(mailboxes)), encoding="utf-8")
    bin_dir = Path(sys.executable).parent
    return subprocess.run(
        [str(bin_dir / "ansible-playbook"), "-i", "localhost,", "-c", "local", str(play)],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"},
    )


@pytest.mark.devonly
def test_a_mailbox_with_an_unknown_type_fails_argument_specs(tmp_path: Path) -> None:
    """A wrong inventory fails at once with a message naming the field and the allowed values."""
    good = {"address": "a@hopital-exemple.mssante.fr", "type": "PER", "owners": ["a"]}
    control = _validate(tmp_path, [good])
    assert control.returncode == 0, control.stdout[-3000:]
    bad = _validate(tmp_path, [{**good, "type": "XYZ"}])
    assert bad.returncode != 0
    assert "XYZ" in bad.stdout and "PER, ORG, APP" in bad.stdout, bad.stdout[-3000:]
    missing = _validate(tmp_path, [{"type": "ORG"}])
    assert missing.returncode != 0
    assert "address" in missing.stdout, missing.stdout[-3000:]


def _render_units(tmp_path: Path) -> Path:
    """Every unit and timer of the list, with stub executables where the commands would be."""
    venv = tmp_path / "venv"
    units = tmp_path / "units"
    for directory in (venv / "bin", venv / "libexec", units):
        directory.mkdir(parents=True)
    variables = _with_dovecot(mssante_venv_dir=str(venv))
    for service in variables["mssante_services_all"]:
        stubs = [venv / "libexec" / service["name"]]
        if service["command"][0].startswith(str(venv)):  # never write outside the temporary venv
            stubs.append(Path(service["command"][0]))
        for stub in stubs:
            stub.write_text("#!/bin/sh\n", encoding="utf-8")
            stub.chmod(0o755)
        context = {**variables, "mssante_service": service}
        name = service["name"]
        (units / f"{name}.service").write_text(render("etc/systemd/system/mssante.service.j2", context))
        if "schedule" in service:
            (units / f"{name}.timer").write_text(render("etc/systemd/system/mssante.timer.j2", context))
    return units


def _analyze(units: Path) -> subprocess.CompletedProcess[str]:
    argv = ["systemd-analyze", "verify", "--man=no", *sorted(str(p) for p in units.iterdir())]
    return subprocess.run(argv, check=False, capture_output=True, text=True, timeout=120)


def test_systemd_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    """`systemd-analyze verify` accepts every rendered unit and timer without a single warning."""
    units = _render_units(tmp_path)
    result = _analyze(units)
    assert result.returncode == 0 and result.stdout + result.stderr == "", result.stdout + result.stderr
    # Control: a wrong value in a unit is reported.
    milter = units / "mssante-milter.service"
    milter.write_text(milter.read_text().replace("Restart=always", "Restart=sometimes"))
    broken = _analyze(units)
    assert "sometimes" in broken.stdout + broken.stderr


def test_tls4_certificate_checker_watches_the_kept_revocation_crls() -> None:
    """TLS-4: role mssante_monitoring's checker watches each kept CRL under the same label, so that a
    CRL past its next update raises MssanteCrlExpired; no CRL configured, nothing watched."""
    crls = [
        {"ca": "igc_sante_org", "url": "http://crl.example/org.crl"},
        {"ca": "igc_sante_perso", "url": "/srv/perso.crl", "issuer": "/etc/mssante/tls/perso.pem"},
    ]
    variables = role_variables(**INVENTORY, mssante_revocation_crls=crls)
    assert variables["mssante_revocation_certcheck_crls"] == [
        {"ca": "igc_sante_org", "crl": "/var/lib/mssante/revocation/crls/igc_sante_org.crl",
         "issuer": "/etc/mssante/tls/igc-sante-chain.pem"},
        {"ca": "igc_sante_perso", "crl": "/var/lib/mssante/revocation/crls/igc_sante_perso.crl",
         "issuer": "/etc/mssante/tls/perso.pem"},
    ]  # fmt: skip
    assert role_variables(**INVENTORY)["mssante_revocation_certcheck_crls"] == []
    monitoring = yaml.safe_load((REPO / "roles" / "mssante_monitoring" / "defaults" / "main.yml").read_text())
    assert "mssante_revocation_certcheck_crls" in monitoring["mssante_monitoring_certcheck_crls"]
