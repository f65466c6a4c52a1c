#!/usr/bin/python
"""Back up, swap in and restore a Postfix instance's files, with SHA-256 digests in a manifest."""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import shutil
import tempfile

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: mssante_swap
short_description: Back up and swap staged Postfix files into place, or restore a backup
description:
  - With O(state=swap), copies every live file named in O(files) (and the compiled C(.db),
    C(.lmdb), C(.cdb) companions of O(maps)) into O(backup_dir), records path, existence, mode,
    owner and SHA-256 in C(manifest.json), then replaces each live file by its staged copy.
  - With O(state=restore), puts back every file of the manifest in O(backup_dir), byte for byte
    (a file that did not exist is removed), and checks each digest.
options:
  state:
    description: swap or restore.
    type: str
    default: swap
    choices: [swap, restore]
  live_dir:
    description: Live configuration directory (swap).
    type: path
  stage_dir:
    description: Staging directory holding the new files (swap).
    type: path
  files:
    description: Names relative to O(live_dir) to swap.
    type: list
    elements: str
    default: []
  maps:
    description: Names among O(files) that are Postfix maps with compiled companions.
    type: list
    elements: str
    default: []
  backup_dir:
    description: Backup directory for this instance and run.
    type: path
    required: true
author: MSSanté appliance
"""

EXAMPLES = r"""
- name: Restore a backup
  mssante_swap:
    state: restore
    backup_dir: /var/backups/mssante/20261125T180000Z/postfix
"""

RETURN = r"""
manifest: {description: The manifest entries., type: list, returned: always}
"""

COMPANIONS = (".db", ".lmdb", ".cdb")


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(65536), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _atomic_copy(src, dst, mode, uid, gid):
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(dst), prefix=".mssante-")
    os.close(fd)
    shutil.copyfile(src, tmp)
    os.chmod(tmp, mode)
    os.chown(tmp, uid, gid)
    os.replace(tmp, dst)


def _entry(live_dir, name):
    path = os.path.join(live_dir, name)
    if not os.path.lexists(path):
        return {"path": path, "name": name, "existed": False}
    st = os.stat(path)
    return {
        "path": path,
        "name": name,
        "existed": True,
        "sha256": _sha256(path),
        "mode": st.st_mode & 0o7777,
        "uid": st.st_uid,
        "gid": st.st_gid,
    }


def _names(params):
    names = list(params["files"])
    for name in params["maps"]:
        names += [name + suffix for suffix in COMPANIONS]
    return list(dict.fromkeys(names))


def swap(module, params):
    live, stage, backup = params["live_dir"], params["stage_dir"], params["backup_dir"]
    entries = [_entry(live, name) for name in _names(params)]
    if module.check_mode:
        return entries
    os.makedirs(os.path.join(backup, "files"), mode=0o700, exist_ok=True)
    for entry in entries:
        if entry["existed"]:
            shutil.copy2(entry["path"], os.path.join(backup, "files", entry["name"]))
    manifest = {
        "schema": 1,
        "created": datetime.datetime.now(datetime.UTC).isoformat(),
        "live_dir": live,
        "entries": entries,
    }
    with open(os.path.join(backup, "manifest.json"), "w", encoding="utf-8") as handle:
        json.dump(manifest, handle, indent=2, sort_keys=True)
    by_name = {e["name"]: e for e in entries}
    for name in params["files"]:
        src, old = os.path.join(stage, name), by_name[name]
        if os.path.exists(src):
            mode = old.get("mode", 0o644)
            _atomic_copy(src, old["path"], mode, old.get("uid", 0), old.get("gid", 0))
        elif os.path.lexists(old["path"]):
            os.unlink(old["path"])
    return entries


def restore(module, params):
    backup = params["backup_dir"]
    with open(os.path.join(backup, "manifest.json"), encoding="utf-8") as handle:
        entries = json.load(handle)["entries"]
    changed, bad = False, []
    for entry in entries:
        path = entry["path"]
        if not entry["existed"]:
            if os.path.lexists(path):
                changed = True
                if not module.check_mode:
                    os.unlink(path)
            continue
        if os.path.exists(path) and _sha256(path) == entry["sha256"]:
            st = os.stat(path)
            if (st.st_mode & 0o7777, st.st_uid, st.st_gid) == (entry["mode"], entry["uid"], entry["gid"]):
                continue
        changed = True
        if module.check_mode:
            continue
        _atomic_copy(
            os.path.join(backup, "files", entry["name"]), path, entry["mode"], entry["uid"], entry["gid"]
        )
        if _sha256(path) != entry["sha256"]:
            bad.append(path)
    if bad:
        module.fail_json(msg="restored files do not match their recorded digests", files=bad)
    return changed, entries


def main():
    module = AnsibleModule(
        argument_spec={
            "state": {"type": "str", "default": "swap", "choices": ["swap", "restore"]},
            "live_dir": {"type": "path"},
            "stage_dir": {"type": "path"},
            "files": {"type": "list", "elements": "str", "default": []},
            "maps": {"type": "list", "elements": "str", "default": []},
            "backup_dir": {"type": "path", "required": True},
        },
        required_if=[("state", "swap", ("live_dir", "stage_dir"))],
        supports_check_mode=True,
    )
    params = module.params
    if params["state"] == "restore":
        changed, entries = restore(module, params)
        module.exit_json(changed=changed, manifest=entries)
    entries = swap(module, params)
    module.exit_json(changed=bool(params["files"]), manifest=entries, backup_dir=params["backup_dir"])


if __name__ == "__main__":
    main()
