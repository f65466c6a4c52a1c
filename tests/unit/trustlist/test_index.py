"""TrustIndex and IndexWatcher: the read side of the compiled trust list (TRUST-4, TRUST-5, TRUST-8)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mssante.trustlist.index import (
    IndexLoadError,
    IndexUnavailableError,
    IndexWatcher,
    TrustIndex,
)

IDN_A = "xn--hpital-sud-rbb.mssante.fr"


def index_document(generated: str = "2026-11-20T06:00:00Z", extra: dict[str, object] | None = None) -> dict:
    domains: dict[str, object] = {
        "chu-exemple.mssante.fr": {
            "u_label": "chu-exemple.mssante.fr",
            "cns": ["mx1.chu-exemple.fr", "mx2.chu-exemple.fr"],
            "dns": ["CN=mx1.chu-exemple.fr,C=FR", "CN=mx2.chu-exemple.fr,C=FR"],
            "local": False,
        },
        IDN_A: {
            "u_label": "hôpital-sud.mssante.fr",
            "cns": ["mssante.hopital-sud.fr"],
            "dns": ["CN=mssante.hopital-sud.fr,C=FR"],
            "local": False,
        },
        "hopital-exemple.mssante.fr": {
            "u_label": "hopital-exemple.mssante.fr",
            "cns": [],
            "dns": [],
            "local": True,
        },
    }
    domains.update(extra or {})
    return {"schema": 1, "generated": generated, "source_sha256": "00", "signer": "CN=x", "domains": domains}


def write_generation(out: Path, name: str, document: dict) -> Path:
    gen = out / name
    gen.mkdir(parents=True)
    (gen / "index.json").write_text(json.dumps(document), encoding="utf-8")
    return gen


def switch(out: Path, name: str) -> None:
    tmp = out / ".current.tmp"
    os.symlink(name, tmp)
    os.replace(tmp, out / "current")


@pytest.fixture
def index(tmp_path: Path) -> TrustIndex:
    write_generation(tmp_path, "gen-1", index_document())
    switch(tmp_path, "gen-1")
    return TrustIndex.load(tmp_path / "current")


def test_trust5_lookup_any_case_and_both_idn_forms(index: TrustIndex) -> None:
    for name in ("chu-exemple.mssante.fr", "CHU-Exemple.MSSante.FR"):
        entry = index.lookup(name)
        assert entry is not None and entry.a_label == "chu-exemple.mssante.fr"
    for name in (IDN_A, IDN_A.upper(), "hôpital-sud.mssante.fr", "HÔPITAL-Sud.mssante.fr"):
        entry = index.lookup(name)
        assert entry is not None and entry.u_label == "hôpital-sud.mssante.fr", name


@pytest.mark.parametrize(
    "name",
    [
        "chu-exemple.mssante.fr.",
        "hôpital-sud.mssante.fr.",
        "",
        ".",
        "a..b",
        "x" * 2000,
        "h\u00f4pital\u200d.fr",
    ],
)
def test_trust5_trailing_dot_or_invalid_name_is_no_match(index: TrustIndex, name: str) -> None:
    assert index.lookup(name) is None
    assert not index.cn_listed_for(name, "mx1.chu-exemple.fr")
    assert not index.is_local(name)


def test_trust4_every_listed_cn_valid_for_its_domain(index: TrustIndex) -> None:
    assert index.cn_listed_for("chu-exemple.mssante.fr", "mx1.chu-exemple.fr")
    assert index.cn_listed_for("CHU-exemple.mssante.fr", "MX2.chu-exemple.fr")
    # Control: a CN of another domain is not valid here, and an unlisted domain has none.
    assert not index.cn_listed_for("chu-exemple.mssante.fr", "mssante.hopital-sud.fr")
    assert not index.cn_listed_for("absent.mssante.fr", "mx1.chu-exemple.fr")
    assert index.any_listed_cn("MSSANTE.hopital-sud.fr")
    assert not index.any_listed_cn("impostor.example")


def test_local_domains_flagged(index: TrustIndex) -> None:
    assert index.is_local("Hopital-Exemple.mssante.fr")
    assert not index.is_local("chu-exemple.mssante.fr")
    assert index.local_domains == frozenset({"hopital-exemple.mssante.fr"})
    assert index.generation == "gen-1"
    assert index.generated.year == 2026 and index.generated.utcoffset() is not None


def test_load_from_output_dir_follows_current(tmp_path: Path) -> None:
    write_generation(tmp_path, "gen-1", index_document())
    switch(tmp_path, "gen-1")
    assert TrustIndex.load(tmp_path).generation == "gen-1"


@pytest.mark.parametrize(
    "document",
    [
        {"schema": 2, "generated": "2026-11-20T06:00:00Z", "domains": {}},
        {"schema": 1, "generated": "yesterday", "domains": {}},
        {"schema": 1, "generated": "2026-11-20T06:00:00", "domains": {}},
        {"schema": 1, "generated": "2026-11-20T06:00:00Z", "domains": []},
        {"schema": 1, "generated": "2026-11-20T06:00:00Z", "domains": {"UPPER.fr": {}}},
        {"schema": 1, "generated": "2026-11-20T06:00:00Z", "domains": {"a.fr": {"cns": "x"}}},
    ],
)
def test_invalid_index_refused(tmp_path: Path, document: dict) -> None:
    write_generation(tmp_path, "bad", document)
    with pytest.raises(IndexLoadError):
        TrustIndex.load(tmp_path / "bad")


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_trust8_watcher_follows_switch_and_keeps_last_good(tmp_path: Path) -> None:
    clock = FakeClock()
    write_generation(tmp_path, "gen-1", index_document())
    switch(tmp_path, "gen-1")
    watcher = IndexWatcher(tmp_path / "current", interval_ms=500, clock=clock)
    first = watcher.get()
    assert first.generation == "gen-1"

    extra = {"new.mssante.fr": {"u_label": "new.mssante.fr", "cns": ["mx.new.fr"], "dns": [], "local": False}}
    write_generation(tmp_path, "gen-2", index_document("2026-11-21T06:00:00Z", extra))
    switch(tmp_path, "gen-2")
    assert watcher.get() is first  # not re-checked before the interval
    clock.now = 0.6
    second = watcher.get()
    assert second.generation == "gen-2" and second.lookup("new.mssante.fr") is not None
    assert first.lookup("new.mssante.fr") is None  # the old object is untouched

    (write_generation(tmp_path, "gen-3", index_document()) / "index.json").write_text(
        "{broken", encoding="utf-8"
    )
    switch(tmp_path, "gen-3")
    clock.now = 1.2
    assert watcher.get() is second
    assert watcher.failures == 1
    clock.now = 1.8  # retried, still broken: counted once
    assert watcher.get() is second
    assert watcher.failures == 1
    (tmp_path / "gen-3" / "index.json").write_text(json.dumps(index_document()), encoding="utf-8")
    clock.now = 2.4  # repaired in place: the retry loads it
    assert watcher.get().generation == "gen-3"


def test_watcher_without_any_index_fails_closed(tmp_path: Path) -> None:
    watcher = IndexWatcher(tmp_path / "current", interval_ms=0)
    with pytest.raises(IndexUnavailableError):
        watcher.get()
    assert watcher.failures == 1


@given(st.text(max_size=80))
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_trust5_lookup_never_raises(index: TrustIndex, name: str) -> None:
    entry = index.lookup(name)
    assert entry is None or entry.a_label in {"chu-exemple.mssante.fr", IDN_A, "hopital-exemple.mssante.fr"}
    index.cn_listed_for(name, name)
    index.is_local(name)
    index.any_listed_cn(name)
