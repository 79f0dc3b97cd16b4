"""`sisr upscale`: files and folders, skipping, failures, options."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import sisr
from sisr.cli import main
from sisr.data.io import read_image, write_image
from sisr.inference.images import upscale
from sisr.weights import save_weights


def _img(h, w, c=3, dtype=np.uint8, seed=0):
    peak = np.iinfo(dtype).max
    return (np.random.default_rng(seed).random((h, w, c)) * peak).astype(dtype)


@pytest.fixture
def tree(tmp_path):
    src = tmp_path / "in"
    write_image(src / "a.png", _img(6, 5))
    write_image(src / "sub" / "b.png", _img(4, 7, 4, seed=1))
    write_image(src / "sub" / "deep" / "c.png", _img(5, 5, 1, np.uint16, seed=2))
    (src / "readme.txt").write_text("not an image")
    write_image(src / ".cache" / "hidden.png", _img(3, 3))
    return src


def test_folder_is_searched_recursively_and_its_structure_kept(tree, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["upscale", str(tree), "-o", str(out), "--model", "bicubic", "--scale", "3"]) == 0
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert written == ["a.png", "sub/b.png", "sub/deep/c.png"]
    c = read_image(out / "sub" / "deep" / "c.png")
    assert c.shape == (15, 15, 1) and c.dtype == np.uint16
    np.testing.assert_array_equal(read_image(out / "a.png"), upscale(read_image(tree / "a.png"), "bicubic", 3))
    assert read_image(out / "sub" / "b.png").shape == (12, 21, 4)
    assert f"wrote 3 image(s) to {out}" in capsys.readouterr().out

    assert main(["upscale", str(tree), "-o", str(out), "--model", "bicubic", "--scale", "3"]) == 0
    captured = capsys.readouterr().out
    assert "skipped 3 existing output(s)" in captured and "wrote" not in captured
    (out / "a.png").write_bytes(b"stale")
    assert main(["upscale", str(tree), "-o", str(out), "--model", "bicubic", "--scale", "3", "--overwrite"]) == 0
    assert "wrote 3 image(s)" in capsys.readouterr().out
    assert read_image(out / "a.png").shape == (18, 15, 3)


def test_bad_files_are_reported_by_name_and_skipped(tmp_path, capsys):
    src = tmp_path / "in"
    write_image(src / "good.png", _img(4, 4))
    (src / "broken.png").write_text("this is no PNG")
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    out = tmp_path / "out"
    code = main(["upscale", str(src), str(notes), str(tmp_path / "missing.png"), "-o", str(out), "--model", "bicubic"])
    captured = capsys.readouterr()
    assert code == 1
    assert (out / "good.png").is_file() and not (out / "broken.png").exists()
    assert "broken.png:" in captured.err and "notes.txt:" in captured.err
    assert "missing.png: no such file or folder" in captured.err
    assert "3 input(s) failed" in captured.err and "wrote 1 image(s)" in captured.out


def test_default_model_notice_single_file_output_and_suffix(tmp_path, capsys, monkeypatch):
    import sisr.weights.pretrained as pretrained

    monkeypatch.setattr(pretrained, "PRETRAINED_DIR", tmp_path / "none")
    photo = write_image(tmp_path / "photo.png", _img(5, 6))
    assert main(["upscale", str(photo), "-o", str(tmp_path / "big.png")]) == 0
    assert "note: no shipped weights for defian-s x2: using bicubic" in capsys.readouterr().err
    assert read_image(tmp_path / "big.png").shape == (10, 12, 3)
    assert main(["upscale", str(photo), "-o", str(tmp_path / "o"), "--suffix", "_x2", "--model", "bicubic"]) == 0
    assert (tmp_path / "o" / "photo_x2.png").is_file()
    assert main(["upscale", str(photo), "-o", str(tmp_path), "--model", "bicubic", "--overwrite"]) == 1
    assert "would replace the input" in capsys.readouterr().err
    assert read_image(photo).shape == (5, 6, 3)


def test_weights_file_and_processing_options(tmp_path):
    torch.manual_seed(0)
    model = sisr.create_model("edsr-baseline", scale=2, n_resblocks=2, n_feats=8).eval()
    weights = save_weights(model, tmp_path / "w.safetensors", model="edsr-baseline", scale=2,
                           hparams=model.sisr_spec.hparams)
    img = _img(20, 17)
    photo = write_image(tmp_path / "p.png", img)
    common = ["upscale", str(photo), "--weights", str(weights), "--device", "cpu"]
    assert main(common + ["-o", str(tmp_path / "a.png")]) == 0
    np.testing.assert_array_equal(read_image(tmp_path / "a.png"), upscale(img, model))
    assert main(common + ["-o", str(tmp_path / "b.png"), "--self-ensemble"]) == 0
    assert main(common + ["-o", str(tmp_path / "b2.png"), "--precision", "bf16"]) != 0  # not declared for edsr
    assert not (tmp_path / "b2.png").exists()
    assert main(common + ["-o", str(tmp_path / "c.png"), "--chop", "--chop-min-size", "100"]) == 0
    np.testing.assert_array_equal(read_image(tmp_path / "c.png"), upscale(img, model))  # local model, shave 10
    assert main(common + ["-o", str(tmp_path / "e.png"), "--chop", "--chop-min-size", "100", "--chop-round-to-scale"]) == 0
    np.testing.assert_array_equal(read_image(tmp_path / "e.png"), upscale(img, model))
    assert main(common + ["-o", str(tmp_path / "d.png"), "--tile", "auto"]) == 0


@pytest.mark.parametrize("args,message", [
    (["--tile", "64", "--chop"], "choose --tile or --chop, not both"),
    (["--model", "bicubic", "--precision", "fp16", "--device", "cpu"], "fp16 is not supported on the CPU"),
    (["--model", "rcan"], "no pretrained weights shipped for rcan x2"),
    (["--model", "bicubic", "--device", "tpu"], "unknown device 'tpu'"),
])
def test_option_errors_are_one_line(tmp_path, capsys, args, message):
    photo = write_image(tmp_path / "p.png", _img(4, 4))
    assert main(["upscale", str(photo), "-o", str(tmp_path / "out"), *args]) == 1
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_folder_on_several_threads_runs_images_side_by_side_with_the_same_pixels(tmp_path):
    torch.manual_seed(0)
    model = sisr.create_model("defian-s", scale=2, **sisr.get_info("defian-s").tiny).eval()
    weights = save_weights(model, tmp_path / "w.safetensors", model="defian-s", scale=2,
                           hparams=model.sisr_spec.hparams)
    src = tmp_path / "in"
    for k in range(4):
        write_image(src / f"{k}.png", _img(70, 66 + k, seed=k))  # >= 64x64: channels_last under auto
    before = torch.get_num_threads()
    assert main(["upscale", str(src), "-o", str(tmp_path / "one"), "--weights", str(weights), "--threads", "1"]) == 0
    assert main(["upscale", str(src), "-o", str(tmp_path / "two"), "--weights", str(weights), "--threads", "2"]) == 0
    torch.set_num_threads(before)
    for k in range(4):
        a = read_image(tmp_path / "one" / f"{k}.png").astype(int)
        b = read_image(tmp_path / "two" / f"{k}.png").astype(int)
        reference = upscale(_img(70, 66 + k, seed=k), model)
        assert np.abs(a - b).max() <= 1 and np.abs(b - reference.astype(int)).max() <= 1
