"""Read the journal's new records, read-only, as the owner appends them.

The delivery tracker learns which messages were accepted (and which of its own `delivery` records
already reached the journal) by reading complete lines past a saved (segment, offset) position.
Only lines that end with a newline are consumed: a line being written is read on the next poll.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mssante.journal.store import Store


@dataclass(frozen=True)
class TailPosition:
    segment: int  # first seq of the segment being read (-1: none yet)
    offset: int

    def to_json(self) -> dict[str, int]:
        return {"segment": self.segment, "offset": self.offset}

    @classmethod
    def from_json(cls, data: object) -> TailPosition:
        if (
            isinstance(data, dict)
            and isinstance(data.get("segment"), int)
            and isinstance(data.get("offset"), int)
        ):
            return cls(data["segment"], data["offset"])
        return cls(-1, 0)


class JournalTail:
    def __init__(self, journal_dir: Path, start: TailPosition) -> None:
        self.store = Store(journal_dir)
        self.position = start

    def records(self) -> Iterator[dict[str, Any]]:
        """Every complete record after the position, in journal order; the position follows."""
        for segment in self.store.segments():
            if segment.first < self.position.segment:
                continue
            offset = self.position.offset if segment.first == self.position.segment else 0
            with segment.path.open("rb") as handle:
                handle.seek(offset)
                for raw in handle:
                    if not raw.endswith(b"\n"):
                        break
                    offset += len(raw)
                    self.position = TailPosition(segment.first, offset)
                    _, _, data = raw.rstrip(b"\n").partition(b" ")
                    try:
                        record = json.loads(data)
                    except ValueError:
                        continue  # the verifier reports damage; the tracker only reads
                    if isinstance(record, dict):
                        yield record
            self.position = TailPosition(segment.first, offset)

    def skip_to_end(self) -> None:
        segments = self.store.segments()
        if segments:
            last = segments[-1]
            with last.path.open("rb") as handle:
                complete = handle.read().rpartition(b"\n")[0]
            self.position = TailPosition(last.first, len(complete) + 1 if complete else 0)
