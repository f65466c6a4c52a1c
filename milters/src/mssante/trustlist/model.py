"""Values shared by the trust-list stages: parsed entries, outcomes and refusals."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime


class Outcome(enum.Enum):
    """Closed set of results of one ``compile``/``fetch`` attempt (status.json ``outcome``)."""

    SWITCHED = "switched"
    UNCHANGED = "unchanged"
    REFUSED_PARSE = "refused-parse"
    REFUSED_SIGNATURE = "refused-signature"
    REFUSED_OLDER = "refused-older"
    REFUSED_EMPTY = "refused-empty"
    REFUSED_SHRINK = "refused-shrink"
    FETCH_FAILED = "fetch-failed"
    COMPILE_FAILED = "compile-failed"

    @property
    def exit_code(self) -> int:
        """The command's exit status for this outcome (docs/trustlist.md)."""
        return _EXIT_CODES[self]


_EXIT_CODES = {
    Outcome.SWITCHED: 0,
    Outcome.UNCHANGED: 4,
    Outcome.REFUSED_PARSE: 1,
    Outcome.REFUSED_SIGNATURE: 1,
    Outcome.REFUSED_OLDER: 1,
    Outcome.REFUSED_EMPTY: 1,
    Outcome.REFUSED_SHRINK: 1,
    Outcome.FETCH_FAILED: 3,
    Outcome.COMPILE_FAILED: 1,
}


class Refusal(Exception):
    """A trust list that must not be used; ``outcome`` says which gate refused it."""

    def __init__(self, outcome: Outcome, message: str) -> None:
        self.outcome = outcome
        self.message = message
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class Certificate:
    """One operator certificate listed for a domain: its DN as written and its CNs."""

    dn: str
    cns: tuple[str, ...]


@dataclass(slots=True)
class Domain:
    """One trust-space domain gathering every certificate listed for it (TRUST-4)."""

    a_label: str
    u_label: str
    certificates: list[Certificate] = field(default_factory=list)

    @property
    def cns(self) -> list[str]:
        seen: dict[str, str] = {}
        for cert in self.certificates:
            for cn in cert.cns:
                seen.setdefault(cn.casefold(), cn)
        return list(seen.values())


@dataclass(frozen=True, slots=True)
class TrustList:
    """A parsed (and, when required, verified) trust list."""

    generated: datetime
    domains: dict[str, Domain]
    entries: int
    signer: str | None
