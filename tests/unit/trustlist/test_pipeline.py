"""Gates, generations, the atomic switch and status.json (TRUST-8), through pipeline.run."""

from __future__ import annotations

import json
import os
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mssante.trustlist import pipeline
from mssante.trustlist.index import IndexWatcher, TrustIndex
from mssante.trustlist.model import Outcome
from mssante.trustlist.settings import Settings
from mssante.trustlist.status import read_status

from .helpers import SIGNER_CN, Entry, build_list, pki, sign_with, synthetic_entries

LOCAL = "hopital-a.mssante.fr"


def settings(out: Path, **changes: object) -> Settings:
    base = Settings(out_dir=out, ca_file=pki().chain, signer=SIGNER_CN, local_domains=(LOCAL,))
    return Settings(**{**base.__dict__, **changes})


def signed_list(count: int, generated: str = "2026-11-20T06:00:00Z", prefix: str = "dom") -> bytes:
    return sign_with(build_list(synthetic_entries(count, prefix), generated))


@pytest.fixture(scope="module")
def lists() -> dict[str, bytes]:
    return {
        "base": signed_list(100),
        "newer": signed_list(101, "2026-11-21T06:00:00Z"),
        "older": signed_list(100, "2026-11-19T06:00:00Z", prefix="old"),
        "shrunk": signed_list(80, "2026-11-22T06:00:00Z"),
        "slightly_smaller": signed_list(95, "2026-11-22T06:00:00Z"),
        "empty": sign_with(build_list([], "2026-11-23T06:00:00Z")),
    }


def current(out: Path) -> str:
    return os.readlink(out / "current")


def test_trust8_first_compile_switches(tmp_path: Path, lists: dict[str, bytes]) -> None:
    result = pipeline.run(lists["base"], settings(tmp_path))
    assert result.outcome is Outcome.SWITCHED and result.outcome.exit_code == 0
    index = TrustIndex.load(tmp_path / "current")
    assert index.generation == current(tmp_path) == result.generation
    assert len([e for e in index.entries() if not e.local]) == 80
    assert index.is_local(LOCAL) and index.lookup(LOCAL) is not None  # absent from the list, still indexed
    status = read_status(tmp_path / "current")
    assert status.outcome == "switched" and status.domains == 80 and status.entries == 100
    assert status.generated == "2026-11-20T06:00:00Z" and status.signer and SIGNER_CN in status.signer
    assert status.last_success == status.last_attempt


def test_trust8_same_content_is_unchanged(tmp_path: Path, lists: dict[str, bytes]) -> None:
    first = pipeline.run(lists["base"], settings(tmp_path))
    again = pipeline.run(lists["base"], settings(tmp_path))
    assert again.outcome is Outcome.UNCHANGED and again.outcome.exit_code == 4
    assert current(tmp_path) == first.generation
    # Control: a change in the local domains is a change of the compiled list.
    changed = pipeline.run(lists["base"], settings(tmp_path, local_domains=(LOCAL, "autre.mssante.fr")))
    assert changed.outcome is Outcome.SWITCHED


def _refused_keeps_last_good(out: Path, data: bytes, outcome: Outcome, **changes: object) -> None:
    before = current(out)
    before_index = (out / "current" / "index.json").read_bytes()
    result = pipeline.run(data, settings(out, **changes))
    assert result.outcome is outcome, result.message
    assert result.outcome.exit_code == 1
    assert current(out) == before
    assert (out / "current" / "index.json").read_bytes() == before_index
    status = read_status(out)
    assert status.outcome == outcome.value and status.generation == before
    assert status.last_success != status.last_attempt or status.last_success is not None


def test_trust8_older_list_refused_unless_forced(tmp_path: Path, lists: dict[str, bytes]) -> None:
    pipeline.run(lists["base"], settings(tmp_path))
    _refused_keeps_last_good(tmp_path, lists["older"], Outcome.REFUSED_OLDER)
    assert "older" in read_status(tmp_path).message
    forced = pipeline.run(lists["older"], settings(tmp_path, force=True))
    assert forced.outcome is Outcome.SWITCHED
    assert TrustIndex.load(tmp_path).lookup("old0.mssante.fr") is not None


def test_trust8_shrink_refused_unless_forced(tmp_path: Path, lists: dict[str, bytes]) -> None:
    pipeline.run(lists["base"], settings(tmp_path))  # 80 domains
    _refused_keeps_last_good(tmp_path, lists["shrunk"], Outcome.REFUSED_SHRINK)  # 64 domains: -20 %
    assert "loses 16 of the current 80 domains (20%)" in read_status(tmp_path).message
    # The fraction is configurable.
    assert pipeline.run(lists["shrunk"], settings(tmp_path, max_shrink=0.25)).outcome is Outcome.SWITCHED


def test_trust8_small_shrink_accepted(tmp_path: Path, lists: dict[str, bytes]) -> None:
    pipeline.run(lists["base"], settings(tmp_path))
    assert pipeline.run(lists["slightly_smaller"], settings(tmp_path)).outcome is Outcome.SWITCHED  # 76: -5 %


def test_trust8_replacing_many_domains_counts_as_shrink(tmp_path: Path, lists: dict[str, bytes]) -> None:
    pipeline.run(lists["base"], settings(tmp_path))
    # Same size, but 100 % of the current domains gone: refused like a shrink.
    renamed = signed_list(100, "2026-11-22T06:00:00Z", prefix="other")
    _refused_keeps_last_good(tmp_path, renamed, Outcome.REFUSED_SHRINK)


