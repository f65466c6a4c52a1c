#!/usr/bin/python
"""Structured, idempotent edits of a Postfix instance's main.cf, master.cf and small maps."""

from __future__ import annotations

import os
import re
import shutil
import tempfile

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: mssante_postconf
short_description: Compute and stage a Postfix instance's main.cf, master.cf and maps
description:
  - Applies a list of C({name, value, state}) main.cf settings and master.cf service entries
    to a base (the live files, or an empty file for a clean instance) with C(postconf) itself
    in a scratch directory, then compares the result with the live configuration directory.
  - Writes the result to O(dest_dir) (a staging directory) or, when O(dest_dir) equals
    O(config_dir), straight into the live files. Supports check mode and diff.
  - Optionally removes an instance's claims on domains (mydestination, relay_domains,
    virtual_*_domains entries and keys of map files inside the configuration directory).
options:
  config_dir:
    description: Live configuration directory.
    type: path
    required: true
  dest_dir:
    description: Where the result is written; a staging directory is emptied first.
    type: path
  main_base:
    description: C(existing) edits the live main.cf; C(empty) starts from Postfix defaults.
    type: str
    default: existing
    choices: [existing, empty]
  master_base:
    description: As O(main_base), for master.cf.
    type: str
    default: existing
    choices: [existing, empty]
  header:
    description: Comment written at the top of a file built from an empty base.
    type: str
    default: ""
  main:
    description: "main.cf settings: name, value, state (present/absent)."
    type: list
    elements: dict
    default: []
  master:
    description: >-
      master.cf entries: name (service/type) or service and type, private, unpriv, chroot,
      wakeup, maxproc, command, args, state.
    type: list
    elements: dict
    default: []
  files:
    description: "Other files of the directory: name, content, postmap (map type or null), state."
    type: list
    elements: dict
    default: []
  remove_domain_claims:
    description: Domains this instance must no longer claim.
    type: list
    elements: str
    default: []
  claim_parameters:
    description: Parameters whose entries and map keys are claims.
    type: list
    elements: str
author: MSSanté appliance
"""

EXAMPLES = r"""
- name: Stage the MSSanté instance
  mssante_postconf:
    config_dir: /etc/postfix-mssante
    dest_dir: /var/lib/mssante/stage/postfix-mssante
    main_base: empty
    master_base: empty
    main:
      - {name: default_transport, value: "error:domain not in the MSSanté trust space"}
"""

RETURN = r"""
changed_files:
  description: Files (relative names) whose desired content differs from the live one.
  type: list
  returned: always
