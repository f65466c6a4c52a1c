"""The lab's seeding of the revoked certificate (TLS-4): what it hands to the hospital's entry point."""

from __future__ import annotations

import json
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from mssante.lab import revocation
from mssante.lab.pki import Pki
from mssante.revocation.learned import fingerprint


def test_tls4_seeding_uses_the_revoked_leaf_and_the_peers_cn(pki: Pki, tmp_path: Path) -> None:
    enter = ["nsenter", "--net=/run/netns/x", "--"]
    document = {
        "pki": {"revoked": {"cert": str(pki.revoked.fullchain), "cn": pki.revoked.cn}},
        "hosts": {"hospital": {"enter": enter}},
    }
    (tmp_path / "lab.json").write_text(json.dumps(document))
    seeding = revocation.from_lab_json(tmp_path)
    assert seeding.cn == pki.peer.cn and seeding.enter == enter
    leaf = x509.load_pem_x509_certificate(pki.revoked.cert.read_bytes())
    # The leaf's SHA-256 certificate fingerprint (the file also holds its issuing CA after it).
    assert revocation.fingerprint(seeding.cert) == fingerprint(leaf)
    assert revocation.fingerprint(seeding.cert) != revocation.fingerprint(pki.peer.fullchain)
    assert leaf.fingerprint(hashes.SHA256()).hex().upper() == revocation.fingerprint(seeding.cert).replace(
        ":", ""
    )
