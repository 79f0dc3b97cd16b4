"""Generated format matrix (issue 23): input format x mode x depth x EXIF orientation x metadata x
output format, through ``sisr upscale --model bicubic`` in-process.

The full product is pruned to all pairs: every value of each factor meets every value of every other
factor in at least one case (a greedy cover over the valid combinations; ~200 cases of 7x5 images, a
few seconds). Each output is checked for its size against the oriented input, its pixels against the
array path (``read_image`` + ``upscale_array`` with the bicubic model), and the metadata that
survived. Every input is also decoded independently (the pixels it was written from, oriented by
the EXIF rule) where the format is lossless. Combinations that cannot work are refused with one line
naming the file; they are listed in ``REFUSED``.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import sisr
from data.test_image_metadata import ADOBE_RGB, XMP, cmyk_profile, gray_profile
from sisr.cli import main
from sisr.data.imagemeta import DESCRIPTIVE_TAGS, ImageInfo
from sisr.data.io import read_image, read_image_info
from sisr.data.png16 import encode_png16
from sisr.inference.images import upscale_array

H, W = 5, 7
ARTIST = "Ann Example"
OUTPUTS = ("png", "jpg", "webp", "tiff")
ORIENTATIONS = (1, 3, 6, 8)
METADATA = ("none", "icc", "exif", "xmp")
PALETTE = np.array([[10, 20, 30], [200, 40, 90], [70, 250, 110], [0, 0, 255]], np.uint8)

KINDS = [  # (container, mode, bits): every way of storing pixels the matrix writes
    *[("png", m, 8) for m in ("gray", "gray_alpha", "rgb", "rgba", "palette", "bilevel")],
    *[("png", m, 16) for m in ("gray", "gray_alpha", "rgb", "rgba")],
    *[("jpeg", m, 8) for m in ("gray", "rgb", "cmyk")],
    *[("webp", m, 8) for m in ("rgb", "rgba")],
    *[(c, m, 8) for c in ("tiff", "tiff_lzw") for m in ("gray", "gray_alpha", "rgb", "rgba", "palette", "cmyk",
                                                          "bilevel")],
    *[("tiff_tiled", m, 8) for m in ("gray", "rgb", "rgba")],
    *[("tiff", m, 16) for m in ("gray", "gray_alpha", "rgb", "rgba", "cmyk")],
    *[("bmp", m, 8) for m in ("gray", "rgb", "palette", "bilevel")],
    *[("gif", m, 8) for m in ("gray", "palette", "palette_alpha", "bilevel")],
]
EXTENSION = {"png": ".png", "jpeg": ".jpg", "webp": ".webp", "tiff": ".tif", "tiff_lzw": ".tiff",
             "tiff_tiled": ".tif", "bmp": ".bmp", "gif": ".gif"}
NO_METADATA = {"bmp", "gif"}  # containers written here without EXIF, ICC or XMP
ALPHA = {"gray_alpha", "rgba", "palette_alpha"}


def refusal(kind, orientation, meta, out) -> str | None:
    """The one-line refusal a combination must get, or None when it must work (the list of refusals)."""
    container, mode, bits = kind
    if (container, mode, bits, meta) == ("tiff", "cmyk", 16, "icc"):
        return "16-bit CMYK with an ICC profile is not supported"
    if mode in ALPHA and out == "jpg":
        return "JPEG cannot hold transparency"
    return None


def valid(kind, orientation, meta) -> bool:
    return kind[0] not in NO_METADATA or (orientation == 1 and meta == "none")


def pairwise_cases() -> list[tuple]:
    """Greedy all-pairs cover of (kind, orientation, metadata, output) over the valid combinations."""
    combos = [c for c in itertools.product(KINDS, ORIENTATIONS, METADATA, OUTPUTS) if valid(*c[:3])]

    def pairs(c):
        return {(i, c[i], j, c[j]) for i, j in itertools.combinations(range(4), 2)}

    todo = set().union(*(pairs(c) for c in combos))
    cases = []
    while todo:
        best = max(combos, key=lambda c: len(pairs(c) & todo))
        cases.append(best)
        todo -= pairs(best)
    return cases


CASES = pairwise_cases()


# --- writing the inputs -----------------------------------------------------------------------------------

def stored_pixels(kind, seed: int) -> np.ndarray:
    """The pixels as stored (before orientation): (H, W, C) of the mode; palette: indices (H, W, 1)."""
    rng = np.random.default_rng(seed)
    _, mode, bits = kind
    top = 65536 if bits == 16 else 256
    channels = {"gray": 1, "gray_alpha": 2, "rgb": 3, "rgba": 4, "cmyk": 4}.get(mode)
    if channels:
        dtype = np.uint16 if bits == 16 else np.uint8
        return rng.integers(0, top, (H, W, channels), dtype=np.int64).astype(dtype)
    if mode == "bilevel":
        return (rng.integers(0, 2, (H, W, 1)) * 255).astype(np.uint8)
    return rng.integers(0, len(PALETTE), (H, W, 1)).astype(np.uint8)


def decoded(kind, stored: np.ndarray) -> np.ndarray:
    """What read_image must return for the stored pixels, before orientation (lossless containers)."""
    container, mode, _ = kind
    if mode.startswith("palette"):
        rgb = PALETTE[stored[..., 0]]
        alpha = (stored != 2).astype(np.uint8) * 255
        return np.concatenate([rgb, alpha], axis=2) if mode == "palette_alpha" else rgb
    if container == "gif" and mode == "gray":  # GIF stores gray in a palette: read as RGB
        return np.repeat(stored, 3, axis=2)
    return stored


def oriented(arr: np.ndarray, orientation: int) -> np.ndarray:
    return {1: arr, 3: arr[::-1, ::-1], 6: np.rot90(arr, -1), 8: np.rot90(arr, 1)}[orientation]


def profile_for(mode: str) -> bytes:
    return {"cmyk": cmyk_profile()}.get(mode, gray_profile() if mode in ("gray", "gray_alpha", "bilevel")
                                        else ADOBE_RGB)


def exif_bytes(orientation: int, artist: bool) -> bytes | None:
    exif = Image.Exif()
    if orientation != 1:
        exif[0x0112] = orientation
    if artist:
        exif[0x013B] = ARTIST
    return exif.tobytes() if len(exif) else None


def pillow_image(kind, stored: np.ndarray) -> Image.Image:
    container, mode, _ = kind
    if mode.startswith("palette"):
        im = Image.frombytes("P", (W, H), stored.tobytes())
        im.putpalette(PALETTE.ravel().tolist())
        return im
    if mode == "bilevel":
        return Image.fromarray(stored[..., 0] > 0)
    if mode == "cmyk":
        return Image.frombytes("CMYK", (W, H), stored.tobytes())
    return Image.fromarray(stored[..., 0] if stored.shape[2] == 1 else stored)


def write_input(path: Path, kind, stored: np.ndarray, orientation: int, meta: str) -> None:
    container, mode, bits = kind
    icc = profile_for(mode) if meta == "icc" else None
    xmp = XMP if meta == "xmp" else None
    exif = exif_bytes(orientation, meta == "exif")
    if container == "png" and bits == 16:
        path.write_bytes(encode_png16(stored, info=ImageInfo(icc_profile=icc, exif=exif, xmp=xmp)))
    elif container == "tiff_tiled" or (container == "tiff" and bits == 16):
        write_tifffile(path, kind, stored, orientation, icc, xmp, meta == "exif")
    else:
        options = {"transparency": 2} if mode == "palette_alpha" else {}
        if icc:
            options["icc_profile"] = icc
        if container in ("tiff", "tiff_lzw"):
            tags = {0x0112: orientation, **({0x013B: ARTIST} if meta == "exif" else {}), **({700: xmp} if xmp else {})}
            options.update(tiffinfo=tags, compression="tiff_lzw" if container == "tiff_lzw" else None)
        elif container not in NO_METADATA:
            options.update({k: v for k, v in (("exif", exif), ("xmp", xmp)) if v})
            if container == "png" and xmp:
                from PIL.PngImagePlugin import PngInfo

                options.pop("xmp")
                options["pnginfo"] = PngInfo()
                options["pnginfo"].add_itxt("XML:com.adobe.xmp", xmp.decode())
        if container in ("jpeg", "webp"):
            options.update(quality=95) if container == "jpeg" else options.update(lossless=True, exact=True)
        pillow_image(kind, stored).save(path, format=container.split("_")[0].upper(), **options)


def write_tifffile(path, kind, stored, orientation, icc, xmp, artist) -> None:
    tifffile = pytest.importorskip("tifffile")
    _, mode, _ = kind
    tags = [(0x0112, "H", 1, orientation, True)]
    if artist:
        tags.append((0x013B, "s", 0, ARTIST, True))
    if xmp:
        tags.append((700, "B", len(xmp), xmp, True))
    photometric = {"gray": "minisblack", "gray_alpha": "minisblack", "cmyk": "separated"}.get(mode, "rgb")
    options = dict(photometric=photometric, metadata=None, extratags=tags, compression="zlib", iccprofile=icc)
    if mode in ("gray_alpha", "rgba"):
        options["extrasamples"] = ["unassalpha"]
    if kind[0] == "tiff_tiled":
        options["tile"] = (16, 16)
    tifffile.imwrite(path, stored[..., 0] if stored.shape[2] == 1 else stored, **options)


# --- expectations ------------------------------------------------------------------------------------------

def as_written(arr: np.ndarray, out: str) -> np.ndarray:
    """What write_image stores for an array in the output format (8 bit and RGB(A) for JPEG/WebP)."""
    if out in ("jpg", "webp") and arr.dtype == np.uint16:
        arr = ((arr.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    if out == "webp" and arr.shape[2] <= 2:
        arr = np.concatenate([arr[..., :1]] * 3 + [arr[..., 1:]], axis=2)
    return arr


def expected_profile(kind, meta: str, out: str) -> bytes | None:
    mode = kind[1]
    if meta != "icc" or mode == "cmyk":  # CMYK is converted to RGB: its profile never travels
        return None
    gray = mode in ("gray", "gray_alpha", "bilevel") and not (kind[0] == "gif")
    return None if gray and out == "webp" else profile_for(mode)  # WebP holds gray as RGB


def check_metadata(out_path: Path, kind, meta: str, out: str) -> None:
    info = read_image_info(out_path)
    assert info.provenance is not None
    assert info.icc_profile == expected_profile(kind, meta, out)
    assert info.xmp == (XMP if meta == "xmp" else None)
    exif = Image.Exif()
    exif.load(info.exif or b"")
    assert exif.get(0x0112, 1) == 1
    assert (exif.get(0x013B) == ARTIST) == (meta == "exif")
    if out != "tiff":  # a TIFF's IFD0 is its own layout; elsewhere EXIF holds descriptive tags only
        with Image.open(out_path) as im:
            assert set(im.getexif()) <= DESCRIPTIVE_TAGS


def check_pixels(src: Path, out_path: Path, kind, stored, orientation: int, out: str, model) -> None:
    source = read_image(src)
    lossless_input = kind[0] != "jpeg" and kind[1] != "cmyk"
    if lossless_input:  # the reading itself, independently of sisr: the pixels written, oriented
        np.testing.assert_array_equal(source, oriented(decoded(kind, stored), orientation))
    oh, ow = (W, H) if orientation in (6, 8) else (H, W)
    assert source.shape[:2] == (oh, ow)
    result = read_image(out_path)
    expected = as_written(upscale_array(source, model), out)
    assert result.shape == expected.shape == (2 * oh, 2 * ow, expected.shape[2])
    assert result.dtype == expected.dtype
    if out == "jpg":
        diff = np.abs(result.astype(int) - expected.astype(int))
        assert diff.mean() < 3 and diff.max() <= 40, (diff.mean(), diff.max())
    else:
        np.testing.assert_array_equal(result, expected)


@pytest.mark.parametrize("out", OUTPUTS)
def test_format_matrix(tmp_path, capsys, out):
    model = sisr.create_model("bicubic", scale=2)
    cases = [(i, c) for i, c in enumerate(CASES) if c[3] == out]
    folder = tmp_path / "in"
    folder.mkdir()
    inputs = {}
    for i, (kind, orientation, meta, _) in cases:
        stored = stored_pixels(kind, seed=i)
        src = folder / f"c{i:03d}_{kind[0]}_{kind[1]}{kind[2]}_o{orientation}_{meta}{EXTENSION[kind[0]]}"
        write_input(src, kind, stored, orientation, meta)
        inputs[i] = (src, stored)
    lossless = ["--lossless"] if out == "webp" else []  # an error for other formats (it would do nothing)
    code = main(["upscale", str(folder), "-o", str(tmp_path / "out"), "--ext", out, "--model", "bicubic",
                 *lossless, "--quality", "100"])
    errors = [line for line in capsys.readouterr().err.splitlines() if "->" not in line]  # not progress lines
    refused = 0
    for i, (kind, orientation, meta, _) in cases:
        src, stored = inputs[i]
        out_path = tmp_path / "out" / f"{src.stem}.{'tif' if out == 'tiff' else out}"
        reason = refusal(kind, orientation, meta, out)
        if reason is not None:
            refused += 1
            assert not out_path.exists(), src.name
            assert any(src.stem in line and reason in line for line in errors), (src.name, reason, errors)
            continue
        assert out_path.exists() and not [e for e in errors if src.stem in e], (src.name, errors)
        check_pixels(src, out_path, kind, stored, orientation, out, model)
        check_metadata(out_path, kind, meta, out)
    assert code == (1 if refused else 0)


def test_the_matrix_covers_every_pair_and_lists_its_refusals():
    assert len(CASES) < 260
    for i, j in itertools.combinations(range(4), 2):
        seen = {(c[i], c[j]) for c in CASES}
        want = {(a[i], a[j]) for a in itertools.product(KINDS, ORIENTATIONS, METADATA, OUTPUTS) if valid(*a[:3])}
        assert seen == want, (i, j)
    assert {refusal(*c) for c in CASES} - {None} == {
        "16-bit CMYK with an ICC profile is not supported", "JPEG cannot hold transparency"}
