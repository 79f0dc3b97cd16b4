"""`sisr upscale` outputs: formats, carried metadata, provenance-checked skipping, output checks up front."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from sisr.cli import main
from sisr.data.io import read_image, read_image_info, write_image

from data.test_image_metadata import ADOBE_RGB, ARTIST, ORIENTATION, photo

BICUBIC = ["--model", "bicubic", "--scale", "2"]


@pytest.mark.parametrize("name", ["out.png", "out.jpg", "out.webp", "out.tif"])
def test_a_jpeg_upscales_to_the_named_file_with_profile_and_exif(tmp_path, name):
    src = photo(tmp_path)  # 8 wide, 12 high as stored, orientation 6 (rotated upright: 12 x 8)
    out = tmp_path / name
    assert main(["upscale", str(src), "-o", str(out), *BICUBIC]) == 0
    assert out.is_file()  # a file, not a folder
    info = read_image_info(out)
    assert info.icc_profile == ADOBE_RGB
    exif = Image.Exif()
    exif.load(info.exif)
    assert exif[ARTIST] == "Ann Example" and exif.get(ORIENTATION, 1) == 1
    assert read_image(out).shape == (24, 16, 3)  # orientation applied, then x2


def test_a_folder_honours_ext(tmp_path):
    src = tmp_path / "in"
    write_image(src / "a.png", np.zeros((4, 4, 3), np.uint8))
    photo(src, "b.jpg")
    assert main(["upscale", str(src), "-o", str(tmp_path / "jpg"), "--ext", "jpg", *BICUBIC]) == 0
    assert sorted(p.name for p in (tmp_path / "jpg").iterdir()) == ["a.jpg", "b.jpg"]
    assert main(["upscale", str(src), "-o", str(tmp_path / "same"), "--ext", "same", *BICUBIC]) == 0
    assert sorted(p.name for p in (tmp_path / "same").iterdir()) == ["a.png", "b.jpg"]
    assert main(["upscale", str(src), "-o", str(tmp_path / "tif"), "--ext", "tiff", *BICUBIC]) == 0
    assert read_image_info(tmp_path / "tif" / "b.tif").icc_profile == ADOBE_RGB


def test_color_srgb_converts_and_drops_the_profile(tmp_path):
    src = photo(tmp_path)
    assert main(["upscale", str(src), "-o", str(tmp_path / "k.png"), *BICUBIC]) == 0
    assert main(["upscale", str(src), "-o", str(tmp_path / "s.png"), "--color", "srgb", *BICUBIC]) == 0
    assert read_image_info(tmp_path / "s.png").icc_profile is None
    diff = np.abs(read_image(tmp_path / "s.png").astype(int) - read_image(tmp_path / "k.png").astype(int))
    assert diff.max() > 3


def test_an_unknown_or_unwritable_output_name_is_one_line_before_any_work(tmp_path, capsys):
    src = photo(tmp_path)
    assert main(["upscale", str(src), "-o", str(tmp_path / "out.bmp"), *BICUBIC]) == 1
    assert "cannot write .bmp" in capsys.readouterr().err
    assert not (tmp_path / "out.bmp").exists()
    assert main(["upscale", str(tmp_path), "-o", str(tmp_path / "x.png"), *BICUBIC]) == 1
    assert "a folder needs an output folder" in capsys.readouterr().err and not (tmp_path / "x.png").exists()
    assert main(["upscale", str(tmp_path / "nope.png"), "-o", str(tmp_path / "x.png"), *BICUBIC]) == 1
    assert capsys.readouterr().err.strip().endswith("nope.png: no such file or folder")  # not "needs a folder"
    afile = tmp_path / "afile"
    afile.write_text("x")
    for bad in (afile, afile / "sub", "/proc/x"):
        assert main(["upscale", str(src), "-o", f"{bad}/", "--model", "edsr-baseline", "--scale", "2"]) == 1
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and str(bad) in err and "Traceback" not in err, err


def test_suffix_is_a_plain_name_part(tmp_path, capsys):
    src = photo(tmp_path)
    assert main(["upscale", str(src), "-o", str(tmp_path / "o"), "--suffix", "/../../evil", *BICUBIC]) == 1
    assert "--suffix" in capsys.readouterr().err
    assert not list(tmp_path.rglob("evil*")) and not (tmp_path / "o").exists()


@pytest.mark.parametrize("options", [["--tile", "40"], ["--tile-overlap", "-5", "--tile", "64"],
                                     ["--chop", "--chop-shave", "-3"], ["--quality", "0"]])
def test_option_errors_come_once_before_the_model(tmp_path, capsys, options):
    write_image(tmp_path / "in" / "a.png", np.zeros((4, 4, 3), np.uint8))
    write_image(tmp_path / "in" / "b.png", np.zeros((4, 4, 3), np.uint8))
    assert main(["upscale", str(tmp_path / "in"), "-o", str(tmp_path / "o"), "--model", "nosuchmodel", *options]) == 1
    err = capsys.readouterr().err
    assert err.count("sisr") == 1 and "nosuchmodel" not in err, err


def test_existing_outputs_are_skipped_only_when_made_the_same_way(tmp_path, capsys):
    src = tmp_path / "in"
    write_image(src / "a.png", np.random.default_rng(0).integers(0, 256, (6, 6, 3), dtype=np.uint8))
    out = tmp_path / "out"
    assert main(["upscale", str(src), "-o", str(out), *BICUBIC]) == 0
    before = (out / "a.png").read_bytes()
    capsys.readouterr()
    assert main(["upscale", str(src), "-o", str(out), *BICUBIC]) == 0
    assert "skipped 1 existing" in capsys.readouterr().out
    for other in (["--model", "bicubic", "--scale", "3"], [*BICUBIC, "--self-ensemble"],
                  [*BICUBIC, "--alpha", "model"]):
        assert main(["upscale", str(src), "-o", str(out), *other]) == 1
        err = capsys.readouterr().err
        assert f"{out / 'a.png'}: exists and was not made" in err and "--overwrite" in err
        assert (out / "a.png").read_bytes() == before
    write_image(src / "a.png", np.zeros((6, 6, 3), np.uint8), overwrite=True)  # a new input under the old name
    assert main(["upscale", str(src), "-o", str(out), *BICUBIC]) == 1
    capsys.readouterr()
    assert main(["upscale", str(src), "-o", str(out), *BICUBIC, "--overwrite"]) == 0
    assert read_image(out / "a.png").max() == 0


def test_a_file_not_made_by_sisr_is_not_skipped(tmp_path, capsys):
    write_image(tmp_path / "in" / "a.png", np.zeros((4, 4, 3), np.uint8))
    write_image(tmp_path / "out" / "a.png", np.ones((8, 8, 3), np.uint8))
    assert main(["upscale", str(tmp_path / "in"), "-o", str(tmp_path / "out"), *BICUBIC]) == 1
    assert read_image(tmp_path / "out" / "a.png").max() == 1


@pytest.mark.parametrize("bad", [["--weights", "nonexist.safetensors"], ["--model", "edsr2"]])
def test_model_and_weights_are_checked_before_anything_is_skipped(tmp_path, capsys, bad):
    write_image(tmp_path / "in" / "a.png", np.zeros((4, 4, 3), np.uint8))
    assert main(["upscale", str(tmp_path / "in"), "-o", str(tmp_path / "out"), *BICUBIC]) == 0
    capsys.readouterr()
    args = ["upscale", str(tmp_path / "in"), "-o", str(tmp_path / "out"), *bad]
    assert main(args) == 1
    captured = capsys.readouterr()
    assert "skipped" not in captured.out and ("nonexist" in captured.err or "edsr2" in captured.err)


def test_provenance_records_the_weights_file_hash(tmp_path):
    import hashlib
    import json

    from sisr.weights import save_weights

    net = _tiny()
    weights = save_weights(net, tmp_path / "tiny.safetensors", model="edsr-baseline", scale=2,
                           hparams=net.sisr_spec.hparams)
    write_image(tmp_path / "a.png", np.zeros((4, 4, 3), np.uint8))
    assert main(["upscale", str(tmp_path / "a.png"), "-o", str(tmp_path / "o.png"), "--weights", str(weights)]) == 0
    record = json.loads(read_image_info(tmp_path / "o.png").provenance)
    assert record["weights"] == {"name": "tiny.safetensors", "sha256": hashlib.sha256(weights.read_bytes()).hexdigest()}
    assert record["model"] == "edsr-baseline" and record["scale"] == 2
    assert record["input_sha256"] == hashlib.sha256((tmp_path / "a.png").read_bytes()).hexdigest()


def _tiny():
    import sisr

    return sisr.create_model("edsr-baseline", scale=2, n_resblocks=1, n_feats=4).eval()


def test_progress_lines_off_a_terminal_and_gifs_in_folders(tmp_path, capsys):
    src = tmp_path / "in"
    write_image(src / "a.png", np.zeros((4, 4, 3), np.uint8))
    frames = [Image.fromarray(np.full((4, 5, 3), v, np.uint8)) for v in (10, 200)]
    frames[0].save(src / "b.gif", save_all=True, append_images=frames[1:])
    assert main(["upscale", str(src), "-o", str(tmp_path / "out"), *BICUBIC]) == 0
    err = capsys.readouterr().err
    assert "[1/2]" in err and "[2/2]" in err
    assert "b.gif: 2 frames; only the first is upscaled" in err
    assert read_image(tmp_path / "out" / "b.png").shape == (8, 10, 3)


def test_alpha_model_through_the_bicubic_network_matches_bicubic_alpha(tmp_path):
    rgba = np.random.default_rng(3).integers(0, 256, (6, 7, 4), dtype=np.uint8)
    write_image(tmp_path / "a.png", rgba)
    for mode in ("bicubic", "model"):
        assert main(["upscale", str(tmp_path / "a.png"), "-o", str(tmp_path / f"{mode}.png"), "--alpha", mode,
                     *BICUBIC]) == 0
    a, b = (read_image(tmp_path / f"{m}.png").astype(int) for m in ("bicubic", "model"))
    assert a.shape == (12, 14, 4) and np.abs(a - b).max() <= 1


def test_name_collisions_suggest_what_helps(tmp_path, capsys):
    write_image(tmp_path / "in" / "a.png", np.zeros((4, 4, 3), np.uint8))
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "in" / "a.jpg")
    assert main(["upscale", str(tmp_path / "in"), "-o", str(tmp_path / "out"), *BICUBIC]) == 1
    err = capsys.readouterr().err
    assert "--ext same" in err and "--suffix" not in err
    assert main(["upscale", str(tmp_path / "in"), "-o", str(tmp_path / "same"), "--ext", "same", *BICUBIC]) == 0



def test_alpha_model_sends_the_alpha_plane_through_the_network():
    import torch

    from sisr.inference.images import upscale_array

    torch.manual_seed(0)
    net = _tiny()
    rgba = np.random.default_rng(4).integers(0, 256, (6, 5, 4), dtype=np.uint8)
    out = upscale_array(rgba, net, alpha="model")
    as_gray = upscale_array(rgba[..., 3:], net)  # the alpha plane as a gray image
    np.testing.assert_array_equal(out[..., 3:], as_gray)
    assert not np.array_equal(out[..., 3:], upscale_array(rgba, net)[..., 3:])  # bicubic alpha differs
    with pytest.raises(Exception, match="alpha must be one of"):
        upscale_array(rgba, net, alpha="nearest")


@pytest.mark.parametrize("name", ["o.png", "o.tif"])
def test_16bit_input_keeps_16_bit_and_its_profile(tmp_path, name):
    if name.endswith(".tif"):
        pytest.importorskip("tifffile")
    from sisr.data.io import ImageInfo

    pixels = np.random.default_rng(5).integers(0, 65536, (5, 4, 3), dtype=np.uint16)
    src = write_image(tmp_path / "in16.png", pixels, info=ImageInfo(icc_profile=ADOBE_RGB, dpi=(72.0, 72.0)))
    assert main(["upscale", str(src), "-o", str(tmp_path / name), *BICUBIC]) == 0
    out = read_image(tmp_path / name)
    assert out.dtype == np.uint16 and out.shape == (10, 8, 3)
    assert read_image_info(tmp_path / name).icc_profile == ADOBE_RGB


# ----------------------------------------------------------------------------- skip-if-done checks the pixels


def _edit_keeping_metadata(path, edit):
    """Re-save ``path`` with ``edit`` applied to its pixels, keeping its provenance record (and EXIF)."""
    from PIL.PngImagePlugin import PngInfo

    with Image.open(path) as im:
        im.load()
        info = dict(im.info)
        exif = im.getexif()
        fmt = im.format
        edited = edit(im)
    options = {"exif": exif.tobytes()} if len(exif) else {}
    if fmt == "PNG":
        text = PngInfo()
        text.add_text("sisr", info["sisr"])
        options["pnginfo"] = text
    if fmt == "TIFF":
        options = {"tiffinfo": {305: exif[305]}}
    edited.save(path, format=fmt, **options)


@pytest.mark.parametrize("ext", ["jpg", "png", "webp", "tiff"])
def test_a_damaged_or_edited_output_is_not_skipped(tmp_path, capsys, ext):
    src = tmp_path / "in"
    write_image(src / "b.png", np.random.default_rng(1).integers(0, 256, (20, 18, 3), dtype=np.uint8))
    out = tmp_path / "out"
    args = ["upscale", str(src), "-o", str(out), "--ext", ext, *BICUBIC]
    assert main(args) == 0
    (dst,) = out.iterdir()
    good = dst.read_bytes()
    assert main(args) == 0 and "skipped 1 existing" in capsys.readouterr().out  # untouched: skipped
    cases = {"truncated": lambda: dst.write_bytes(good[: len(good) // 2]),
             "resized": lambda: _edit_keeping_metadata(dst, lambda im: im.resize((10, 10))),
             "edited": lambda: _edit_keeping_metadata(dst, lambda im: im.point(lambda v: 255 - v))}
    for case, damage in cases.items():
        dst.write_bytes(good)
        damage()
        assert case == "truncated" or read_image_info(dst).provenance is not None  # the record was kept
        assert main(args) == 1, case
        err = capsys.readouterr().err
        assert f"{dst}: exists" in err and "--overwrite" in err and "skipped" not in err, (case, err)
        reason = {"truncated": ("does not decode completely", "was not made from"), "resized": ("not 36x40",),
                  "edited": ("pixels are not those recorded",)}[case]
        assert any(r in err for r in reason), (case, err)
    assert main(args + ["--overwrite"]) == 0 and read_image(dst).shape[:2] == (40, 36)
    assert main(args) == 0 and "skipped 1 existing" in capsys.readouterr().out


def test_a_16_bit_tiff_output_cut_in_half_is_not_skipped(tmp_path, capsys):
    pytest.importorskip("tifffile")
    src = tmp_path / "in"
    write_image(src / "c.png", np.random.default_rng(2).integers(0, 65536, (16, 14, 3), dtype=np.uint16))
    args = ["upscale", str(src), "-o", str(tmp_path / "out"), "--ext", "tiff", *BICUBIC]
    assert main(args) == 0
    dst = tmp_path / "out" / "c.tif"
    assert read_image(dst).dtype == np.uint16
    dst.write_bytes(dst.read_bytes()[: dst.stat().st_size // 2])
    capsys.readouterr()
    assert main(args) == 1 and f"{dst}: exists" in capsys.readouterr().err


def test_an_output_of_an_older_sisr_without_a_pixel_record_is_not_skipped(tmp_path, capsys):
    import json

    write_image(tmp_path / "in" / "a.png", np.zeros((4, 4, 3), np.uint8))
    args = ["upscale", str(tmp_path / "in"), "-o", str(tmp_path / "out"), *BICUBIC]
    assert main(args) == 0
    dst = tmp_path / "out" / "a.png"
    record = json.loads(read_image_info(dst).provenance)
    del record["output"]
    write_image(dst, read_image(dst), overwrite=True, provenance=json.dumps(record, sort_keys=True))
    assert main(args) == 1 and "without a fingerprint of its pixels" in capsys.readouterr().err


# ----------------------------------------------------------------------------- one bad image, folders


def _huge_png_header(path, width=100_000, height=100_000):
    """A PNG whose header claims width x height (one tiny IDAT): Pillow refuses it as a decompression bomb."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16))
                     + chunk(b"IEND", b""))


