"""The lab's trust list (issue 9): the published layout, signed by the pinned test signer (TRUST-3)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from lxml import etree

from mssante.lab import trustlist
from mssante.lab.pki import Pki
from mssante.lab.trustlist import NS, subject_dn, write_lab_list
from mssante.trustlist import pipeline
from mssante.trustlist.model import Refusal
from mssante.trustlist.settings import Settings

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "listeblanche-sample.xml"


def _read(pki: Pki, path: Path, signer: str | None = None) -> dict[str, list[str]]:
    settings = Settings(ca_file=pki.chain, signer=signer or subject_dn(pki.trustlist_signer.cert))
    trust_list = pipeline.read_list(path.read_bytes(), settings)
    return {name: domain.cns for name, domain in trust_list.domains.items()}


def test_trust3_lab_list_verifies_with_the_pinned_signer_and_lists_the_operators(
    pki: Pki, tmp_path: Path
) -> None:
    path = tmp_path / "listeblanche.xml"
    assert write_lab_list(pki, path) is True
    assert _read(pki, path) == {
        "hopital-a.mssante.test": ["mx.hopital-a.test"],
        "clinique-b.mssante.test": ["mx.clinique-b.test", "mx2.clinique-b.test"],
        "labo-c.mssante.test": ["mx.labo-c.test"],
    }
    # Control: pinned to another signer, the same file is refused.
    with pytest.raises(Refusal):
        _read(pki, path, signer="CN=Autre Signataire TEST")


def test_lab_list_keeps_the_published_layout(pki: Pki, tmp_path: Path) -> None:
    path = tmp_path / "listeblanche.xml"
    write_lab_list(pki, path)
    sample = etree.fromstring(SAMPLE.read_bytes())
    lab = etree.fromstring(path.read_bytes())
    assert lab.tag == sample.tag == f"{{{NS}}}ListeBlancheMSSante"

    def children(root: etree._Element) -> list[list[str]]:
        return [[etree.QName(field).localname for field in item] for item in root.iter(f"{{{NS}}}Domaine")]

    assert children(lab)[0] == children(sample)[0]
    assert etree.QName(lab[-1]).localname == "Signature"  # enveloped, last child of the root


def test_lab_list_rewritten_without_then_with_the_peer(pki: Pki, tmp_path: Path) -> None:
    path = tmp_path / "listeblanche.xml"
    write_lab_list(pki, path)
    assert write_lab_list(pki, path) is False  # a rerun changes nothing
    assert write_lab_list(pki, path, operators=("hospital", "other")) is True
    assert "clinique-b.mssante.test" not in _read(pki, path)
    assert write_lab_list(pki, path) is True
    assert "clinique-b.mssante.test" in _read(pki, path)
    with pytest.raises(ValueError, match="unknown"):
        write_lab_list(pki, path, operators=("hospital", "nobody"))


def test_lab_trustlist_command_removes_and_restores_the_peer(
    pki: Pki, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.copytree(pki.directory, tmp_path / "pki", ignore=shutil.ignore_patterns(".lock"))
    assert trustlist.main(["--dir", str(tmp_path), "--operators", "hospital,other", "--json"]) == 0
    path = tmp_path / "trustlist" / "listeblanche.xml"
    assert json.loads(capsys.readouterr().out) == {
        "changed": True,
        "path": str(path),
        "operators": ["hospital", "other"],
    }
    assert sorted(_read(pki, path)) == ["hopital-a.mssante.test", "labo-c.mssante.test"]
    assert trustlist.main(["--dir", str(tmp_path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["changed"] is True
    assert "clinique-b.mssante.test" in _read(pki, path)
