"""The lab's OAuth side (AUTH-1): tokens minted for a mailbox's owner, accepted by the introspection store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mssante.lab import oauth
from mssante.lab.cli import main
from mssante.oauth.introspect import TokenStore

OWNER = "810001234567"
DOCUMENT = {
    "hosts": {
        "hospital": {
            "mailboxes": [
                {"address": "dr.martin@hopital-a.mssante.test", "type": "PER", "owners": [OWNER]},
                {"address": "dpi@hopital-a.mssante.test", "type": "APP", "owners": ["dpi-app"]},
                {"address": "orphan@hopital-a.mssante.test", "type": "ORG", "owners": []},
            ]
        }
    }
}


@pytest.fixture
def lab_dir(tmp_path: Path) -> Path:
    (tmp_path / "lab.json").write_text(json.dumps(DOCUMENT))
    return tmp_path


def test_auth1_lab_token_is_active_for_the_mailbox_owner(lab_dir: Path) -> None:
    token = oauth.mint(lab_dir, "Dr.Martin@hopital-a.mssante.test", now=1000.0)
    assert 3000 < len(token) < 4096  # realistic size, fits Dovecot's and Postfix's lines once raised
    answer = TokenStore(oauth.tokens_file(lab_dir)).lookup(token, 1500.0)
    assert answer["active"] is True and answer["sub"] == OWNER
    assert (
        TokenStore(oauth.tokens_file(lab_dir)).lookup(token, 1000.0 + oauth.TOKEN_LIFETIME)["active"] is False
    )


def test_auth1_lab_tokens_differ_and_expired_ones_are_dropped(lab_dir: Path) -> None:
    first = oauth.mint(lab_dir, "dpi@hopital-a.mssante.test", lifetime=10, now=1000.0)
    second = oauth.mint(lab_dir, "dpi@hopital-a.mssante.test", now=2000.0)
    kept = json.loads(oauth.tokens_file(lab_dir).read_text())["tokens"]
    assert first != second and list(kept) == [second]
    assert kept[second]["sub"] == "dpi-app"


@pytest.mark.parametrize("mailbox", ["orphan@hopital-a.mssante.test", "jean.dupont@hopital-a.test"])
def test_lab_token_refuses_a_mailbox_without_owner(lab_dir: Path, mailbox: str) -> None:
    with pytest.raises(oauth.UnknownMailbox):
        oauth.mint(lab_dir, mailbox)
    assert main(["token", "--dir", str(lab_dir), mailbox]) == 2


def test_lab_token_command_prints_one_token(lab_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["token", "--dir", str(lab_dir), "dr.martin@hopital-a.mssante.test"]) == 0
    printed = capsys.readouterr().out
    assert (
        printed.count("\n") == 1
        and printed.strip() in json.loads(oauth.tokens_file(lab_dir).read_text())["tokens"]
    )
    assert oauth.token_command(lab_dir)[-1] == "{mailbox}"
