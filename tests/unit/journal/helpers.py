"""Journal test helpers: build small real journals in a temporary directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mssante.journal import keys
from mssante.journal.config import JournalSettings
from mssante.journal.merkle import CompactRange
from mssante.journal.note import Checkpoint, parse_checkpoint, sign_checkpoint
from mssante.journal.owner import Journal
from mssante.journal.store import Store, encode_line


def settings(tmp: Path, **overrides: Any) -> JournalSettings:
    values: dict[str, Any] = {
        "host_id": "hospital-1",
        "dir": tmp / "journal",
        "socket": tmp / "journal.sock",
        "signing_key": tmp / "keys" / "signing.key",
        "public_key": tmp / "keys" / "signing.pub",
        "checkpoint_interval_seconds": 3600.0,
        "metrics_listen": None,
    }
    values.update(overrides)
    return JournalSettings(**values)


def accepted(n: int) -> dict[str, object]:
    return {
        "type": "accepted",
        "queue_id": f"4Q{n:010d}",
        "message_id": f"<m{n}@hopital-exemple.mssante.fr>",
        "mail_from": "dr.a@hopital-exemple.mssante.fr",
        "rcpts": [{"address": "dr.b@hopital-sud.mssante.fr", "status": "accepted"}],
        "direction": "outbound",
        "port": 587,
        "size": 1000 + n,
        "body_sha256": f"{n:064x}",
        "decision": "accept",
        "reason": "authenticated-owner",
    }


def make_journal(tmp: Path, count: int = 5, **overrides: Any) -> Journal:
    """A journal holding the genesis key record and ``count`` accepted records, checkpointed; open."""
    conf = settings(tmp, **overrides)
    if not conf.signing_key.exists():
        keys.generate(conf.signing_key, conf.public_key, conf.host_id)
    journal = Journal(conf, keys.load_signer(conf.signing_key))
    journal.open()
    for n in range(count):
        journal.append_batch([accepted(n)])
        journal.checkpoint()
    return journal


def segment_files(directory: Path) -> list[Path]:
    return sorted((directory / "segments").glob("*.log"))


def reseal(directory: Path, *signers: Any) -> None:
    """The attacker's tool: recompute check digits and every checkpoint's root, re-sign with ``signers``."""
    store = Store(directory)
    for segment in store.segments():
        lines = segment.path.read_bytes().split(b"\n")[:-1]
        segment.path.write_bytes(b"".join(encode_line(line.partition(b" ")[2])[0] for line in lines))
    sizes = {size: path for size, path in store.checkpoint_files()}
    compact = CompactRange()
    for line in store.lines():
        compact.append(line.leaf)
        if compact.end in sizes:
            old = parse_checkpoint(sizes[compact.end].read_text()).checkpoint
            fresh = Checkpoint(old.origin, old.size, compact.root(), old.time)
            sizes[compact.end].write_text(sign_checkpoint(fresh, *signers))
    latest = max(sizes)
    (directory / "checkpoint").write_text(sizes[latest].read_text())


def rewrite_line(directory: Path, seq: int, old: bytes, new: bytes) -> None:
    """Edit record ``seq`` (whose line must contain ``old``)."""
    for path in segment_files(directory):
        lines = path.read_bytes().split(b"\n")
        for i, line in enumerate(lines):
            if f'"seq":{seq},'.encode() in line:
                assert old in line
                lines[i] = line.replace(old, new)
                path.write_bytes(b"\n".join(lines))
                return
    raise AssertionError(f"record {seq} not found")
