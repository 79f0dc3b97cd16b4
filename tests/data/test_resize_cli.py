"""The ``sisr resize`` command."""

from __future__ import annotations

import numpy as np
import pytest

from sisr.cli import main
from sisr.data.io import read_image, write_image
from sisr.data.resize import imresize

RNG = np.random.default_rng(5)


def test_files_and_folders_keep_names_structure_dtype_and_alpha(tmp_path, capsys):
    rgb = RNG.integers(0, 256, (12, 18, 3), dtype=np.uint8)
    rgba16 = RNG.integers(0, 65536, (9, 6, 4), dtype=np.uint16)
    write_image(tmp_path / "in" / "one.png", rgb)
    write_image(tmp_path / "folder" / "sub" / "two.png", rgba16)
    code = main(["resize", str(tmp_path / "in" / "one.png"), str(tmp_path / "folder"), "-o", str(tmp_path / "out"),
                 "--scale", "1/3", "--border", "replicate"])
    assert code == 0 and "2 written, 0 failed" in capsys.readouterr().out
    np.testing.assert_array_equal(read_image(tmp_path / "out" / "one.png"), imresize(rgb, 1 / 3, border="replicate"))
    two = read_image(tmp_path / "out" / "sub" / "two.png")
    assert two.dtype == np.uint16 and two.shape == (3, 2, 4)
    np.testing.assert_array_equal(two, imresize(rgba16, 1 / 3, border="replicate"))


def test_size_and_single_png_output(tmp_path):
    img = RNG.integers(0, 256, (10, 10, 1), dtype=np.uint8)
    write_image(tmp_path / "g.png", img)
    assert main(["resize", str(tmp_path / "g.png"), "-o", str(tmp_path / "big.png"), "--size", "7x23"]) == 0
    out = read_image(tmp_path / "big.png")
    assert out.shape == (7, 23, 1)
    np.testing.assert_array_equal(out, imresize(img, output_size=(7, 23)))


def test_existing_outputs_need_overwrite(tmp_path, capsys):
    write_image(tmp_path / "a.png", np.zeros((4, 4, 3), np.uint8))
    args = ["resize", str(tmp_path / "a.png"), "-o", str(tmp_path / "o"), "--scale", "2"]
    assert main(args) == 0
    assert main(args) == 1
    assert "already exists" in capsys.readouterr().err
    assert main(args + ["--overwrite"]) == 0


def test_bad_inputs_are_reported_and_skipped(tmp_path, capsys):
    write_image(tmp_path / "ok.png", np.zeros((4, 4, 3), np.uint8))
    code = main(["resize", str(tmp_path / "ok.png"), str(tmp_path / "missing.png"), "-o", str(tmp_path / "o"),
                 "--scale", "0.5"])
    captured = capsys.readouterr()
    assert code == 1 and "missing.png: no such file" in captured.err and "1 written, 1 failed" in captured.out
    assert read_image(tmp_path / "o" / "ok.png").shape == (2, 2, 3)


@pytest.mark.parametrize("option", [["--scale", "0"], ["--scale", "abc"], ["--size", "10"], ["--size", "0x5"], []])
def test_invalid_scale_or_size_is_a_usage_error(tmp_path, option):
    with pytest.raises(SystemExit) as exc_info:
        main(["resize", str(tmp_path / "x.png"), "-o", str(tmp_path / "o"), *option])
    assert exc_info.value.code == 2


def test_png_output_needs_a_single_input_file(tmp_path, capsys):
    for name in ("a.png", "b.png"):
        write_image(tmp_path / name, np.zeros((4, 4, 3), np.uint8))
    assert main(["resize", str(tmp_path / "a.png"), str(tmp_path / "b.png"), "-o", str(tmp_path / "c.png"),
                 "--scale", "2"]) == 1
    assert "exactly one input file" in capsys.readouterr().err


def test_an_output_that_would_replace_its_input_is_refused_even_with_overwrite(tmp_path, capsys):
    write_image(tmp_path / "a.png", np.full((4, 4, 3), 7, np.uint8))
    before = (tmp_path / "a.png").read_bytes()
    assert main(["resize", str(tmp_path / "a.png"), "-o", str(tmp_path), "--scale", "0.5", "--overwrite"]) == 1
    assert "would replace the input" in capsys.readouterr().err
    assert (tmp_path / "a.png").read_bytes() == before


def test_resize_hints_do_not_suggest_a_suffix_option_it_lacks(tmp_path, capsys):
    write_image(tmp_path / "a.png", np.zeros((4, 4, 3), np.uint8))
    assert main(["resize", str(tmp_path / "a.png"), "-o", str(tmp_path), "--scale", "0.5"]) == 1
    err = capsys.readouterr().err
    assert "would replace the input" in err and "--suffix" not in err
    write_image(tmp_path / "in" / "b.png", np.zeros((4, 4, 3), np.uint8))
    write_image(tmp_path / "in" / "b.jpg", np.zeros((4, 4, 3), np.uint8))  # both would be out/b.png
    assert main(["resize", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--scale", "0.5"]) == 1
    err = capsys.readouterr().err
    assert "is also the output of" in err and "--ext" not in err  # resize has no --ext


def test_an_output_larger_than_the_free_memory_is_refused_not_killed(tmp_path, capsys, monkeypatch):
    """--scale 1000 on a small image was killed by the kernel (exit 137, no message): MemoryError never comes."""
    import sisr.utils.device as device

    write_image(tmp_path / "a.png", np.zeros((24, 32, 3), np.uint8))
    monkeypatch.setattr(device, "free_memory", lambda _: 2**30)
    assert main(["resize", str(tmp_path / "a.png"), "-o", str(tmp_path / "big.png"), "--scale", "200"]) == 1
    assert "a.png: the 6400x4800 output needs about 1.4 GiB; 1.0 GiB are available" in capsys.readouterr().err
    assert not (tmp_path / "big.png").exists()
    assert main(["resize", str(tmp_path / "a.png"), "-o", str(tmp_path / "big.png"), "--scale", "100"]) == 0  # 0.34
    assert read_image(tmp_path / "big.png").shape == (2400, 3200, 3)
