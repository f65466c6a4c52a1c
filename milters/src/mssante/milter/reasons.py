"""Expected outcomes of the trust decision as values: :class:`Decision` with a closed :class:`Reason`.

Policy refusals answer ``550 5.7.1`` (``5.6.0`` for content), internal faults ``451 4.7.0``
(fail closed, design.md "The trust decision"). Each reason has one human sentence.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace


class Direction(enum.Enum):
    """Where a transaction comes from, told by the listener port (``{daemon_port}``)."""

    INBOUND = "inbound"  # peer operators, port 25
    OUTBOUND = "outbound"  # local users and applications, port 587
    UNKNOWN = "unknown"


class Action(enum.Enum):
    """What the milter answers Postfix."""

    CONTINUE = "continue"
    ACCEPT = "accept"
    REFUSE = "refuse"
    TEMPFAIL = "tempfail"


class Reason(enum.Enum):
    """Closed list of decision reasons (docs/milter.md lists each with its reply)."""

    ACCEPTED = "accepted"
    TLS_REQUIRED = "tls-required"
    PEER_CERT_MISSING = "peer-cert-missing"
    SENDER_DOMAIN_NOT_LISTED = "sender-domain-not-listed"
    SENDER_DOMAIN_LOCAL = "sender-domain-local"
    PEER_CN_NOT_LISTED_FOR_DOMAIN = "peer-cn-not-listed-for-domain"
    PEER_CN_NOT_LISTED = "peer-cn-not-listed"
    RECIPIENT_NOT_LOCAL = "recipient-not-local"
    RECIPIENT_UNKNOWN = "recipient-unknown"
    NOT_AUTHENTICATED = "not-authenticated"
    SENDER_NOT_MAILBOX = "sender-not-mailbox"
    SENDER_NOT_OWNED = "sender-not-owned"
    RECIPIENT_NOT_IN_TRUST_SPACE = "recipient-not-in-trust-space"
    UNKNOWN_LISTENER = "unknown-listener"
    BAD_ADDRESS = "bad-address"
    REJECTED_BY_MTA = "rejected-by-mta"
    LINE_TOO_LONG = "line-too-long"
    MISSING_MACRO = "missing-macro"
    TRUSTLIST_UNAVAILABLE = "trustlist-unavailable"
    JOURNAL_UNAVAILABLE = "journal-unavailable"
    INTERNAL_ERROR = "internal-error"


SENTENCES: dict[Reason, str] = {
    Reason.ACCEPTED: "Message accepted into the MSSante trust space.",
    Reason.TLS_REQUIRED: "MSSante mail must travel over TLS 1.2 or later.",
    Reason.PEER_CERT_MISSING: "The peer presented no certificate verified against the IGC-Sante chain.",
    Reason.SENDER_DOMAIN_NOT_LISTED: "The sender's domain is not in the MSSante trust space.",
    Reason.SENDER_DOMAIN_LOCAL: "A peer operator may not send as one of this operator's own domains.",
    Reason.PEER_CN_NOT_LISTED_FOR_DOMAIN: "The peer certificate is not one listed for the sender's domain.",
    Reason.PEER_CN_NOT_LISTED: "The peer certificate is not listed on the MSSante trust list.",
    Reason.RECIPIENT_NOT_LOCAL: "This operator only accepts mail for its own MSSante mailboxes.",
    Reason.RECIPIENT_UNKNOWN: "There is no such MSSante mailbox here.",
    Reason.NOT_AUTHENTICATED: "Sending requires a login or a known application certificate.",
    Reason.SENDER_NOT_MAILBOX: "The sender address is not an MSSante mailbox of this operator.",
    Reason.SENDER_NOT_OWNED: "The authenticated identity may not send as this mailbox.",
    Reason.RECIPIENT_NOT_IN_TRUST_SPACE: "The recipient's domain is not in the MSSante trust space.",
    Reason.UNKNOWN_LISTENER: "This listener does not carry MSSante mail.",
    Reason.BAD_ADDRESS: "The address is not a valid mail address.",
    Reason.REJECTED_BY_MTA: "The mail server itself rejected this recipient.",
    Reason.LINE_TOO_LONG: "A body line is longer than 998 octets; it would be altered in transit.",
    Reason.MISSING_MACRO: "The mail server did not pass what the policy needs; please retry later.",
    Reason.TRUSTLIST_UNAVAILABLE: "The trust list is not available; please retry later.",
    Reason.JOURNAL_UNAVAILABLE: "The journal is not available; please retry later.",
    Reason.INTERNAL_ERROR: "Temporary internal failure; please retry later.",
}

# SMTP replies are ASCII: the sentences spell "MSSante" and "IGC-Sante" without the accent.
CONTENT_REASONS = frozenset({Reason.LINE_TOO_LONG})
FAULT_REASONS = frozenset(
    {Reason.MISSING_MACRO, Reason.TRUSTLIST_UNAVAILABLE, Reason.JOURNAL_UNAVAILABLE, Reason.INTERNAL_ERROR}
)


@dataclass(frozen=True)
class Decision:
    """One answer: action, SMTP code, enhanced status code, reason, one human sentence."""

    action: Action
    code: str
    xcode: str
    reason: Reason
    text: str
    reference: str = ""

    @property
    def message(self) -> str:
        """The reply text: the sentence, then the reason code and the journal reference."""
        if self.action in (Action.CONTINUE, Action.ACCEPT):
            return self.text
        ref = f"; {self.reference}" if self.reference else ""
        return f"{self.text} (reason {self.reason.value}{ref})"

    @property
    def reply(self) -> str:
        return f"{self.code} {self.xcode} {self.message}"

    @property
    def is_refusal(self) -> bool:
        return self.action in (Action.REFUSE, Action.TEMPFAIL)

    def with_reference(self, reference: str) -> Decision:
        """The same decision quoting the journal reference in its reply."""
        return replace(self, reference=reference)


CONTINUE = Decision(Action.CONTINUE, "250", "2.0.0", Reason.ACCEPTED, "OK")


def refuse(reason: Reason) -> Decision:
    """A policy refusal (``550 5.7.1``, ``550 5.6.0`` for content) or a fault (``451 4.7.0``)."""
    if reason in FAULT_REASONS:
        return tempfail(reason)
    xcode = "5.6.0" if reason in CONTENT_REASONS else "5.7.1"
    return Decision(Action.REFUSE, "550", xcode, reason, SENTENCES[reason])


def tempfail(reason: Reason) -> Decision:
    """An internal fault: defer, never accept (fail closed)."""
    return Decision(Action.TEMPFAIL, "451", "4.7.0", reason, SENTENCES[reason])


def accept() -> Decision:
    return Decision(Action.ACCEPT, "250", "2.0.0", Reason.ACCEPTED, SENTENCES[Reason.ACCEPTED])
