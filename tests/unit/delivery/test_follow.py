"""Following the log across rotations and restarts: no gap, no duplicate (TRACE-2)."""

from __future__ import annotations

import os
from pathlib import Path

from mssante.delivery.follow import LogFollower, Position


def _append(path: Path, *lines: str, end: str = "\n") -> None:
    with path.open("a", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + end)


def _read(follower: LogFollower) -> list[str]:
    return [line for line, _ in follower.lines()]


def test_trace2_partial_line_waits_for_its_end(tmp_path: Path) -> None:
    log = tmp_path / "maillog"
    _append(log, "one", "tw", end="")
    follower = LogFollower(log, None)
    assert _read(follower) == ["one"]
    _append(log, "o", "three")
    assert _read(follower) == ["two", "three"]
    assert _read(follower) == []


def test_trace2_rename_rotation_drains_old_file_then_new(tmp_path: Path) -> None:
    log = tmp_path / "maillog"
    _append(log, "a1")
    follower = LogFollower(log, None)
    assert _read(follower) == ["a1"]
    _append(log, "a2")  # written just before rotation, not yet read
    log.rename(tmp_path / "maillog.20261125-182200")
    _append(log, "b1")
    assert _read(follower) == ["a2", "b1"]


def test_trace2_copytruncate_rotation_restarts_file(tmp_path: Path) -> None:
    log = tmp_path / "maillog"
    _append(log, "a1", "a2")
    follower = LogFollower(log, None)
    assert _read(follower) == ["a1", "a2"]
    with log.open("w"):
        pass
    _append(log, "b1")
    assert _read(follower) == ["b1"]


def test_trace2_restart_from_saved_position_after_rotation(tmp_path: Path) -> None:
    log = tmp_path / "maillog"
    _append(log, "a1", "a2")
    first = LogFollower(log, None)
    lines = list(first.lines())
    saved = Position.from_json(lines[0][1].to_json())  # stopped after a1 (a2 not acknowledged)
    first.close()
    _append(log, "a3")
    log.rename(tmp_path / "maillog.1")
    _append(log, "b1")
    again = LogFollower(log, saved)
    assert _read(again) == ["a2", "a3", "b1"]


def test_trace2_saved_position_of_a_vanished_file_starts_current_log(tmp_path: Path) -> None:
    log = tmp_path / "maillog"
    _append(log, "x")
    ghost = Position(inode=os.stat(log).st_ino + 999_999, offset=5)
    assert _read(LogFollower(log, ghost)) == ["x"]


def test_trace2_missing_log_is_picked_up_when_it_appears(tmp_path: Path) -> None:
    log = tmp_path / "maillog"
    follower = LogFollower(log, None)
    assert _read(follower) == []
    _append(log, "first")
    assert _read(follower) == ["first"]


def test_trace2_line_written_to_old_file_just_before_the_writer_reopens(tmp_path: Path) -> None:
    """The writer (postlogd) may add a last line to the renamed file after our drain, before it reopens."""
    log, rotated = tmp_path / "maillog", tmp_path / "maillog.20261125-182200"
    _append(log, "a1")
    follower = LogFollower(log, None)
    assert _read(follower) == ["a1"]
    log.rename(rotated)
    _append(log, "b1")
    original = follower._rotated

    def late_write_then_check() -> bool:
        if not rotated.read_text().endswith("a2\n"):
            _append(rotated, "a2")  # between our last read of the old file and the rotation check
        return original()

    follower._rotated = late_write_then_check  # type: ignore[method-assign]
    assert _read(follower) == ["a2", "b1"]


def test_trace2_consumer_stopping_mid_chunk_misses_nothing(tmp_path: Path) -> None:
    """The tracker stops after a number of lines per poll: the next poll resumes at the next line."""
    log = tmp_path / "maillog"
    _append(log, *(f"line {n}" for n in range(10)))
    follower = LogFollower(log, None)
    seen = []
    for line, _ in follower.lines():
        seen.append(line)
        if len(seen) == 3:
            break
    seen += _read(follower)
    assert seen == [f"line {n}" for n in range(10)]
