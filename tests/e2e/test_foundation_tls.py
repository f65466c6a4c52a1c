"""Mutual TLS across a real Postfix instance with the test PKI (TRUST-6, TLS-1, TLS-3).

The instance asks every client for a certificate verified against the IGC-Santé chain only
(smtpd_tls_CAfile = chain, CApath empty) and relays only for clients whose certificate verified
(``permit_tls_all_clientcerts``), to a sink that itself verifies the instance's client certificate.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.conftest import PostfixFactory, SinkFactory
from tests.support.common import random_loopback
from tests.support.postfix import PostfixInstance, smtp_tls_settings, smtpd_tls_settings
from tests.support.sink import Sink
from tests.support.smtpclient import TlsOptions, Transcript, message, send

from mssante.lab.pki import Leaf, Pki

SENDER = "dr.durand@clinique-b.mssante.test"
RECIPIENT = "dr.martin@hopital-a.mssante.test"


def _relay(
    pki: Pki, postfix_factory: PostfixFactory, sink_factory: SinkFactory, ca_file: Path
) -> tuple[PostfixInstance, Sink]:
    """The hospital's instance (server certificate, client CA ``ca_file``) relaying to a TLS sink."""
    sink = sink_factory(tls=pki.peer, client_ca=pki.chain, require_starttls=True)
    settings = {
        **smtpd_tls_settings(pki.hospital.fullchain, pki.hospital.key, ca_file),
        **smtp_tls_settings(pki.hospital.fullchain, pki.hospital.key, pki.chain, match=pki.peer.cn),
        "myhostname": pki.hospital.cn,
        "relay_domains": "hopital-a.mssante.test",
        "relayhost": sink.hostport,
        "smtpd_relay_restrictions": "permit_tls_all_clientcerts, reject",
    }
    return postfix_factory("hospital", settings=settings, start=True), sink


def _send_as(instance: PostfixInstance, leaf: Leaf, pki: Pki, subject: str) -> Transcript:
    return send(
        instance.address,
        instance.port,
        sender=SENDER,
        recipients=[RECIPIENT],
        message=message(SENDER, RECIPIENT, subject=subject),
        helo=leaf.cn,
        tls=TlsOptions(cert=leaf.fullchain, key=leaf.key, ca_file=pki.chain),
        source_address=random_loopback(),
    )


def test_trust6_verified_client_certificate_message_reaches_sink(
    pki: Pki, postfix_factory: PostfixFactory, sink_factory: SinkFactory
) -> None:
    instance, sink = _relay(pki, postfix_factory, sink_factory, pki.chain)
    mark = instance.log_mark()
    transcript = _send_as(instance, pki.peer, pki, "verified peer")

    assert transcript.tls_version in ("TLSv1.2", "TLSv1.3")
    assert transcript.server_cert_cn == pki.hospital.cn
    assert transcript.rcpt[RECIPIENT].code == 250
    assert transcript.delivered, transcript
    instance.wait_log(r"Trusted TLS connection established from", since=mark)
    (received,) = sink.wait_for(1)
    assert received.rcpt_tos == (RECIPIENT,)
    assert b"Subject: verified peer" in received.data
    # Postfix's Received header records the verified client certificate.
    assert f'Client CN "{pki.peer.cn}"'.encode() in received.data
    assert b"verified OK" in received.data
    # The next hop verified the hospital's own certificate (mutual TLS on the way out too).
    assert received.client_cert_cn == pki.hospital.cn
    assert received.tls_version in ("TLSv1.2", "TLSv1.3")
    instance.wait_log(r"Verified TLS connection established to")
    instance.wait_log(r"status=sent")
    assert instance.queue_ids() == []


@pytest.mark.parametrize(
    "trust_foreign_ca", [False, True], ids=["igc-chain-only", "control-foreign-ca-trusted"]
)
def test_trust6_impostor_certificate_is_not_trusted(
    pki: Pki,
    postfix_factory: PostfixFactory,
    sink_factory: SinkFactory,
    base_dir: Path,
    trust_foreign_ca: bool,
) -> None:
    """The impostor carries the peer's CN but comes from a foreign CA. Control: trusting that CA
    (the one thing that differs) makes the very same transaction go through."""
    ca_file = pki.chain
    if trust_foreign_ca:
        ca_file = base_dir / "chain-and-foreign.pem"
        ca_file.write_bytes(pki.chain.read_bytes() + pki.foreign_ca.cert.read_bytes())
    instance, sink = _relay(pki, postfix_factory, sink_factory, ca_file)
    mark = instance.log_mark()
    transcript = _send_as(instance, pki.impostor, pki, "impostor")

    assert pki.impostor.cn == pki.peer.cn
    assert transcript.tls_version is not None  # TLS itself succeeded: only the trust differs
    if trust_foreign_ca:
        assert transcript.delivered, transcript
        instance.wait_log(r"Trusted TLS connection established from", since=mark)
        assert len(sink.wait_for(1)) == 1
    else:
        assert transcript.rcpt[RECIPIENT].code == 554, transcript
        assert transcript.data is None
        instance.wait_log(r"Untrusted TLS connection established from", since=mark)
        instance.wait_log(r"NOQUEUE: reject: RCPT .*Access denied", since=mark)
        assert sink.messages == []


def test_trust6_expired_certificate_is_not_trusted(
    pki: Pki, postfix_factory: PostfixFactory, sink_factory: SinkFactory
) -> None:
    instance, sink = _relay(pki, postfix_factory, sink_factory, pki.chain)
    mark = instance.log_mark()
    transcript = _send_as(instance, pki.expired, pki, "expired")
    assert transcript.rcpt[RECIPIENT].code == 554
    instance.wait_log(r"Untrusted TLS connection established from", since=mark)
    assert sink.messages == []
