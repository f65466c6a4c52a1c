"""Exports for auditors (a bundle verifiable offline) and inclusion proofs of single messages."""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from mssante.journal.merkle import TreeHashes, range_nodes
from mssante.journal.note import parse_checkpoint
from mssante.journal.store import Store

_SEQ = re.compile(rb'"seq":(\d+)[,}]')
_TIME = re.compile(rb'"time":"([0-9T:.Z-]+)"')
VERIFIER = Path(__file__).with_name("bundle_verifier.py")
CSV_FIELDS = [
    "seq",
    "time",
    "type",
    "host_id",
    "queue_id",
    "message_id",
    "mail_from",
    "rcpts",
    "rcpt",
    "direction",
    "port",
    "client_address",
    "tls_version",
    "tls_cipher",
    "peer_cn",
    "peer_issuer",
    "auth_identity",
    "size",
    "body_sha256",
    "headers_sha256",
    "decision",
    "reason",
    "reply",
    "outcome",
    "relay",
    "dsn",
    "delay_seconds",
    "original_message_id",
    "disposition",
    "window_start",
    "window_end",
    "count",
    "public_key",
    "fingerprint",
    "purged_from",
    "purged_to",
    "segments",
    "older_than_days",
]


class ExportError(Exception):
    """Nothing exportable (no checkpoint yet, empty range)."""


@dataclass
class Loaded:
    """Leaf hashes of the whole stored journal, the latest checkpoint and its size."""

    hashes: TreeHashes
    checkpoint: str
    size: int


def load(directory: Path, progress: Callable[[int], None] | None = None) -> Loaded:
    store = Store(directory)
    text = store.latest_checkpoint()
    if text is None:
        raise ExportError("the journal has no checkpoint yet")
    base = store.read_base()
    offset = int(base["size"]) if base else 0
    known = {(s, lv): bytes.fromhex(h) for s, lv, h in base["nodes"]} if base else {}
    leaves = []
    for line in store.lines():
        leaves.append(line.leaf)
        if progress and len(leaves) % 65536 == 0:
            progress(len(leaves))
    size = parse_checkpoint(text).checkpoint.size
    return Loaded(TreeHashes(leaves, offset, known), text, size)


def export(
    directory: Path,
    out: Path,
    fmt: str,
    public_key: str,
    *,
    since: str | None = None,
    until: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> tuple[int, int]:
    """Write the bundle for records in [since, until) covered by the latest checkpoint: (first, end).

    One pass over the journal: the selected records stream to the bundle while every leaf hash is
    kept for the range proof. If the clock stepped back, the whole span from the first to the last
    selected record is exported (the range proof needs a contiguous run).
    """
    store = Store(directory)
    text = store.latest_checkpoint()
    if text is None:
        raise ExportError("the journal has no checkpoint yet")
    size = parse_checkpoint(text).checkpoint.size
    base = store.read_base()
    offset = int(base["size"]) if base else 0
    known = {(s, lv): bytes.fromhex(h) for s, lv, h in base["nodes"]} if base else {}
    staging = out.with_name(out.name + ".d") if out.suffix == ".zip" else out
    staging.mkdir(parents=True, exist_ok=False)
    selection = Selection(since, until, fmt == "csv")
    with (staging / "records.jsonl").open("wb") as jsonl, (staging / "records.csv").open("wb") as table:
        leaves = selection.write(store, size, jsonl, table, progress)
    if fmt != "csv":
        (staging / "records.csv").unlink()
    if selection.first is None:
        shutil.rmtree(staging)
        raise ExportError("no checkpointed record in that time range")
    hashes = TreeHashes(leaves, offset, known)
    first, end = selection.first, selection.end
    rng = {
        "first": first,
        "end": end,
        "size": size,
        "left": _nodes(hashes, 0, first),
        "right": _nodes(hashes, end, size),
    }
    (staging / "range.json").write_text(json.dumps(rng, indent=1), encoding="utf-8")
    (staging / "checkpoint.note").write_text(text, encoding="utf-8")
    (staging / "public-key.txt").write_text(public_key.strip() + "\n", encoding="ascii")
    shutil.copyfile(VERIFIER, staging / "verify_bundle.py")
    if staging != out:
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
            for path in sorted(staging.iterdir()):
                archive.write(path, f"journal-export/{path.name}")
        shutil.rmtree(staging)
    return first, end


@dataclass
class Selection:
    """Streams the records of a time range to the bundle files."""

    since: str | None
    until: str | None
    csv: bool
    first: int | None = None
    end: int = 0

    def write(
        self,
        store: Store,
        size: int,
        jsonl: BinaryIO,
        table: BinaryIO,
        progress: Callable[[int], None] | None,
    ) -> list[bytes]:
        leaves: list[bytes] = []
        keep = (0, 0)
        if self.csv:
            table.write(_csv_row(None))
        for line in store.lines():
            seq_match, time_match = _SEQ.search(line.data), _TIME.search(line.data)
            if not line.check_ok or seq_match is None or time_match is None:
                break  # a line being written (beyond the checkpoint) or damaged: verify says which
            seq, when = int(seq_match.group(1)), time_match.group(1).decode()
            if seq >= size:
                break
            leaves.append(line.leaf)
            if progress and len(leaves) % 65536 == 0:
                progress(len(leaves))
            wanted = (self.since is None or when >= self.since) and (self.until is None or when < self.until)
            if self.first is None and not wanted:
                continue
            self.first = seq if self.first is None else self.first
            jsonl.write(line.data + b"\n")
            if self.csv:
                table.write(_csv_row(json.loads(line.data)))
            if wanted:
                self.end, keep = seq + 1, (jsonl.tell(), table.tell())
        jsonl.truncate(keep[0])
        table.truncate(keep[1])
        return leaves


def _nodes(hashes: TreeHashes, begin: int, end: int) -> list[list[Any]]:
    return [[s, lv, hashes.subtree(s, s + (1 << lv)).hex()] for s, lv in range_nodes(begin, end)]


def _csv_row(record: dict[str, Any] | None) -> bytes:
    """One CSV line (the header for None); recipients as "address (status); …"."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, CSV_FIELDS, extrasaction="ignore")
    if record is None:
        writer.writeheader()
    else:
        if "rcpts" in record:
            record["rcpts"] = "; ".join(
                r["address"] + (f" ({r['status']})" if "status" in r else "") for r in record["rcpts"]
            )
        writer.writerow(record)
    return buffer.getvalue().encode("utf-8")


def prove(
    directory: Path, public_key: str, message_id: str | None = None, queue_id: str | None = None
) -> list[dict[str, Any]]:
    """Inclusion proofs of every checkpointed record naming the message (by Message-ID or queue id)."""
    loaded = load(directory)
    proofs = []
    for line in Store(directory).lines():
        if not line.check_ok:
            break
        record = json.loads(line.data)
        if record["seq"] >= loaded.size:
            break
        ids = (record.get("message_id"), record.get("original_message_id"))
        if (message_id is not None and message_id in ids) or (
            queue_id is not None and record.get("queue_id") == queue_id
        ):
            proof = loaded.hashes.inclusion_proof(record["seq"], loaded.size)
            proofs.append(
                {
                    "record": line.data.decode("utf-8"),
                    "index": record["seq"],
                    "tree_size": loaded.size,
                    "proof": [p.hex() for p in proof],
                    "checkpoint": loaded.checkpoint,
                    "public_key": public_key.strip(),
                }
            )
    return proofs
