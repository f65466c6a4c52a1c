"""Read receipts (RFC 8098 MDNs, MSG-3): which message a receipt answers, and its disposition.

Pure: raw message bytes in, a small value out. Only the two fields the journal records are read;
nothing of the receipt's human-readable part is kept.
"""

from __future__ import annotations

import email
import email.policy
import re
from dataclasses import dataclass
from email.message import Message

MAX_MDN_BYTES = 256 * 1024
MAX_ID_LENGTH = 998  # RFC 5322 line length: a longer "Message-ID" is no identifier
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# RFC 8098 section 3.2.6: disposition-type after the action and sending modes.
_DISPOSITION = re.compile(
    r"^\s*(?P<action>manual-action|automatic-action)\s*/\s*(?P<sending>MDN-sent-manually|MDN-sent-automatically)"
    r"\s*;\s*(?P<type>displayed|deleted|dispatched|processed)\b",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Receipt:
    original_message_id: str
    disposition: str  # e.g. "displayed", "deleted", "dispatched", "processed"
    action: str  # "manual-action" or "automatic-action"


def is_mdn_content_type(content_type: str) -> bool:
    """Whether a Content-Type header value announces an MDN (decides if the body is worth keeping)."""
    value = content_type.lower().replace(" ", "")
    return value.startswith("multipart/report") and "report-type=disposition-notification" in value.replace(
        '"', ""
    )


def parse_receipt(raw: bytes) -> Receipt | None:
    """The receipt carried by a whole message (headers and body), or ``None`` when it is not an MDN."""
    if len(raw) > MAX_MDN_BYTES:
        return None
    message = email.message_from_bytes(raw, policy=email.policy.compat32)
    if not is_mdn_content_type(str(message.get("Content-Type", ""))):
        return None
    for part in message.walk():
        if part.get_content_type() == "message/disposition-notification":
            return _from_report(part)
    return None


def _report_fields(part: Message) -> Message | None:
    payload = part.get_payload()
    if isinstance(payload, list):  # the email package parsed the report as a list of header blocks
        fields = Message()
        for block in payload:
            if isinstance(block, Message):
                for name, value in block.items():
                    fields[name] = value
        return fields
    if isinstance(payload, str):
        return email.message_from_string(payload, policy=email.policy.compat32)
    return None


def _from_report(part: Message) -> Receipt | None:
    fields = _report_fields(part)
    if fields is None:
        return None
    original = " ".join(str(fields.get("Original-Message-ID", "")).split())
    match = _DISPOSITION.match(str(fields.get("Disposition", "")))
    if not original or len(original) > MAX_ID_LENGTH or _CONTROL.search(original) or match is None:
        return None
    return Receipt(original, match["type"].lower(), match["action"].lower())
