"""The real journal owner process: concurrent durable appends, kill -9 recovery, refusals, metrics."""

from __future__ import annotations

import json
import random
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from tests.unit.journal.helpers import accepted
from tests.unit.journal.server_fixture import Server, journal_cli

from mssante.journal.client import JournalClient, JournalUnavailable


@pytest.fixture
def server(tmp_path: Path) -> Server:
    srv = Server(tmp_path)
    yield srv
    srv.stop()


def stored(directory: Path) -> dict[int, str]:
    """seq -> queue_id of every stored record."""
    found = {}
    for path in sorted((directory / "segments").glob("*.log")):
        for line in path.read_bytes().splitlines():
            record = json.loads(line.split(b" ", 1)[1])
            found[record["seq"]] = record.get("queue_id", "")
    return found


def writers(
    client: JournalClient,
    count: int,
    per_thread: int | None,
    stop: threading.Event,
    acked: dict[int, str],
    failures: list[str],
) -> list[threading.Thread]:
    lock = threading.Lock()

    def work(worker: int) -> None:
        n = 0
        while not stop.is_set() and (per_thread is None or n < per_thread):
            record = accepted(worker * 1_000_000 + n)
            try:
                result = client.append(record)
            except JournalUnavailable as exc:
                failures.append(str(exc))
                if per_thread is not None:
                    return
                time.sleep(0.01)
                continue
            with lock:
                acked[result.index] = str(record["queue_id"])
            n += 1

    threads = [threading.Thread(target=work, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    return threads


def test_trace2_eight_concurrent_writers_are_all_durable_and_ordered(server: Server) -> None:
    server.start()
    client = JournalClient(server.socket, timeout=30)
    acked: dict[int, str] = {}
    failures: list[str] = []
    for thread in writers(client, 8, 150, threading.Event(), acked, failures):
        thread.join(timeout=120)
    assert failures == []
    assert len(acked) == 8 * 150 and sorted(acked) == list(range(1, 1 + 8 * 150))
    server.kill9()  # no clean shutdown: what was acknowledged must be on disk already
    on_disk = stored(server.dir)
    assert all(on_disk[index] == queue_id for index, queue_id in acked.items())
    server.start()
    server.stop()
    assert journal_cli("verify", "--dir", str(server.dir), "--public-key", str(server.tmp / "signing.pub"))


def test_trace2_kill9_at_random_points_loses_no_acknowledged_record(server: Server) -> None:
    acked: dict[int, str] = {}
    failures: list[str] = []
    rng = random.Random()
    for _ in range(4):
        server.start()
        client = JournalClient(server.socket, timeout=10)
        stop = threading.Event()
        threads = writers(client, 6, None, stop, acked, failures)
        time.sleep(rng.uniform(0.05, 0.6))  # a random point in the middle of the writes
        server.kill9()
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
        client.close()
    server.start()  # recovery: torn tail cut, tree rebuilt, checks against its last checkpoint
    server.stop()
    result = journal_cli("verify", "--dir", str(server.dir), "--public-key", str(server.tmp / "signing.pub"))
    assert "VALID" in result.stdout
    on_disk = stored(server.dir)
    lost = {i: q for i, q in acked.items() if on_disk.get(i) != q}
    assert acked and not lost


def test_trace1_invalid_record_and_down_journal_raise_journal_unavailable(server: Server) -> None:
    server.start()
    client = JournalClient(server.socket)
    with pytest.raises(JournalUnavailable, match="subject: not a field"):
        client.append(accepted(1) | {"subject": "Compte rendu"})
    with pytest.raises(JournalUnavailable, match="written by rotate-key and purge only"):
        client.append({"type": "key", "public_key": "x", "fingerprint": "y", "reason": "rotation"})
    assert client.append(accepted(2)).record_id == "hospital-1:1"  # control
    server.stop()
    with pytest.raises(JournalUnavailable):
        client.append(accepted(3))
    server.start()
    assert client.append(accepted(4)).index == 2  # the stale connection was replaced


def test_trace2_rotate_key_through_the_running_owner(server: Server) -> None:
    server.start()
    client = JournalClient(server.socket)
    genesis_pub = server.tmp / "genesis.pub"
    genesis_pub.write_text((server.tmp / "signing.pub").read_text())
    client.append(accepted(1))
    journal_cli("rotate-key", *server.common())
    client.append(accepted(2))
    client.request("checkpoint")
    result = journal_cli("verify", "--dir", str(server.dir), "--public-key", str(genesis_pub))
    assert "VALID: 4 records" in result.stdout


def test_trace2_verify_exit_codes(server: Server) -> None:
    server.start()
    JournalClient(server.socket).append(accepted(1))
    server.stop()
    assert journal_cli("verify", "--dir", str(server.dir)).returncode == 0
    assert journal_cli("verify", check=False).returncode == 2
    segment = next((server.dir / "segments").glob("*.log"))
    segment.write_bytes(segment.read_bytes().replace(b'"size":1001', b'"size":1002'))
    bad = journal_cli("verify", "--dir", str(server.dir), check=False)
    assert bad.returncode == 1 and "damaged-record (record 1" in bad.stdout


CATALOGUE = [
    "mssante_journal_records_total",
    "mssante_journal_append_errors_total",
    "mssante_journal_commit_duration_seconds_bucket",
    "mssante_journal_tree_size",
    "mssante_journal_last_checkpoint_timestamp_seconds",
    "mssante_journal_verify_last_run_timestamp_seconds",
    "mssante_journal_verify_ok",
]


def test_trace2_metrics_and_self_verification(server: Server) -> None:
    server.start(metrics=True)
    JournalClient(server.socket).append(accepted(1))
    journal_cli("self-verify", *server.common())
    host, port = server.metrics
    page = urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=10).read().decode()
    names = {line.split("{")[0].split(" ")[0] for line in page.splitlines() if line.startswith("mssante_")}
    assert set(CATALOGUE) <= names, sorted(names)
    assert 'mssante_journal_records_total{type="accepted"} 1.0' in page
    assert "mssante_journal_tree_size 2.0" in page
    assert "mssante_journal_verify_ok 1.0" in page
    labels = [line for line in page.splitlines() if line.startswith("mssante_journal_records_total{")]
    assert len(labels) == 7  # one per record type, a closed enum


def test_trace2_a_second_owner_is_refused_and_the_first_keeps_serving(server: Server) -> None:
    server.start()
    second = journal_cli("serve", *server.common(), check=False)
    assert second.returncode == 1 and "in use by another writer" in second.stderr
    assert JournalClient(server.socket).append(accepted(1)).index == 1  # control: the first one still serves
