"""Running the project's playbooks from tests, with the development venv's ansible-playbook."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = REPO / ".venv" / "bin"
COUNTS = ("ok", "changed", "unreachable", "failed")


def playbook(
    name: str, inventory: Path, extra: Sequence[str] = (), timeout: float = 1800
) -> subprocess.CompletedProcess[str]:
    """``ansible-playbook -i inventory playbooks/<name> *extra`` with the repository's ansible.cfg."""
    env = dict(
        os.environ,
        ANSIBLE_CONFIG=str(REPO / "ansible.cfg"),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_FORCE_COLOR="0",
        PATH=f"{VENV_BIN}:{os.environ['PATH']}",
    )
    argv = [str(VENV_BIN / "ansible-playbook"), "-i", str(inventory), str(REPO / "playbooks" / name), *extra]
    return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=timeout, env=env)


def recap(result: subprocess.CompletedProcess[str], host: str) -> dict[str, int]:
    """The PLAY RECAP counts of ``host`` (the run's output is the assertion message when missing)."""
    pattern = rf"{re.escape(host)}\s+:\s+" + r"\s+".join(rf"{name}=(\d+)" for name in COUNTS)
    match = re.search(pattern, result.stdout)
    assert match, result.stdout[-6000:] + result.stderr[-3000:]
    return dict(zip(COUNTS, map(int, match.groups()), strict=True))


def changed_tasks(output: str) -> list[str]:
    """The names of the tasks that reported a change, for assertion messages."""
    tasks, current = [], ""
    for line in output.splitlines():
        if line.startswith("TASK ["):
            current = line.split("]", 1)[0] + "]"
        elif line.startswith("changed:") and current not in tasks:
            tasks.append(current)
    return tasks
