"""Every row of the trust decision (design.md) through the real adapter with Milter.testctx.TestCtx.

TRUST-6 (inbound from peers), TRUST-7 (outbound to the trust space), AUTH-2 / AUTH-3 (identity and
sender ownership), MSG-4 (tagging), TRACE-1 (journal records). Each refusal has its control.
"""

from __future__ import annotations

import email
from dataclasses import dataclass
from pathlib import Path

import Milter
import pytest
from tests.milter.harness import (
    APP_CN,
    LOCAL,
    OTHER,
    OTHER_CN,
    PEER,
    PEER_CN,
    FailingJournal,
    World,
    connect,
    reply,
    send_message,
    simple_message,
)

from mssante.journal import digest
from mssante.milter.journal import JournalUnavailable
from mssante.milter.reasons import Reason


@dataclass(frozen=True)
class Row:
    """One row: connection facts, envelope, and the reason expected at MAIL or at the last RCPT."""

    port: int | None
    sender: str
    rcpt: str | None = None
    tls: str | None = "TLSv1.3"
    cn: str | None = None
    auth: str | None = None


ME = f"dr.martin@{LOCAL}"
GOOD_IN = Row(25, f"dr.house@{PEER}", f"dr.martin@{LOCAL}", cn=PEER_CN)
GOOD_OUT = Row(587, f"dr.martin@{LOCAL}", f"dr.house@{PEER}", auth="dr.martin")

# Refusal rows, each with the accepted row it differs from in one fact (its control).
REFUSALS: dict[Reason, tuple[Row, Row]] = {
    Reason.TLS_REQUIRED: (Row(25, f"a@{PEER}", cn=PEER_CN, tls=None), GOOD_IN),
    Reason.PEER_CERT_MISSING: (Row(25, f"dr.house@{PEER}"), GOOD_IN),
    Reason.SENDER_DOMAIN_NOT_LISTED: (Row(25, "x@unlisted.example", cn=PEER_CN), GOOD_IN),
    Reason.SENDER_DOMAIN_LOCAL: (Row(25, f"dr.martin@{LOCAL}", cn=PEER_CN), GOOD_IN),
    Reason.PEER_CN_NOT_LISTED_FOR_DOMAIN: (Row(25, f"dr.house@{PEER}", cn=OTHER_CN), GOOD_IN),
    Reason.PEER_CN_NOT_LISTED: (Row(25, "", cn="rogue.example"), Row(25, "", cn=OTHER_CN)),
    Reason.RECIPIENT_NOT_LOCAL: (Row(25, f"dr.house@{PEER}", f"x@{OTHER}", cn=PEER_CN), GOOD_IN),
    Reason.RECIPIENT_UNKNOWN: (Row(25, f"dr.house@{PEER}", f"nobody@{LOCAL}", cn=PEER_CN), GOOD_IN),
    Reason.BAD_ADDRESS: (Row(25, "no-at-sign", cn=PEER_CN), GOOD_IN),
    Reason.NOT_AUTHENTICATED: (Row(587, f"dr.martin@{LOCAL}"), GOOD_OUT),
    Reason.SENDER_NOT_MAILBOX: (Row(587, f"ghost@{LOCAL}", auth="dr.martin"), GOOD_OUT),
    Reason.SENDER_NOT_OWNED: (Row(587, f"dpi@{LOCAL}", auth="dr.martin"), GOOD_OUT),
    Reason.RECIPIENT_NOT_IN_TRUST_SPACE: (Row(587, ME, "x@gmail.com", auth="dr.martin"), GOOD_OUT),
    Reason.UNKNOWN_LISTENER: (Row(2525, f"dr.martin@{LOCAL}", auth="dr.martin"), GOOD_OUT),
    Reason.MISSING_MACRO: (Row(None, f"dr.house@{PEER}", cn=PEER_CN), GOOD_IN),
}  # fmt: skip

