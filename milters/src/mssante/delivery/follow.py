"""Follow a log file across rotations without missing or repeating a line.

A position is the file's inode and the offset just past the last complete line consumed. When the
follower starts from a saved position whose inode is no longer at the log's path (the log was
rotated while the tracker was down), it finds the rotated file by inode in the same directory,
reads its remainder first, then continues with the new file from its start.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

_CHUNK = 1 << 16


@dataclass(frozen=True)
class Position:
    inode: int
    offset: int

    def to_json(self) -> dict[str, int]:
        return {"inode": self.inode, "offset": self.offset}

    @classmethod
    def from_json(cls, data: object) -> Position | None:
        if not isinstance(data, dict):
            return None
        inode, offset = data.get("inode"), data.get("offset")
        if isinstance(inode, int) and isinstance(offset, int) and offset >= 0:
            return cls(inode, offset)
        return None


class LogFollower:
    """Yields complete lines with the position just after each; partial last lines wait."""

    def __init__(self, path: Path, start: Position | None) -> None:
        self.path = path
        self._file: BinaryIO | None = None
        self._inode = 0
        self._offset = 0
        self._open_at(start)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    @property
    def position(self) -> Position:
        return Position(self._inode, self._offset)

    def _open_at(self, start: Position | None) -> None:
        if start is not None:
            found = _find_by_inode(self.path, start.inode)
            if found is not None:
                self._attach(found, start.offset)
                return
        # No saved position, or its file is gone: begin with the current log from its start.
        if self.path.exists():
            self._attach(self.path, 0)

    def _attach(self, path: Path, offset: int) -> None:
        self.close()
        handle = path.open("rb")
        st = os.fstat(handle.fileno())
        if offset > st.st_size:  # truncated behind our back: restart the file
            offset = 0
        handle.seek(offset)
        self._file, self._inode, self._offset = handle, st.st_ino, offset

    def skip_to_end(self) -> None:
        """Consume everything already written (complete lines only)."""
        for _ in self.lines():
            pass

    def lines(self) -> Iterator[tuple[str, Position]]:
        """Every complete line available now, from the current file then from its successor."""
        while True:
            yield from self._drain()
            if not self._rotated():
                return
            # The writer may have added lines to the old file between the drain and its reopening.
            yield from self._drain()
            self._attach(self.path, 0)

    def _drain(self) -> Iterator[tuple[str, Position]]:
        if self._file is None:
            return
        self._file.seek(self._offset)  # a consumer may have stopped mid-chunk last time
        pending = b""
        while chunk := self._file.read(_CHUNK):
            pending += chunk
            *complete, pending = pending.split(b"\n")
            for raw in complete:
                self._offset += len(raw) + 1
                yield raw.decode("utf-8", "replace"), self.position
        # Leave a partial line for the next poll.
        self._file.seek(self._offset)

    def _rotated(self) -> bool:
        """After draining: whether ``path`` is now another file, or the same one truncated (copy-truncate)."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return False
        return self._file is None or st.st_ino != self._inode or st.st_size < self._offset


def _find_by_inode(path: Path, inode: int) -> Path | None:
    """The log itself or a rotated sibling (``maillog.1``, ``maillog.20261125-…``) holding ``inode``."""
    candidates = [path]
    if path.parent.is_dir():
        candidates += sorted(p for p in path.parent.iterdir() if p.name.startswith(path.name + "."))
    for candidate in candidates:
        try:
            if candidate.stat().st_ino == inode and candidate.is_file():
                return candidate
        except FileNotFoundError:
            continue
    return None
