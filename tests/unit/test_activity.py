"""Inactive mailboxes (TRACE-4): last logins from Dovecot's last_login dict, notice before deletion."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from mssante.activity.core import (
    DAY,
    Mailbox,
    Notice,
    Policy,
    State,
    Status,
    assess,
    mailboxes_from_table,
    next_state,
    parse_last_login_dict,
)

ROOT = Path(__file__).resolve().parents[2]
NOW = 1_800_000_000
PER = Mailbox("dr.martin@h.mssante.test", "PER", ("810001234567",), ("810001234567",))
APP = Mailbox("dpi@h.mssante.test", "APP", ("dpi-app", "dpi.h.test"), ("dpi-app",))
POLICY = Policy(inactive_days=365, grace_days=30)


def _dict(entries: dict[str, int]) -> str:
    return "".join(f"{key}\n{value}\n" for key, value in entries.items())


def test_trace4_parse_counts_logins_not_deliveries() -> None:
    text = _dict(
        {
            "shared/last-login/imap/810001234567": NOW - 10,
            "shared/last-login/lmtp/dr.martin@h.mssante.test": NOW,
            "shared/last-login/imap/dpi.h.test": (NOW - 5) * 1000,
            "shared/other": 1,
        }
    )
    assert parse_last_login_dict(text) == {"810001234567": NOW - 10, "dpi.h.test": NOW - 5}


@given(st.text())
def test_trace4_parse_never_raises(text: str) -> None:
    parse_last_login_dict(text)


def test_trace4_application_activity_counts_its_certificate_logins() -> None:
    logins = {"dpi.h.test": NOW - 400 * DAY, "dpi-app": NOW - 2 * DAY}
    (item,) = assess([APP], logins, State(), POLICY, NOW)
    assert item.status is Status.ACTIVE
    assert item.last_login == NOW - 2 * DAY


def test_trace4_new_mailbox_counts_from_first_sighting() -> None:
    (item,) = assess([PER], {}, State(), POLICY, NOW)
    assert item.status is Status.ACTIVE
    state = State({PER.address: Notice(first_seen=NOW - 366 * DAY)})
    (item,) = assess([PER], {}, state, POLICY, NOW)
    assert item.status is Status.INACTIVE


def test_trace4_lifecycle_inactive_notified_due_and_reset_by_login() -> None:
    logins = {"810001234567": NOW - 366 * DAY}
    (item,) = assess([PER], logins, State(), POLICY, NOW)
    assert item.status is Status.INACTIVE
    state = next_state([item], State(), {PER.address: NOW}, NOW)
    (item,) = assess([PER], logins, state, POLICY, NOW + 29 * DAY)
    assert item.status is Status.NOTIFIED
    (item,) = assess([PER], logins, state, POLICY, NOW + 30 * DAY)
    assert item.status is Status.DUE
    # A login after the notice withdraws it.
    (item,) = assess([PER], {"810001234567": NOW + DAY}, state, POLICY, NOW + 31 * DAY)
    assert item.status is Status.ACTIVE and item.notified_at is None


def test_trace4_never_due_without_notice() -> None:
    (item,) = assess([PER], {"810001234567": NOW - 3000 * DAY}, State(), POLICY, NOW)
    assert item.status is Status.INACTIVE


def test_trace4_mailboxes_from_table() -> None:
    table = {
        "schema": 1,
        "mailboxes": [
            {
                "address": "DPI@h.mssante.test",
                "type": "APP",
                "owners": ["dpi-app"],
                "cert_cns": ["dpi.h.test"],
            }
        ],
    }
    assert mailboxes_from_table(table) == [APP]


def _cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "mssante.activity",
            *args,
            "--mailboxes",
            str(tmp_path / "mailboxes.json"),
            "--last-login-dict",
            str(tmp_path / "last-login.dict"),
            "--state",
            str(tmp_path / "state.json"),
        ],
        capture_output=True,
        text=True,
        check=False,
        env={"PYTHONPATH": str(ROOT / "milters" / "src")},
    )


def test_trace4_command_notifies_once_then_reports_due(tmp_path: Path) -> None:
    (tmp_path / "mailboxes.json").write_text(
        json.dumps(
            {
                "schema": 1,
                "mailboxes": [
                    {"address": PER.address, "type": "PER", "owners": list(PER.owners), "cert_cns": []}
                ],
            }
        )
    )
    (tmp_path / "last-login.dict").write_text(_dict({"shared/last-login/imap/810001234567": NOW - 400 * DAY}))
    sent = tmp_path / "sent.txt"
    notify = f"sh -c 'echo \"$MSSANTE_MAILBOX $MSSANTE_OWNERS $0\" >> {sent}'"
    first = _cli(tmp_path, "notify", "--notify-command", notify, "--now", str(NOW), "--json")
    assert first.returncode == 0, first.stderr
    assert sent.read_text() == f"{PER.address} 810001234567 {PER.address}\n"
    assert json.loads(first.stdout)[0]["status"] == "notified"
    again = _cli(tmp_path, "notify", "--notify-command", notify, "--now", str(NOW + DAY))
    assert again.returncode == 0
    assert sent.read_text().count("\n") == 1, "a mailbox is notified once"
    due = _cli(tmp_path, "due", "--now", str(NOW + 31 * DAY), "--json")
    assert [row["address"] for row in json.loads(due.stdout)] == [PER.address]
    assert (tmp_path / "mailboxes.json").exists()


def test_trace4_failed_notice_is_not_recorded(tmp_path: Path) -> None:
    (tmp_path / "mailboxes.json").write_text(
        json.dumps(
            {
                "schema": 1,
                "mailboxes": [
                    {"address": PER.address, "type": "PER", "owners": list(PER.owners), "cert_cns": []}
                ],
            }
        )
    )
    (tmp_path / "last-login.dict").write_text(_dict({"shared/last-login/imap/810001234567": NOW - 400 * DAY}))
    failed = _cli(tmp_path, "notify", "--notify-command", "false", "--now", str(NOW))
    assert failed.returncode == 1
    due = _cli(tmp_path, "due", "--now", str(NOW + 400 * DAY), "--json")
    assert json.loads(due.stdout) == []
