"""The Postfix fixture itself: several instances at once, queue inspection, check, TLS floor (TLS-1)."""

from __future__ import annotations

import ssl

import pytest
from tests.conftest import PostfixFactory, SinkFactory
from tests.support.common import random_loopback
from tests.support.postfix import FAST_RETRY, PostfixError, smtpd_tls_settings
from tests.support.smtpclient import TlsOptions, message, send

from mssante.lab.pki import Pki


def test_two_instances_chain_and_a_deferral_is_visible_in_the_queue(
    postfix_factory: PostfixFactory, sink_factory: SinkFactory
) -> None:
    sink = sink_factory()
    sink.data_reply = "451 4.3.0 try again later"
    relay = postfix_factory(
        "relay",
        settings={**FAST_RETRY, "relayhost": sink.hostport, "relay_domains": "example.test"},
        start=True,
    )
    front = postfix_factory(
        "front",
        settings={"relayhost": relay.hostport, "relay_domains": "example.test"},
        start=True,
    )
    assert len({front.queue_dir, relay.queue_dir}) == 2
    transcript = send(
        front.address,
        front.port,
        sender="a@test",
        recipients=["b@example.test"],
        message=message("a@test", "b@example.test", subject="chained"),
        starttls=False,
        source_address=random_loopback(),
    )
    assert transcript.delivered, transcript
    assert transcript.queue_id is not None
    front.wait_log(rf"{transcript.queue_id}: .*status=sent")
    relay.wait_log(r"status=deferred \(host .* said: 451 4\.3\.0 try again later")
    (queued,) = relay.queue_ids()
    assert sink.messages and all(b"Subject: chained" in m.data for m in sink.messages)

    sink.data_reply = "250 2.0.0 OK"
    relay.flush()
    relay.wait_log(rf"{queued}: .*status=sent")
    assert relay.queue_ids() == []


def test_check_reports_configuration_errors(postfix_factory: PostfixFactory) -> None:
    instance = postfix_factory("broken")
    assert instance.check() is not None  # control: the clean configuration passes
    instance.postconf({"default_process_limit": "many"})
    with pytest.raises(PostfixError, match="default_process_limit"):
        instance.check()
    with pytest.raises(PostfixError):
        instance.start(timeout=10)


LEGACY_SERVER = {
    "smtpd_tls_protocols": ">=TLSv1",
    "smtpd_tls_mandatory_protocols": ">=TLSv1",
    "tls_medium_cipherlist": "DEFAULT:@SECLEVEL=0",
}


@pytest.mark.parametrize(
    "legacy_server,max_version,expected",
    [
        (False, ssl.TLSVersion.TLSv1_1, None),
        (False, ssl.TLSVersion.TLSv1_2, "TLSv1.2"),
        (True, ssl.TLSVersion.TLSv1_1, "TLSv1.1"),  # control: the client really offers TLS 1.1
    ],
    ids=["tls1.1-refused", "tls1.2-accepted", "control-legacy-server-accepts-tls1.1"],
)
def test_tls1_server_refuses_tls_below_1_2(
    pki: Pki,
    postfix_factory: PostfixFactory,
    legacy_server: bool,
    max_version: ssl.TLSVersion,
    expected: str | None,
) -> None:
    settings = smtpd_tls_settings(pki.hospital.fullchain, pki.hospital.key, pki.chain)
    instance = postfix_factory(
        "tlsfloor", settings={**settings, **(LEGACY_SERVER if legacy_server else {})}, start=True
    )
    mark = instance.log_mark()
    transcript = send(
        instance.address,
        instance.port,
        sender="a@test",
        recipients=["b@example.test"],
        message=message("a@test", "b@example.test"),
        tls=TlsOptions(ca_file=pki.chain, max_version=max_version),
        source_address=random_loopback(),
    )
    assert transcript.tls_version == expected, transcript
    if expected is None:
        assert transcript.tls_error is not None
        instance.wait_log(r"SSL_accept error.*\n.*unsupported protocol", since=mark)
    else:
        assert transcript.ehlo_tls is not None and transcript.ehlo_tls.code == 250