def test_one_bad_image_is_reported_and_the_rest_finish(tmp_path, capsys):
    src = tmp_path / "in"
    write_image(src / "a.png", np.zeros((4, 5, 3), np.uint8))
    write_image(src / "wide.png", np.zeros((2, 8200, 3), np.uint8))  # x2: 16400 wide, over WebP's 16383
    _huge_png_header(src / "bomb.png")
    write_image(src / "z.png", np.zeros((6, 5, 3), np.uint8))
    out = tmp_path / "out"
    assert main(["upscale", str(src), "-o", str(out), "--ext", "webp", *BICUBIC]) == 1
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    assert f"{src / 'bomb.png'}: image too large" in captured.err
    assert f"{out / 'wide.webp'}: 16400x4 cannot be written as WEBP (at most 16383" in captured.err
    assert "2 input(s) failed" in captured.err and "wrote 2 image(s)" in captured.out
    assert sorted(p.name for p in out.iterdir()) == ["a.webp", "z.webp"]


def test_an_output_folder_inside_the_input_folder_is_not_read_back(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    write_image(tmp_path / "a.png", np.zeros((4, 4, 3), np.uint8))
    for _ in range(2):
        assert main(["upscale", ".", "-o", "big", *BICUBIC]) == 0
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.png")) == ["a.png", "big/a.png"]
    assert "skipped 1 existing" in capsys.readouterr().out


def test_progress_lines_count_in_completion_order(tmp_path, capsys):
    src = tmp_path / "in"
    for k in range(5):
        write_image(src / f"{k}.png", np.zeros((4 + k, 4, 3), np.uint8))
    assert main(["upscale", str(src), "-o", str(tmp_path / "out"), *BICUBIC, "--threads", "2"]) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("sisr upscale: [")]
    assert [line.split("]")[0] for line in lines] == [f"sisr upscale: [{k}/5" for k in range(1, 6)]


