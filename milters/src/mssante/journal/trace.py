"""``mssante-journal trace``: the whole story of one message, with its proofs (TRACE-1, TRACE-2, MSG-3).

A message is named by its queue id or its Message-ID. Its story is every record that names it, in
journal order: the ``accepted`` (or ``refused``) record, each recipient's ``delivery`` outcome, the
``mdn`` records of read receipts answering it. Each record covered by the latest checkpoint comes
with its inclusion proof (the journal's own Merkle code, as ``prove`` gives it); the checkpoint's
signature is checked against the journal's public key when one is at hand.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mssante.journal import export, keys
from mssante.journal.client import JournalClient
from mssante.journal.merkle import ProofError, verify_inclusion
from mssante.journal.note import NoteError, VerifierKey, parse_checkpoint
from mssante.journal.store import Line, Store

TRANSACTIONS = ("accepted", "refused")
FINAL = {"delivered", "deferred-then-delivered", "bounced", "expired", "not-queued"}


@dataclass
class Story:
    """The records of one message and what the latest checkpoint proves about them."""

    query: str
    lines: list[tuple[dict[str, Any], Line]] = field(default_factory=list)
    checkpoint: dict[str, Any] | None = None
    proofs: dict[int, dict[str, Any]] = field(default_factory=dict)

    @property
    def found(self) -> bool:
        return bool(self.lines)

    def records(self) -> list[dict[str, Any]]:
        return [record for record, _ in self.lines]

    def recipients(self) -> dict[str, str | None]:
        """Each accepted recipient and its final outcome (``None``: none journaled yet)."""
        outcomes: dict[str, str | None] = {}
        for record in self.records():
            if record["type"] == "accepted":
                for rcpt in record.get("rcpts", []):
                    outcomes.setdefault(rcpt["address"], None)
            elif record["type"] == "delivery" and record.get("outcome") in FINAL:
                outcomes[record["rcpt"]] = record["outcome"]
        return outcomes


def _matching(store: Store, query: str) -> Iterator[tuple[dict[str, Any], Line]]:
    """One pass: a transaction record naming the query adds its other identifier to the search."""
    queue_ids, message_ids = {query}, {query}
    for line in store.lines():
        if not line.check_ok:
            continue  # damaged: `verify` reports it
        record = json.loads(line.data)
        queue_id, message_id = record.get("queue_id"), record.get("message_id")
        names_it = queue_id in queue_ids or message_id in message_ids
        if record.get("type") in TRANSACTIONS and names_it:
            queue_ids.update([queue_id] if queue_id else [])
            message_ids.update([message_id] if message_id else [])
        if names_it or record.get("original_message_id") in message_ids:
            yield record, line


def trace(directory: Path, query: str, trusted: VerifierKey | None = None) -> Story:
    """The story of the message whose queue id or Message-ID is ``query``."""
    story = Story(query, list(_matching(Store(directory), query)))
    if not story.found:
        return story
    try:
        loaded = export.load(directory)
    except export.ExportError:
        return story  # no checkpoint yet: records without proofs
    signed = parse_checkpoint(loaded.checkpoint)
    story.checkpoint = {
        "tree_size": loaded.size,
        "time": signed.checkpoint.time,
        "root": signed.checkpoint.root.hex(),
        "signature": _signature(signed.signed_by, trusted),
        "text": loaded.checkpoint,
    }
    for record, line in story.lines:
        seq = int(record["seq"])
        if seq < loaded.size:
            proof = loaded.hashes.inclusion_proof(seq, loaded.size)
            story.proofs[seq] = {
                "index": seq,
                "tree_size": loaded.size,
                "proof": [p.hex() for p in proof],
                "verified": _included(seq, loaded.size, line.leaf, proof, signed.checkpoint.root),
            }
    return story


def _signature(signed_by: Callable[[VerifierKey], bool], trusted: VerifierKey | None) -> str:
    if trusted is None:
        return "not checked (no public key)"
    return f"valid, key {trusted.fingerprint}" if signed_by(trusted) else "INVALID for the given key"


def _included(seq: int, size: int, leaf: bytes, proof: list[bytes], root: bytes) -> bool:
    try:
        verify_inclusion(seq, size, leaf, proof, root)
    except ProofError:
        return False
    return True


def as_json(story: Story) -> dict[str, Any]:
    return {
        "query": story.query,
        "found": story.found,
        "records": story.records(),
        "recipients": story.recipients(),
        "checkpoint": story.checkpoint,
        "proofs": [story.proofs[seq] for seq in sorted(story.proofs)],
    }


_DETAILS = {
    "accepted": ("direction", "port", "client_address", "peer_cn", "auth_identity", "tls_version", "size"),
    "refused": ("direction", "port", "client_address", "peer_cn", "auth_identity", "reason", "reply"),
    "delivery": ("relay", "dsn", "delay_seconds", "tls_version", "tls_cipher"),
    "mdn": ("original_message_id", "message_id", "mail_from"),
}


def _summary(record: dict[str, Any]) -> str:
    kind = record["type"]
    if kind in TRANSACTIONS:
        rcpts = ", ".join(r["address"] for r in record.get("rcpts") or [])
        head = f"from <{record.get('mail_from', '')}> to {rcpts or '-'}"
    elif kind == "delivery":
        head = f"{record['rcpt']}: {record['outcome']}"
    elif kind == "mdn":
        head = f"read receipt: {record['disposition']}"
    else:
        head = ""
    details = [f"{name}={record[name]}" for name in _DETAILS.get(kind, ()) if record.get(name) is not None]
    return "  ".join([head, *details]) if details else head


def render(story: Story) -> str:
    """The story for an auditor: records, recipients' outcomes, proofs."""
    if not story.found:
        return f"no journal record names {story.query}\n"
    ids = next((r for r in story.records() if r["type"] in TRANSACTIONS), None)
    out = (
        []
        if ids is None
        else [f"Message: queue id {ids.get('queue_id')}, Message-ID {ids.get('message_id')}"]
    )
    out.append(f"Journal records naming {story.query}:")
    for record in story.records():
        out.append(f"  #{record['seq']:<6} {record['time']}  {record['type']:<9} {_summary(record)}")
    out.append("Recipients:")
    for rcpt, outcome in story.recipients().items():
        out.append(f"  {rcpt}: {outcome or 'no final outcome journaled yet'}")
    out += _render_proofs(story)
    return "\n".join(out) + "\n"


