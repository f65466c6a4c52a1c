"""``mssante-trustlist diff OLD NEW``: domains and CNs added or removed between two lists.

OLD and NEW are compiled directories (a generation, or an output directory with ``current``) or
XML files; an XML file is parsed safely but its signature is not checked (diff only informs).
Exit codes: 0 same domains and CNs, 1 different, 2 error.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mssante.trustlist import parse, signature
from mssante.trustlist.index import IndexLoadError, TrustIndex
from mssante.trustlist.model import Refusal

Snapshot = dict[str, tuple[str, frozenset[str]]]


def snapshot(path: Path) -> Snapshot:
    """Per A-label domain listed (local-only entries excluded): its U-label and lower-case CNs."""
    if path.is_dir():
        index = TrustIndex.load(path)
        return {
            e.a_label: (e.u_label, frozenset(cn.casefold() for cn in e.cns)) for e in index.entries() if e.dns
        }
    root = parse.parse_document(path.read_bytes())
    signature.strip_signature(root)
    trust_list = parse.extract(root, None)
    return {
        key: (d.u_label, frozenset(cn.casefold() for cn in d.cns)) for key, d in trust_list.domains.items()
    }


def compare(old: Snapshot, new: Snapshot) -> dict[str, list[dict[str, Any]]]:
    added = [{"domain": k, "cns": sorted(new[k][1])} for k in sorted(new.keys() - old.keys())]
    removed = [{"domain": k, "cns": sorted(old[k][1])} for k in sorted(old.keys() - new.keys())]
    changed = []
    for key in sorted(old.keys() & new.keys()):
        before, after = old[key][1], new[key][1]
        if before != after:
            changed.append(
                {"domain": key, "cns_added": sorted(after - before), "cns_removed": sorted(before - after)}
            )
    return {"added": added, "removed": removed, "changed": changed}


def diff_main(old_path: Path, new_path: Path, as_json: bool) -> int:
    try:
        result = compare(snapshot(old_path), snapshot(new_path))
    except (OSError, IndexLoadError, Refusal) as exc:
        print(f"mssante-trustlist diff: {exc}")
        return 2
    if as_json:
        print(json.dumps(result, ensure_ascii=False, indent=2))
    else:
        for item in result["added"]:
            print(f"+ {item['domain']}\t{' '.join(map(str, item['cns']))}")
        for item in result["removed"]:
            print(f"- {item['domain']}")
        for item in result["changed"]:
            print(f"~ {item['domain']}\t+{item['cns_added']} -{item['cns_removed']}")
    return 1 if any(result.values()) else 0
