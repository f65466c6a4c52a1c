"""A small RFC 7662 token-introspection endpoint for the lab and the tests.

It stands in for Pro Santé Connect's introspection endpoint: Dovecot's ``oauth2`` passdb asks it whether
a bearer token is active and who it belongs to. Tokens live in a JSON file, re-read on every request so
that a test can add or expire a token without restarting the server::

    {"tokens": {"<opaque token>": {"sub": "810001234567", "exp": 1767225600, "scope": "openid mssante"}}}

A token is active when it is listed and its ``exp`` (seconds since the epoch) lies in the future. The
answer to an active token is its claims plus ``"active": true``; any other token gets ``{"active": false}``,
as RFC 7662 section 2.2 prescribes. The three request shapes Dovecot 2.3 uses are accepted:
``introspection_mode = post`` (form field ``token``), ``auth`` (``Authorization: Bearer``) and ``get``
(token appended to the URL, ``?token=`` or raw).

Command line: ``python3 -m mssante.oauth.introspect --listen 127.0.0.1:0 --tokens FILE [--ready-file F]``;
the ready file receives ``host:port`` once the socket listens (useful with port 0).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

MAX_BODY = 65536
INACTIVE: Mapping[str, Any] = {"active": False}


@dataclass(frozen=True)
class TokenStore:
    """The tokens file; read on every lookup so that its owner may rewrite it at any time."""

    path: Path

    def lookup(self, token: str, now: float) -> Mapping[str, Any]:
        """The RFC 7662 answer for ``token`` at time ``now``."""
        try:
            document = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return INACTIVE
        tokens = document.get("tokens", {}) if isinstance(document, dict) else {}
        claims = tokens.get(token) if isinstance(tokens, dict) else None
        if not isinstance(claims, dict):
            return INACTIVE
        expires = claims.get("exp")
        if not isinstance(expires, int | float) or expires <= now:
            return INACTIVE
        return {**claims, "active": True}


def token_from_request(path: str, headers: Mapping[str, str], body: bytes) -> str | None:
    """The bearer token carried by an introspection request, in any of Dovecot's three modes."""
    authorization = headers.get("Authorization", "")
    if authorization.lower().startswith("bearer "):
        return authorization[7:].strip() or None
    form = parse_qs(body.decode("ascii", errors="replace"))
    if form.get("token"):
        return form["token"][0]
    parts = urlsplit(path)
    query = parse_qs(parts.query)
    if query.get("token"):
        return query["token"][0]
    if parts.query and "=" not in parts.query:
        return unquote(parts.query)
    return None


def make_handler(store: TokenStore, clock: Callable[[], float] = time.time) -> type[BaseHTTPRequestHandler]:
    """A request handler class bound to ``store``."""

    class Handler(BaseHTTPRequestHandler):
        server_version = "mssante-introspect/1"

        def _answer(self) -> None:
            length = min(int(self.headers.get("Content-Length") or 0), MAX_BODY)
            body = self.rfile.read(length) if length > 0 else b""
            token = token_from_request(self.path, dict(self.headers.items()), body)
            answer = store.lookup(token, clock()) if token else INACTIVE
            payload = json.dumps(answer).encode("utf-8")
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def do_POST(self) -> None:
            self._answer()

        def do_GET(self) -> None:
            self._answer()

        def log_message(self, format: str, *args: Any) -> None:
            """Never log tokens or paths (they may carry a token)."""

    return Handler


def parse_listen(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return host, int(port)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python3 -m mssante.oauth.introspect", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--listen", required=True, type=parse_listen, help="HOST:PORT (0: any free port)")
    parser.add_argument("--tokens", required=True, type=Path, help="JSON file of tokens and their claims")
    parser.add_argument("--ready-file", type=Path, help="written with HOST:PORT once listening")
    args = parser.parse_args(argv)
    server = ThreadingHTTPServer(args.listen, make_handler(TokenStore(args.tokens)))
    host, port = str(server.server_address[0]), int(server.server_address[1])
    if args.ready_file is not None:
        tmp = args.ready_file.with_name(args.ready_file.name + ".tmp")
        tmp.write_text(f"{host}:{port}\n", encoding="ascii")
        tmp.replace(args.ready_file)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
