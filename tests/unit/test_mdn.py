"""Read receipts (MSG-3, RFC 8098): the original message and the disposition are found, nothing else."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from mssante.mdn import is_mdn_content_type, parse_receipt

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
