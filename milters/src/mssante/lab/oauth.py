"""OAuth 2 in the lab: the introspection server inside the hospital and the token command (AUTH-1).

The hospital's Dovecot (after conversion) asks ``mssante.oauth.introspect`` on 127.0.0.1:8089 inside the
hospital host whether a bearer token is active and whose it is (its ``sub`` claim, the owner identity of
the mailbox table). The server reads DIR/oauth/tokens.json on every request; ``python3 -m mssante.lab
token --dir DIR MAILBOX`` adds a fresh token for the first owner of MAILBOX (from lab.json) and prints
it, so a client logs in with XOAUTH2 as that owner. Tokens are opaque to Dovecot; they are shaped like
Pro Santé Connect's JWTs and of the same size (about 3.5 KB), so line-length limits show up in the lab.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from mssante.lab.hosts import Host
from mssante.lab.system import alive, listening, wait_until

LISTEN_ADDRESS = "127.0.0.1"  # inside the hospital: only its Dovecot asks
LISTEN_PORT = 8089
INTROSPECTION_URL = f"http://{LISTEN_ADDRESS}:{LISTEN_PORT}/introspect"
TOKEN_LIFETIME = 3600  # seconds
TOKEN_SIGNATURE_BYTES = 2400  # with header and claims: about 3.5 KB, like a real token
ISSUER = "https://lab.mssante.test/auth/realms/lab"


class UnknownMailbox(LookupError):
    """The mailbox is not an MSSanté mailbox of the lab's hospital (or has no owner)."""


def oauth_dir(root: Path) -> Path:
    return root / "oauth"


def tokens_file(root: Path) -> Path:
    return oauth_dir(root) / "tokens.json"


def _pid_file(root: Path) -> Path:
    return oauth_dir(root) / "introspect.pid"


def token_command(root: Path) -> list[str]:
    """lab.json's ``oauth.token_command``: an argv whose last item is ``{mailbox}``."""
    return [sys.executable, "-m", "mssante.lab", "token", "--dir", str(root), "{mailbox}"]


def owner_of(document: Mapping[str, Any], mailbox: str) -> str:
    """The first owner identity of a hospital mailbox in lab.json (the token's ``sub``)."""
    for box in document["hosts"]["hospital"]["mailboxes"]:
        if str(box["address"]).lower() == mailbox.lower() and box.get("owners"):
            return str(box["owners"][0])
    raise UnknownMailbox(f"{mailbox}: not an MSSante mailbox of the lab's hospital with an owner")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def make_token(claims: Mapping[str, Any]) -> str:
    """A JWT-shaped opaque token carrying ``claims`` (its signature is random: only introspection counts)."""
    header = _b64(json.dumps({"alg": "RS256", "typ": "JWT", "kid": "lab"}).encode())
    payload = _b64(json.dumps(dict(claims), sort_keys=True).encode())
    return f"{header}.{payload}.{_b64(secrets.token_bytes(TOKEN_SIGNATURE_BYTES))}"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    lock = path.with_name(path.name + ".lock")
    with lock.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _read_tokens(path: Path) -> dict[str, Any]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    tokens = document.get("tokens") if isinstance(document, dict) else None
    return dict(tokens) if isinstance(tokens, dict) else {}


def _write_tokens(path: Path, tokens: Mapping[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"tokens": dict(tokens)}) + "\n", encoding="utf-8")
    tmp.chmod(0o600)
    os.replace(tmp, path)


def mint(root: Path, mailbox: str, lifetime: float = TOKEN_LIFETIME, now: float | None = None) -> str:
    """A new token for the owner of ``mailbox``, active ``lifetime`` seconds; expired ones are dropped."""
    document = json.loads((root / "lab.json").read_text())
    subject = owner_of(document, mailbox)
    now = time.time() if now is None else now
    claims = {"sub": subject, "exp": int(now + lifetime), "iat": int(now), "iss": ISSUER, "scope": "openid"}
    token = make_token(claims)
    path = tokens_file(root)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with _locked(path):
        kept = {key: value for key, value in _read_tokens(path).items() if value.get("exp", 0) > now}
        kept[token] = claims
        _write_tokens(path, kept)
    return token


# ---- the introspection server inside the hospital ---------------------------------------------------
def introspection_pid(host: Host, root: Path) -> int | None:
    try:
        pid = int(_pid_file(root).read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if alive(pid) and pid in host.namespace_pids() else None


def ensure_introspection(host: Host, root: Path) -> bool:
    """Start the introspection server inside ``host`` unless it runs; True when it was started."""
    if introspection_pid(host, root) is not None:
        return False
    path = tokens_file(root)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not path.exists():
        with _locked(path):
            _write_tokens(path, {})
    source = str(Path(__file__).resolve().parents[2])  # milters/src: importable inside the host too
    log = (oauth_dir(root) / "introspect.log").open("ab")
    with log:
        process = host.popen(
            [
                "env",
                f"PYTHONPATH={source}",
                sys.executable,
                "-m",
                "mssante.oauth.introspect",
                "--listen",
                f"{LISTEN_ADDRESS}:{LISTEN_PORT}",
                "--tokens",
                str(path),
            ],
            start_new_session=True,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
    wait_until(
        lambda: process.poll() is not None or listening(LISTEN_ADDRESS, LISTEN_PORT, host.proc_net),
        30,
        "the lab's introspection server",
    )
    if process.poll() is not None:
        raise RuntimeError(f"the lab's introspection server exited {process.returncode}")
    # nsenter (no --pid) and env exec their successor: the launched pid is the server's.
    _pid_file(root).write_text(f"{process.pid}\n")
    return True
