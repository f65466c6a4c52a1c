"""One golden test of the whole /metrics page after a scripted conversation (fresh registry).

The stage clock is injected and frozen, so every duration is 0 and the page is deterministic.
``*_created`` series carry wall-clock times and are checked apart. Regenerate the golden file
with ``MSSANTE_UPDATE_GOLDEN=1`` after a deliberate change, and review the diff.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import Milter
from prometheus_client import generate_latest
from tests.milter.harness import LOCAL, OTHER_CN, PEER, PEER_CN, World, connect, send_message, simple_message

from mssante import __version__
from mssante.milter.metrics import TrustlistCollector

GOLDEN = Path(__file__).parent / "golden" / "metrics.txt"
PERSONAL = (LOCAL, PEER, PEER_CN, OTHER_CN, "dr.martin", "gmail.com")


def scripted_page(world: World) -> str:
    world.registry.register(TrustlistCollector(world.live.index, lambda: world.link / "status.json"))
    ctx = connect(world, cn=PEER_CN)  # accepted inbound message
    assert ctx._envfrom(f"<dr.house@{PEER}>") == Milter.CONTINUE
    assert ctx._envrcpt(f"<dr.martin@{LOCAL}>") == Milter.CONTINUE
    assert send_message(ctx, simple_message()) == Milter.ACCEPT
    ctx = connect(world, cn=OTHER_CN)  # verified peer, wrong CN for the domain: journaled
    assert ctx._envfrom(f"<dr.house@{PEER}>") == Milter.REJECT
    ctx = connect(world, port=587)  # anonymous: aggregated
    assert ctx._envfrom(f"<dr.martin@{LOCAL}>") == Milter.REJECT
    ctx = connect(world, port=587, auth="dr.martin")  # one internet recipient refused
    assert ctx._envfrom(f"<dr.martin@{LOCAL}>") == Milter.CONTINUE
    assert ctx._envrcpt("<x@gmail.com>") == Milter.REJECT
    connect(world, port=None)  # a missing {daemon_port}
    text = generate_latest(world.registry).decode("utf-8")
    return text.replace(f'version="{__version__}"', 'version="VERSION"')


def test_metrics_page_golden(tmp_path: Path) -> None:
    page = scripted_page(World(tmp_path))
    created = [line for line in page.splitlines() if "_created" in line and not line.startswith("#")]
    assert created and all(re.fullmatch(r"\S+_created(\{[^}]*\})? \d+\.\d+(e\+\d+)?", c) for c in created)
    stable = "\n".join(line for line in page.splitlines() if "_created" not in line) + "\n"
    if os.environ.get("MSSANTE_UPDATE_GOLDEN"):
        GOLDEN.write_text(stable, encoding="utf-8")
    assert stable == GOLDEN.read_text(encoding="utf-8")


def test_metrics_labels_hold_no_personal_data(tmp_path: Path) -> None:
    """Design principle 5: no address, domain or certificate name in any label."""
    page = scripted_page(World(tmp_path))
    for needle in PERSONAL:
        assert needle not in page
