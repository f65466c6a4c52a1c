"""The thin pymilter adapter: each callback translates its arguments, calls the conversation, and
maps the returned decision to a milter reply. Any exception answers 451 and is counted.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

import Milter

from mssante.milter.engine import Conversation, EomResult, Services
from mssante.milter.reasons import Action, Decision, Reason, tempfail

LOG = logging.getLogger("mssante.milter")
_REPLIES = {Action.CONTINUE: Milter.CONTINUE, Action.ACCEPT: Milter.ACCEPT}


def _unbracket(address: str) -> str:
    text = address.strip()
    return text[1:-1] if text.startswith("<") and text.endswith(">") else text


class MSSanteMilter(Milter.Base):  # type: ignore[misc]
    """One instance per SMTP connection (pymilter's milter-template shape)."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.conversation = Conversation(services)

    def _answer(self, decision: Decision) -> int:
        if decision.action in _REPLIES:
            return int(_REPLIES[decision.action])
        self.setreply(decision.code, decision.xcode, decision.message.replace("%", "%%"))
        return int(Milter.REJECT if decision.action is Action.REFUSE else Milter.TEMPFAIL)

    def _guard(self, stage: str | None, call: Callable[[], Decision]) -> int:
        try:
            if stage is None:
                return self._answer(call())
            with self.conversation.timed(stage):
                return self._answer(call())
        except Exception:
            LOG.exception("milter fault at %s", stage or "body")
            self.services.metrics.error("adapter")
            return self._answer(tempfail(Reason.INTERNAL_ERROR))

    def _macros(self, name: str) -> str | None:
        value = self.getsymval(name)
        return None if value is None else str(value)

    def connect(self, hostname: str, family: Any, hostaddr: Any) -> int:
        address = hostaddr[0] if isinstance(hostaddr, tuple) else str(hostaddr)
        return self._guard("connect", lambda: self.conversation.connect(address, self._macros))

    def hello(self, hostname: str) -> int:
        return self._guard("helo", lambda: self.conversation.helo(self._macros))

    def envfrom(self, sender: str, *params: str) -> int:
        return self._guard("envfrom", lambda: self.conversation.mail(_unbracket(sender), self._macros))

    def envrcpt(self, recipient: str, *params: str) -> int:
        return self._guard("envrcpt", lambda: self.conversation.rcpt(_unbracket(recipient), self._macros))

    def data(self) -> int:
        # Defined so that Postfix never waits for a skipped reply on an inet socket.
        return self._guard(None, lambda: self.conversation.data(self._macros))

    def header(self, name: str, value: str) -> int:
        return self._guard("header", lambda: self.conversation.header(name, value))

    def eoh(self) -> int:
        return int(Milter.CONTINUE)

    def body(self, chunk: bytes) -> int:
        return self._guard(None, lambda: self.conversation.body(chunk))

    def eom(self) -> int:
        return self._guard("eom", self._eom)

    def _eom(self) -> Decision:
        result: EomResult = self.conversation.eom(self._macros)
        if result.decision.action is Action.ACCEPT:
            try:
                for name, index in result.remove:
                    self.chgheader(name, index, "")
                for name, value in result.add:
                    self.addheader(name, value)
            except Exception:
                LOG.exception("tagging failed")
                self.services.metrics.error("tagging")
                return tempfail(Reason.INTERNAL_ERROR)
        return result.decision

    def abort(self) -> int:
        self.conversation.abort()
        return int(Milter.CONTINUE)

    def close(self) -> int:
        return int(Milter.CONTINUE)


# See recipients Postfix itself rejected (SMFIP_RCPT_REJ), so that their refusals are journaled too.
Milter.enable_protocols(MSSanteMilter, Milter.P_RCPT_REJ)


def install(services: Services) -> None:
    """Make pymilter create one :class:`MSSanteMilter` per connection with ``services``."""
    Milter.factory = functools.partial(MSSanteMilter, services)
