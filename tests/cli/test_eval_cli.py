"""sisr eval: the table, the three result files, never overwriting, and one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from sisr.cli import main
from sisr.data.io import write_image
from sisr.metrics import psnr, ssim


@pytest.fixture
def data_root(tmp_path):
    rng = np.random.default_rng(0)
    for name in ("A", "B"):
        for i in range(2):
            write_image(tmp_path / "data" / name / "HR" / f"{i}.png", rng.integers(0, 256, (24, 30, 3), dtype=np.uint8))
    return tmp_path / "data"


def test_table_and_result_files(data_root, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["eval", "--model", "bicubic", "--data-root", str(data_root), "--datasets", "A", "B",
               "--scales", "2", "3", "-o", str(out)])
    assert rc == 0
    captured = capsys.readouterr()
    printed, logged = captured.out, captured.err.splitlines()
    finished = [line for line in logged if "image(s) scored" in line]  # stderr is not a terminal: a line per set
    assert len(finished) == 4 and finished[-1].endswith("(8/8 images)") and "2 image(s) scored" in finished[0]
    lines = printed.splitlines()
    assert lines[0].split() == ["PSNR/SSIM", "(Y)", "x2", "x3"]
    assert [line.split()[0] for line in lines[1:3]] == ["A", "B"]
    assert "LR A x2: matlab-resize, symmetric (2/2)" in printed and f"results written to {out}/" in printed

    data = json.loads((out / "results.json").read_text())
    a2 = next(r for r in data["results"] if (r["dataset"], r["scale"]) == ("A", 2))
    assert lines[1].split()[1] == f"{a2['psnr_y']:.2f}/{a2['ssim_y']:.4f}"
    proto = data["protocol"]
    assert proto["command"].startswith("sisr eval --model bicubic --data-root ")
    assert "--datasets A B --scales 2 3" in proto["command"] and "--lr-source auto" in proto["command"]
    assert {"metrics", "shave", "quantisation", "lr", "gray_images", "software", "device", "date"} <= set(proto)
    assert data["model"]["label"] == "bicubic"
    csv_lines = (out / "per_image.csv").read_text().splitlines()
    header = next(line for line in csv_lines if not line.startswith("#"))
    assert header.startswith("dataset,scale,image,psnr_y,ssim_y,psnr_rgb")
    assert sum(not line.startswith("#") for line in csv_lines) == 1 + 2 * 2 * 2
    assert any(line.startswith("# command: sisr eval") for line in csv_lines)
    assert "| A |" in (out / "table.md").read_text()

    # never overwrite; --overwrite replaces
    assert main(["eval", "--model", "bicubic", "--data-root", str(data_root), "--datasets", "A", "--scales", "2",
                 "-o", str(out)]) == 1
    assert "results.json: already exists" in capsys.readouterr().err
    assert main(["eval", "--model", "bicubic", "--data-root", str(data_root), "--datasets", "A", "--scales", "2",
                 "-o", str(out), "--overwrite"]) == 0


def test_per_image_scores_match_the_metrics(data_root, tmp_path):
    from sisr.data.benchmark import BenchmarkSet
    from sisr.data.resize import imresize

    out = tmp_path / "o"
    assert main(["eval", "--model", "bicubic", "--data-root", str(data_root), "--datasets", "A", "--scales", "3",
                 "--shave", "1", "-o", str(out)]) == 0
    image = json.loads((out / "results.json").read_text())["results"][0]["images"][0]
    item = BenchmarkSet(data_root, "A", 3)[0]
    sr = np.round(np.clip(imresize(item.lr.astype(np.float64) / 255, 3), 0, 1) * 255).astype(np.uint8)
    assert image["psnr_y"] == pytest.approx(psnr(sr, item.hr, 1), abs=1e-4)
    assert image["ssim_y"] == pytest.approx(ssim(sr, item.hr, 1), abs=1e-5)


def test_default_output_folder(data_root, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    args = ["eval", "--model", "bicubic", "--data-root", str(data_root), "--datasets", "A", "--scales", "2"]
    assert main(args) == 0 and main(args) == 0
    runs = sorted((tmp_path / "results").iterdir())
    assert len(runs) == 2 and all(r.name.startswith("eval-bicubic-") for r in runs)
    assert all((r / "results.json").is_file() for r in runs)


def test_user_errors_are_one_line(data_root, capsys):
    cases = [
        (["--datasets", "Set7"], "Set7: no such benchmark set (found: A, B)"),
        (["--model", "nope"], "unknown model 'nope' and no such weights file"),
        (["--scales", "5"], "supports scales"),
        (["--lr-source", "files"], "missing LR file"),
    ]
    for extra, message in cases:
        args = ["eval", "--model", "bicubic", "--data-root", str(data_root), "--datasets", "A", "--scales", "2"]
        rc = main(args + extra)
        err = capsys.readouterr().err
        assert rc == 1 and message in err and err.count("\n") == 1 and err.startswith("sisr eval: error: ")
    with pytest.raises(SystemExit) as exc:
        main(["eval", "--model", "bicubic", "--data-root", str(data_root), "--tile", "0"])
    assert exc.value.code == 2


def test_help_runs_as_a_module():
    out = subprocess.run([sys.executable, "-m", "sisr", "eval", "--help"], capture_output=True, text=True, check=True)
    for option in ("--self-ensemble", "--chop", "--tile", "--weights", "--lr-source", "--gray-images", "-o"):
        assert option in out.stdout


def test_one_eval_call_with_three_weights_files_writes_a_paper_table(tmp_path, capsys, datasets_root):
    import json

    from sisr import create_model
    from sisr.weights import save_weights

    files = []
    for s in (2, 3, 4):
        net = create_model("edsr-baseline", scale=s, n_resblocks=1, n_feats=8)
        path = tmp_path / f"w{s}.safetensors"
        save_weights(net.state_dict(), path, model="edsr-baseline", scale=s, hparams={"n_resblocks": 1, "n_feats": 8})
        files.append(f"{s}={path}")
    out = tmp_path / "table"
    assert main(["eval", "--model", "edsr-baseline", "--weights", *files, "--self-ensemble", "both",
                 "--data-root", str(datasets_root), "--datasets", "Set5", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    rows = [line for line in text.splitlines() if line.startswith("| edsr-baseline")]
    assert len(rows) == 6 and sum("edsr-baseline+" in r for r in rows) == 3  # plain and "+" at x2, x3, x4
    for name in ("results.json", "table.md", "table.csv", "table.tex", "env.json", "x3-plus/results.json"):
        assert (out / name).is_file(), name
    summary = json.loads((out / "results.json").read_text())
    assert sorted((r["method"], r["scale"]) for r in summary["rows"])[0] == ("edsr-baseline", 2)
    assert "torch" in json.loads((out / "env.json").read_text())


def test_eval_weights_per_scale_errors_are_one_line(tmp_path, capsys, datasets_root):
    for bad in (["2=a", "2=b"], ["x=a", "3=b"], ["2="]):
        assert main(["eval", "--model", "edsr-baseline", "--weights", *bad, "--data-root", str(datasets_root),
                     "-o", str(tmp_path / "o")]) == 1
        assert "--weights: expected" in capsys.readouterr().err


def test_overwrite_refuses_to_leave_another_runs_results_beside_its_own(data_root, tmp_path, capsys):
    """A paper table (x3, plain and "+") then a single run into the same folder with --overwrite left the table's
    table.csv, table.tex, x3/ and x3-plus/ beside the new x2 results.json."""
    out, base = tmp_path / "ev", ["eval", "--model", "bicubic", "--data-root", str(data_root), "--datasets", "A"]
    assert main([*base, "--scales", "3", "--self-ensemble", "both", "-o", str(out)]) == 0
    assert {"x3", "x3-plus", "table.csv"} <= {p.name for p in out.iterdir()}
    capsys.readouterr()
    assert main([*base, "--scales", "2", "-o", str(out), "--overwrite"]) == 1
    err = capsys.readouterr().err
    assert "holds results of another eval run" in err and "table.csv, table.tex, x3-plus/, x3/" in err
    assert json.loads((out / "results.json").read_text())["rows"][0]["scale"] == 3  # untouched
    assert main([*base, "--scales", "3", "--self-ensemble", "both", "-o", str(out), "--overwrite"]) == 0
