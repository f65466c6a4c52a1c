"""Renders the Postfix settings the milter needs from ``postfix_settings.yml`` (declared once)."""

from __future__ import annotations

from importlib import resources
from typing import Any

import yaml

SETTINGS_FILE = "postfix_settings.yml"


def load() -> dict[str, Any]:
    text = resources.files("mssante.milter").joinpath(SETTINGS_FILE).read_text(encoding="utf-8")
    data = yaml.safe_load(text)
    if not isinstance(data, dict) or data.get("schema") != 1:
        raise ValueError(f"{SETTINGS_FILE}: unsupported schema")
    return data


def smtpd_milters(socket: str, settings: dict[str, Any] | None = None) -> str:
    """The per-milter value ``{ socket, connect_timeout=..., default_action=tempfail }``."""
    data = settings or load()
    options = ", ".join(f"{key}={value}" for key, value in data["smtpd_milter"].items())
    return f"{{ {socket}, {options} }}"


def render(socket: str) -> dict[str, str]:
    """Every main.cf parameter the milter needs, for Postfix reaching it at ``socket``."""
    data = load()
    params = {name: str(value) for name, value in data["parameters"].items()}
    params.update({name: " ".join(values) for name, values in data["macros"].items()})
    params["smtpd_milters"] = smtpd_milters(socket, data)
    return params
