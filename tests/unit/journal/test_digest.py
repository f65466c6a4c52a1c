"""Body digest: the milter's view (CRLF, dot-unstuffed) equals the recomputation from a delivered copy."""

from __future__ import annotations

import hashlib

from mssante.journal.digest import body_sha256, body_sha256_of_message, headers_sha256, split_message


def test_trace1_body_digest_of_milter_chunks_equals_eml_recomputation() -> None:
    body = b"Bonjour,\r\n.ligne qui commen\xc3\xa7ait par un point\r\n\r\nFin\r\n"
    chunks = [body[:10], body[10:]]
    eml_lf = b"From: a@b\nSubject: x\n\n" + body.replace(b"\r\n", b"\n")
    eml_crlf = b"From: a@b\r\nSubject: x\r\n\r\n" + body
    assert body_sha256(chunks) == hashlib.sha256(body).hexdigest()
    assert body_sha256_of_message(eml_lf) == body_sha256(chunks)
    assert body_sha256_of_message(eml_crlf) == body_sha256(chunks)
    assert body_sha256_of_message(eml_crlf + b"x") != body_sha256(chunks)  # control


def test_trace1_header_digest_and_split() -> None:
    head, body = split_message(b"A: 1\nB: 2\n\nbody\n")
    assert (head, body) == (b"A: 1\r\nB: 2\r\n", b"body\r\n")
    assert headers_sha256([("A", "1"), ("B", "2")]) == hashlib.sha256(head).hexdigest()
