"""A consistent copy of a live journal directory (docs/journal.md, "Backup and restore").

Segments are append-only and checkpoints are written after the records they cover, so copying the
signed checkpoints and the purge boundary first and the segments last gives a copy in which every
checkpoint is covered. Each segment is copied up to its last complete line (a write in progress is
left out). Restoring is copying the directory back while the owner is stopped.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from mssante.journal.store import Store


def backup(directory: Path, out: Path) -> int:
    """Copy the journal in ``directory`` to the new directory ``out``; returns the records copied."""
    store = Store(directory)
    out.mkdir(parents=True)
    (out / "checkpoints").mkdir()
    (out / "segments").mkdir()
    for name in ("base.json", "checkpoint"):
        if (directory / name).exists():
            shutil.copy2(directory / name, out / name)
    for _, path in store.checkpoint_files():
        shutil.copy2(path, out / "checkpoints" / path.name)
    records = 0
    for segment in store.segments():
        content = segment.path.read_bytes()
        content = content[: content.rfind(b"\n") + 1]
        (out / "segments" / segment.path.name).write_bytes(content)
        records += content.count(b"\n")
    return records
