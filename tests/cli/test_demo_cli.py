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
    assert str(outputs[0]) in text and "PSNR" in text


def test_demo_keeps_existing_files(tmp_path, capsys):
    out = tmp_path / "demo"
    (out).mkdir()
    (out / "chart_hr.png").write_bytes(b"mine")
    assert main(["demo", "-o", str(out), "--device", "cpu"]) == 0
    assert (out / "chart_hr.png").read_bytes() == b"mine"
    assert "exists, kept" in capsys.readouterr().out
    assert main(["demo", "-o", str(out), "--device", "cpu", "--overwrite"]) == 0
    assert read_image(out / "chart_hr.png").shape == (288, 384, 3)


def test_chart_is_deterministic_and_checked():
    a, b = render_chart(), render_chart()
    np.testing.assert_array_equal(a, b)
    assert a.dtype == np.uint8 and a.std() > 40  # real content, not a flat image
    import pytest

    with pytest.raises(ValueError):
        render_chart(32, 32)
