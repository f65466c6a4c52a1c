"""Pure decisions about inactive mailboxes (TRACE-4: no login for a year, deleted after notice).

Inputs are values: the mailbox table, the last logins read from Dovecot's ``last_login`` dictionary and
the notice state. A mailbox's activity is its most recent login under any of its login names (owners,
and the certificate CNs of an application mailbox). A mailbox never seen logging in counts from the
day this tool first saw it, so a new mailbox is never reported at once. Nothing here deletes anything:
a mailbox becomes ``DUE`` only after its owners were notified and ``grace_days`` passed without login.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

DAY = 86400
LOGIN_SERVICES = ("imap", "pop3")
KEY_PREFIX = "shared/last-login/"


class Status(enum.Enum):
    """Where a mailbox stands; the closed set of outcomes."""

    ACTIVE = "active"  # a login within the inactivity period
    INACTIVE = "inactive"  # no login for the period, owners not yet notified
    NOTIFIED = "notified"  # notified, grace period running
    DUE = "due"  # notified at least grace_days ago and still no login: may be deleted by a person


@dataclass(frozen=True)
class Mailbox:
    address: str
    type: str
    login_names: tuple[str, ...]
    owners: tuple[str, ...]


@dataclass(frozen=True)
class Notice:
    """What the state file remembers about a mailbox."""

    first_seen: int
    notified_at: int | None = None


@dataclass(frozen=True)
class Assessment:
    mailbox: Mailbox
    status: Status
    last_activity: int  # last login, or first_seen when it never logged in
    last_login: int | None
    notified_at: int | None


@dataclass(frozen=True)
class Policy:
    inactive_days: int = 365
    grace_days: int = 30


@dataclass(frozen=True)
class State:
    notices: Mapping[str, Notice] = field(default_factory=dict)


def mailboxes_from_table(table: Mapping[str, object]) -> list[Mailbox]:
    """The mailboxes of a mailboxes.json document (docs/configuration.md)."""
    result = []
    raw = table.get("mailboxes", [])
    for item in raw if isinstance(raw, list) else []:
        if not isinstance(item, dict) or "address" not in item:
            continue
        owners = tuple(str(o) for o in item.get("owners") or [])
        cns = tuple(str(c) for c in item.get("cert_cns") or [])
        names = tuple(dict.fromkeys((*owners, *cns)))
        result.append(Mailbox(str(item["address"]).lower(), str(item.get("type", "")), names, owners))
    return result


def parse_last_login_dict(text: str) -> dict[str, int]:
    """Login name -> last login (Unix seconds) from a Dovecot ``file:`` dict (key line, value line).

    Keys look like ``shared/last-login/<service>/<login name>`` (the role's last_login_key); only login
    services count (a delivery over LMTP is not a login). Malformed pairs are ignored.
    """
    lines = text.split("\n")
    logins: dict[str, int] = {}
    for key, value in zip(lines[0::2], lines[1::2], strict=False):
        if not key.startswith(KEY_PREFIX):
            continue
        service, _, name = key[len(KEY_PREFIX) :].partition("/")
        if service not in LOGIN_SERVICES or not name or not value.strip().isdigit():
            continue
        stamp = int(value.strip())
        stamp = stamp // 1000 if stamp > 10**11 else stamp  # tolerate millisecond precision
        logins[name] = max(stamp, logins.get(name, 0))
    return logins


def assess(
    mailboxes: Iterable[Mailbox], logins: Mapping[str, int], state: State, policy: Policy, now: int
) -> list[Assessment]:
    """The status of every mailbox at ``now``."""
    result = []
    for mailbox in mailboxes:
        notice = state.notices.get(mailbox.address, Notice(first_seen=now))
        seen = [logins[name] for name in mailbox.login_names if name in logins]
        last_login = max(seen) if seen else None
        last_activity = last_login if last_login is not None else notice.first_seen
        notified = notice.notified_at
        if notified is not None and last_login is not None and last_login > notified:
            notified = None  # logged in after the notice: the notice no longer stands
        if now - last_activity < policy.inactive_days * DAY:
            status = Status.ACTIVE
        elif notified is None:
            status = Status.INACTIVE
        elif now - notified < policy.grace_days * DAY:
            status = Status.NOTIFIED
        else:
            status = Status.DUE
        result.append(Assessment(mailbox, status, last_activity, last_login, notified))
    return result


def next_state(
    assessments: Iterable[Assessment], state: State, notified_now: Mapping[str, int], now: int
) -> State:
    """The state to save: every current mailbox kept with its first sighting and standing notice."""
    notices = {}
    for item in assessments:
        address = item.mailbox.address
        previous = state.notices.get(address)
        first_seen = previous.first_seen if previous else now
        notified_at = notified_now.get(address, item.notified_at)
        if item.status is Status.ACTIVE and address not in notified_now:
            notified_at = None
        notices[address] = Notice(first_seen, notified_at)
    return State(notices)
