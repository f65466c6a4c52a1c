"""Where a lab may live and how it is named (docs/lab-json.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mssante.lab import world
from mssante.lab.hosts import TAG_PATTERN


def test_lab_dir_in_a_home_directory_is_shared_with_the_hosts() -> None:
    assert world._shared_overlays(Path("/work/main/.lab")) == ()
    assert world._shared_overlays(Path("/root/src/mssante/.lab")) == ("/root",)
    assert world._shared_overlays(Path("/home/alice/mssante/.lab")) == ("/home",)


@pytest.mark.parametrize("path", ["/var/lib/lab", "/etc/lab", "/run/lab", "/root", "/usr/local/lab"])
def test_lab_dir_under_another_overlaid_directory_is_refused(path: str) -> None:
    with pytest.raises(world.LabDirError, match="must not be under"):
        world._shared_overlays(Path(path))


def test_lab_tags_differ_per_directory_and_fit_interface_names() -> None:
    make_lab, test_lab = world.default_tag(Path("/work/main/.lab")), world.default_tag(Path("/var/tmp/x/lab"))
    assert make_lab != test_lab
    assert make_lab == world.default_tag(Path("/work/main/.lab"))
    assert TAG_PATTERN.fullmatch(make_lab) and TAG_PATTERN.fullmatch(test_lab)
    assert len(f"mv{make_lab}05p") <= 15  # IFNAMSIZ - 1: the longest link name a host gets