# Reasons asserted by dedicated tests below (the table test checks nothing is left out).
ELSEWHERE = {
    Reason.ACCEPTED,
    Reason.REJECTED_BY_MTA,
    Reason.LINE_TOO_LONG,
    Reason.TRUSTLIST_UNAVAILABLE,
    Reason.JOURNAL_UNAVAILABLE,
    Reason.INTERNAL_ERROR,
}


def run_row(world: World, row: Row) -> tuple[int, str | None, object]:
    """Drive MAIL (and RCPT); returns (answer, reply text, ctx) of the first non-continue step."""
    ctx = connect(world, port=row.port, tls=row.tls, cn=row.cn, auth=row.auth)
    rc = ctx._envfrom(f"<{row.sender}>")
    if rc != Milter.CONTINUE or row.rcpt is None:
        return rc, reply(ctx) if rc != Milter.CONTINUE else None, ctx
    rc = ctx._envrcpt(f"<{row.rcpt}>")
    return rc, reply(ctx) if rc != Milter.CONTINUE else None, ctx


def test_every_reason_has_a_test() -> None:
    assert set(REFUSALS) | ELSEWHERE == set(Reason)


@pytest.mark.parametrize("reason", list(REFUSALS), ids=lambda r: r.value)
def test_trust6_trust7_auth3_refusal_rows(tmp_path: Path, reason: Reason) -> None:
    """TRUST-6, TRUST-7, AUTH-2, AUTH-3: each refusal row answers its reason; its control passes."""
    row, control = REFUSALS[reason]
    world = World(tmp_path)
    rc, text, _ = run_row(world, row)
    fault = reason is Reason.MISSING_MACRO
    assert rc == (Milter.TEMPFAIL if fault else Milter.REJECT)
    assert text is not None
    assert text.startswith("451 4.7.0" if fault else "550 5.7.1")
    assert f"(reason {reason.value}" in text
    direction = {25: "inbound", 587: "outbound"}.get(row.port or 0, "unknown")
    decision = "tempfail" if fault else "refuse"
    labels = {"direction": direction, "decision": decision, "reason": reason.value}
    assert world.sample("mssante_milter_decisions_total", **labels) == 1
    control_rc, control_text, _ = run_row(world, control)
    assert control_rc == Milter.CONTINUE, control_text


def test_trust6_listed_peer_accepted_tagged_and_journaled(tmp_path: Path) -> None:
    """TRUST-6, TRACE-1: the right CN for the sender's domain is accepted, journaled, then tagged."""
    world = World(tmp_path)
    rc, _, ctx = run_row(world, GOOD_IN)
    assert rc == Milter.CONTINUE
    assert send_message(ctx, simple_message()) == Milter.ACCEPT
    [record] = world.records()
    assert record["type"] == "accepted"
    assert record["queue_id"] == "4XyzQ1abcDz"
    assert record["rcpts"] == [{"address": f"dr.martin@{LOCAL}", "status": "accepted"}]
    assert record["peer_cn"] == PEER_CN
    assert record["direction"] == "inbound"
    assert record["message_id"] == f"<abc@{PEER}>"
    assert record["body_sha256"] == digest.body_sha256([b"Bonjour.\r\n"])
    assert record["headers_sha256"] == digest.headers_sha256(
        email.message_from_bytes(simple_message()).items()
    )
    assert "Subject" not in str(record) and "compte rendu" not in str(record)
    assert ctx._msg["X-MSSante-Trace"] == f"{record['record_id']}; host=hospital-1"
    assert ctx._msg["X-MSSante-Verdict"].startswith("pass; direction=inbound")
    assert world.sample("mssante_milter_decisions_total", direction="inbound", decision="accept",
                        reason="accepted") == 1  # fmt: skip


