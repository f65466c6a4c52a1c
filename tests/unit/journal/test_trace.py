"""`mssante-journal trace`: one message's story with its proofs (TRACE-1, TRACE-2, MSG-3, issue 12)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.unit.journal.helpers import accepted, make_journal

from mssante.journal.cli import main
from mssante.journal.owner import Journal

RCPT = "dr.b@hopital-sud.mssante.fr"


def _story(tmp_path: Path) -> Journal:
    journal = make_journal(tmp_path, count=2)  # two other messages before
    journal.append_batch([accepted(7)])
    journal.append_batch(
        [
            {"type": "delivery", "queue_id": "4Q0000000007", "rcpt": RCPT, "outcome": "delivered",
             "relay": "mx.hopital-sud.mssante.fr[127.1.1.1]:25", "dsn": "2.0.0", "delay_seconds": 0.4},
            {"type": "delivery", "queue_id": "4Q0000000001", "rcpt": RCPT, "outcome": "bounced"},
            {"type": "mdn", "original_message_id": "<m7@hopital-exemple.mssante.fr>",
             "disposition": "displayed", "message_id": "<r1@hopital-sud.mssante.fr>", "queue_id": "4QR1"},
        ]
    )  # fmt: skip
    journal.checkpoint(force=True)
    journal.append_batch([{"type": "mdn", "original_message_id": "<m7@hopital-exemple.mssante.fr>",
                           "disposition": "deleted"}])  # fmt: skip
    return journal


def _trace(tmp_path: Path, *args: str) -> list[str]:
    key = tmp_path / "keys" / "signing.pub"
    return ["trace", "--dir", str(tmp_path / "journal"), "--public-key", str(key), *args]


@pytest.mark.parametrize("query", ["4Q0000000007", "<m7@hopital-exemple.mssante.fr>"])
def test_trace1_trace_by_queue_id_or_message_id_gives_the_whole_story(
    tmp_path: Path, query: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _story(tmp_path).close()
    assert main(_trace(tmp_path, "--json", query)) == 0
    story = json.loads(capsys.readouterr().out)
    kinds = [(r["type"], r.get("outcome") or r.get("disposition")) for r in story["records"]]
    # Control: the other message's bounce is not part of this story.
    assert kinds == [("accepted", None), ("delivery", "delivered"), ("mdn", "displayed"), ("mdn", "deleted")]
    assert story["recipients"] == {RCPT: "delivered"}
    assert story["checkpoint"]["signature"].startswith("valid, key ")
    proofs = {p["index"]: p for p in story["proofs"]}
    seqs = [r["seq"] for r in story["records"]]
    assert all(proofs[seq]["verified"] for seq in seqs[:3])
    assert seqs[3] not in proofs  # appended after the latest checkpoint


def test_trace1_trace_human_output_and_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _story(tmp_path).close()
    assert main(_trace(tmp_path, "4Q0000000007")) == 0
    out = capsys.readouterr().out
    assert f"{RCPT}: delivered" in out
    assert "read receipt: displayed" in out
    assert "included" in out and "not yet covered by a checkpoint" in out
    assert "signature valid" in out
    assert main(_trace(tmp_path, "4QNOSUCHID")) == 1
    assert "no journal record names 4QNOSUCHID" in capsys.readouterr().out
    assert main(["trace", "4Q0000000007"]) == 2  # no --dir
    with pytest.raises(SystemExit) as usage:
        main(["trace", "--dir", str(tmp_path / "journal")])  # no id
    assert usage.value.code == 2


def test_trace1_trace_reports_a_checkpoint_signed_by_another_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _story(tmp_path).close()
    other = make_journal(tmp_path / "other", count=0)
    other.close()
    args = ["trace", "--dir", str(tmp_path / "journal"), "--public-key",
            str(tmp_path / "other" / "keys" / "signing.pub"), "4Q0000000007"]  # fmt: skip
    assert main(args) == 0
    assert "signature INVALID for the given key" in capsys.readouterr().out
