"""Adversarial tests of `verify` (TRACE-2): each tamper is caught, with the right finding and record."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from mssante.journal import keys
from mssante.journal.note import Checkpoint, SignerKey, sign_checkpoint
from mssante.journal.owner import Journal
from mssante.journal.store import encode_line
from mssante.journal.verify import Finding, Report, verify_directory

from .helpers import accepted, make_journal, reseal, rewrite_line, segment_files, settings


@pytest.fixture
def journal_dir(tmp_path: Path) -> Path:
    """Genesis key record + 5 accepted records, a checkpoint after each: sizes 1..6."""
    make_journal(tmp_path, 5).close()
    return tmp_path / "journal"


def trusted(tmp_path: Path) -> keys.VerifierKey:
    return keys.load_verifier(tmp_path / "keys" / "signing.pub")


def findings(report: Report) -> list[Finding]:
    return [p.finding for p in report.problems]


def test_trace2_untouched_journal_verifies(journal_dir: Path, tmp_path: Path) -> None:
    report = verify_directory(journal_dir, trusted(tmp_path))
    assert report.ok, report.problems
    assert (report.records, report.covered) == (6, 6)


def _flip(blob: bytes, bit: int) -> bytes:
    data = bytearray(blob)
    data[bit // 8] ^= 1 << (bit % 8)
    return bytes(data)


def test_trace2_every_bit_flip_in_a_record_names_it(tmp_path: Path) -> None:
    make_journal(tmp_path, 3).close()  # records 0..3: flip every bit of record 2, in the middle
    journal_dir = tmp_path / "journal"
    segment = segment_files(journal_dir)[0]
    original = segment.read_bytes()
    lines = original.split(b"\n")
    start = len(lines[0]) + len(lines[1]) + 2  # record seq 2, including its newline
    end = start + len(lines[2]) + 1
    for bit in range(start * 8, end * 8):
        segment.write_bytes(_flip(original, bit))
        report = verify_directory(journal_dir, trusted(tmp_path), schema=False)
        assert report.problems, f"bit {bit} not caught"
        first = report.problems[0]
        assert (first.finding, first.seq) == (Finding.DAMAGED_RECORD, 2), (bit, first)


def test_trace2_every_bit_flip_in_a_checkpoint_is_caught(journal_dir: Path, tmp_path: Path) -> None:
    note = journal_dir / "checkpoints" / f"{3:020d}.note"
    original = note.read_bytes()
    for bit in range(len(original) * 8):
        note.write_bytes(_flip(original, bit))
        report = verify_directory(journal_dir, trusted(tmp_path), schema=False)
        assert report.problems, f"bit {bit} not caught"
        assert set(findings(report)) <= {
            Finding.MALFORMED_CHECKPOINT,
            Finding.BAD_SIGNATURE,
            Finding.ROOT_MISMATCH,
            Finding.TRUNCATED,
        }, (bit, report.problems)
        assert findings(report)[0] in (Finding.MALFORMED_CHECKPOINT, Finding.BAD_SIGNATURE), bit


def test_trace2_truncation_is_caught(journal_dir: Path) -> None:
    segment = segment_files(journal_dir)[0]
    lines = segment.read_bytes().split(b"\n")
    segment.write_bytes(b"\n".join(lines[:-2]) + b"\n")  # the last record removed
    report = verify_directory(journal_dir)
    assert findings(report) == [Finding.TRUNCATED]
    assert report.problems[0].seq == 5


def test_trace2_cut_inside_a_record_is_caught(journal_dir: Path) -> None:
    segment = segment_files(journal_dir)[0]
    segment.write_bytes(segment.read_bytes()[:-40])
    report = verify_directory(journal_dir)
    assert findings(report)[0] == Finding.DAMAGED_RECORD and report.problems[0].seq == 5


@pytest.mark.parametrize(
    ("edit", "seq"),
    [
        (lambda lines: [lines[0], lines[1], lines[3], lines[2], *lines[4:]], 2),  # reordered
        (lambda lines: [lines[0], lines[1], *lines[3:]], 2),  # deleted
        (lambda lines: [lines[0], lines[1], lines[2], lines[2], *lines[3:]], 3),  # duplicated
    ],
    ids=["reordered", "deleted", "duplicated"],
)
def test_trace2_sequence_tampering_names_the_record(journal_dir: Path, edit: object, seq: int) -> None:
    segment = segment_files(journal_dir)[0]
    lines = segment.read_bytes().split(b"\n")[:-1]
    segment.write_bytes(b"\n".join(edit(lines)) + b"\n")  # type: ignore[operator]
    report = verify_directory(journal_dir)
    assert report.problems[0].finding == Finding.SEQUENCE
    assert report.problems[0].seq == seq
    assert Finding.ROOT_MISMATCH in findings(report) or Finding.TRUNCATED in findings(report)


def test_trace2_edited_record_with_recomputed_check_is_caught_by_the_signed_root(journal_dir: Path) -> None:
    rewrite_line(journal_dir, 3, b'"size":1002', b'"size":1003')
    store_fix = journal_dir.parent / "fixed"
    shutil.copytree(journal_dir, store_fix)
    reseal(store_fix, SignerKey.generate("hospital-1"))  # control path: a re-signed copy
    # The attacker fixes the check digits only (no key): the signed roots no longer match.
    segment = segment_files(journal_dir)[0]
    lines = segment.read_bytes().split(b"\n")[:-1]
    segment.write_bytes(b"".join(encode_line(line.partition(b" ")[2])[0] for line in lines))
    report = verify_directory(journal_dir)
    assert findings(report)[0] == Finding.ROOT_MISMATCH
    assert report.problems[0].seq == 3  # the first record after the last checkpoint that still matches


def test_trace2_resigned_with_another_key_is_caught(journal_dir: Path, tmp_path: Path) -> None:
    rewrite_line(journal_dir, 2, b'"size":1001', b'"size":9999')
    reseal(journal_dir, SignerKey.generate("hospital-1"))
    report = verify_directory(journal_dir, trusted(tmp_path))
    assert Finding.BAD_SIGNATURE in findings(report)
    assert Finding.ROOT_MISMATCH not in findings(report)  # the roots were recomputed: the key gives it away


def test_trace2_replaced_genesis_key_is_not_the_trusted_key(journal_dir: Path, tmp_path: Path) -> None:
    attacker = SignerKey.generate("hospital-1")
    real = trusted(tmp_path)
    rewrite_line(journal_dir, 0, real.encode().encode(), attacker.verifier.encode().encode())
    rewrite_line(journal_dir, 0, real.fingerprint.encode(), attacker.verifier.fingerprint.encode())
    reseal(journal_dir, attacker)
    assert verify_directory(journal_dir).ok  # self-consistent: only the trust anchor tells
    assert findings(verify_directory(journal_dir, real)) == [Finding.UNTRUSTED_GENESIS]


def test_trace2_forged_checkpoint_is_caught(journal_dir: Path, tmp_path: Path) -> None:
    forged = sign_checkpoint(
        Checkpoint("mssante-journal/hospital-1", 4, b"\x07" * 32, "2026-01-01T00:00:00Z"),
        SignerKey.generate("hospital-1"),
    )
    report = verify_directory(journal_dir, trusted(tmp_path), [("kept.note.txt", forged)])
    assert findings(report) == [Finding.BAD_SIGNATURE]


def test_trace2_checkpoint_from_a_forked_log_is_inconsistent(tmp_path: Path) -> None:
    """A copy that diverged after record 3, signed with the real key: its checkpoint does not fit."""
    journal = make_journal(tmp_path, 3)
    journal.close()
    fork = tmp_path / "fork"
    shutil.copytree(tmp_path / "journal", fork)
    journal = Journal(settings(tmp_path), keys.load_signer(tmp_path / "keys" / "signing.key"))
    journal.open()
    journal.append_batch([accepted(10), accepted(11)])
    journal.checkpoint()
    journal.close()
    forked = Journal(settings(tmp_path, dir=fork), keys.load_signer(tmp_path / "keys" / "signing.key"))
    forked.open()
    forked.append_batch([accepted(20), accepted(21), accepted(22)])
    forked_note = forked.checkpoint()
    forked.close()
    assert forked_note is not None
    report = verify_directory(tmp_path / "journal", trusted(tmp_path), [("auditor.txt", forked_note)])
    assert findings(report) == [Finding.TRUNCATED]  # it covers 7 records, this journal holds 6
    same_size = verify_directory(tmp_path / "journal", trusted(tmp_path))
    assert same_size.ok  # control
    forked2 = Journal(settings(tmp_path, dir=fork), keys.load_signer(tmp_path / "keys" / "signing.key"))
    forked2.open()
    forked2.close()
    shutil.rmtree(fork / "checkpoints")
    (fork / "checkpoints").mkdir()
    forked_same = (tmp_path / "journal" / "checkpoint").read_text()
    report = verify_directory(fork, trusted(tmp_path), [("auditor.txt", forked_same)])
    assert Finding.INCONSISTENT_CHECKPOINT in findings(report)


def test_trace2_old_entry_resealed_with_a_newer_key_is_caught(tmp_path: Path) -> None:
    journal = make_journal(tmp_path, 3)
    journal.rotate_key()
    journal.append_batch([accepted(7)])
    journal.checkpoint()
    journal.close()
    directory = tmp_path / "journal"
    assert verify_directory(directory, trusted(tmp_path)).ok  # control, trusting the current key
    new_key = keys.load_signer(tmp_path / "keys" / "signing.key")
    rewrite_line(directory, 2, b'"size":1001', b'"size":1111')
    reseal(directory, new_key)
    report = verify_directory(directory, trusted(tmp_path))
    assert Finding.WRONG_KEY in findings(report)
    assert Finding.UNENDORSED_ROTATION in findings(report)
    assert report.problems[0].finding == Finding.WRONG_KEY


def test_trace2_key_rotation_verifies_and_restarts(tmp_path: Path) -> None:
    journal = make_journal(tmp_path, 2)
    genesis = trusted(tmp_path)
    journal.rotate_key()
    journal.append_batch([accepted(5)])
    journal.close()
    conf = settings(tmp_path)
    assert keys.load_verifier(conf.public_key) != genesis
    reopened = Journal(conf, keys.load_signer(conf.signing_key))
    reopened.open()
    reopened.append_batch([accepted(6)])
    reopened.checkpoint()
    reopened.close()
    report = verify_directory(conf.dir, genesis)
    assert report.ok, report.problems
    assert report.records == 6  # genesis, 2, key, 2
