"""Compile a verified trust list into a generation directory and switch ``current`` to it (TRUST-8).

Layout of the output directory::

    OUT/g-20261120T060000Z-1a2b3c4d/   index.json, transport(.db), tls_policy(.db),
                                        status.json -> ../status.json
    OUT/current -> g-…                  switched by renaming a new symbolic link over it (atomic)
    OUT/status.json                     last attempt and last success, rewritten atomically each attempt

A generation directory is complete (files fsynced) before the link moves, so a reader that opens
``current/index.json`` sees either the old or the new generation, never a mix or a missing file.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mssante.trustlist.index import CURRENT_LINK, INDEX_FILE, INDEX_SCHEMA
from mssante.trustlist.model import TrustList

GENERATION_PREFIX = "g-"
STAGING_PREFIX = ".staging-"
STATUS_FILE = "status.json"
TRANSPORT = "mssante:"
PROTOCOLS = ">=TLSv1.2"
# A CN that cannot be written in a policy table (separator or space) never matches: fail closed.
UNMATCHABLE = "unmatchable.invalid"
_MATCHABLE = re.compile(r"[^\s:]+\Z")
PRIVATE_MAIN_CF = "# private configuration of mssante-trustlist for postmap -c\ncompatibility_level = 3.6\n"


class CompileError(Exception):
    """The compiled files could not be produced (postmap failed, disk error)."""


def _timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def index_document(
    trust_list: TrustList, local_domains: Iterable[tuple[str, str]], source_sha256: str
) -> dict[str, Any]:
    """The ``index.json`` content: listed domains plus the local ones (``local: true``)."""
    domains: dict[str, Any] = {}
    for key in sorted(trust_list.domains):
        domain = trust_list.domains[key]
        domains[key] = {
            "u_label": domain.u_label,
            "cns": domain.cns,
            "dns": [cert.dn for cert in domain.certificates],
            "local": False,
        }
    for a_label, u_label in local_domains:
        entry = domains.setdefault(a_label, {"u_label": u_label, "cns": [], "dns": []})
        entry["local"] = True
    return {
        "schema": INDEX_SCHEMA,
        "generated": _timestamp(trust_list.generated),
        "source_sha256": source_sha256,
        "signer": trust_list.signer,
        "domains": dict(sorted(domains.items())),
    }


def index_bytes(document: dict[str, Any]) -> bytes:
    return (json.dumps(document, ensure_ascii=False, sort_keys=False, indent=None) + "\n").encode("utf-8")


def policy(cns: Iterable[str]) -> str:
    """The ``tls_policy`` value for a domain whose servers present ``cns``."""
    usable = [cn for cn in cns if _MATCHABLE.match(cn)] or [UNMATCHABLE]
    return f"secure match={':'.join(usable)} protocols={PROTOCOLS}"


def map_lines(document: dict[str, Any]) -> tuple[list[str], list[str]]:
    """Lines of the ``transport`` and ``tls_policy`` maps, keyed by A-label and U-label, local excluded."""
    transport, tls_policy = [], []
    for a_label, entry in document["domains"].items():
        if entry["local"]:
            continue
        value = policy(entry["cns"])
        for key in dict.fromkeys((a_label, entry["u_label"])):
            transport.append(f"{key} {TRANSPORT}")
            tls_policy.append(f"{key} {value}")
    return transport, tls_policy


def private_postfix_config(out_dir: Path) -> Path:
    """A minimal configuration directory for ``postmap -c`` when none is given."""
    directory = out_dir / ".postfix"
    directory.mkdir(mode=0o755, exist_ok=True)
    main_cf = directory / "main.cf"
    if not main_cf.exists() or main_cf.read_text(encoding="utf-8") != PRIVATE_MAIN_CF:
        main_cf.write_text(PRIVATE_MAIN_CF, encoding="utf-8")
        # Postfix waits for a configuration file written in the current second to settle: backdate it.
        past = datetime.now(UTC).timestamp() - 60
        os.utime(main_cf, (past, past))
    return directory


def postmap(config_dir: Path, *paths: Path) -> None:
    """Build each ``path.db`` with ``postmap -c config_dir hash:path`` (the maps in parallel)."""
    postmap_bin = shutil.which("postmap") or "/usr/sbin/postmap"
    running: list[tuple[Path, subprocess.Popen[str]]] = []
    try:
        for path in paths:
            argv = [postmap_bin, "-c", str(config_dir), f"hash:{path}"]
            running.append(
                (path, subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
            )
        for path, process in running:
            _, stderr = process.communicate(timeout=300)
            if process.returncode != 0:
                raise CompileError(f"postmap failed on {path.name}: {stderr.strip()}")
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CompileError(f"postmap could not run: {exc}") from exc
    finally:
        for _, process in running:
            if process.poll() is None:
                process.kill()
                process.wait()


def _write(path: Path, data: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def current_target(out_dir: Path) -> Path | None:
    """The generation directory ``current`` points to, or None."""
    try:
        return out_dir / os.readlink(out_dir / CURRENT_LINK)
    except OSError:
        return None


def build_generation(
    out_dir: Path,
    document: dict[str, Any],
    postfix_config_dir: Path | None,
    now: datetime,
    data: bytes | None = None,
) -> Path:
    """Write a complete generation directory (not yet current) and return it."""
    out_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
    config_dir = postfix_config_dir or private_postfix_config(out_dir)
    staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=out_dir))
    try:
        os.chmod(staging, 0o755)  # noqa: S103 - Postfix (another user) reads the maps
        _write(staging / INDEX_FILE, data if data is not None else index_bytes(document))
        transport, tls_policy = map_lines(document)
        for name, lines in (("transport", transport), ("tls_policy", tls_policy)):
            _write(staging / name, ("\n".join(lines) + "\n").encode("utf-8"))
        postmap(config_dir, staging / "transport", staging / "tls_policy")
        for name in ("transport", "tls_policy"):
            os.chmod(staging / f"{name}.db", 0o644)
        os.symlink(f"../{STATUS_FILE}", staging / STATUS_FILE)
        for child in staging.iterdir():
            if child.is_file() and not child.is_symlink():
                with open(child, "rb") as handle:
                    os.fsync(handle.fileno())
        _fsync_dir(staging)
        digest = document["source_sha256"][:8]
        final = out_dir / f"{GENERATION_PREFIX}{now.astimezone(UTC):%Y%m%dT%H%M%S%fZ}-{digest}"
        os.rename(staging, final)
        return final
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def switch(out_dir: Path, generation: Path) -> None:
    """Point ``current`` at ``generation`` atomically (rename of a new link over the old one)."""
    temporary = out_dir / f".{CURRENT_LINK}.{os.getpid()}.{generation.name}"
    if temporary.is_symlink():
        temporary.unlink()
    os.symlink(generation.name, temporary)
    os.replace(temporary, out_dir / CURRENT_LINK)
    _fsync_dir(out_dir)


def prune(out_dir: Path, keep: int) -> list[str]:
    """Remove all but the ``keep`` newest generations (never the current one) and stale staging dirs."""
    current = current_target(out_dir)
    generations = sorted(
        (p for p in out_dir.iterdir() if p.name.startswith(GENERATION_PREFIX) and p.is_dir()),
        key=lambda p: p.name,
        reverse=True,
    )
    removed = []
    for path in generations[max(keep, 1) :]:
        if current is not None and path.name == current.name:
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path.name)
    for path in out_dir.glob(f"{STAGING_PREFIX}*"):
        if path.is_dir() and not _recent(path):
            shutil.rmtree(path, ignore_errors=True)
    return removed


def _recent(path: Path, seconds: float = 3600.0) -> bool:
    try:
        return datetime.now(UTC).timestamp() - path.stat().st_mtime < seconds
    except OSError:
        return False