def test_trust6_null_sender_bounce_from_listed_cn_accepted(tmp_path: Path) -> None:
    """TRUST-6: a bounce (null sender) is accepted from any CN on the trust list."""
    world = World(tmp_path)
    ctx = connect(world, cn=OTHER_CN)
    assert ctx._envfrom("<>") == Milter.CONTINUE
    assert ctx._envrcpt(f"<dr.martin@{LOCAL}>") == Milter.CONTINUE
    assert send_message(ctx, simple_message()) == Milter.ACCEPT
    assert world.records()[0]["mail_from"] == ""


@pytest.mark.parametrize("version", ["TLSv1", "TLSv1.1", "SSLv3"])
def test_tls1_old_tls_refused(tmp_path: Path, version: str) -> None:
    """TLS-1 / TRUST-6: TLS older than 1.2 is refused like no TLS at all (control: TLSv1.2)."""
    world = World(tmp_path)
    ctx = connect(world, tls=version, cn=PEER_CN)
    assert ctx._envfrom(f"<dr.house@{PEER}>") == Milter.REJECT
    assert "reason tls-required" in reply(ctx)
    ctx = connect(world, tls="TLSv1.2", cn=PEER_CN)
    assert ctx._envfrom(f"<dr.house@{PEER}>") == Milter.CONTINUE


def test_auth2_application_certificate_sends_as_its_mailbox(tmp_path: Path) -> None:
    """AUTH-2: an application certificate CN from the mailbox table sends as its own mailbox only."""
    world = World(tmp_path)
    ctx = connect(world, port=587, cn=APP_CN)
    assert ctx._envfrom(f"<dpi@{LOCAL}>") == Milter.CONTINUE
    assert ctx._envrcpt(f"<dr.house@{PEER}>") == Milter.CONTINUE
    assert send_message(ctx, simple_message()) == Milter.ACCEPT
    ctx = connect(world, port=587, cn=APP_CN)
    assert ctx._envfrom(f"<dr.martin@{LOCAL}>") == Milter.REJECT
    assert "reason sender-not-owned" in reply(ctx)
    ctx = connect(world, port=587, cn="unknown-app.example")
    assert ctx._envfrom(f"<dpi@{LOCAL}>") == Milter.REJECT
    assert "reason not-authenticated" in reply(ctx)


def test_auth3_owner_of_org_mailbox_may_send_as_it(tmp_path: Path) -> None:
    """AUTH-3: an owner listed for an ORG mailbox may use it; another identity may not."""
    world = World(tmp_path)
    assert connect(world, port=587, auth="sec1")._envfrom(f"<secretariat@{LOCAL}>") == Milter.CONTINUE
    ctx = connect(world, port=587, auth="sec1")
    assert ctx._envfrom(f"<dr.martin@{LOCAL}>") == Milter.REJECT


def test_trust7_read_receipt_null_sender_allowed_from_authenticated_user(tmp_path: Path) -> None:
    """TRUST-7, MSG-3: an authenticated client may send a read receipt with a null sender."""
    world = World(tmp_path)
    ctx = connect(world, port=587, auth="dr.martin")
    assert ctx._envfrom("<>") == Milter.CONTINUE
    assert ctx._envrcpt(f"<dr.house@{PEER}>") == Milter.CONTINUE
    ctx = connect(world, port=587)
    assert ctx._envfrom("<>") == Milter.REJECT


def test_trust7_mixed_recipients_lose_only_bad_ones(tmp_path: Path) -> None:
    """TRUST-7: refusals are per recipient; the accepted record lists only the good ones."""
    world = World(tmp_path)
    ctx = connect(world, port=587, auth="dr.martin")
    assert ctx._envfrom(f"<dr.martin@{LOCAL}>") == Milter.CONTINUE
    assert ctx._envrcpt(f"<dr.house@{PEER}>") == Milter.CONTINUE
    assert ctx._envrcpt("<someone@gmail.com>") == Milter.REJECT
    refusal_text = reply(ctx)
    assert "reason recipient-not-in-trust-space" in refusal_text
    assert ctx._envrcpt(f"<secretariat@{LOCAL}>") == Milter.CONTINUE
    assert send_message(ctx, simple_message()) == Milter.ACCEPT
    refused, accepted = world.records()
    assert refused["type"] == "refused"
    assert refused["rcpts"] == [{"address": "someone@gmail.com", "status": "refused"}]
    assert refused["auth_identity"] == "dr.martin"
    assert f"journal ref {refused['record_id']}" in refusal_text
    assert [r["address"] for r in accepted["rcpts"]] == [f"dr.house@{PEER}", f"secretariat@{LOCAL}"]


