"""Journal records built by the milter (TRACE-1): identifiers and digests, never content."""

from __future__ import annotations

from typing import Any

from mssante.mdn import Receipt
from mssante.milter.message import Message
from mssante.milter.policy import Session
from mssante.milter.reasons import Decision, Direction


def _session_fields(session: Session, direction: Direction) -> dict[str, Any]:
    return {
        "direction": direction.value,
        "port": session.port,
        "client_address": session.client_address,
        "tls_version": session.tls_version,
        "tls_cipher": session.tls_cipher,
        "peer_cn": session.peer_cn,
        "peer_issuer": session.peer_issuer,
        "auth_identity": session.auth_identity,
    }


def accepted(session: Session, direction: Direction, message: Message, decision: Decision) -> dict[str, Any]:
    return {
        "type": "accepted",
        "queue_id": message.queue_id,
        "message_id": message.message_id,
        "mail_from": message.sender,
        "rcpts": [{"address": rcpt, "status": "accepted"} for rcpt in message.accepted],
        **_session_fields(session, direction),
        "size": message.size,
        "body_sha256": message.body.digest.hexdigest(),
        "headers_sha256": message.header_digest.hexdigest(),
        "decision": decision.action.value,
        "reason": decision.reason.value,
        "reply": decision.reply,
    }


def refused(
    *,
    session: Session,
    direction: Direction,
    sender: str | None,
    rcpts: list[str],
    decision: Decision,
    message: Message | None = None,
    reply: str | None = None,
) -> dict[str, Any]:
    return {
        "type": "refused",
        "queue_id": message.queue_id if message else None,
        "message_id": message.message_id if message else None,
        "mail_from": sender,
        "rcpts": [{"address": rcpt, "status": "refused"} for rcpt in rcpts] or None,
        **_session_fields(session, direction),
        "decision": decision.action.value,
        "reason": decision.reason.value,
        "reply": reply or decision.reply,
    }


def mdn(message: Message, receipt: Receipt) -> dict[str, Any]:
    """A read receipt (MSG-3) against the original Message-ID; the receipt's text is not kept."""
    return {
        "type": "mdn",
        "original_message_id": receipt.original_message_id,
        "disposition": receipt.disposition,
        "message_id": message.message_id,
        "queue_id": message.queue_id,
        "mail_from": message.sender,
        "rcpt": ", ".join(message.accepted)[:2048] or None,
    }
