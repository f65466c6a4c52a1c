"""Parsing the MSSanté instance's log (TRACE-1): lines as Postfix 3.7 writes them with maillog_file."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from mssante.delivery.parse import Kind, parse_line

P = "Nov 25 18:22:08 probe postfix-mssante"
SENT = (
    f"{P}/smtp[14915]: 4jZSh03vQwzCHND: to=<c@z.test>, relay=mx.z.test[127.9.9.10]:25, delay=0.06,"
    " delays=0.02/0.04/0/0, dsn=2.0.0, status=sent (250 2.0.0 Ok)"
)


def test_trace1_sent_line_gives_recipient_relay_dsn_and_delay() -> None:
    event = parse_line(SENT)
    assert event is not None
    assert (event.kind, event.queue_id, event.recipient, event.status) == (
        Kind.RCPT,
        "4jZSh03vQwzCHND",
        "c@z.test",
        "sent",
    )
    assert (event.relay, event.dsn, event.delay_seconds, event.pid) == (
        "mx.z.test[127.9.9.10]:25",
        "2.0.0",
        0.06,
        14915,
    )


def test_trace1_deferred_bounced_and_orig_to_and_conn_use() -> None:
    deferred = parse_line(
        f"{P}/smtp[1]: 4jZSh31Zk6zCHNH: to=<d@y.test>, relay=none, delay=0.01, delays=0.01/0/0/0,"
        " dsn=4.4.1, status=deferred (connect to 127.9.9.10[127.9.9.10]:2525: Connection refused)"
    )
    bounced = parse_line(
        f"{P}/smtp[1]: 4jZSh31Zk6zCHNH: to=<d@y.test>, orig_to=<D@Y.test>, relay=mx[1.2.3.4]:25,"
        " conn_use=2, delay=3, delays=0/0/1/2, dsn=5.1.1, status=bounced (host said: 550 no)"
    )
    assert deferred is not None and deferred.status == "deferred" and deferred.dsn == "4.4.1"
    assert bounced is not None and bounced.status == "bounced" and bounced.recipient == "d@y.test"


def test_trace1_queue_lifecycle_lines() -> None:
    queued = parse_line(f"{P}/qmgr[4]: 4jZSh03vQwzCHND: from=<a@x.test>, size=417, nrcpt=1 (queue active)")
    removed = parse_line(f"{P}/qmgr[4]: 4jZSh03vQwzCHND: removed")
    expired = parse_line(f"{P}/qmgr[4]: 4jZSh03vQwzCHND: from=<a@x.test>, status=expired, returned to sender")
    mid = parse_line(f"{P}/cleanup[9]: 4jZSh03vQwzCHND: message-id=<m1@x>")
    reject = parse_line(
        f"{P}/cleanup[9]: 4jZSh03vQwzCHND: milter-reject: END-OF-MESSAGE from x[1.2.3.4]: 4.7.1"
    )
    assert [e.kind for e in (queued, removed, expired, mid, reject) if e] == [
        Kind.QUEUED,
        Kind.REMOVED,
        Kind.EXPIRED,
        Kind.MESSAGE_ID,
        Kind.MILTER_REJECT,
    ]
    assert mid is not None and mid.message_id == "<m1@x>"


def test_trace1_outbound_tls_session_details() -> None:
    event = parse_line(
        f"{P}/smtp[77]: Verified TLS connection established to mx.peer.test[127.1.2.3]:25:"
        " TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)"
    )
    assert event is not None and event.kind is Kind.TLS
    assert (event.pid, event.tls_trust, event.tls_version, event.tls_cipher) == (
        77,
        "Verified",
        "TLSv1.3",
        "TLS_AES_256_GCM_SHA384",
    )


def test_trace1_other_instances_and_noise_are_ignored() -> None:
    assert parse_line(SENT, program="postfix") is None  # the ordinary instance's syslog_name
    assert parse_line(SENT, program="postfix-mssante") is not None
    assert parse_line(f"{P}/smtpd[1]: connect from unknown[127.0.0.1]") is None
    assert parse_line(f"{P}/smtpd[1]: NOQUEUE: reject: RCPT from x[1.2.3.4]: 554 5.7.1 no") is None
    assert parse_line("") is None


@given(st.text(max_size=300))
def test_trace1_arbitrary_text_never_raises(text: str) -> None:
    parse_line(text)
    parse_line(f"{P}/smtp[1]: {text}")


def _status(service: str, status: str, reason: str) -> str:
    return (
        f"{P}/{service}[9]: 4jZSh31Zk6zCHNH: to=<d@y.test>, relay=mx.y.test[127.9.9.10]:25, delay=1,"
        f" delays=0/0/1/0, dsn=4.7.5, status={status} ({reason})"
    )


TLS_REASONS = (
    "Server certificate not verified",
    "Server certificate not trusted",
    "Cannot start TLS: handshake failure",
    "TLS is required, but was not offered by host mx.y.test[127.9.9.10]",
    "TLS is required, but host mx.y.test[127.9.9.10] refused to start TLS: 454 4.7.0 TLS not available",
)
NOT_TLS_REASONS = (
    "connect to mx.y.test[127.9.9.10]:25: Connection refused",
    "host mx.y.test[127.9.9.10] said: 450 4.2.0 <d@y.test>: Recipient address rejected: Greylisted",
    "host mx.y.test[127.9.9.10] said: 550 5.1.1 <d@y.test>: User unknown (in reply to RCPT TO command)",
)


def test_trace1_tls_failures_recognised_from_postfix_deferral_texts() -> None:
    from mssante.delivery.parse import is_tls_failure  # noqa: PLC0415 - the unit under test

    for reason in TLS_REASONS:
        for status in ("deferred", "bounced"):
            event = parse_line(_status("smtp", status, reason))
            assert event is not None and event.reason == reason
            assert is_tls_failure(event), reason
    for reason in NOT_TLS_REASONS:  # control: other deferrals are not TLS failures
        event = parse_line(_status("smtp", "deferred", reason))
        assert event is not None and not is_tls_failure(event), reason
    # A local (LMTP) delivery is not a delivery to a trust-space peer; a success is no failure.
    lmtp = parse_line(_status("lmtp", "deferred", TLS_REASONS[0]))
    sent = parse_line(_status("smtp", "sent", "250 2.0.0 Ok: TLS handshake fine"))
    assert lmtp is not None and not is_tls_failure(lmtp)
    assert sent is not None and not is_tls_failure(sent)


def test_trace1_cleanup_content_reject_after_the_milter() -> None:
    """As Postfix 3.7 logs a `milter_header_checks` REJECT of a header our milter added."""
    for action in ("milter-header-reject", "milter-header-discard", "reject", "discard"):
        line = (
            f"{P}/cleanup[77]: 4jZSh31Zk6zCHNH: {action}: header X-MSSante-Verdict: pass; direction=inbound;"
            " from unknown[127.0.0.1]; from=<a@b.test> to=<c@d.test> proto=ESMTP helo=<x>: 5.7.1 no"
        )
        event = parse_line(line)
        assert event is not None and (event.kind, event.queue_id) == (Kind.CONTENT_REJECT, "4jZSh31Zk6zCHNH")
    # Control: a warning is no refusal.
    warning = f"{P}/cleanup[77]: 4jZSh31Zk6zCHNH: warning: header X-MSSante-Verdict: pass; from unknown"
    assert parse_line(warning) is None
