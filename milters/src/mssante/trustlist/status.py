"""``status.json``: the outcome of the last attempt and the state of the list in use (TRUST-8).

It lives in the output directory (``OUT/status.json``) and every generation links to it, so
``current/status.json`` is always the latest. Written atomically (rename) on every attempt.
Fields (schema 1)::

    schema, outcome (closed enum, model.Outcome), message, last_attempt, last_success,
    generation, generated, entries, domains, signer, source_sha256

Timestamps are ISO 8601 UTC strings (``null`` when never). ``entries``/``domains``/``generated``/
``signer`` describe the list in use, which a refusal does not change.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mssante.trustlist.model import Outcome

STATUS_SCHEMA = 1
STATUS_FILE = "status.json"


@dataclass(frozen=True)
class Status:
    """One ``status.json`` document."""

    outcome: str | None = None
    message: str = ""
    last_attempt: str | None = None
    last_success: str | None = None
    generation: str | None = None
    generated: str | None = None
    entries: int = 0
    domains: int = 0
    signer: str | None = None
    source_sha256: str | None = None
    schema: int = STATUS_SCHEMA

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def after(self, outcome: Outcome, message: str, now: datetime, **current: Any) -> Status:
        """The status after an attempt; ``current`` updates the description of the list in use."""
        stamp = now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        success = outcome in (Outcome.SWITCHED, Outcome.UNCHANGED)
        return replace(
            self,
            outcome=outcome.value,
            message=message,
            last_attempt=stamp,
            last_success=stamp if success else self.last_success,
            **current,
        )


def read_status(path: Path | str) -> Status:
    """Read ``status.json`` (a directory is taken to hold it); a missing file gives an empty Status."""
    file = Path(path)
    if file.is_dir():
        file = file / STATUS_FILE
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return Status()
    if not isinstance(data, dict) or data.get("schema") != STATUS_SCHEMA:
        raise ValueError(f"{file}: not a schema {STATUS_SCHEMA} status document")
    if data.get("outcome") is not None:
        Outcome(data["outcome"])  # refuse an unknown outcome
    known = set(Status.__dataclass_fields__)
    return Status(**{key: value for key, value in data.items() if key in known})


def write_status(out_dir: Path, status: Status) -> None:
    """Replace ``OUT/status.json`` atomically."""
    out_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=".status.", dir=out_dir)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(status.to_json(), handle, ensure_ascii=False, indent=2)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, 0o644)
        os.replace(temporary, out_dir / STATUS_FILE)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