def _render_proofs(story: Story) -> list[str]:
    if story.checkpoint is None:
        return ["Proofs: none, the journal has no checkpoint yet"]
    cp = story.checkpoint
    out = [
        f"Proofs against the latest checkpoint (tree size {cp['tree_size']}, {cp['time']},"
        f" signature {cp['signature']}):"
    ]
    for record in story.records():
        proof = story.proofs.get(record["seq"])
        if proof is None:
            out.append(f"  #{record['seq']}: not yet covered by a checkpoint")
        else:
            state = "included" if proof["verified"] else "PROOF DOES NOT MATCH THE CHECKPOINT"
            out.append(f"  #{record['seq']}: {state} ({len(proof['proof'])} hashes)")
    return out


def _trusted(args: argparse.Namespace) -> VerifierKey | None:
    """``--public-key`` (must be usable), else the journal's ``signing.pub`` beside DIR when present."""
    if args.public_key:
        return keys.load_verifier(Path(args.public_key))
    default = Path(args.dir).parent / "signing.pub"
    try:
        return VerifierKey.decode(default.read_text(encoding="ascii"))
    except (OSError, UnicodeDecodeError, NoteError):
        return None


def register(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``mssante-journal trace`` (``--dir`` and ``--public-key`` are common)."""
    parser.add_argument("id", metavar="QUEUE-ID|MESSAGE-ID", help="e.g. 4jZSh03vQwzCHND or '<id@host>'")
    parser.add_argument("--json", action="store_true", help="the story as one JSON object")
    parser.add_argument("--socket", help="ask the running owner for a fresh checkpoint first")
    parser.description = (
        "The whole story of one message: accepted or refused, each recipient's delivery outcome, read"
        " receipts, and inclusion proofs against the latest checkpoint."
        " Exit status: 0 found, 1 not found (or failure), 2 usage."
    )


def command(args: argparse.Namespace) -> int:
    if not args.dir:
        print("error: --dir is required", file=sys.stderr)
        return 2
    if args.socket:
        JournalClient(args.socket).request("checkpoint")
    story = trace(Path(args.dir), args.id, _trusted(args))
    if args.json:
        print(json.dumps(as_json(story), indent=1, ensure_ascii=False))
    else:
        print(render(story), end="")
    return 0 if story.found else 1
