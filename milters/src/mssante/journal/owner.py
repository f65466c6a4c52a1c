"""The journal owner: the one object that appends, checkpoints, rotates the key and purges.

It runs inside ``mssante-journal serve`` (or, when no server runs, inside a command holding the lock).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from mssante.journal import keys, records
from mssante.journal.config import JournalSettings
from mssante.journal.merkle import CompactRange, TreeHashes, range_nodes
from mssante.journal.note import Checkpoint, SignerKey, VerifierKey, parse_checkpoint, sign_checkpoint
from mssante.journal.protocol import AppendResult
from mssante.journal.push import Pusher
from mssante.journal.records import RecordError, RecordType
from mssante.journal.store import Store, StoreError, encode_line, write_atomic

log = logging.getLogger(__name__)


class TamperedError(StoreError):
    """The stored journal does not match its own latest checkpoint: the owner refuses to sign over it."""


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Journal:
    """Owner of a journal directory (not thread-safe: the server calls it from one thread)."""

    def __init__(
        self,
        settings: JournalSettings,
        signer: SignerKey,
        pushers: list[Pusher] | None = None,
        clock: Callable[[], str] = utc_now,
    ) -> None:
        self.settings = settings
        self.signer = signer
        self.pushers = pushers or []
        self.clock = clock
        self.store = Store(settings.dir)
        self.compact = CompactRange()
        self.epochs: list[keys.KeyEpoch] = []
        self.checkpoint_size = -1
        self.checkpoint_at = 0.0
        self.last_checkpoint_time = 0.0

    @property
    def size(self) -> int:
        return self.compact.end

    # -- opening ---------------------------------------------------------------------------------------
    def open(self) -> None:
        """Lock, cut a torn tail, rebuild the tree, check it against the latest checkpoint."""
        self.store.lock()
        self.store.recover_tail()
        base = self.store.read_base()
        if base is not None:
            nodes = [(start, level, bytes.fromhex(digest)) for start, level, digest in base["nodes"]]
            self.compact = CompactRange(0, int(base["size"]), nodes)
            self.epochs = [_epoch(item["record"]) for item in base.get("keys", [])]
        latest = self.store.latest_checkpoint()
        wanted = parse_checkpoint(latest).checkpoint if latest else None
        count, last = 0, None
        for line in self.store.lines():
            self._replay(line.data, line.leaf, line.check_ok, f"{line.segment.path.name}:{line.number}")
            if wanted is not None and self.size == wanted.size and self.compact.root() != wanted.root:
                raise TamperedError(f"records up to {wanted.size} no longer match the latest checkpoint")
            count = count + 1 if last is line.segment else 1
            last = line.segment
        if wanted is not None and self.size < wanted.size:
            raise TamperedError(f"the journal holds {self.size} records, its latest checkpoint {wanted.size}")
        self.store.open_append(last, count)
        self.checkpoint_size = wanted.size if wanted else -1
        self._adopt_key()

    def _replay(self, data: bytes, leaf: bytes, check_ok: bool, where: str) -> None:
        if not check_ok:
            raise TamperedError(f"damaged record at {where}")
        record = json.loads(data)
        if record.get("seq") != self.size:
            raise TamperedError(f"record at {where} has seq {record.get('seq')}, expected {self.size}")
        if record.get("type") == RecordType.KEY:
            self.epochs.append(_epoch(record))
        self.compact.append(leaf)

    def _adopt_key(self) -> None:
        mine = self.signer.verifier
        if not self.epochs and self.size == 0:
            self._append_key_record(mine, "genesis")
            self.checkpoint(force=True)
            return
        current = self.epochs[-1].key if self.epochs else None
        if current != mine:
            pending = self.settings.signing_key.with_name(self.settings.signing_key.name + ".new")
            if pending.exists() and keys.load_signer(pending).verifier == current:
                self._finish_rotation(keys.load_signer(pending))
                return
            raise StoreError("the signing key is not the journal's current key (see docs/journal.md)")

    # -- appending -------------------------------------------------------------------------------------
    def append_batch(self, batch: list[Mapping[str, object]]) -> list[AppendResult | RecordError]:
        """Validate, seal and durably append ``batch`` (one write, one fsync); invalid ones are errors."""
        now = self.clock()
        results: list[AppendResult | RecordError] = []
        lines, leaves = [], []
        seq = self.size
        for record in batch:
            try:
                sealed = records.seal(record, seq, now, self.settings.host_id)
            except RecordError as exc:
                results.append(exc)
                continue
            line, leaf = encode_line(records.canonical(sealed))
            lines.append(line)
            leaves.append(leaf)
            results.append(AppendResult(f"{self.settings.host_id}:{seq}", seq, now))
            seq += 1
        if lines:
            self.store.append(self.size, now[:10], lines, self.settings.segment_max_records)
            for leaf in leaves:
                self.compact.append(leaf)
        return results

    def _append_key_record(self, key: VerifierKey, reason: str) -> None:
        record = {"type": "key", "public_key": key.encode(), "fingerprint": key.fingerprint, "reason": reason}
        result = self.append_batch([record])[0]
        assert isinstance(result, AppendResult), result
        self.epochs.append(keys.KeyEpoch(result.index, key))

    # -- checkpoints -----------------------------------------------------------------------------------
    def checkpoint(self, force: bool = False, *extra: SignerKey) -> str | None:
        """Sign and store a checkpoint of the current size (if it grew, or ``force``), then push it."""
        if self.size == self.checkpoint_size and not force:
            return None
        checkpoint = Checkpoint(self.settings.origin, self.size, self.compact.root(), self.clock())
        text = sign_checkpoint(checkpoint, *extra, self.signer)
        self.store.write_checkpoint(self.size, text)
        self.checkpoint_size = self.size
        self.last_checkpoint_time = time.time()
        for pusher in self.pushers:
            pusher.push(self.size, text)
        return text

    def checkpoint_due(self) -> bool:
        interval = self.settings.checkpoint_interval_seconds
        return self.size != self.checkpoint_size and time.time() - self.last_checkpoint_time >= interval

    # -- key rotation ----------------------------------------------------------------------------------
    def rotate_key(self) -> AppendResult:
        """Append a ``key`` record for a new key, hand over (checkpoint signed by both), switch."""
        new = SignerKey.generate(self.settings.host_id)
        pending = self.settings.signing_key.with_name(self.settings.signing_key.name + ".new")
        write_atomic(pending, (new.encode() + "\n").encode(), mode=0o600)
        self.checkpoint()
        self._append_key_record(new.verifier, "rotation")
        self._finish_rotation(new)
        return AppendResult(f"{self.settings.host_id}:{self.size - 1}", self.size - 1, self.clock())

    def _finish_rotation(self, new: SignerKey) -> None:
        old = self.signer
        if self.checkpoint_size != self.size:
            self.checkpoint(True, new)
        self.signer = new
        pending = self.settings.signing_key.with_name(self.settings.signing_key.name + ".new")
        pending.replace(self.settings.signing_key)
        keys.write_public(self.settings.public_key, new.verifier)
        log.info("journal: key rotated from %s to %s", old.verifier.key_id.hex(), new.verifier.key_id.hex())

    # -- retention -------------------------------------------------------------------------------------
    def purge(self, older_than_days: int, today: datetime | None = None) -> AppendResult | None:
        """Remove whole segments older than the limit, keep the boundary, record the purge."""
        cutoff = ((today or datetime.now(UTC)) - timedelta(days=older_than_days)).strftime("%Y-%m-%d")
        segments = self.store.segments()
        doomed = [s for s in segments[:-1] if s.day < cutoff]  # a segment holds one UTC day
        doomed = doomed[: next((i for i, s in enumerate(segments) if s.day >= cutoff), len(doomed))]
        if not doomed:
            return None
        self.checkpoint()
        boundary = segments[len(doomed)].first
        base = self._boundary(boundary, doomed)
        self.store.write_base(base)
        for segment in doomed:
            segment.path.unlink()
        for size, path in self.store.checkpoint_files():
            if size < boundary:
                path.unlink()
        record = {"type": "purge", "purged_from": base["purged_from"], "purged_to": boundary}
        record.update(segments=len(doomed), older_than_days=older_than_days)
        result = self.append_batch([record])[0]
        assert isinstance(result, AppendResult), result
        self.checkpoint()
        log.info("journal: purged %d segments, records before %d", len(doomed), boundary)
        return result

    def _boundary(self, boundary: int, doomed: list[Any]) -> dict[str, Any]:
        """The kept state at the purge boundary: compact range and the key history with proofs."""
        old = self.store.read_base()
        start = old["size"] if old else 0
        known = {(s, lv): bytes.fromhex(h) for s, lv, h in old["nodes"]} if old else {}
        leaves, key_items = [], list(old.get("keys", [])) if old else []
        for line in self.store.lines(doomed):
            leaves.append(line.leaf)
            if b'"type":"key"' in line.data:
                key_items.append({"record": json.loads(line.data), "data": line.data.decode()})
        hashes = TreeHashes(leaves, start, known)
        nodes = [(s, lv, hashes.subtree(s, s + (1 << lv))) for s, lv in range_nodes(0, boundary)]
        for item in key_items:
            if "handover" not in item:
                item.update(self._handover(item["record"]["seq"], hashes))
        boundary_note = next((p for s, p in self.store.checkpoint_files() if s >= boundary), None)
        return {
            "size": boundary,
            "purged_from": start,
            "nodes": [[s, lv, h.hex()] for s, lv, h in nodes],
            "keys": key_items,
            "checkpoint": boundary_note.read_text(encoding="utf-8") if boundary_note else None,
        }

    def _handover(self, seq: int, hashes: TreeHashes) -> dict[str, Any]:
        files = dict(self.store.checkpoint_files())
        note = files.get(seq + 1)
        if seq == 0 or note is None:
            return {"handover": None, "proof": []}
        proof = hashes.inclusion_proof(seq, seq + 1)
        return {"handover": note.read_text(encoding="utf-8"), "proof": [p.hex() for p in proof]}

    def close(self) -> None:
        self.store.close()


def _epoch(record: Mapping[str, Any]) -> keys.KeyEpoch:
    return keys.KeyEpoch(int(record["seq"]), VerifierKey.decode(str(record["public_key"])))
