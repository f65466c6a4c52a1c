"""Shared loading of `/etc/mssante/mssante.yml`: each component reads its own section.

Every component turns its section into a frozen dataclass and reports *all* problems at once by
raising :class:`ConfigError` with the full list (style.md: config loaded once, problems collected).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

DEFAULT_CONFIG_PATH = Path("/etc/mssante/mssante.yml")
SUPPORTED_SCHEMA = 1


class ConfigError(Exception):
    """A configuration file that cannot be used; ``problems`` lists every reason."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(problems))


@dataclass
class Problems:
    """Collects problems while a section is read, so that all of them are reported together."""

    source: str
    items: list[str] = field(default_factory=list)

    def add(self, where: str, message: str) -> None:
        self.items.append(f"{where}: {message}")

    def raise_if_any(self) -> None:
        if self.items:
            raise ConfigError(self.source, list(self.items))


def load_document(path: Path | str) -> dict[str, Any]:
    """Read the YAML document at ``path`` and check its top level and schema version."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(source, [f"cannot read: {exc.strerror or exc}"]) from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(source, [f"not valid YAML: {exc}"]) from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(source, ["the top level must be a mapping"])
    schema = data.get("schema", SUPPORTED_SCHEMA)
    if schema != SUPPORTED_SCHEMA:
        raise ConfigError(source, [f"schema: {schema!r} is not supported (expected {SUPPORTED_SCHEMA})"])
    return data


def section(document: Mapping[str, Any], name: str, problems: Problems) -> Mapping[str, Any]:
    """Return the mapping under ``name`` (empty when absent); a non-mapping is a problem."""
    value = document.get(name, {})
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        problems.add(name, "must be a mapping")
        return {}
    return value


def absolute_path(value: object, where: str, problems: Problems) -> Path | None:
    """``value`` as an absolute path; ``None`` (absent, or a problem added) otherwise."""
    if value is None:
        return None
    if not isinstance(value, str) or not value.startswith("/"):
        problems.add(where, "must be an absolute path")
        return None
    return Path(value)


def positive_number(value: object, where: str, default: float, problems: Problems) -> float:
    """``value`` as a positive number; ``default`` (and a problem) when it is not one."""
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        problems.add(where, "must be a positive number")
        return default
    return float(value)
