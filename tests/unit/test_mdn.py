"""Read receipts (MSG-3, RFC 8098): the original message and the disposition are found, nothing else."""

from __future__ import annotations

import json
from pathlib import Path

import Milter
from hypothesis import given
from hypothesis import strategies as st
from tests.milter.harness import LOCAL, PEER, World, send_message, simple_message
from tests.milter.test_decision_table import GOOD_IN, run_row

from mssante.mdn import MAX_MDN_BYTES, is_mdn_content_type, parse_receipt

MDN = b"""From: dr.b@clinique-b.mssante.test\r
To: dr.a@hopital-a.mssante.test\r
Subject: Lu : compte rendu\r
Message-ID: <receipt-1@clinique-b.mssante.test>\r
MIME-Version: 1.0\r
Content-Type: multipart/report; report-type=disposition-notification;\r
 boundary="RPT"\r
\r
--RPT\r
Content-Type: text/plain; charset=utf-8\r
\r
Le message a ete affiche.\r
--RPT\r
Content-Type: message/disposition-notification\r
\r
Reporting-UA: mua.clinique-b.test; Exemple\r
Final-Recipient: rfc822;dr.b@clinique-b.mssante.test\r
Original-Message-ID: <cr-42@hopital-a.mssante.test>\r
Disposition: manual-action/MDN-sent-manually; displayed\r
\r
--RPT--\r
"""


def test_msg3_receipt_names_original_message_and_disposition() -> None:
    receipt = parse_receipt(MDN)
    assert receipt is not None
    assert receipt.original_message_id == "<cr-42@hopital-a.mssante.test>"
    assert (receipt.disposition, receipt.action) == ("displayed", "manual-action")


def test_msg3_ordinary_message_and_other_reports_are_not_receipts() -> None:
    assert parse_receipt(b"Subject: x\r\nContent-Type: text/plain\r\n\r\nhello\r\n") is None
    dsn = MDN.replace(b"report-type=disposition-notification", b"report-type=delivery-status")
    assert parse_receipt(dsn) is None
    broken = MDN.replace(b"Disposition: manual-action/MDN-sent-manually; displayed", b"Disposition: nonsense")
    assert parse_receipt(broken) is None


def test_msg3_content_type_detection_tolerates_quotes_and_case() -> None:
    assert is_mdn_content_type('Multipart/Report; Report-Type="disposition-notification"; boundary=x')
    assert not is_mdn_content_type("multipart/mixed; boundary=x")


@given(st.binary(max_size=2000))
def test_msg3_arbitrary_bytes_never_raise(raw: bytes) -> None:
    parse_receipt(raw)
    parse_receipt(MDN[:200] + raw)


def _receipt_from_peer(extra_body: bytes = b"") -> bytes:
    """An MDN sent by a peer's user back to the hospital (MDN fixture re-addressed to the milter lab)."""
    raw = MDN.replace(b"clinique-b.mssante.test", PEER.encode()).replace(
        b"dr.a@hopital-a.mssante.test", f"dr.martin@{LOCAL}".encode()
    )
    return raw.replace(b"Le message a ete affiche.\r\n", b"Le message a ete affiche.\r\n" + extra_body)


def _accept_through_milter(tmp_path: Path, raw: bytes) -> list[dict[str, object]]:
    world = World(tmp_path)
    rc, _, ctx = run_row(world, GOOD_IN)
    assert rc == Milter.CONTINUE
    assert send_message(ctx, raw) == Milter.ACCEPT
    return world.records()


def test_msg3_milter_journals_mdn_record_for_accepted_receipt(tmp_path: Path) -> None:
    """MSG-3: an accepted read receipt gets an `mdn` record naming the original Message-ID."""
    accepted, mdn = _accept_through_milter(tmp_path, _receipt_from_peer())
    assert accepted["type"] == "accepted"
    assert mdn["type"] == "mdn"
    assert mdn["original_message_id"] == "<cr-42@hopital-a.mssante.test>"
    assert mdn["disposition"] == "displayed"
    assert mdn["queue_id"] == accepted["queue_id"]
    assert mdn["message_id"] == accepted["message_id"]
    assert mdn["mail_from"] == accepted["mail_from"]
    assert "affiche" not in json.dumps(mdn) and "Lu :" not in json.dumps(mdn)  # no content


def test_msg3_milter_no_mdn_record_for_ordinary_or_oversized_message(tmp_path: Path) -> None:
    """Control: an ordinary message, and a 'receipt' beyond the size bound, give no `mdn` record."""
    [plain] = _accept_through_milter(tmp_path / "plain", simple_message())
    padding = b"x" * 900 + b"\r\n"
    big = _receipt_from_peer(padding * (MAX_MDN_BYTES // len(padding) + 1))
    [large] = _accept_through_milter(tmp_path / "large", big)
    assert plain["type"] == large["type"] == "accepted"