def test_trace1_refusal_reply_quotes_the_journal_record(tmp_path: Path) -> None:
    """TRACE-1: an identified client's refusal is journaled and the reply quotes its record id."""
    world = World(tmp_path)
    ctx = connect(world, cn=OTHER_CN)
    assert ctx._envfrom(f"<dr.house@{PEER}>") == Milter.REJECT
    [record] = world.records()
    assert record["reason"] == "peer-cn-not-listed-for-domain"
    assert record["peer_cn"] == OTHER_CN
    assert f"journal ref {record['record_id']}" in reply(ctx)


def test_trace1_anonymous_refusals_are_aggregated_not_journaled_one_by_one(tmp_path: Path) -> None:
    """TRACE-1: refusals of unauthenticated clients are counted per window and reason."""
    world = World(tmp_path)
    for _ in range(3):
        ctx = connect(world, port=587)
        assert ctx._envfrom(f"<dr.martin@{LOCAL}>") == Milter.REJECT
        assert "journal aggregate" in reply(ctx)
    assert world.records() == []
    assert world.sample("mssante_milter_refusals_aggregated_total", reason="not-authenticated") == 3
    assert world.aggregator.flush() == 0  # the window has not ended yet
    world.clock.now += 60
    assert world.aggregator.flush() == 1
    [record] = world.records()
    assert record["type"] == "refused-aggregate"
    assert (record["reason"], record["count"]) == ("not-authenticated", 3)


def test_trace1_two_reasons_in_one_window_both_aggregated(tmp_path: Path) -> None:
    """Two reasons counted in the same window give one refused-aggregate record each."""
    world = World(tmp_path)
    assert connect(world, port=587)._envfrom(f"<dr.martin@{LOCAL}>") == Milter.REJECT
    assert connect(world)._envfrom(f"<dr.house@{PEER}>") == Milter.REJECT  # no certificate on 25
    assert world.aggregator.flush(force=True) == 2
    reasons = sorted(record["reason"] for record in world.records())
    assert reasons == ["not-authenticated", "peer-cert-missing"]


def test_rcpt_rejected_by_postfix_is_journaled(tmp_path: Path) -> None:
    """TRACE-1: recipients Postfix itself rejected (SMFIP_RCPT_REJ) get a refused record."""
    world = World(tmp_path)
    assert Milter.P_RCPT_REJ & ~type(connect(world)._priv).protocol_mask()
    ctx = connect(world, cn=PEER_CN)
    assert ctx._envfrom(f"<dr.house@{PEER}>") == Milter.CONTINUE
    ctx._setsymval("{rcpt_mailer}", "error")
    ctx._setsymval("{rcpt_host}", "5.1.1")
    ctx._setsymval("{rcpt_addr}", "User unknown in virtual mailbox table")
    assert ctx._envrcpt(f"<dr.martin@{LOCAL}>") == Milter.CONTINUE
    [record] = world.records()
    assert record["reason"] == "rejected-by-mta"
    assert record["reply"] == "5.1.1 User unknown in virtual mailbox table"


