"""The compiled Postfix maps, read by Postfix itself (TRUST-1, TRUST-5, TRUST-7 routing, TRUST-8).

``postmap -q`` against the MSSanté-like instance's configuration directory gives the ``mssante``
transport and the right TLS policy for a listed domain (A-label and U-label, any case), and
nothing for an unlisted or a local domain; ``postfix check`` accepts an instance using the maps.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.common import make_base_dir, random_loopback, remove_base_dir
from tests.support.postfix import PostfixInstance
from tests.unit.trustlist.helpers import SIGNER_CN, pki, signed_sample

LOCAL = "chu-exemple.mssante.fr"  # listed, and also declared as the hospital's own domain
OWN = "hopital-a.mssante.fr"  # not listed, declared local


@pytest.fixture(scope="module")
def compiled() -> Iterator[tuple[PostfixInstance, Path]]:
    base = make_base_dir("trustlist")
    try:
        instance = PostfixInstance.create(base, "trustlist", address=random_loopback(), port=2525)
        source = base / "listeblanchemssante.xml"
        source.write_bytes(signed_sample())
        out = base / "trustlist"
        argv = [
            sys.executable, "-m", "mssante.trustlist", "compile", "--source", str(source), "--out", str(out),
            "--ca", str(pki().chain), "--signer", SIGNER_CN, "--local", LOCAL, "--local", OWN,
            "--postfix-config-dir", str(instance.config_dir),
        ]  # fmt: skip
        result = subprocess.run(
            argv, capture_output=True, text=True, timeout=120, env=dict(os.environ), check=False
        )
        assert result.returncode == 0, result.stderr
        yield instance, out / "current"
    finally:
        remove_base_dir(base)


def query(instance: PostfixInstance, table: Path, key: str) -> str | None:
    result = subprocess.run(
        ["postmap", "-c", str(instance.config_dir), "-q", key, f"hash:{table}"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    if result.returncode == 1:
        return None
    assert result.returncode == 0, result.stderr
    return result.stdout.rstrip("\n")


@pytest.mark.parametrize(
    ("key", "cns"),
    [
        ("medecin.mssante.fr", "smtp.operateur-national.example"),
        ("UC-Clinique.mssante.fr", "relais.clinique-exemple.fr"),
        ("uc-clinique.mssante.fr", "relais.clinique-exemple.fr"),
        ("xn--hpital-sud-rbb.mssante.fr", "mssante.hopital-sud.fr"),
        ("hôpital-sud.mssante.fr", "mssante.hopital-sud.fr"),
        ("HÔPITAL-SUD.mssante.fr", "mssante.hopital-sud.fr"),
    ],
)
def test_trust1_listed_domain_routed_to_mssante_with_tls_policy(
    compiled: tuple[PostfixInstance, Path], key: str, cns: str
) -> None:
    instance, current = compiled
    assert query(instance, current / "transport", key) == "mssante:"
    assert query(instance, current / "tls_policy", key) == f"secure match={cns} protocols=>=TLSv1.2"


def test_trust4_every_certificate_of_a_domain_matches(compiled: tuple[PostfixInstance, Path]) -> None:
    instance, current = compiled
    # chu-exemple is local here; its CNs still show in the index but it is not routed out.
    assert query(instance, current / "transport", LOCAL) is None
    policy = (current / "tls_policy").read_text(encoding="utf-8")
    assert "mx1.chu-exemple.fr" not in policy


@pytest.mark.parametrize(
    "key", ["absent.mssante.fr", "mssante.fr", "medecin.mssante.fr.evil.example", OWN, LOCAL]
)
def test_trust1_unlisted_or_local_domain_not_routed(compiled: tuple[PostfixInstance, Path], key: str) -> None:
    instance, current = compiled
    assert query(instance, current / "transport", key) is None
    assert query(instance, current / "tls_policy", key) is None


def test_trust8_postfix_accepts_the_maps(compiled: tuple[PostfixInstance, Path]) -> None:
    instance, current = compiled
    instance.postconf(
        {
            "transport_maps": f"hash:{current}/transport",
            "smtp_tls_policy_maps": f"hash:{current}/tls_policy",
            "default_transport": "error:domain not in the MSSanté trust space",
        }
    )
    instance.add_master_service("mssante", "unix", "smtp")
    instance.check(strict=True)
    # Postfix resolves the route through the compiled map.
    result = subprocess.run(
        ["postmap", "-c", str(instance.config_dir), "-q", "medecin.mssante.fr", f"hash:{current}/transport"],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    assert result.stdout.strip() == "mssante:"
