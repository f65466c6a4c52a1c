"""On-disk layout of a journal directory (docs/journal.md).

::

    segments/<first seq, 20 digits>.<UTC day>.log   one record per line: "<check> <canonical JSON>\\n"
    checkpoints/<tree size, 20 digits>.note         every signed checkpoint (C2SP signed note)
    checkpoint                                      the latest one
    base.json                                       after a purge: the kept boundary (compact range)
    torn/                                           torn tails cut off at recovery, kept as evidence
    lock                                            held (flock) by the one process that writes

``check`` is the first 16 hex digits of the record's leaf hash: it names a damaged line exactly.
It is not a security measure (anyone can recompute it); the signed Merkle root is.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from mssante.journal.merkle import leaf_hash

log = logging.getLogger(__name__)
CHECK_HEX = 16
_SEGMENT = re.compile(r"(\d{20})\.(\d{4}-\d\d-\d\d)\.log\Z")
_CHECKPOINT = re.compile(r"(\d{20})\.note\Z")


class StoreError(Exception):
    """The journal directory cannot be used (locked, unreadable, not a journal)."""


@dataclass(frozen=True)
class Segment:
    first: int
    day: str
    path: Path


class Line(NamedTuple):
    """One stored line: ``data`` is the leaf data, ``check_ok`` whether its check digits match."""

    segment: Segment
    number: int  # line number in the segment, from 1
    data: bytes
    leaf: bytes
    check_ok: bool


def encode_line(data: bytes) -> tuple[bytes, bytes]:
    leaf = leaf_hash(data)
    return leaf.hex()[:CHECK_HEX].encode() + b" " + data + b"\n", leaf


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, content: bytes, mode: int = 0o644) -> None:
    """Write ``content`` to ``path`` through a temporary file, fsync, rename."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, content)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    _fsync_dir(path.parent)


class Store:
    """Reads and appends the files of one journal directory."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.segments_dir = self.root / "segments"
        self.checkpoints_dir = self.root / "checkpoints"
        self._lock_fd: int | None = None
        self._fd: int | None = None
        self._current: Segment | None = None
        self._current_count = 0

    # -- reading ---------------------------------------------------------------------------------------
    def segments(self) -> list[Segment]:
        if not self.segments_dir.is_dir():
            return []
        found = []
        for path in self.segments_dir.iterdir():
            if match := _SEGMENT.match(path.name):
                found.append(Segment(int(match.group(1)), match.group(2), path))
        return sorted(found, key=lambda s: s.first)

    def lines(self, segments: list[Segment] | None = None) -> Iterator[Line]:
        """Every stored line in order (a final line without newline is yielded with check_ok False)."""
        for segment in self.segments() if segments is None else segments:
            with segment.path.open("rb") as handle:
                for number, raw in enumerate(handle, 1):
                    check, _, data = raw.rstrip(b"\n").partition(b" ")
                    leaf = leaf_hash(data)
                    ok = raw[-1:] == b"\n" and check == leaf[: CHECK_HEX // 2].hex().encode()
                    yield Line(segment, number, data, leaf, ok)

    def checkpoint_files(self) -> list[tuple[int, Path]]:
        if not self.checkpoints_dir.is_dir():
            return []
        found = [
            (int(m.group(1)), p) for p in self.checkpoints_dir.iterdir() if (m := _CHECKPOINT.match(p.name))
        ]
        return sorted(found)

    def latest_checkpoint(self) -> str | None:
        path = self.root / "checkpoint"
        return path.read_text(encoding="utf-8") if path.exists() else None

    def read_base(self) -> dict[str, Any] | None:
        path = self.root / "base.json"
        if not path.exists():
            return None
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise StoreError("base.json is not an object")
        return data

    # -- writing ---------------------------------------------------------------------------------------
    def lock(self) -> None:
        """Take the writer's lock (raises StoreError if another process holds it)."""
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            os.close(fd)
            raise StoreError(f"{self.root} is in use by another writer") from exc
        self._lock_fd = fd
        self.segments_dir.mkdir(exist_ok=True)
        self.checkpoints_dir.mkdir(exist_ok=True)

    def close(self) -> None:
        for fd in (self._fd, self._lock_fd):
            if fd is not None:
                os.close(fd)
        self._fd = self._lock_fd = None

    def recover_tail(self) -> int:
        """Cut a torn final line (no newline) off the last segment, keeping it under torn/."""
        segments = self.segments()
        if not segments:
            return 0
        path = segments[-1].path
        content = path.read_bytes()
        keep = content.rfind(b"\n") + 1
        if keep == len(content):
            return 0
        torn = self.root / "torn"
        torn.mkdir(exist_ok=True)
        evidence = torn / f"{path.name}.{keep}.torn"
        write_atomic(evidence, content[keep:])
        os.truncate(path, keep)
        with path.open("rb+") as handle:
            os.fsync(handle.fileno())
        log.warning(
            "journal: cut a torn tail of %d bytes off %s (kept in %s)",
            len(content) - keep,
            path.name,
            evidence,
        )
        return len(content) - keep

    def open_append(self, last: Segment | None, count: int) -> None:
        """Continue appending to ``last`` (holding ``count`` lines), or start a new segment later."""
        self._current, self._current_count = last, count
        if last is not None:
            self._fd = os.open(last.path, os.O_WRONLY | os.O_APPEND)

    def append(self, first_seq: int, day: str, lines: list[bytes], max_records: int) -> None:
        """Write ``lines`` (records first_seq...) and fsync: a segment per UTC day and max_records."""
        current = self._current
        if current is None or current.day != day or self._current_count >= max_records:
            self._start_segment(first_seq, day)
        assert self._fd is not None
        data = b"".join(lines)
        written = 0
        while written < len(data):
            written += os.write(self._fd, data[written:])
        os.fdatasync(self._fd)
        self._current_count += len(lines)

    def _start_segment(self, first_seq: int, day: str) -> None:
        if self._fd is not None:
            os.close(self._fd)
        path = self.segments_dir / f"{first_seq:020d}.{day}.log"
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o640)
        _fsync_dir(self.segments_dir)
        self._current, self._current_count = Segment(first_seq, day, path), 0

    def write_checkpoint(self, size: int, text: str) -> Path:
        path = self.checkpoints_dir / f"{size:020d}.note"
        write_atomic(path, text.encode())
        write_atomic(self.root / "checkpoint", text.encode())
        return path

    def write_base(self, base: dict[str, Any]) -> None:
        write_atomic(self.root / "base.json", json.dumps(base, indent=1, sort_keys=True).encode())