postmap: {description: "Maps to rebuild after a swap: {name, type}.", type: list, returned: always}
claims: {description: Claims found and removed (parameter, entries, maps)., type: list, returned: always}
warnings_found: {description: Claims that could not be removed automatically., type: list, returned: always}
"""

MAP_TYPES = ("hash", "btree", "lmdb", "cdb", "dbm", "texthash")
DEFAULT_CLAIM_PARAMETERS = [
    "mydestination",
    "relay_domains",
    "virtual_alias_domains",
    "virtual_mailbox_domains",
    "transport_maps",
    "relay_recipient_maps",
]
MASTER_COLUMNS = ("private", "unpriv", "chroot", "wakeup", "maxproc")


def _yesno(value):
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):
        return ", ".join(_yesno(v) for v in value)
    return "" if value is None else str(value)


def _read(path):
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def _postconf(module, scratch, args):
    cmd = [module.get_bin_path("postconf", required=True), "-c", scratch, *args]
    rc, out, err = module.run_command(cmd, environ_update={"LC_ALL": "C"})
    if rc != 0:
        module.fail_json(msg="postconf failed", cmd=cmd, stdout=out, stderr=err)
    return out


def _master_key(entry):
    if entry.get("name"):
        service, _, kind = entry["name"].rpartition("/")
        return service, kind
    return entry["service"], entry["type"]


def _master_line(entry):
    cols = list(_master_key(entry))
    cols += [_master_col(entry.get(col)) for col in MASTER_COLUMNS]
    cols.append(entry["command"])
    for arg in entry.get("args") or []:
        cols.append(str(arg))
    return " ".join(cols)


def _master_col(value):
    if value is None or value == "-":
        return "-"
    if isinstance(value, bool):
        return "y" if value else "n"
    return str(value)


def _empty_main(params):
    lines = [f"# {line}".rstrip() for line in params["header"].splitlines()]
    for item in params["main"]:
        if item.get("state", "present") == "present":
            lines.append(f"{item['name']} = {_yesno(item.get('value'))}".rstrip())
    return "\n".join(lines) + "\n"


def _apply_main(module, scratch, params):
    present, absent = [], []
    for item in params["main"]:
        if item.get("state", "present") == "absent":
            absent.append(item["name"])
        else:
            present.append(f"{item['name']}={_yesno(item.get('value'))}")
    if present:
        _postconf(module, scratch, ["-e", *present])
    if absent:
        _postconf(module, scratch, ["-X", *absent])


def _apply_master(module, scratch, params):
    for entry in params["master"]:
        key = "/".join(_master_key(entry))
        if entry.get("state", "present") == "absent":
            _postconf(module, scratch, ["-MX", key])
        else:
            _postconf(module, scratch, ["-M", f"{key}={_master_line(entry)}"])


def _split_list(value):
    return [item for item in re.split(r"[\s,]+", value) if item]


def _is_claim(key, domains):
    key = key.lower().rstrip(".")
    return any(key == d or key == "." + d for d in domains)


def _strip_map(text, domains):
    kept, removed, drop = [], [], False
    for line in text.splitlines(keepends=True):
        if line[:1] in (" ", "\t") and line.strip() and not line.lstrip().startswith("#"):
            if not drop:
                kept.append(line)
            continue
        drop = False
        fields = line.split()
        if fields and not fields[0].startswith("#") and _is_claim(fields[0], domains):
            drop = True
            removed.append(fields[0])
            continue
        kept.append(line)
    return "".join(kept), removed


def _remove_claims(module, scratch, params, files, postmaps):
    domains = [d.lower().rstrip(".") for d in params["remove_domain_claims"]]
    claims, warnings = [], []
    if not domains:
        return claims, warnings
    config_dir = os.path.realpath(params["config_dir"])
    for name in params["claim_parameters"] or DEFAULT_CLAIM_PARAMETERS:
        value = _postconf(module, scratch, ["-nh", name]).strip()
        if not value:
            continue
        kept, removed, maps = [], [], []
        for item in _split_list(value):
            if _is_claim(item, domains):
                removed.append(item)
                continue
            kept.append(item)
            kind, _, path = item.partition(":")
            if not path or kind not in MAP_TYPES:
                continue
            map_claims = _claim_map(config_dir, kind, path, domains=domains, files=files, postmaps=postmaps)
            if map_claims is None:
                warnings.append(f"{name}: {item} is outside {config_dir}; check it by hand")
            elif map_claims:
                maps.append({"map": item, "keys": map_claims})
        if removed:
            _postconf(module, scratch, ["-e", f"{name}={', '.join(kept)}"])
        if removed or maps:
            claims.append({"parameter": name, "entries": removed, "maps": maps})
    return claims, warnings


def _claim_map(config_dir, kind, path, *, domains, files, postmaps):
    real = os.path.realpath(path)
    if os.path.dirname(real) != config_dir:
        return None if os.path.exists(real) else []
    rel = os.path.basename(real)
    text = files.get(rel, _read(real))
    if text is None:
        return []
    new_text, removed = _strip_map(text, domains)
    if removed:
        files[rel] = new_text
        if kind != "texthash":
            postmaps[rel] = kind
    return removed


def _desired(module, params):
    live = params["config_dir"]
    files, postmaps = {}, {}
    scratch = tempfile.mkdtemp(prefix="mssante-postconf-")
    try:
        if params["main_base"] == "empty":
            main = _empty_main(params)
        else:
            main = _read(os.path.join(live, "main.cf")) or ""
        with open(os.path.join(scratch, "main.cf"), "w", encoding="utf-8") as handle:
            handle.write(main)
        master = "" if params["master_base"] == "empty" else (_read(os.path.join(live, "master.cf")) or "")
        if params["master_base"] == "empty" and params["header"]:
            master = "".join(f"# {line}".rstrip() + "\n" for line in params["header"].splitlines())
        with open(os.path.join(scratch, "master.cf"), "w", encoding="utf-8") as handle:
            handle.write(master)
        if params["main_base"] != "empty":
            _apply_main(module, scratch, params)
        _apply_master(module, scratch, params)
        claims, warnings = _remove_claims(module, scratch, params, files, postmaps)
        files["main.cf"] = _read(os.path.join(scratch, "main.cf"))
        files["master.cf"] = _read(os.path.join(scratch, "master.cf"))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    for item in params["files"]:
        if item.get("state", "present") == "absent":
            files[item["name"]] = None
            continue
        files[item["name"]] = item.get("content") or ""
        if item.get("postmap"):
            postmaps[item["name"]] = item["postmap"]
    return files, postmaps, claims, warnings


def _write(path, text, mode=0o644):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".mssante-")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def _map_db_missing(live, name, kind):
    if kind in ("texthash",):
        return False
    suffix = {"lmdb": ".lmdb", "cdb": ".cdb"}.get(kind, ".db")
    return not os.path.exists(os.path.join(live, name + suffix))


def main():
    module = AnsibleModule(
        argument_spec={
            "config_dir": {"type": "path", "required": True},
            "dest_dir": {"type": "path"},
            "main_base": {"type": "str", "default": "existing", "choices": ["existing", "empty"]},
            "master_base": {"type": "str", "default": "existing", "choices": ["existing", "empty"]},
            "header": {"type": "str", "default": ""},
            "main": {"type": "list", "elements": "dict", "default": []},
            "master": {"type": "list", "elements": "dict", "default": []},
            "files": {"type": "list", "elements": "dict", "default": []},
            "remove_domain_claims": {"type": "list", "elements": "str", "default": []},
            "claim_parameters": {"type": "list", "elements": "str"},
        },
        supports_check_mode=True,
    )
    params = module.params
    live = params["config_dir"]
    dest = params["dest_dir"] or live
    files, postmaps, claims, warnings = _desired(module, params)
    changed_files, diffs = [], []
    for name, text in files.items():
        before = _read(os.path.join(live, name))
        if before != text:
            changed_files.append(name)
            diffs.append(
                {
                    "before_header": os.path.join(live, name),
                    "after_header": os.path.join(live, name),
                    "before": before or "",
                    "after": text or "",
                }
            )
    for name, kind in postmaps.items():
        if name not in changed_files and _map_db_missing(live, name, kind):
            changed_files.append(name)
    postmap_list = [{"name": n, "type": k} for n, k in postmaps.items() if n in changed_files]
    if not module.check_mode and dest != live:
        shutil.rmtree(dest, ignore_errors=True)
        os.makedirs(dest, mode=0o755)
    if not module.check_mode:
        for name, text in files.items():
            target = os.path.join(dest, name)
            if text is not None and (dest != live or name in changed_files):
                _write(target, text)
            elif text is None and dest == live and os.path.exists(target):
                os.unlink(target)
    module.exit_json(
        changed=bool(changed_files),
        changed_files=sorted(changed_files),
        postmap=postmap_list,
        claims=claims,
        warnings_found=warnings,
        diff=diffs,
    )


if __name__ == "__main__":
    main()
