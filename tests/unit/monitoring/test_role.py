"""Role mssante_monitoring: installs the rules (validated by promtool) and the dashboard where
Prometheus and Grafana read them, renders an authenticated metrics proxy, and is idempotent.
The certificate checker's service entry is built by the role's filter (unit-tested here)."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
ROLE = ROOT / "roles" / "mssante_monitoring"


def _filter_module() -> ModuleType:
    path = ROLE / "filter_plugins" / "mssante_monitoring.py"
    spec = importlib.util.spec_from_file_location("mssante_monitoring_filter", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_certcheck_argv_textfile_and_listen() -> None:
    build = _filter_module().mssante_monitoring_certcheck_argv
    crls = [{"ca": "org", "crl": "/c/org.crl"}, {"ca": "perso", "crl": "/c/p.crl", "issuer": "/t/p.pem"}]
    certificates = {"operator": "/t/op.crt", "igc_chain": "/t/chain.pem", "personal_chain": None}
    argv = build("/opt/mssante/bin/python", certificates, crls, "/var/lib/mssante/metrics/m.prom")
    assert argv == [
        "/opt/mssante/bin/python", "-m", "mssante.certcheck",
        "--certificate", "igc_chain=/t/chain.pem", "--certificate", "operator=/t/op.crt",
        "--crl", "org=/c/org.crl", "--crl", "perso=/c/p.crl,/t/p.pem",
        "--textfile", "/var/lib/mssante/metrics/m.prom",
    ]  # fmt: skip
    assert build("py", {}, crls[:1], "", "127.0.0.1:9744")[-2:] == ["--listen", "127.0.0.1:9744"]


def _ansible_playbook() -> str:
    search = os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])
    path = shutil.which("ansible-playbook", path=search)
    assert path, "ansible-playbook is missing (the development venv has it)"
    return path


def _run_role(
    tmp_path: Path, extra: dict[str, object], roles_path: Path = ROOT / "roles"
) -> subprocess.CompletedProcess[str]:
    playbook = tmp_path / "play.yml"
    play = {
        "hosts": "localhost",
        "connection": "local",
        "gather_facts": False,
        "vars": {
            "ansible_python_interpreter": sys.executable,
            "mssante_monitoring_prometheus_rules_dir": str(tmp_path / "prometheus" / "rules.d"),
            "mssante_monitoring_grafana_dashboards_dir": str(tmp_path / "grafana" / "dashboards"),
            "mssante_monitoring_grafana_provisioning_file": f"{tmp_path}/grafana/prov/mssante.yml",
            "mssante_monitoring_certcheck_enabled": False,
            "mssante_monitoring_proxy_enabled": True,
            "mssante_monitoring_nginx_conf_file": str(tmp_path / "nginx" / "mssante-metrics.conf"),
            "mssante_monitoring_nginx": "/bin/true",
            "mssante_monitoring_prometheus_reload_command": ["touch", str(tmp_path / "reloaded")],
            **extra,
        },
        "roles": ["mssante_monitoring"],
    }
    (tmp_path / "nginx").mkdir(exist_ok=True)
    playbook.write_text(yaml.safe_dump([play]), encoding="utf-8")
    env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "ANSIBLE_ROLES_PATH": str(roles_path)}
    env["ANSIBLE_PIPELINING"] = "True"
    return subprocess.run(
        [_ansible_playbook(), "-i", "localhost,", str(playbook)],
        capture_output=True, text=True, env=env, check=False, timeout=170, cwd=ROOT,
    )  # fmt: skip


def _changed(output: str) -> int:
    recap = output.rsplit("PLAY RECAP", 1)[1]
    return int(recap.split("changed=")[1].split()[0])


@pytest.mark.devonly
def test_trust8_role_installs_rules_and_dashboard_idempotently(tmp_path: Path) -> None:
    loopback = {"mssante_monitoring_certcheck_listen": "127.0.0.1:9744"}  # control for the refusal below
    first = _run_role(tmp_path, loopback)
    assert first.returncode == 0, first.stdout + first.stderr
    rules = tmp_path / "prometheus" / "rules.d" / "mssante-alerts.yml"
    assert rules.read_bytes() == (ROLE / "files" / "mssante-alerts.yml").read_bytes()
    assert (tmp_path / "reloaded").exists(), "Prometheus reloaded after the rules changed"
    dashboard = json.loads((tmp_path / "grafana" / "dashboards" / "mssante-dashboard.json").read_bytes())
    assert dashboard["uid"] == "mssante-operator"
    provisioning = yaml.safe_load((tmp_path / "grafana" / "prov" / "mssante.yml").read_bytes())
    assert provisioning["providers"][0]["options"]["path"] == str(tmp_path / "grafana" / "dashboards")
    nginx = (tmp_path / "nginx" / "mssante-metrics.conf").read_text(encoding="utf-8")
    assert "auth_basic_user_file /etc/nginx/mssante-metrics.htpasswd;" in nginx
    assert "location = /metrics/milter {\n        proxy_pass http://127.0.0.1:9741/metrics;" in nginx
    assert "location = /metrics/certcheck {\n        proxy_pass http://127.0.0.1:9744/metrics;" in nginx
    assert "?" not in nginx and "token" not in nginx, "no credential in a URL"
    second = _run_role(tmp_path, loopback)
    assert second.returncode == 0, second.stdout + second.stderr
    assert _changed(second.stdout) == 0, second.stdout


@pytest.mark.devonly
def test_role_refuses_unauthenticated_proxy_and_public_listener(tmp_path: Path) -> None:
    open_proxy = _run_role(tmp_path, {"mssante_monitoring_proxy_htpasswd_file": ""})
    assert open_proxy.returncode != 0
    assert "never serves metrics openly" in open_proxy.stdout
    public = _run_role(tmp_path, {"mssante_monitoring_certcheck_listen": "0.0.0.0:9744"})
    assert public.returncode != 0
    assert "is not a loopback" in public.stdout


@pytest.mark.devonly
def test_role_refuses_broken_rules(tmp_path: Path) -> None:
    """promtool validates before the live file is replaced: a broken rule never reaches Prometheus."""
    if not shutil.which("promtool"):
        pytest.fail("promtool is missing")
    rules_dir = tmp_path / "prometheus" / "rules.d"
    broken_role = tmp_path / "roles" / "mssante_monitoring"
    shutil.copytree(ROLE, broken_role)
    (broken_role / "files" / "mssante-alerts.yml").write_text(
        "groups:\n  - name: x\n    rules:\n      - alert: X\n        expr: rate(\n", encoding="utf-8"
    )
    result = _run_role(tmp_path, {}, roles_path=tmp_path / "roles")
    assert result.returncode != 0
    assert "Install the alert rules" in result.stdout
    assert not (rules_dir / "mssante-alerts.yml").exists(), "the broken file never went live"


@pytest.mark.devonly
def test_trust8_certcheck_declared_in_the_services_list(tmp_path: Path) -> None:
    """With role mssante's defaults, the checker becomes a periodic job of the one services list
    (check mode: the job script and the service entry are rendered, nothing is started)."""
    play = {
        "hosts": "localhost",
        "connection": "local",
        "gather_facts": False,
        "vars_files": [str(ROOT / "roles" / "mssante" / "defaults" / "main.yml")],
        "vars": {
            "ansible_python_interpreter": sys.executable,
            "mssante_monitoring_install_rules": False,
            "mssante_monitoring_install_dashboard": False,
            "mssante_monitoring_certcheck_output_dir": str(tmp_path / "metrics"),
            "mssante_monitoring_node_exporter_textfile_dir": str(tmp_path / "node"),
            "mssante_monitoring_certcheck_crls": [{"ca": "igc_sante_org", "crl": "/r/igc_sante_org.crl"}],
        },
        "roles": ["mssante_monitoring"],
    }
    (tmp_path / "play.yml").write_text(yaml.safe_dump([play]), encoding="utf-8")
    env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "ANSIBLE_ROLES_PATH": f"{ROOT}/roles"}
    result = subprocess.run(
        [_ansible_playbook(), "-i", "localhost,", "--check", "--diff", str(tmp_path / "play.yml")],
        capture_output=True, text=True, env=env, check=False, timeout=170, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    command = (
        "+/opt/mssante/bin/python -m mssante.certcheck"
        " --certificate igc_chain=/etc/mssante/tls/igc-sante-chain.pem"
        " --certificate operator=/etc/mssante/tls/operator.crt"
        " --certificate trustlist_ca=/etc/mssante/tls/igc-sante-chain.pem"
        " --crl igc_sante_org=/r/igc_sante_org.crl"
        f" --textfile {tmp_path}/metrics/mssante_certcheck.prom\n"
    )
    assert command in result.stdout
    assert '+case " 0 1 " in' in result.stdout, "a problem found (exit 1) is not a job failure"
