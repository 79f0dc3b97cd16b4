"""sisr report: writes the folder, refuses to overwrite, one-line errors for bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import sisr
from sisr.cli import main
from sisr.data.io import write_image
from sisr.models import get_info, has_parameters
from sisr.weights import save_weights
from sisr.weights.pretrained import pretrained_path


# a registry model with parameters and no weights shipped at x2
NO_WEIGHTS = next((n for n in sisr.list_models() if has_parameters(n) and pretrained_path(n, 2) is None), None)


@pytest.fixture
def data_root(tmp_path):
    rng = np.random.default_rng(0)
    for name in ("A", "B"):
        for i in range(2):
            base = rng.integers(0, 256, (9, 10, 3)).astype(np.uint8)
            write_image(tmp_path / "data" / name / "HR" / f"{i}.png", np.kron(base, np.ones((4, 4, 1), np.uint8)))
    return tmp_path / "data"


@pytest.fixture
def edsr_file(tmp_path):
    torch.manual_seed(0)
    tiny = dict(get_info("edsr-baseline").tiny)
    net = sisr.create_model("edsr-baseline", scale=2, **tiny)
    return save_weights(net, tmp_path / "tiny_edsr.safetensors", model="edsr-baseline", scale=2, hparams=tiny)


def _report(data_root, out, *extra):
    return main(["report", "--models", "bicubic", "--datasets", "A,B", "--scale", "2", "-o", str(out),
                 "--data-root", str(data_root), "--crop-size", "16", *extra])


def test_writes_the_report_and_refuses_to_overwrite(data_root, edsr_file, tmp_path, capsys):
    out = tmp_path / "rep"
    assert main(["report", "--models", f"{edsr_file},edsr-baseline", "--weights", f"edsr-baseline={edsr_file}",
                 "--datasets", "A,B", "--scale", "2", "-o", str(out), "--data-root", str(data_root),
                 "--crop-size", "8", "--crops-per-image", "2"]) == 0
    assert capsys.readouterr().out.strip() == f"report written to {out / 'index.html'}"
    meta = json.loads((out / "metrics.json").read_text())
    assert [m["label"] for m in meta["models"]] == ["bicubic", "tiny_edsr", "edsr-baseline"]
    assert meta["command"].startswith("sisr report --models ") and "--crops-per-image 2" in meta["command"]
    assert [len(c["crops"]) for c in meta["crops"]] == [2, 2, 2, 2]
    # same weights file twice: same scores
    (_, a, b) = meta["models"]
    assert [r["psnr_y"] for r in a["evaluation"]["results"]] == [r["psnr_y"] for r in b["evaluation"]["results"]]
    html = (out / "index.html").read_text()
    assert "<h1>sisr report: x2, A, B</h1>" in html

    before = (out / "index.html").read_bytes()
    assert _report(data_root, out) == 1
    err = capsys.readouterr().err
    assert err == f"sisr report: error: {out}: folder exists and is not empty (use --overwrite / overwrite=True " \
                  "to write the report into it)\n"
    assert (out / "index.html").read_bytes() == before
    assert _report(data_root, out, "--overwrite") == 0
    assert (out / "index.html").read_bytes() != before


@pytest.mark.parametrize("args, message", [
    (["--models", "bicubic,nosuch"], "unknown model 'nosuch'"),
    (["--models", "bicubic,missing.safetensors"], "missing.safetensors: no such weights file"),
    (["--models", NO_WEIGHTS], f"no pretrained weights shipped for {NO_WEIGHTS} x2"),
    (["--models", "bicubic", "--weights", "rcan=x.safetensors"], "weights given for 'rcan', which is not among"),
    (["--models", "rcan,edsr", "--weights", "x.safetensors"], "--weights x.safetensors: say which model"),
    (["--models", "bicubic", "--scale", "5"], "model 'bicubic' supports scales 2, 3, 4, 8; got 5"),
    (["--datasets", "A,Nope"], "Nope: no such benchmark set (found: A, B)"),
    (["--crop-size", "0"], "crop size must be >= 1"),
])
def test_bad_input_is_one_line(data_root, tmp_path, capsys, args, message):
    if None in args:
        pytest.skip("every candidate model has shipped x2 weights")
    out = tmp_path / "rep"
    base = {"--models": "bicubic", "--datasets": "A,B", "--scale": "2"}
    i = 0
    while i < len(args):  # override the defaults above, keep the other flags
        if args[i] in base:
            base[args[i]] = args[i + 1]
            args = args[:i] + args[i + 2:]
        else:
            i += 2
    argv = ["report", *[x for kv in base.items() for x in kv], "-o", str(out), "--data-root", str(data_root), *args]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("sisr report: error: ") and message in err, err
    assert not out.exists()  # nothing written
