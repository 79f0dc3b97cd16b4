"""sisr profile: files, refusal to overwrite, clear errors."""

from __future__ import annotations

import json

import pytest

from sisr.cli import main

ARGS = ["profile", "--models", "edsr-baseline,bicubic", "--tiny", "--input", "12x16", "--runs", "2",
        "--device", "cpu", "--in-process"]


def test_writes_json_and_markdown_then_refuses_to_overwrite(tmp_path, capsys):
    out = tmp_path / "prof"
    assert main([*ARGS, "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("| | edsr-baseline | bicubic |")
    data = json.loads((out / "profile.json").read_text())
    assert [r["model"] for r in data["rows"]] == ["edsr-baseline", "bicubic"]
    assert data["settings"]["input_hw"] == [12, 16] and data["settings"]["runs"] == 2
    assert data["settings"]["command"].startswith("sisr profile --models edsr-baseline,bicubic")
    assert all(len(r["runtimes_s"]) == 2 for r in data["rows"])
    md = (out / "profile.md").read_text()
    assert md.splitlines()[0] == "| | edsr-baseline | bicubic |"

    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert main([*ARGS, "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert "already exists" in err and "--overwrite" in err and len(err.strip().splitlines()) == 1
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before

    assert main([*ARGS, "-o", str(out), "--overwrite"]) == 0


@pytest.mark.parametrize("args, message", [
    (["--models", "edsr-baseline,nope"], "unknown model 'nope'"),
    (["--models", "csnln", "--scale", "8"], "supports scales 2, 3, 4; got 8"),
    (["--models", "rcan", "--input", "160"], "input size '160': expected HxW"),
    (["--models", "rcan", "--input", "0x160"], "input size '0x160'"),
    (["--models", "rcan", "--runs", "-2"], "runs must be >= 0"),
])
def test_bad_input_is_one_line_error_and_writes_nothing(tmp_path, capsys, args, message):
    out = tmp_path / "prof"
    assert main(["profile", *args, "--tiny", "--in-process", "-o", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("sisr profile: error:") and message in err and "\n" not in err
    assert not out.exists()