def test_body_line_over_998_octets_refused(tmp_path: Path) -> None:
    """Design: body lines over 998 octets are refused (5.6.0) rather than folded; 998 passes."""
    world = World(tmp_path)
    _, _, ctx = run_row(world, GOOD_IN)
    assert send_message(ctx, simple_message(body="a" * 999 + "\r\n")) == Milter.REJECT
    assert reply(ctx).startswith("550 5.6.0") and "reason line-too-long" in reply(ctx)
    _, _, ctx = run_row(world, GOOD_IN)
    assert send_message(ctx, simple_message(body="a" * 998 + "\r\n")) == Milter.ACCEPT


def test_missing_queue_id_tempfails(tmp_path: Path) -> None:
    """A missing {i} is logged, counted and answered 451 (fail closed)."""
    world = World(tmp_path)
    _, _, ctx = run_row(world, GOOD_IN)
    assert send_message(ctx, simple_message(), queue_id="") == Milter.TEMPFAIL
    assert "reason missing-macro" in reply(ctx)
    assert world.sample("mssante_milter_missing_macro_total", macro="i") == 1


def test_missing_daemon_port_counted(tmp_path: Path) -> None:
    world = World(tmp_path)
    connect(world, port=None)
    assert world.sample("mssante_milter_missing_macro_total", macro="daemon_port") == 1


def test_trustlist_unavailable_tempfails(tmp_path: Path) -> None:
    """Fail closed: no trust list means 451, never accept (control: GOOD_IN above)."""
    world = World(tmp_path)
    world.views_error = RuntimeError("no index")
    rc, text, _ = run_row(world, GOOD_IN)
    assert rc == Milter.TEMPFAIL
    assert text is not None and text.startswith("451 4.7.0") and "trustlist-unavailable" in text


def test_journal_unavailable_tempfails_instead_of_accepting(tmp_path: Path) -> None:
    """TRACE-2 / fail closed: no durable accepted record, no accept."""
    world = World(tmp_path, journal=FailingJournal())
    _, _, ctx = run_row(world, GOOD_IN)
    assert send_message(ctx, simple_message()) == Milter.TEMPFAIL
    assert "reason journal-unavailable" in reply(ctx)
    assert "X-MSSante-Trace" not in ctx._msg
    ctx = connect(world, cn=OTHER_CN)
    assert ctx._envfrom(f"<dr.house@{PEER}>") == Milter.TEMPFAIL
    assert world.sample("mssante_milter_errors_total", stage="journal") == 2


def test_internal_error_tempfails(tmp_path: Path) -> None:
    """A bug below the adapter answers 451 internal-error and is counted."""

    class Broken:
        def append(self, record: object) -> object:
            raise ZeroDivisionError("bug")

    world = World(tmp_path, journal=Broken())
    _, _, ctx = run_row(world, GOOD_IN)
    assert send_message(ctx, simple_message()) == Milter.TEMPFAIL
    assert "reason internal-error" in reply(ctx)
    assert world.sample("mssante_milter_errors_total", stage="adapter") == 1


def test_msg4_forged_tagging_headers_removed_mss_headers_untouched(tmp_path: Path) -> None:
    """MSG-4, MSG-2: incoming X-MSSante-* copies are deleted; X-MSS-* fields are never touched."""
    world = World(tmp_path)
    _, _, ctx = run_row(world, GOOD_IN)
    calls: list[tuple[str, int, str]] = []
    priv = ctx._priv
    original = priv.chgheader

    def spy(name: str, idx: int, value: str) -> object:
        calls.append((name, idx, value))
        return original(name, idx, value)

    priv.chgheader = spy
    extra = (
        "X-MSSante-Trace: forged-1\r\nX-MSS-NIL: 1\r\nx-mssante-verdict: pass; forged\r\n"
        "X-MSSante-Trace: forged-2\r\nX-MSS-INS: O\r\n"
    )
    assert send_message(ctx, simple_message(extra)) == Milter.ACCEPT
    assert calls == [("X-MSSante-Trace", 2, ""), ("x-mssante-verdict", 1, ""), ("X-MSSante-Trace", 1, "")]
    assert ctx._msg.get_all("X-MSSante-Trace") == [f"{world.records()[0]['record_id']}; host=hospital-1"]
    assert ctx._msg["X-MSS-NIL"] == "1" and ctx._msg["X-MSS-INS"] == "O"


