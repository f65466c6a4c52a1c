"""Settings of ``mssante-trustlist``: the ``trustlist:`` section of mssante.yml, then CLI overrides."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mssante.configfile import Problems, load_document, section
from mssante.trustlist.parse import DEFAULT_MAX_BYTES, normalise_name


@dataclass(frozen=True)
class Settings:
    """Everything one compile or fetch needs (docs/configuration.md, ``trustlist:``)."""

    source: str | None = None
    out_dir: Path | None = None
    ca_file: Path | None = None
    signer: str | None = None
    require_signature: bool = True
    local_domains: tuple[str, ...] = ()
    max_shrink: float = 0.10
    max_bytes: int = DEFAULT_MAX_BYTES
    proxy: str | None = None
    client_cert: Path | None = None
    client_key: Path | None = None
    postfix_config_dir: Path | None = None
    timeout_seconds: float = 30.0
    retries: int = 3
    keep_generations: int = 5
    force: bool = False

    def problems(self, need_source: bool = True) -> list[str]:
        """What makes these settings unusable for a compile (empty when fine)."""
        found = []
        if need_source and not self.source:
            found.append("no source (--source or trustlist.source)")
        if self.out_dir is None:
            found.append("no output directory (--out or trustlist.out_dir)")
        if self.require_signature and self.ca_file is None:
            found.append("a signature is required but no CA is configured (--ca or trustlist.ca_file)")
        if self.require_signature and not self.signer:
            found.append("a signature is required but no signer is pinned (--signer or trustlist.signer)")
        if self.source and self.source.lower().startswith("http://"):
            found.append("plain http is not allowed for the trust list: use https")
        if self.source and self.source.lower().startswith("https://") and self.ca_file is None:
            found.append("an https source needs a CA bundle (--ca or trustlist.ca_file)")
        for domain in self.local_domains:
            try:
                normalise_name(domain)
            except ValueError as exc:
                found.append(f"local domain: {exc}")
        return found


_PATHS = ("out_dir", "ca_file", "client_cert", "client_key", "postfix_config_dir")
_STRINGS = ("source", "signer", "proxy")


def _typed(raw: Mapping[str, Any], problems: Problems) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key in _PATHS + _STRINGS:
        value = raw.get(key)
        if value is None:
            continue
        if not isinstance(value, str) or not value:
            problems.add(f"trustlist.{key}", "must be a non-empty string")
            continue
        values[key] = Path(value) if key in _PATHS else value
    numbers = {"max_shrink": float, "max_bytes": int, "timeout_seconds": float, "retries": int}
    numbers["keep_generations"] = int
    for key, kind in numbers.items():
        value = raw.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            problems.add(f"trustlist.{key}", "must be a non-negative number")
            continue
        values[key] = kind(value)
    if "max_shrink" in values and values["max_shrink"] > 1:
        problems.add("trustlist.max_shrink", "is a fraction between 0 and 1")
    if "require_signature" in raw:
        if isinstance(raw["require_signature"], bool):
            values["require_signature"] = raw["require_signature"]
        else:
            problems.add("trustlist.require_signature", "must be true or false")
    local = raw.get("local_domains", [])
    if isinstance(local, list) and all(isinstance(item, str) for item in local):
        values["local_domains"] = tuple(local)
    else:
        problems.add("trustlist.local_domains", "must be a list of domain names")
    return values


def from_config(path: Path | str | None) -> Settings:
    """Settings from the ``trustlist:`` section of ``path`` (defaults when None); ConfigError."""
    if path is None:
        return Settings()
    document = load_document(path)
    problems = Problems(str(path))
    values = _typed(section(document, "trustlist", problems), problems)
    problems.raise_if_any()
    return Settings(**values)
