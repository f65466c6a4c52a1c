"""Render tests of the mssante_dovecot templates and filter (no Dovecot needed).

Invariants of the rendered configuration that the e2e tests rely on: MSSanté passdbs limited to MSSanté
names or to EXTERNAL, the OAuth passdb never `noplaintext`, every MSSanté listener address with TLS
required, TLS >= 1.2 and CRLs required (TLS-1, TLS-5, AUTH-1, AUTH-2).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from tests.e2e.test_dovecot_harness import DOMAIN, ROLE, dovecot_model, render_role, role_vars, shared_pki

ADDRESSES = {"ordinary": "127.0.0.10", "app": "127.0.0.11", "personal": "127.0.0.12"}


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    base = tmp_path_factory.mktemp("render")
    variables = role_vars(base, shared_pki(), ADDRESSES, "http://127.0.0.1:1/introspect")
    return {str(p.relative_to(base)): p.read_text() for p in render_role(variables, base)}


def _blocks(text: str, kind: str) -> list[str]:
    return re.findall(rf"^{kind} [^{{]*\{{.*?^\}}", text, flags=re.S | re.M)


def test_auth1_oauth_passdb_limited_to_mssante_names_never_noplaintext(rendered: dict[str, str]) -> None:
    auth = rendered["etc/dovecot/conf.d/05-mssante-auth.conf"]
    passdbs = _blocks(auth, "passdb")
    assert len(passdbs) == 4
    oauth = passdbs[0]
    assert "driver = oauth2" in oauth and "mechanisms = xoauth2 oauthbearer" in oauth
    assert f"*@{DOMAIN}" in oauth
    assert all("noplaintext" not in block for block in passdbs)


def test_auth2_certificate_passdb_serves_external_only(rendered: dict[str, str]) -> None:
    passdb = _blocks(rendered["etc/dovecot/conf.d/05-mssante-auth.conf"], "passdb")[1]
    assert "mechanisms = external" in passdb
    assert "username_format=%{local_ip}/%u" in passdb
    entries = [
        line
        for line in rendered["etc/dovecot/mssante/app-certs.passwd"].splitlines()
        if line.endswith("::::::")
    ]
    # Application CNs on the app address; owner identities (CPS cards) on the personal address only.
    assert entries == [
        f"{ADDRESSES['app']}/dpi.hopital-a.test:{{PLAIN}}::::::",
        f"{ADDRESSES['personal']}/810001234567:{{PLAIN}}::::::",
    ]


def test_auth1_last_passdb_refuses_every_mssante_name(rendered: dict[str, str]) -> None:
    last = _blocks(rendered["etc/dovecot/conf.d/05-mssante-auth.conf"], "passdb")[-1]
    assert "result_success = return-fail" in last and "username_filter = " in last
    assert "mechanisms" not in last


def test_tls1_every_mssante_address_requires_tls12_and_crls(rendered: dict[str, str]) -> None:
    blocks = _blocks(rendered["etc/dovecot/conf.d/99-mssante.conf"], "local")
    assert {b.split()[1] for b in blocks} == {ADDRESSES["app"], ADDRESSES["personal"]}
    for block in blocks:
        for line in (
            "ssl = required",
            "ssl_min_protocol = TLSv1.2",
            "ssl_require_crl = yes",
            "disable_plaintext_auth = yes",
            "ssl_verify_client_cert = yes",
        ):
            assert line in block


def test_model_refuses_names_dovecot_cannot_filter() -> None:
    mailboxes = [{"address": f"a@{DOMAIN}", "type": "PER", "owners": ["MARTIN Jean"], "cert_cns": []}]
    with pytest.raises(ValueError, match="cannot hold spaces"):
        dovecot_model(mailboxes, [DOMAIN], [], "/m", "/m/d")


def test_model_refuses_two_ca_sets_on_one_address() -> None:
    listeners = [
        {"name": "a", "address": "192.0.2.1", "port": 143, "client_ca": "app"},
        {"name": "b", "address": "192.0.2.1", "port": 993, "client_ca": "personal"},
    ]
    with pytest.raises(ValueError, match="one address serves one client CA set"):
        dovecot_model([], [DOMAIN], listeners, "/m", "/m/d")


def test_role_files_list_matches_templates() -> None:
    listed = (ROLE / "vars" / "main.yml").read_text()
    for template in (ROLE / "templates" / "etc" / "dovecot").rglob("*.j2"):
        assert str(template.relative_to(ROLE / "templates")) in listed
    assert Path(ROLE / "meta" / "argument_specs.yml").exists()
