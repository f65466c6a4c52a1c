"""TLS-4 through a real Postfix: a revoked peer certificate is refused on port 25, while the valid
certificate with the same CN (a reissue) keeps working; the deny-list is built by mssante-revocation
from a verified CRL and survives a restart."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import yaml
from tests.milter.lab import start_lab, stop_lab
from tests.support.postfix import PostfixInstance
from tests.support.sink import Sink
from tests.support.smtpclient import TlsOptions, Transcript, send

from mssante.lab.pki import Leaf, Pki
from mssante.revocation.denylist import REJECT_TEXT

LOCAL = "hopital-a.mssante.test"
MESSAGE = "From: dr.b@clinique-b.mssante.test\r\nSubject: compte rendu\r\n\r\nbonjour\r\n"


def revocation(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mssante.revocation", *args, "--config", str(config)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def write_config(base: Path, pki: Pki, postfix: PostfixInstance) -> Path:
    config = base / "mssante.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "schema": 1,
                "revocation": {
                    "dir": str(base / "revocation"),
                    "crls": [{"ca": "igc_org", "url": str(pki.intermediate.crl), "issuer": str(pki.chain)}],
                    "ca_file": str(pki.chain),
                    "probe": False,
                    "postfix_config_dir": str(postfix.config_dir),
                },
            }
        )
    )
    return config


def peer_send(postfix: PostfixInstance, pki: Pki, leaf: Leaf) -> Transcript:
    tls = TlsOptions(cert=leaf.fullchain, key=leaf.key, ca_file=pki.chain)
    return send(postfix.address, postfix.port, sender="dr.b@clinique-b.mssante.test",
                recipients=[f"dr.a@{LOCAL}"], message=MESSAGE, tls=tls)  # fmt: skip


def test_tls4_revoked_certificate_refused_reissue_with_same_cn_accepted(
    pki: Pki, base_dir: Path, postfix_factory: Callable[..., PostfixInstance], sink: Sink
) -> None:
    assert pki.revoked.cn == pki.peer.cn  # the reissued, valid certificate carries the same CN
    postfix = postfix_factory("mssante")
    deny_map = base_dir / "revocation" / "ccert_access"
    config = write_config(base_dir, pki, postfix)

    assert revocation(config, "refresh-crls").returncode == 0
    for leaf in (pki.revoked, pki.peer):  # both were served by the peer at some point
        seeded = revocation(config, "learn", "--seed", str(leaf.cert), "--cn", leaf.cn)
        assert seeded.returncode == 0, seeded.stderr
    built = revocation(config, "build")
    assert built.returncode == 0, built.stderr
    assert "1 revoked of 2 learned" in built.stderr

    postfix.postconf({
        "smtpd_tls_cert_file": str(pki.hospital.fullchain),
        "smtpd_tls_key_file": str(pki.hospital.key),
        "smtpd_tls_security_level": "encrypt",
        "smtpd_tls_ask_ccert": "yes",
        "smtpd_tls_CAfile": str(pki.chain),
        "smtpd_tls_CApath": "",
        "smtpd_tls_fingerprint_digest": "sha256",
        "smtpd_client_restrictions": f"check_ccert_access hash:{deny_map}",
        "relay_domains": LOCAL,
        "relay_transport": f"smtp:[{sink.address}]:{sink.port}",
        "smtpd_recipient_restrictions": "permit_auth_destination, reject",
    })  # fmt: skip
    postfix.start()

    refused = peer_send(postfix, pki, pki.revoked)
    rcpt = refused.rcpt[f"dr.a@{LOCAL}"]
    assert rcpt.code == 554 and "revoked" in rcpt.text and "5.7.1" in rcpt.text
    assert peer_send(postfix, pki, pki.peer).delivered  # same CN, not revoked: accepted
    sink.wait_for(1)

    # The deny-list is a file: a restart of Postfix keeps it, and so does a rebuild without the network.
    postfix.stop()
    postfix.start()
    assert peer_send(postfix, pki, pki.revoked).rcpt[f"dr.a@{LOCAL}"].code == 554
    assert revocation(config, "build").returncode == 0
    assert peer_send(postfix, pki, pki.revoked).rcpt[f"dr.a@{LOCAL}"].code == 554


def test_tls4_control_without_the_deny_list_the_revoked_certificate_passes(
    pki: Pki, postfix_factory: Callable[..., PostfixInstance], sink: Sink
) -> None:
    """Control: Postfix alone trusts the revoked certificate (its chain verifies), hence the deny-list."""
    postfix = postfix_factory("plain")
    postfix.postconf({
        "smtpd_tls_cert_file": str(pki.hospital.fullchain),
        "smtpd_tls_key_file": str(pki.hospital.key),
        "smtpd_tls_security_level": "encrypt",
        "smtpd_tls_ask_ccert": "yes",
        "smtpd_tls_CAfile": str(pki.chain),
        "relay_domains": LOCAL,
        "relay_transport": f"smtp:[{sink.address}]:{sink.port}",
        "smtpd_recipient_restrictions": "permit_auth_destination, reject",
    })  # fmt: skip
    postfix.start()
    assert peer_send(postfix, pki, pki.revoked).delivered


def test_tls4_revoked_certificate_refusal_is_journaled_by_the_milter(pki: Pki) -> None:
    """TLS-4, TRACE-1: the real milter and journal behind a Postfix applying the deny-list as the role
    does (client restrictions, at RCPT): the milter accepted MAIL (the certificate verified, its CN is
    listed) and journals Postfix's refusal with its reason; the reissued certificate is accepted."""
    lab = start_lab(pki)
    try:
        config = lab.base / "revocation.yml"
        config.write_text(yaml.safe_dump({"schema": 1, "revocation": {
            "dir": str(lab.base / "revocation"), "probe": False, "ca_file": str(pki.chain),
            "crls": [{"ca": "igc_org", "url": str(pki.intermediate.crl)}],
            "postfix_config_dir": str(lab.postfix.config_dir),
        }}))  # fmt: skip
        seeded = revocation(config, "learn", "--seed", str(pki.revoked.cert), "--cn", pki.revoked.cn)
        assert seeded.returncode == 0, seeded.stderr
        built = revocation(config, "run")
        assert built.returncode == 0 and "1 revoked of 1 learned" in built.stderr, built.stderr
        deny_map = lab.base / "revocation" / "ccert_access"
        lab.postfix.postconf({
            "smtpd_tls_fingerprint_digest": "sha256",
            "smtpd_client_restrictions": f"check_ccert_access hash:{deny_map}",
        })  # fmt: skip
        lab.postfix.reload()
        sender, rcpt = f"dr.durand@{lab.peer}", f"dr.martin@{lab.local}"
        body = f"From: <{sender}>\r\nTo: <{rcpt}>\r\nSubject: cr\r\n\r\nBonjour.\r\n".encode()

        refused = lab.send(lab.peer_port, sender, [rcpt], body, cert=pki.revoked)
        reply = refused.rcpt[rcpt]
        assert reply.code == 554 and REJECT_TEXT.removeprefix("REJECT 5.7.1 ") in reply.text, reply
        assert refused.mail is not None and refused.mail.code == 250  # the milter let MAIL through
        accepted = lab.send(lab.peer_port, sender, [rcpt], body, cert=pki.peer)  # control: the reissue
        assert accepted.delivered

        [record] = [r for r in lab.records() if r.get("type") == "refused"]
        assert record["reason"] == "rejected-by-mta"
        assert record["rcpts"] == [{"address": rcpt, "status": "refused"}]
        assert "5.7.1" in str(record["reply"]) and "revoked" in str(record["reply"])
    finally:
        stop_lab(lab)
