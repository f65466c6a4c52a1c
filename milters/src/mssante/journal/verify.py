"""Full verification of a journal directory (TRACE-2): every record, hash, checkpoint and signature.

The result is a :class:`Report` (a value); each problem has a :class:`Finding` from a closed enum,
names the first bad record when it can, and says what was expected and what was found.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from mssante.journal import records
from mssante.journal.keys import KeyEpoch, key_in_force
from mssante.journal.merkle import CompactRange, ProofError, leaf_hash, verify_inclusion
from mssante.journal.note import NoteError, SignedCheckpoint, VerifierKey, parse_checkpoint
from mssante.journal.store import Line, Store, write_atomic

MAX_PROBLEMS = 50
_SEQ = re.compile(rb'"seq":(\d+)[,}]')


class Finding(enum.StrEnum):
    DAMAGED_RECORD = "damaged-record"  # the stored line does not match its own check digits (bit flip, torn)
    INVALID_RECORD = "invalid-record"  # not a canonical record of the schema
    SEQUENCE = "sequence"  # a record missing, duplicated or out of order
    ROOT_MISMATCH = "root-mismatch"  # the records differ from what a signed checkpoint covers
    TRUNCATED = "truncated"  # fewer records than a checkpoint covers
    MALFORMED_CHECKPOINT = "malformed-checkpoint"
    BAD_SIGNATURE = "bad-signature"  # not signed by the key in force at its size
    WRONG_KEY = "wrong-key"  # signed by a journal key, but not the one in force at its size
    UNENDORSED_ROTATION = "unendorsed-rotation"  # a new key without the old key's hand-over signature
    UNTRUSTED_GENESIS = "untrusted-genesis"  # the first key is not the public key the auditor trusts
    INCONSISTENT_CHECKPOINT = "inconsistent-checkpoint"  # a kept checkpoint this journal does not extend
    NO_CHECKPOINT = "no-checkpoint"
    BAD_BASE = "bad-base"  # the purge boundary (base.json) does not verify


@dataclass(frozen=True)
class Problem:
    finding: Finding
    detail: str
    seq: int | None = None
    where: str | None = None

    def __str__(self) -> str:
        at = (
            f" (record {self.seq}" + (f", {self.where})" if self.where else ")")
            if self.seq is not None
            else ""
        )
        return f"{self.finding.value}{at}: {self.detail}"


@dataclass
class Report:
    records: int = 0
    first_seq: int = 0
    checkpoints: int = 0
    size: int = 0
    covered: int = 0  # records covered by a verified checkpoint
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, problem: Problem) -> None:
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(problem)

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "records": self.records,
            "first_seq": self.first_seq,
            "size": self.size,
            "checkpoints": self.checkpoints,
            "covered": self.covered,
            "problems": [
                {"finding": p.finding.value, "detail": p.detail, "seq": p.seq, "where": p.where}
                for p in self.problems
            ],
            "notes": self.notes,
        }


Progress = Callable[[int], None]


@dataclass
class _State:
    report: Report
    compact: CompactRange
    epochs: list[KeyEpoch]
    checkpoints: dict[int, list[tuple[str, SignedCheckpoint]]]
    trusted: VerifierKey | None
    last_good: int = 0
    handovers: set[int] = field(default_factory=set)
    schema: bool = True
    unsigned: list[tuple[int, SignedCheckpoint]] = field(default_factory=list)


def verify_directory(
    directory: Path,
    trusted: VerifierKey | None = None,
    external: list[tuple[str, str]] | None = None,
    progress: Progress | None = None,
    schema: bool = True,
) -> Report:
    """Verify the journal in ``directory``; ``external`` are (name, text) checkpoints kept elsewhere."""
    store = Store(directory)
    report = Report()
    state = _State(report, CompactRange(), [], {}, trusted, schema=schema)
    _load_base(store, state)
    _load_checkpoints(store, external or [], state)
    report.first_seq = state.compact.end
    if state.compact.end in state.checkpoints:  # the checkpoint kept at a purge boundary
        _check_checkpoints(state.compact.end, state)
    for line in store.lines():
        _check_line(line, state)
        if progress and report.records % 65536 == 0:
            progress(report.records)
    report.size = state.compact.end
    _finish(state)
    return report


def _load_base(store: Store, state: _State) -> None:
    try:
        base = store.read_base()
    except (OSError, ValueError) as exc:
        state.report.add(Problem(Finding.BAD_BASE, f"base.json unreadable: {exc}"))
        return
    if base is None:
        return
    try:
        nodes = [(int(s), int(lv), bytes.fromhex(h)) for s, lv, h in base["nodes"]]
        state.compact = CompactRange(0, int(base["size"]), nodes)
        for item in base.get("keys", []):
            _base_key(item, state)
    except (KeyError, TypeError, ValueError, NoteError) as exc:
        state.report.add(Problem(Finding.BAD_BASE, f"base.json malformed: {exc}"))
    state.report.notes.append(
        f"records before {state.compact.end} were purged (base.json keeps the boundary)"
    )


def _base_key(item: dict[str, Any], state: _State) -> None:
    """A key record kept at the purge boundary, with its hand-over checkpoint and inclusion proof."""
    data = item["data"].encode()
    record = records.parse(data)
    key = VerifierKey.decode(record["public_key"])
    seq = int(record["seq"])
    if not state.epochs:
        _check_genesis(key, seq, state)
    elif item.get("handover") is None:
        state.report.add(Problem(Finding.UNENDORSED_ROTATION, "purged rotation kept without hand-over", seq))
    else:
        note = parse_checkpoint(item["handover"])
        try:
            proof = [bytes.fromhex(p) for p in item["proof"]]
            verify_inclusion(seq, note.checkpoint.size, leaf_hash(data), proof, note.checkpoint.root)
        except ProofError as exc:
            state.report.add(Problem(Finding.BAD_BASE, f"kept key record not in its hand-over: {exc}", seq))
        if not (note.signed_by(state.epochs[-1].key) and note.signed_by(key)):
            state.report.add(Problem(Finding.UNENDORSED_ROTATION, "kept hand-over lacks a signature", seq))
    state.epochs.append(KeyEpoch(seq, key))


def _check_genesis(key: VerifierKey, seq: int, state: _State) -> None:
    if state.trusted is None:
        state.report.notes.append(
            f"no trusted public key given: trusting the journal's own first key {key.fingerprint}"
        )


def _load_checkpoints(store: Store, external: list[tuple[str, str]], state: _State) -> None:
    texts = [
        (path.name, path.read_text(encoding="utf-8", errors="replace"))
        for _, path in store.checkpoint_files()
    ]
    for name, text in texts + list(external):
        try:
            note = parse_checkpoint(text)
        except NoteError as exc:
            state.report.add(Problem(Finding.MALFORMED_CHECKPOINT, f"{name}: {exc}"))
            continue
        state.checkpoints.setdefault(note.checkpoint.size, []).append((name, note))
    state.report.checkpoints = sum(len(v) for v in state.checkpoints.values())


def _check_line(line: Line, state: _State) -> None:
    report, seq, data = state.report, state.compact.end, line.data
    report.records += 1
    if not line.check_ok:
        detail = "stored line does not match its check digits"
        report.add(Problem(Finding.DAMAGED_RECORD, detail, seq, _where(line)))
    elif state.schema or b'"type":"key"' in data:
        _check_record(data, seq, _where(line), state)
    elif b'"seq":%d,' % seq not in data:  # the key occurs once: any other value is out of place
        match = _SEQ.search(data)
        found = match.group(1).decode() if match else "none"
        detail = f"holds seq {found} at position {seq} (missing, duplicated or reordered)"
        report.add(Problem(Finding.SEQUENCE, detail, seq, _where(line)))
    state.compact.append(line.leaf)
    if state.compact.end in state.checkpoints:
        _check_checkpoints(state.compact.end, state)


def _where(line: Line) -> str:
    return f"{line.segment.path.name}:{line.number}"


def _check_record(data: bytes, seq: int, where: str, state: _State) -> None:
    """The full check of one record: canonical JSON following the schema, in sequence."""
    try:
        record = records.parse(data)
    except records.RecordError as exc:
        state.report.add(Problem(Finding.INVALID_RECORD, str(exc), seq, where))
        return
    if record["seq"] != seq:
        detail = f"holds seq {record['seq']} at position {seq} (missing, duplicated or reordered)"
        state.report.add(Problem(Finding.SEQUENCE, detail, seq, where))
    elif record["type"] == "key":
        _new_key(record, state)


def _new_key(record: dict[str, Any], state: _State) -> None:
    try:
        key = VerifierKey.decode(record["public_key"])
    except NoteError as exc:
        state.report.add(Problem(Finding.INVALID_RECORD, f"key record: {exc}", record["seq"]))
        return
    if not state.epochs:
        _check_genesis(key, record["seq"], state)
    state.epochs.append(KeyEpoch(record["seq"], key))


def _check_checkpoints(size: int, state: _State) -> None:
    root = state.compact.root()
    epoch = key_in_force(state.epochs, size)
    for name, note in state.checkpoints.pop(size):
        if not _check_signature(name, size, note, epoch, state):
            continue  # an unsigned claim about the root says nothing more
        if note.checkpoint.root != root:
            finding = Finding.INCONSISTENT_CHECKPOINT if not name.endswith(".note") else Finding.ROOT_MISMATCH
            detail = (
                f"{name}: records {state.last_good}..{size - 1} give root {root.hex()},"
                f" the checkpoint signed {note.checkpoint.root.hex()}"
            )
            state.report.add(Problem(finding, detail, state.last_good))
    state.report.covered = max(state.report.covered, size)
    if not state.report.problems:
        state.last_good = size


def _check_signature(
    name: str, size: int, note: SignedCheckpoint, epoch: KeyEpoch | None, state: _State
) -> bool:
    """Whether ``note`` is signed by the key in force at ``size`` (and the hand-over by the old key)."""
    if epoch is None:
        state.report.add(Problem(Finding.BAD_SIGNATURE, f"{name}: no key is in force at size {size}"))
        return False
    if not note.signed_by(epoch.key):
        detail = f"{name}: not signed by key {epoch.key.key_id.hex()} in force at size {size}"
        state.unsigned.append((len(state.report.problems), note))
        state.report.add(Problem(Finding.BAD_SIGNATURE, detail))
        return False
    if size == epoch.seq + 1:
        previous = [e for e in state.epochs if e.seq < epoch.seq]
        if previous and not note.signed_by(previous[-1].key):
            detail = f"{name}: hand-over to key {epoch.key.key_id.hex()} not signed by the previous key"
            state.report.add(Problem(Finding.UNENDORSED_ROTATION, detail, epoch.seq))
            return False
        state.handovers.add(epoch.seq)
    return True


def _finish(state: _State) -> None:
    report = state.report
    for position, note in state.unsigned:  # signed, but by a journal key not in force at that size
        if position < len(report.problems) and any(note.signed_by(e.key) for e in state.epochs):
            problem = report.problems[position]
            report.problems[position] = replace(problem, finding=Finding.WRONG_KEY)
    for size, notes in sorted(state.checkpoints.items()):
        for name, note in notes:
            if _check_signature(name, size, note, key_in_force(state.epochs, size), state):
                detail = f"{name} covers {size} records, the journal holds {state.compact.end}"
                report.add(Problem(Finding.TRUNCATED, detail, state.compact.end))
    for epoch in state.epochs[1:]:
        if epoch.seq >= report.first_seq and epoch.seq not in state.handovers:
            detail = f"key {epoch.key.key_id.hex()} introduced without a hand-over checkpoint"
            report.add(Problem(Finding.UNENDORSED_ROTATION, detail, epoch.seq))
    if state.trusted is not None and state.trusted not in [e.key for e in state.epochs]:
        detail = f"the trusted key {state.trusted.fingerprint} is not in this journal's key history"
        report.add(Problem(Finding.UNTRUSTED_GENESIS, detail, state.epochs[0].seq if state.epochs else None))
    if report.covered == 0 and report.size > 0:
        report.add(Problem(Finding.NO_CHECKPOINT, "no checkpoint covers any record"))
    if report.covered < report.size:
        report.notes.append(
            f"{report.size - report.covered} newest records are not yet covered by a checkpoint"
        )


def write_status(path: Path, report: Report, now: float) -> None:
    """Write the self-verification result where the metrics read it."""
    data = report.as_dict() | {"time": now, "problems": report.as_dict()["problems"][:5]}
    path.parent.mkdir(parents=True, exist_ok=True)  # a journal the owner has not created yet
    write_atomic(path, json.dumps(data, sort_keys=True).encode())
