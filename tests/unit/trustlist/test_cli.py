"""The ``mssante-trustlist`` command line: options, config file, exit codes, show and diff (TRUST-8)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mssante.trustlist.cli import main

from .helpers import SIGNER_CN, Entry, build_list, pki, sign_with, signed_sample


@pytest.fixture(scope="module")
def signed() -> bytes:
    return signed_sample()


def compile_argv(source: Path, out: Path, *extra: str) -> list[str]:
    options = ["--ca", str(pki().chain), "--signer", SIGNER_CN]
    return ["compile", "--source", str(source), "--out", str(out), *options, *extra]


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_trust8_exit_codes_switched_unchanged_refused(tmp_path: Path, signed: bytes) -> None:
    source = write(tmp_path / "list.xml", signed)
    out = tmp_path / "out"
    assert main(compile_argv(source, out)) == 0
    assert main(compile_argv(source, out)) == 4
    write(source, signed.replace(b"<Nom>medecin", b"<Nom>medecix"))
    assert main(compile_argv(source, out)) == 1


def test_usage_errors_exit_2(tmp_path: Path, signed: bytes, capsys: pytest.CaptureFixture[str]) -> None:
    source = write(tmp_path / "list.xml", signed)
    assert main(["compile", "--source", str(source), "--out", str(tmp_path / "o")]) == 2
    assert "no CA" in capsys.readouterr().err
    assert main(["compile", "--out", str(tmp_path / "o"), "--allow-unsigned"]) == 2
    assert "no source" in capsys.readouterr().err
    with pytest.raises(SystemExit) as caught:
        main(["compile", "--bogus"])
    assert caught.value.code == 2
    bad_config = tmp_path / "bad.yml"
    bad_config.write_text(
        "trustlist:\n  max_shrink: 3\n  retries: -1\n  local_domains: x\n", encoding="utf-8"
    )
    assert main([*compile_argv(source, tmp_path / "o"), "--config", str(bad_config)]) == 2
    err = capsys.readouterr().err
    assert "max_shrink" in err and "retries" in err and "local_domains" in err  # every problem at once
    assert main([*compile_argv(source, tmp_path / "o"), "--local", "bad_name!.fr"]) == 2


def test_settings_from_config_file_cli_overrides(tmp_path: Path, signed: bytes) -> None:
    source = write(tmp_path / "list.xml", signed)
    out = tmp_path / "out"
    config = tmp_path / "mssante.yml"
    config.write_text(
        "schema: 1\n"
        "trustlist:\n"
        f"  source: {source}\n"
        f"  out_dir: {out}\n"
        f"  ca_file: {pki().chain}\n"
        "  signer: CN=Nobody\n"
        "  local_domains: [hopital-a.mssante.fr]\n",
        encoding="utf-8",
    )
    assert main(["compile", "--config", str(config)]) == 1  # the configured pin refuses the list
    assert main(["compile", "--config", str(config), "--signer", SIGNER_CN]) == 0
    index = json.loads((out / "current" / "index.json").read_text(encoding="utf-8"))
    assert index["domains"]["hopital-a.mssante.fr"]["local"] is True


def test_trust8_json_result_and_show(
    tmp_path: Path, signed: bytes, capsys: pytest.CaptureFixture[str]
) -> None:
    source = write(tmp_path / "list.xml", signed)
    out = tmp_path / "out"
    assert main([*compile_argv(source, out, "--local", "Hopital-A.mssante.fr"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["outcome"] == "switched" and result["exit_code"] == 0
    assert main(["show", "--out", str(out), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["generation"] == result["generation"]
    assert shown["status"]["outcome"] == "switched"
    by_name = {d["domain"]: d for d in shown["domains"]}
    assert by_name["xn--hpital-sud-rbb.mssante.fr"]["u_label"] == "hôpital-sud.mssante.fr"
    assert by_name["chu-exemple.mssante.fr"]["cns"] == ["mx1.chu-exemple.fr", "mx2.chu-exemple.fr"]
    assert by_name["hopital-a.mssante.fr"]["local"] is True
    assert main(["show", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "xn--hpital-sud-rbb.mssante.fr (hôpital-sud.mssante.fr)\tmssante.hopital-sud.fr" in text
    assert main(["show", "--out", str(tmp_path / "nothing")]) == 1


def test_help_documents_json_and_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["--help"], ["compile", "--help"], ["show", "--help"]):
        with pytest.raises(SystemExit):
            main(argv)
        text = capsys.readouterr().out
        assert '"outcome"' in text or '"domains"' in text
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "4 unchanged" in capsys.readouterr().out


def test_diff_between_lists(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    old = write(
        tmp_path / "old.xml",
        build_list([Entry("a.mssante.fr", "CN=mx.a.fr"), Entry("b.mssante.fr", "CN=mx.b.fr")]),
    )
    new = write(
        tmp_path / "new.xml",
        sign_with(build_list([Entry("A.mssante.fr", "CN=mx2.a.fr"), Entry("c.mssante.fr", "CN=mx.c.fr")])),
    )
    assert main(["diff", str(old), str(new), "--json"]) == 1
    result = json.loads(capsys.readouterr().out)
    assert result == {
        "added": [{"domain": "c.mssante.fr", "cns": ["mx.c.fr"]}],
        "removed": [{"domain": "b.mssante.fr", "cns": ["mx.b.fr"]}],
        "changed": [{"domain": "a.mssante.fr", "cns_added": ["mx2.a.fr"], "cns_removed": ["mx.a.fr"]}],
    }
    assert main(["diff", str(old), str(old)]) == 0
    assert main(["diff", str(old), str(tmp_path / "missing.xml")]) == 2
    # Compiled directories compare the same way.
    out = tmp_path / "out"
    assert main(compile_argv(new, out)) == 0
    capsys.readouterr()
    assert main(["diff", str(out), str(new)]) == 0
    assert main(["diff", str(out / "current"), str(old)]) == 1
    assert "- c.mssante.fr" in capsys.readouterr().out
