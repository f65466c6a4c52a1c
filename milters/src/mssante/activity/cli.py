"""Command line of the inactive-mailbox job (TRACE-4; docs/dovecot.md, "Inactive mailboxes").

``python3 -m mssante.activity report|notify|due --mailboxes F --last-login-dict F --state F``

- ``report``: every mailbox with its status (active, inactive, notified, due) and last activity;
- ``notify``: runs ``--notify-command`` once per inactive mailbox not yet notified (arguments appended:
  the address; environment: MSSANTE_MAILBOX, MSSANTE_OWNERS, MSSANTE_LAST_ACTIVITY,
  MSSANTE_INACTIVE_DAYS, MSSANTE_GRACE_DAYS) and records the notice only when the command exits 0;
- ``due``: the mailboxes notified at least ``--grace-days`` ago and still without a login. Deleting them
  is a person's decision: this tool never deletes.

Exit status: 0 done, 1 a notification failed, 2 usage or input error.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mssante.activity.core import (
    Assessment,
    Notice,
    Policy,
    State,
    Status,
    assess,
    mailboxes_from_table,
    next_state,
    parse_last_login_dict,
)

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
NOTIFY_TIMEOUT_SECONDS = 120


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python3 -m mssante.activity", description=__doc__.split("\n")[0])
    parser.add_argument("action", choices=["report", "notify", "due"])
    parser.add_argument("--mailboxes", required=True, type=Path, help="mailboxes.json")
    parser.add_argument("--last-login-dict", required=True, type=Path, help="Dovecot last_login file dict")
    parser.add_argument(
        "--state", required=True, type=Path, help="JSON state file (first sightings, notices)"
    )
    parser.add_argument("--days", type=int, default=365, help="inactivity period in days (default 365)")
    parser.add_argument("--grace-days", type=int, default=30, help="days between notice and 'due' (30)")
    parser.add_argument("--notify-command", default="", help="command line run per mailbox to notify")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.add_argument("--now", type=int, help=argparse.SUPPRESS)
    return parser


def load_state(path: Path) -> State:
    if not path.exists():
        return State()
    document = json.loads(path.read_text(encoding="utf-8"))
    notices = {
        address: Notice(int(item["first_seen"]), item.get("notified_at"))
        for address, item in document.get("mailboxes", {}).items()
    }
    return State(notices)


def save_state(path: Path, state: State) -> None:
    document = {
        "schema": 1,
        "mailboxes": {
            address: {"first_seen": notice.first_seen, "notified_at": notice.notified_at}
            for address, notice in sorted(state.notices.items())
        },
    }
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _iso(stamp: int | None) -> str | None:
    return None if stamp is None else datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _row(item: Assessment) -> dict[str, Any]:
    return {
        "address": item.mailbox.address,
        "type": item.mailbox.type,
        "status": item.status.value,
        "last_login": _iso(item.last_login),
        "last_activity": _iso(item.last_activity),
        "notified_at": _iso(item.notified_at),
    }


def _notify(command: list[str], item: Assessment, policy: Policy) -> bool:
    env = dict(
        os.environ,
        MSSANTE_MAILBOX=item.mailbox.address,
        MSSANTE_OWNERS=",".join(item.mailbox.owners),
        MSSANTE_LAST_ACTIVITY=_iso(item.last_activity) or "",
        MSSANTE_INACTIVE_DAYS=str(policy.inactive_days),
        MSSANTE_GRACE_DAYS=str(policy.grace_days),
    )
    try:
        done = subprocess.run(
            [*command, item.mailbox.address], env=env, check=False, timeout=NOTIFY_TIMEOUT_SECONDS
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        sys.stderr.write(f"notify {item.mailbox.address}: {exc}\n")
        return False
    if done.returncode != 0:
        sys.stderr.write(f"notify {item.mailbox.address}: command exited {done.returncode}\n")
    return done.returncode == 0


def _print(rows: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        json.dump(rows, sys.stdout, indent=1)
        sys.stdout.write("\n")
        return
    for row in rows:
        sys.stdout.write(
            f"{row['status']:9} {row['address']}  last activity {row['last_activity']}"
            + (f"  notified {row['notified_at']}" if row["notified_at"] else "")
            + "\n"
        )


def _notify_all(
    command: list[str], assessments: list[Assessment], policy: Policy, now: int
) -> dict[str, int]:
    """Notify every inactive, not yet notified mailbox; the addresses whose notice went out."""
    notified: dict[str, int] = {}
    for item in assessments:
        if item.status is Status.INACTIVE and _notify(command, item, policy):
            notified[item.mailbox.address] = now
    return notified


def run(args: argparse.Namespace) -> int:
    now = args.now if args.now is not None else int(time.time())
    policy = Policy(args.days, args.grace_days)
    mailboxes = mailboxes_from_table(json.loads(args.mailboxes.read_text(encoding="utf-8")))
    text = args.last_login_dict.read_text(encoding="utf-8") if args.last_login_dict.exists() else ""
    logins = parse_last_login_dict(text)
    state = load_state(args.state)
    assessments = assess(mailboxes, logins, state, policy, now)
    notified: dict[str, int] = {}
    status = EXIT_OK
    if args.action == "notify":
        command = shlex.split(args.notify_command)
        if not command:
            sys.stderr.write("notify needs --notify-command\n")
            return EXIT_USAGE
        notified = _notify_all(command, assessments, policy, now)
        pending = sum(1 for item in assessments if item.status is Status.INACTIVE)
        status = EXIT_OK if len(notified) == pending else EXIT_FAILED
    new_state = next_state(assessments, state, notified, now)
    save_state(args.state, new_state)
    assessments = assess(mailboxes, logins, new_state, policy, now)
    wanted = Status.DUE if args.action == "due" else None
    _print([_row(item) for item in assessments if wanted is None or item.status is wanted], args.json)
    return status


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return run(args)
    except (OSError, ValueError, KeyError) as exc:
        sys.stderr.write(f"mssante.activity: {exc}\n")
        return EXIT_USAGE