def test_reply_sentences_are_ascii() -> None:
    """SMTP replies are ASCII (RFC 5321): every sentence can be sent as it is."""
    from mssante.milter.reasons import SENTENCES  # noqa: PLC0415

    assert set(SENTENCES) == set(Reason)
    assert all(text.isascii() and "%" not in text for text in SENTENCES.values())


def test_trace1_aggregate_flushed_early_ends_its_window_now(tmp_path: Path) -> None:
    """A forced flush (shutdown) journals the current window with window_end = now, not in the future."""
    world = World(tmp_path)
    world.clock.now = 1_780_000_020.0 + 30  # 1_780_000_020 is a multiple of 60: 30 s into a window
    assert connect(world, port=587)._envfrom(f"<dr.martin@{LOCAL}>") == Milter.REJECT
    assert world.aggregator.flush() == 0
    assert world.aggregator.flush(force=True) == 1
    [record] = world.records()
    assert (record["window_start"], record["window_end"]) == ("2026-05-28T20:27:00Z", "2026-05-28T20:27:30Z")


def test_trace1_aggregate_kept_when_journal_down(tmp_path: Path) -> None:
    """Counts survive a journal outage and are journaled at the next flush."""
    world = World(tmp_path)
    assert connect(world, port=587)._envfrom(f"<dr.martin@{LOCAL}>") == Milter.REJECT
    world.aggregator.sink = FailingJournal()
    with pytest.raises(JournalUnavailable):
        world.aggregator.flush(force=True)
    world.aggregator.sink = world.journal
    assert world.aggregator.flush(force=True) == 1
    assert world.records()[0]["count"] == 1


# Rows of docs/milter.md not covered by REFUSALS (which keys one row per reason).
MORE_ROWS = [
    ("outbound-tls", Row(587, ME, auth="dr.martin", tls="TLSv1.1"), Reason.TLS_REQUIRED),
    ("outbound-bad-sender", Row(587, "no-at-sign", auth="dr.martin"), Reason.BAD_ADDRESS),
    ("bad-recipient", Row(25, f"dr.house@{PEER}", "no-at-sign", cn=PEER_CN), Reason.BAD_ADDRESS),
    ("outbound-unknown-local", Row(587, ME, f"nobody@{LOCAL}", auth="dr.martin"), Reason.RECIPIENT_UNKNOWN),
    ("outbound-unknown-port-rcpt", Row(2525, "", cn=PEER_CN), Reason.UNKNOWN_LISTENER),
]


@pytest.mark.parametrize(("name", "row", "reason"), MORE_ROWS, ids=[r[0] for r in MORE_ROWS])
def test_more_decision_rows(tmp_path: Path, name: str, row: Row, reason: Reason) -> None:
    """TRUST-6, TRUST-7: the remaining rows of the table answer their reason."""
    rc, text, _ = run_row(World(tmp_path), row)
    assert rc == Milter.REJECT
    assert text is not None and f"(reason {reason.value};" in text


def test_trust7_local_to_local_and_outbound_controls(tmp_path: Path) -> None:
    """TRUST-7 controls: internal mail between local mailboxes and mail to any listed domain pass."""
    world = World(tmp_path)
    ctx = connect(world, port=587, auth="dr.martin")
    assert ctx._envfrom(f"<{ME}>") == Milter.CONTINUE
    for rcpt in (f"secretariat@{LOCAL}", f"dpi@{LOCAL.upper()}", f"a@{PEER}", f"b@{OTHER.upper()}"):
        assert ctx._envrcpt(f"<{rcpt}>") == Milter.CONTINUE, rcpt
    assert send_message(ctx, simple_message()) == Milter.ACCEPT
    assert len(world.records()[0]["rcpts"]) == 4