def test_options_that_would_be_ignored_are_errors(tmp_path, capsys):
    """Each was accepted with exit 0 and no effect: --ext with an output file name (a PNG came back for --ext jpg),
    --lossless for JPEG, --tile-overlap without --tile, the chop settings without --chop."""
    src = photo(tmp_path)
    for extra, message in (
            (["-o", str(tmp_path / "e.png"), "--ext", "jpg"], "--ext jpg: " + str(tmp_path / "e.png") + " names the output file"),
            (["-o", str(tmp_path / "e.jpg"), "--lossless"], "--lossless applies to WebP outputs only"),
            (["-o", str(tmp_path / "d"), "--ext", "jpg", "--lossless"], "--lossless applies to WebP outputs only"),
            (["-o", str(tmp_path / "d"), "--tile-overlap", "4"], "--tile-overlap applies only with --tile"),
            (["-o", str(tmp_path / "d"), "--chop-shave", "4"], "--chop-shave applies only with --chop"),
            (["-o", str(tmp_path / "d"), "--chop-round-to-scale"], "--chop-round-to-scale applies only with --chop")):
        assert main(["upscale", str(src), *extra, *BICUBIC]) == 1, extra
        assert message in capsys.readouterr().err, extra
    assert sorted(p.name for p in tmp_path.iterdir()) == [src.name]
    assert main(["upscale", str(src), "-o", str(tmp_path / "w.webp"), "--lossless", *BICUBIC]) == 0
    assert main(["upscale", str(src), "-o", str(tmp_path / "c"), "--chop", "--chop-shave", "4", *BICUBIC]) == 0
