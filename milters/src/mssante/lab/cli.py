"""`python3 -m mssante.lab up|down|status --dir DIR [--tag TAG] [--json]`: the built-in lab (docs/lab.md).

`up` builds (or finds again) the lab's four hosts, its DNS, mail servers, test PKI and signed trust
list, and writes DIR/lab.json (docs/lab-json.md); `changed` in the JSON output is true only when
something was created, written or started, so a rerun on a running lab reports no change. `down`
stops and removes it all; `status` says what runs. `token --dir DIR MAILBOX` prints a fresh OAuth token
that the lab's introspection server accepts for the owner of MAILBOX (a hospital MSSanté mailbox).
`seed-revoked --dir DIR` seeds the PKI's revoked certificate into the converted hospital as one the
peer served earlier and runs the revocation job (mssante.lab.revocation). `scenario ...` is handed to
mssante.lab.scenario.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mssante.lab import oauth, revocation, world


def _print(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        sys.stdout.write(json.dumps(result, indent=2, sort_keys=True) + "\n")
        return
    lines = result.get("summary") or [f"{key}: {value}" for key, value in result.items()]
    sys.stdout.write("\n".join(lines) + "\n")


def _token(root: Path, mailbox: str | None) -> int:
    if not mailbox:
        sys.stderr.write("python3 -m mssante.lab token: a MAILBOX is required\n")
        return 2
    try:
        token = oauth.mint(root.absolute(), mailbox)
    except (OSError, ValueError, oauth.UnknownMailbox) as error:
        sys.stderr.write(f"python3 -m mssante.lab token: {error}\n")
        return 2
    sys.stdout.write(token + "\n")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["scenario"]:
        scenario = importlib.import_module("mssante.lab.scenario")
        return int(scenario.main(args_list[1:]))
    parser = argparse.ArgumentParser(prog="python3 -m mssante.lab", description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("up", "down", "status", "token", "seed-revoked", "scenario"))
    parser.add_argument("--dir", required=True, type=Path, help="the lab directory (e.g. .lab)")
    parser.add_argument("--tag", help="1-6 of [a-z0-9] naming namespaces and links (default: from --dir)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("mailbox", nargs="?", help="token: the hospital mailbox whose owner logs in")
    args = parser.parse_intermixed_args(args_list)
    if args.action == "token":
        return _token(args.dir, args.mailbox)
    if args.action == "seed-revoked":
        return revocation.main(args.dir)
    try:
        if args.action == "up":
            result = world.up(args.dir, args.tag)
        elif args.action == "down":
            result = world.down(args.dir, args.tag)
        else:
            result = world.status(args.dir)
    except world.LabDirError as error:
        sys.stderr.write(f"python3 -m mssante.lab: {error}\n")
        return 2
    _print(result, args.json)
    return 0
