"""PNG charts drawn with Pillow (sisr.utils.plot) and the training-run plots built on them."""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pytest
from PIL import Image, ImageColor

from sisr.training.log import plot_runs, read_log
from sisr.errors import SisrError
from sisr.utils.fs import OutputExistsError
from sisr.utils.plot import PALETTE, bar_chart, format_tick, line_chart, nice_ticks, png_bytes, save_png


def _pixels_of(image: Image.Image, color: str) -> int:
    rgb = np.asarray(image.convert("RGB"))
    return int(np.all(rgb == ImageColor.getrgb(color), axis=2).sum())


@pytest.mark.parametrize("lo, hi", [(0, 1), (0.013, 0.22), (12.1, 38.4), (0, 600_000), (-3, 7), (5, 5), (7, -3)])
def test_nice_ticks_cover_the_range_with_round_steps(lo, hi):
    ticks = nice_ticks(lo, hi)
    assert ticks[0] <= min(lo, hi) and ticks[-1] >= max(lo, hi)
    assert 3 <= len(ticks) <= 12
    steps = np.diff(ticks)
    assert np.allclose(steps, steps[0])
    mantissa = steps[0] / 10 ** math.floor(math.log10(steps[0]) + 1e-9)
    assert any(math.isclose(mantissa, m) for m in (1, 2, 2.5, 5))


def test_tick_labels():
    assert format_tick(200_000, 100_000) == "200k"
    assert format_tick(1_500_000, 500_000) == "1.5M"
    assert format_tick(0.25, 0.05) == "0.25"
    assert format_tick(32.5, 2.5) == "32.5"
    assert format_tick(30, 5) == "30"
    assert format_tick(0, 100_000) == "0"


def test_line_chart_draws_each_series_and_skips_non_finite_points():
    series = {"train": [(i, 1 / (i + 1)) for i in range(50)] + [(60, math.nan), (61, math.inf)],
              "smoothed": [(i, 0.9 / (i + 1)) for i in range(50)]}
    img = line_chart(series, title="loss", xlabel="iteration", ylabel="L1", size=(640, 400))
    assert img.size == (640, 400) and img.mode == "RGB"
    assert _pixels_of(img, PALETTE[0]) > 200 and _pixels_of(img, PALETTE[1]) > 200
    log = line_chart({"loss": [(0, 0.0), (1, 0.1), (2, 0.01)]}, log_y=True)  # 0 cannot be drawn on a log axis
    assert _pixels_of(log, PALETTE[0]) > 50
    empty = line_chart({"loss": []})
    assert _pixels_of(empty, PALETTE[0]) == 0
    one = line_chart({"psnr": [(1000, 30.0)]})
    assert _pixels_of(one, PALETTE[0]) > 0


def test_bar_chart_groups_series_and_leaves_gaps():
    img = bar_chart(["Set5", "Set14", "B100"], {"bicubic": [33.66, 30.24, 29.56], "ours": [37.9, 33.5, None]},
                    ylabel="PSNR (dB)", y_min=None)
    assert _pixels_of(img, PALETTE[0]) > 1000 and _pixels_of(img, PALETTE[1]) > 1000
    gap = bar_chart(["a", "b"], {"x": [1.0, 2.0], "y": [None, math.nan]})
    assert _pixels_of(gap, PALETTE[1]) < 200  # only the legend swatch
    single = bar_chart([f"model-number-{i}" for i in range(9)], [float(i) for i in range(9)], value_format=None)
    assert _pixels_of(single, PALETTE[0]) > 1000
    with pytest.raises(ValueError, match="series 'x' has 1 values for 2 categories"):
        bar_chart(["a", "b"], {"x": [1.0]})


def test_png_output_is_atomic_and_never_overwrites_unless_asked(tmp_path):
    img = bar_chart(["a"], [1.0])
    path = save_png(img, tmp_path / "c.png")
    with Image.open(path) as back:
        assert back.format == "PNG" and back.size == img.size
    with pytest.raises(OutputExistsError):
        save_png(img, path)
    save_png(line_chart({"a": [(0, 1), (1, 2)]}), path, overwrite=True)
    assert Image.open(io.BytesIO(png_bytes(img))).size == img.size


def _fake_run(path, n):
    path.mkdir()
    lines = [{"type": "train", "iteration": i, "loss": 0.1 / i, "lr": 1e-4} for i in range(10, n + 1, 10)]
    lines += [{"type": "val", "iteration": i, "set": "Set5", "psnr": 30 + i / n, "ssim": 0.9} for i in (n // 2, n)]
    (path / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines) + '{"type": "tr')  # torn last line
    return path


def test_run_plots_from_logs(tmp_path):
    a, b = _fake_run(tmp_path / "a", 100), _fake_run(tmp_path / "b", 200)
    assert len(read_log(a)) == 12
    paths = plot_runs([a], a / "plots")
    assert [p.name for p in paths] == ["loss.png", "psnr.png"]
    with pytest.raises(OutputExistsError):
        plot_runs([a], a / "plots")
    both = plot_runs([a, b], tmp_path / "compare")
    with Image.open(both[0]) as im:
        assert _pixels_of(im, PALETTE[0]) > 100 and _pixels_of(im, PALETTE[1]) > 100
    (tmp_path / "empty").mkdir()
    with pytest.raises(SisrError, match="not a training run"):
        plot_runs([tmp_path / "empty"], tmp_path / "x")



def test_runs_with_the_same_folder_name_get_one_curve_each(tmp_path, monkeypatch):
    from sisr.training import log as trainer_log

    runs = [tmp_path / parent / "edsr-x2" for parent in ("a", "b")]
    for run in runs:
        run.mkdir(parents=True)
        (run / "log.jsonl").write_text("".join(
            json.dumps({"type": "train", "iteration": i, "loss": 1.0 / i}) + "\n" for i in (1, 2, 3)))
    series = {}

    def recording_chart(data, **kw):
        series[kw["title"]] = list(data)
        return line_chart(data, **kw)

    monkeypatch.setattr(trainer_log, "line_chart", recording_chart)
    plot_runs(runs, tmp_path / "cmp")
    assert series["training loss"] == [str(r) for r in runs]


def test_plot_out_through_a_file_is_one_line(tmp_path, capsys):
    from sisr.cli import main

    (tmp_path / "afile").write_text("x")
    assert main(["plot", str(tmp_path), "--out", str(tmp_path / "afile")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "exists and is not a folder" in err