def test_trust8_force_bypasses_shrink(tmp_path: Path, lists: dict[str, bytes]) -> None:
    pipeline.run(lists["base"], settings(tmp_path))
    assert pipeline.run(lists["shrunk"], settings(tmp_path, force=True)).outcome is Outcome.SWITCHED


def test_trust8_empty_list_refused_even_forced(tmp_path: Path, lists: dict[str, bytes]) -> None:
    pipeline.run(lists["base"], settings(tmp_path))
    _refused_keeps_last_good(tmp_path, lists["empty"], Outcome.REFUSED_EMPTY)
    _refused_keeps_last_good(tmp_path, lists["empty"], Outcome.REFUSED_EMPTY, force=True)


def test_trust8_force_never_bypasses_signature_or_parsing(tmp_path: Path, lists: dict[str, bytes]) -> None:
    pipeline.run(lists["base"], settings(tmp_path))
    tampered = lists["newer"].replace(b"dom3.mssante.fr", b"dom3.mssante.fx", 1)
    _refused_keeps_last_good(tmp_path, tampered, Outcome.REFUSED_SIGNATURE, force=True)
    unsigned = build_list(synthetic_entries(101), "2026-11-21T06:00:00Z")
    _refused_keeps_last_good(tmp_path, unsigned, Outcome.REFUSED_SIGNATURE, force=True)
    _refused_keeps_last_good(tmp_path, b"<not xml", Outcome.REFUSED_PARSE, force=True)
    # Control: the untampered newer list goes through.
    assert pipeline.run(lists["newer"], settings(tmp_path)).outcome is Outcome.SWITCHED


def test_trust8_status_keeps_last_success_after_refusal(tmp_path: Path, lists: dict[str, bytes]) -> None:
    # ``now`` also dates the certificate checks: stay within the test signer's validity.
    when = datetime.now(UTC).replace(microsecond=0)
    later = when + timedelta(hours=1)
    pipeline.run(lists["base"], settings(tmp_path), now=when)
    pipeline.run(lists["older"], settings(tmp_path), now=later)
    status = json.loads((tmp_path / "status.json").read_text(encoding="utf-8"))
    assert status["last_success"] == f"{when:%Y-%m-%dT%H:%M:%SZ}"
    assert status["last_attempt"] == f"{later:%Y-%m-%dT%H:%M:%SZ}"
    assert status["outcome"] == "refused-older"
    assert status["domains"] == 80 and status["generated"] == "2026-11-20T06:00:00Z"


def test_trust8_old_generations_bounded(tmp_path: Path) -> None:
    for day in range(1, 6):
        data = sign_with(build_list(synthetic_entries(10 + day), f"2026-11-{day:02d}T06:00:00Z"))
        assert pipeline.run(data, settings(tmp_path, keep_generations=3)).outcome is Outcome.SWITCHED
    generations = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("g-"))
    assert len(generations) == 3
    assert current(tmp_path) == generations[-1]
    assert not list(tmp_path.glob(".staging-*"))


def test_trust8_compile_failure_keeps_last_good(tmp_path: Path, lists: dict[str, bytes]) -> None:
    pipeline.run(lists["base"], settings(tmp_path))
    missing = tmp_path / "no-such-postfix-dir"
    _refused_keeps_last_good(tmp_path, lists["newer"], Outcome.COMPILE_FAILED, postfix_config_dir=missing)
    assert not list(tmp_path.glob(".staging-*"))


def test_trust8_switch_under_concurrent_reader(tmp_path: Path) -> None:
    """A reader opening current/index.json in a loop never sees a mix, a partial or a missing file."""
    versions = [
        sign_with(
            build_list(
                [Entry(f"d{v}-{i}.mssante.fr", f"CN=mx.d{v}.fr,C=FR") for i in range(40)],
                f"2026-11-{v:02d}T06:00:00Z",
            )
        )
        for v in range(1, 9)
    ]
    assert pipeline.run(versions[0], settings(tmp_path)).outcome is Outcome.SWITCHED
    stop = threading.Event()
    seen: set[str] = set()
    problems: list[str] = []

    def reader() -> None:
        while not stop.is_set():
            try:
                raw = (tmp_path / "current" / "index.json").read_bytes()
                document = json.loads(raw)
            except (OSError, ValueError) as exc:
                problems.append(repr(exc))
                continue
            listed = [key for key, entry in document["domains"].items() if not entry["local"]]
            prefixes = {key.split("-")[0] for key in listed}
            if len(prefixes) != 1 or len(listed) != 40:
                problems.append(f"mixed or partial: {sorted(prefixes)} {len(listed)}")
            seen.add(document["generated"])

    watcher = IndexWatcher(tmp_path / "current", interval_ms=0)
    generations: list[str] = []

    def watching_reader() -> None:
        while not stop.is_set():
            try:
                index = watcher.get()
            except Exception as exc:  # any exception is a failure of the switch
                problems.append(repr(exc))
                continue
            listed = [e.a_label for e in index.entries() if not e.local]
            if len({key.split("-")[0] for key in listed}) != 1 or len(listed) != 40:
                problems.append(f"watcher saw a mixed index in {index.generation}")
            if not generations or generations[-1] != index.generation:
                generations.append(index.generation)

    thread = threading.Thread(target=reader)
    thread.start()
    second = threading.Thread(target=watching_reader)
    second.start()
    try:
        for data in versions[1:]:
            assert pipeline.run(data, settings(tmp_path, max_shrink=1.0)).outcome is Outcome.SWITCHED
    finally:
        stop.set()
        thread.join(timeout=30)
        second.join(timeout=30)
    assert not problems, problems[:5]
    assert len(seen) >= 2  # the reader really ran across switches
    assert generations == sorted(generations) and len(generations) >= 2  # the watcher followed them
    assert watcher.failures == 0
