"""`python3 -m mssante.lab up|down|status --dir DIR [--json]`: the built-in lab (docs/lab.md).

`up` builds the test PKI, starts (or keeps) the lab's Postfix instance with mutual TLS, sends one
message across it as the peer operator (client certificate from the test PKI), tries the impostor
(same CN, foreign CA), and prints what happened. `changed` in the JSON output is true only when
files or the running instance changed, so a rerun reports no change. `down` stops and removes it all.
"""

from __future__ import annotations

import argparse
import json
import re
import smtplib
import ssl
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import Any

from mssante.lab import instance
from mssante.lab.instance import Endpoint, LabPaths
from mssante.lab.pki import Leaf, Pki, ensure_pki

SENDER = "dr.durand@clinique-b.mssante.test"
RECIPIENT = f"dr.martin@{instance.LOCAL_DOMAIN}"


@dataclass(frozen=True)
class Attempt:
    """One SMTP transaction of the demonstration, as a client certificate's holder saw it."""

    certificate: str
    reply_code: int
    reply: str
    tls_version: str | None


@dataclass(frozen=True)
class Delivery:
    file: str
    verified_peer_cn: str | None
    issuer_cn: str | None
    tls: str | None


def _context(pki: Pki, leaf: Leaf) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki.chain))
    context.check_hostname = False  # the lab listens on a loopback address, not on the CN
    context.load_cert_chain(str(leaf.fullchain), str(leaf.key))
    return context


def _text(reply: bytes | str) -> str:
    return reply.decode(errors="replace") if isinstance(reply, bytes) else reply


def send_as(pki: Pki, leaf: Leaf, listen: Endpoint, message_id: str) -> Attempt:
    """Send one message to the lab with ``leaf`` as client certificate; the final reply."""
    body = (
        f"From: <{SENDER}>\r\nTo: <{RECIPIENT}>\r\nSubject: MSSante lab message\r\n"
        f"Message-ID: {message_id}\r\nDate: {formatdate()}\r\n\r\nHello from the lab.\r\n"
    ).encode()
    with smtplib.SMTP(listen.address, listen.port, local_hostname=leaf.cn, timeout=30) as client:
        client.starttls(context=_context(pki, leaf))
        sock = client.sock
        version = sock.version() if isinstance(sock, ssl.SSLSocket) else None
        try:
            client.sendmail(SENDER, [RECIPIENT], body)
        except smtplib.SMTPRecipientsRefused as refused:
            code, text = refused.recipients[RECIPIENT]
            return Attempt(leaf.name, code, _text(text), version)
        except smtplib.SMTPResponseException as error:
            return Attempt(leaf.name, error.smtp_code, _text(error.smtp_error), version)
    return Attempt(leaf.name, 250, "accepted", version)


def find_delivery(paths: LabPaths, message_id: str, timeout: float = 30) -> Delivery:
    """Wait for the message in the recipient's Maildir and read the TLS facts Postfix recorded."""
    maildir = paths.mail_dir / instance.LOCAL_DOMAIN / RECIPIENT.split("@", maxsplit=1)[0] / "new"
    found: list[Path] = []

    def delivered() -> bool:
        found[:] = [path for path in maildir.glob("*") if message_id.encode() in path.read_bytes()]
        return bool(found)

    instance.wait_for(delivered, timeout, "the lab message in the Maildir")
    text = found[0].read_text(errors="replace")
    peer = re.search(r'Client CN "([^"]+)", Issuer "([^"]+)" \(verified OK\)', text)
    tls = re.search(r"\(using (TLSv[\d.]+) with cipher (\S+)", text)
    return Delivery(
        file=str(found[0]),
        verified_peer_cn=peer.group(1) if peer else None,
        issuer_cn=peer.group(2) if peer else None,
        tls=f"{tls.group(1)} {tls.group(2)}" if tls else None,
    )


def up(paths: LabPaths) -> dict[str, Any]:
    paths.root.mkdir(mode=0o755, parents=True, exist_ok=True)
    paths.root.chmod(0o755)
    pki = ensure_pki(paths.pki)
    listen = instance.endpoint(paths)
    reconfigured = instance.configure(paths, pki, listen)
    restarted = instance.ensure_running(paths, listen, reconfigured or bool(pki.changed))
    message_id = make_msgid(domain="lab.mssante.test")
    peer = send_as(pki, pki.peer, listen, message_id)
    delivery = find_delivery(paths, message_id) if peer.reply_code == 250 else None
    impostor = send_as(pki, pki.impostor, listen, make_msgid(domain="lab.mssante.test"))
    result = {
        "changed": bool(pki.changed) or reconfigured or restarted,
        "listener": f"{listen.address}:{listen.port}",
        "peer": asdict(peer),
        "delivery": asdict(delivery) if delivery else None,
        "impostor": asdict(impostor),
        "paths": {
            "lab": str(paths.root),
            "pki": str(paths.pki),
            "postfix_config": str(paths.config_dir),
            "log": str(paths.log_file),
            "mail": str(paths.mail_dir),
        },
    }
    result["summary"] = summary(result, pki)
    return result


def summary(result: dict[str, Any], pki: Pki) -> list[str]:
    delivery = result["delivery"] or {}
    peer, impostor = result["peer"], result["impostor"]
    return [
        f"Postfix (mutual TLS, IGC-Santé test chain only) listens on {result['listener']}",
        f"peer {pki.peer.cn} ({pki.peer.domain}) -> {RECIPIENT}: {peer['reply_code']} {peer['reply']}"
        f" over {peer['tls_version']}",
        f"verified peer CN: {delivery.get('verified_peer_cn')} (issuer {delivery.get('issuer_cn')}),"
        f" TLS {delivery.get('tls')}",
        f"delivered to: {delivery.get('file')}",
        f"impostor {pki.impostor.cn} (issued by {pki.foreign_ca.cn}): refused with"
        f" {impostor['reply_code']} {impostor['reply']}",
        f"files: PKI {result['paths']['pki']}, Postfix {result['paths']['postfix_config']},"
        f" log {result['paths']['log']}",
    ]


def status(paths: LabPaths) -> dict[str, Any]:
    running = instance.master_pid(paths) is not None
    return {"changed": False, "running": running, "lab": str(paths.root), "exists": paths.root.exists()}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m mssante.lab", description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("up", "down", "status"))
    parser.add_argument("--dir", required=True, type=Path, help="the lab directory (e.g. .lab)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    paths = LabPaths(args.dir.absolute())
    if args.action == "up":
        result = up(paths)
    elif args.action == "down":
        result = {"changed": instance.remove(paths), "lab": str(paths.root)}
    else:
        result = status(paths)
    if args.json:
        sys.stdout.write(json.dumps(result, indent=2, sort_keys=True) + "\n")
    else:
        lines = result.get("summary") or [f"{key}: {value}" for key, value in result.items()]
        sys.stdout.write("\n".join(lines) + "\n")
    ok = args.action != "up" or (result["delivery"] is not None and result["impostor"]["reply_code"] >= 500)
    return 0 if ok else 1
