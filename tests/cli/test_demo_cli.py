"""sisr demo: the README's main job."""

from __future__ import annotations

import numpy as np

from sisr.cli import main
from sisr.data.chart import render_chart
from sisr.data.io import read_image
from sisr.data.resize import imresize


def test_demo_writes_chart_lr_and_output(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "-o", str(out), "--scale", "3", "--device", "cpu"]) == 0
    text = capsys.readouterr().out
    hr = read_image(out / "chart_hr.png")
    lr = read_image(out / "chart_lr_x3.png")
    assert hr.shape == (288, 384, 3) and lr.shape == (96, 128, 3)
    np.testing.assert_array_equal(hr, render_chart())
    np.testing.assert_array_equal(lr, imresize(render_chart(), 1 / 3))
    outputs = sorted(out.glob("chart_x3_*.png"))
    assert len(outputs) == 1 and read_image(outputs[0]).shape == hr.shape
    assert str(outputs[0]) in text and "PSNR" in text and "dB over bicubic" in text
    compare = read_image(out / f"compare_x3_{outputs[0].stem.split('_')[-1]}.png")
    assert compare.shape[1] >= 3 * hr.shape[1]  # bicubic | model | original


def test_demo_chart_is_restorable_a_trained_network_beats_bicubic(tmp_path, capsys):
    """The chart's content lies below the LR Nyquist limit: the shipped x2 network gains clearly over bicubic."""
    import re

    assert main(["demo", "-o", str(tmp_path / "d"), "--device", "cpu"]) == 0
    gain = float(re.search(r"([+-][0-9.]+) dB over bicubic", capsys.readouterr().out).group(1))
    assert gain > 1.0


def test_demo_keeps_identical_files_and_refuses_other_content(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "-o", str(out), "--device", "cpu", "--model", "bicubic"]) == 0
    capsys.readouterr()
    assert main(["demo", "-o", str(out), "--device", "cpu", "--model", "bicubic"]) == 0
    assert capsys.readouterr().out.count("exists, same pixels") == 4
    (out / "chart_hr.png").write_bytes(b"mine")
    assert main(["demo", "-o", str(out), "--device", "cpu", "--model", "bicubic"]) == 1
    err = capsys.readouterr().err
    assert "chart_hr.png: exists with other content" in err and err.count("\n") == 1
    assert (out / "chart_hr.png").read_bytes() == b"mine"
    assert main(["demo", "-o", str(out), "--device", "cpu", "--model", "bicubic", "--overwrite"]) == 0
    assert read_image(out / "chart_hr.png").shape == (288, 384, 3)


def test_demo_scale_8_and_weights_option(tmp_path, capsys):
    from sisr import create_model
    from sisr.weights import save_weights

    net = create_model("edsr-baseline", scale=2, n_resblocks=1, n_feats=8)
    w = tmp_path / "tiny.safetensors"
    save_weights(net.state_dict(), w, model="edsr-baseline", scale=2, hparams={"n_resblocks": 1, "n_feats": 8})
    assert main(["demo", "-o", str(tmp_path / "a"), "--device", "cpu", "--model", "edsr-baseline",
                 "--weights", str(w)]) == 0
    assert (tmp_path / "a" / "chart_x2_edsr-baseline.png").is_file()
    assert main(["demo", "-o", str(tmp_path / "b"), "--device", "cpu", "--scale", "8", "--model", "bicubic"]) == 0
    assert read_image(tmp_path / "b" / "chart_lr_x8.png").shape == (36, 48, 3)


def test_demo_bad_output_is_one_line_before_work(tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    for bad in (tmp_path / "afile", tmp_path / "afile" / "sub", "/proc/sisr-demo"):
        assert main(["demo", "-o", str(bad), "--device", "cpu", "--model", "bicubic"]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and str(bad) in err, err


def test_chart_is_deterministic_and_checked():
    a, b = render_chart(), render_chart()
    np.testing.assert_array_equal(a, b)
    assert a.dtype == np.uint8 and a.std() > 40  # real content, not a flat image
    import pytest

    with pytest.raises(ValueError):
        render_chart(32, 32)
