"""Image I/O: formats, modes, 16-bit PNG codec, orientation, errors, tensor conversion."""

from __future__ import annotations

import struct
import sys
import zlib

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from sisr.data.io import (
    MAX_PIXELS,
    find_images,
    image_to_tensor,
    is_image_file,
    merge_alpha,
    read_image,
    split_alpha,
    tensor_to_image,
    write_image,
)
from sisr.errors import ImageError
from sisr.utils.fs import OutputExistsError

RNG = np.random.default_rng(1234)


def _random(shape, dtype):
    arr = RNG.integers(0, np.iinfo(dtype).max + 1, shape, dtype=dtype)
    arr[2:9, 3:12] = arr[2, 3]  # a flat patch, so the filters see some structure
    return arr


# --- an independent PNG writer for the tests: every filter type, optional Adam7 --------------------

def _paeth(a, b, c):
    p = a + b - c
    pa, pb, pc = np.abs(p - a), np.abs(p - b), np.abs(p - c)
    return np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))


def _filter_rows(raw: np.ndarray, filters: np.ndarray, bpp: int) -> np.ndarray:
    """PNG-filter each row of ``raw`` (uint8 ``(h, stride)``) with its filter type (spec formulas)."""
    x = raw.astype(np.int32)
    a = np.zeros_like(x)
    a[:, bpp:] = x[:, :-bpp]
    b = np.zeros_like(x)
    b[1:] = x[:-1]
    c = np.zeros_like(x)
    c[1:, bpp:] = x[:-1, :-bpp]
    preds = [np.zeros_like(x), a, b, (a + b) // 2, _paeth(a, b, c)]
    out = np.stack([(x[r] - preds[f][r]) % 256 for r, f in enumerate(filters)]).astype(np.uint8)
    return np.concatenate([filters[:, None].astype(np.uint8), out], axis=1)


def _png_bytes(arr: np.ndarray, filters=(0, 1, 2, 3, 4), seed: int = 0, interlace: bool = False,
               extra: list | None = None) -> bytes:
    """PNG of a uint8/uint16 ``(H, W, C)`` array, each row with a random one of ``filters``."""
    h, w, c = arr.shape
    depth = 16 if arr.dtype == np.uint16 else 8
    color_type = {1: 0, 2: 4, 3: 2, 4: 6}[c]
    bpp = c * depth // 8
    rng = np.random.default_rng(seed)
    passes = ((0, 0, 8, 8), (0, 4, 8, 8), (4, 0, 8, 4), (0, 2, 4, 4), (2, 0, 4, 2), (0, 1, 2, 2), (1, 0, 2, 1)) \
        if interlace else ((0, 0, 1, 1),)
    parts = []
    for r0, c0, rs, cs in passes:
        sub = arr[r0::rs, c0::cs]
        if sub.size == 0:
            continue
        raw = sub.astype(">u2" if depth == 16 else np.uint8).view(np.uint8).reshape(sub.shape[0], -1)
        parts.append(_filter_rows(raw, rng.choice(np.asarray(filters), sub.shape[0]), bpp).tobytes())

    def chunk(t, body):
        return struct.pack(">I", len(body)) + t + body + struct.pack(">I", zlib.crc32(t + body))

    ihdr = struct.pack(">IIBBBBB", w, h, depth, color_type, 0, 0, int(interlace))
    chunks = [chunk(b"IHDR", ihdr)] + [chunk(t, b) for t, b in (extra or [])]
    chunks += [chunk(b"IDAT", zlib.compress(b"".join(parts))), chunk(b"IEND", b"")]
    return b"\x89PNG\r\n\x1a\n" + b"".join(chunks)


# --- round trips --------------------------------------------------------------------------------------

@pytest.mark.parametrize("channels", [1, 2, 3, 4])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_png_round_trip_is_bit_exact(tmp_path, channels, dtype):
    img = _random((23, 31, channels), dtype)
    path = write_image(tmp_path / "x.png", img)
    back = read_image(path)
    assert back.dtype == dtype and back.shape == img.shape and back.flags.writeable
    np.testing.assert_array_equal(back, img)
    assert [p.name for p in tmp_path.iterdir()] == ["x.png"]  # no temporary file left behind


def test_two_dimensional_input_reads_back_as_one_channel(tmp_path):
    img = _random((5, 7), np.uint16)
    back = read_image(write_image(tmp_path / "g.png", img))
    assert back.shape == (5, 7, 1)
    np.testing.assert_array_equal(back[..., 0], img)


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_16bit_png_we_write_is_valid_for_other_decoders(tmp_path, channels):
    img = _random((19, 26, channels), np.uint16)
    path = write_image(tmp_path / "x.png", img)
    with Image.open(path) as im:
        pil = np.asarray(im)
    if channels == 1:  # Pillow reads 16-bit gray as I;16, exactly
        np.testing.assert_array_equal(pil, img[..., 0])
    else:  # Pillow keeps the high byte of 16-bit colour samples (and reads gray+alpha as RGBA)
        high = (img >> 8).astype(np.uint8)
        if channels == 2:
            high = high[..., [0, 0, 0, 1]]
        np.testing.assert_array_equal(pil, high)
    png = pytest.importorskip("png")  # pypng, a pure-Python decoder, when installed
    _, _, rows, _ = png.Reader(filename=str(path)).asDirect()
    np.testing.assert_array_equal(np.vstack([np.asarray(r, dtype=np.uint16) for r in rows]).reshape(img.shape), img)


@pytest.mark.parametrize("interlace", [False, True])
@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_16bit_png_decoder_handles_every_filter_and_adam7(tmp_path, channels, interlace):
    img = _random((21, 18, channels), np.uint16)
    data = _png_bytes(img, seed=channels, interlace=interlace)
    path = tmp_path / "f.png"
    path.write_bytes(data)
    np.testing.assert_array_equal(read_image(path), img)
    png = pytest.importorskip("png")  # the test encoder itself agrees with an independent decoder
    _, _, rows, _ = png.Reader(bytes=data).asDirect()
    np.testing.assert_array_equal(np.vstack([np.asarray(r, dtype=np.uint16) for r in rows]).reshape(img.shape), img)


def test_16bit_png_with_only_sub_up_none_filters(tmp_path):
    img = _random((12, 9, 3), np.uint16)
    path = tmp_path / "s.png"
    path.write_bytes(_png_bytes(img, filters=(0, 1, 2), seed=7))
    np.testing.assert_array_equal(read_image(path), img)


def test_16bit_png_transparency_key_becomes_alpha(tmp_path):
    img = _random((6, 5, 3), np.uint16)
    key = img[1, 2].copy()
    path = tmp_path / "t.png"
    path.write_bytes(_png_bytes(img, extra=[(b"tRNS", struct.pack(">3H", *key.tolist()))]))
    out = read_image(path)
    assert out.shape == (6, 5, 4)
    np.testing.assert_array_equal(out[..., :3], img)
    np.testing.assert_array_equal(out[..., 3], np.where((img == key).all(axis=2), 0, 65535))


def _exif_bytes(orientation: int) -> bytes:
    """EXIF block with an orientation tag, without the ``Exif\\0\\0`` prefix (as PNG eXIf stores it)."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes().removeprefix(b"Exif\x00\x00")


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_matches_pillow(tmp_path, orientation):
    img = _random((5, 8, 3), np.uint8)
    path = tmp_path / "o.png"
    Image.fromarray(img).save(path, exif=_exif_bytes(orientation))
    with Image.open(path) as im:
        expected = np.asarray(ImageOps.exif_transpose(im))
    np.testing.assert_array_equal(read_image(path), expected)
    # the same orientation in a 16-bit PNG (decoded here)
    img16 = img.astype(np.uint16) * 257
    path16 = tmp_path / "o16.png"
    path16.write_bytes(_png_bytes(img16, extra=[(b"eXIf", _exif_bytes(orientation))]))
    np.testing.assert_array_equal(read_image(path16), expected.astype(np.uint16) * 257)


# --- formats and Pillow modes ----------------------------------------------------------------------

@pytest.mark.parametrize("fmt,suffix,kwargs", [
    ("BMP", ".bmp", {}),
    ("TIFF", ".tif", {}),
    ("TIFF", ".tiff", {"compression": "tiff_lzw"}),
    ("WEBP", ".webp", {"lossless": True}),
    ("PNG", ".png", {}),
])
def test_lossless_formats_read_exactly(tmp_path, fmt, suffix, kwargs):
    img = _random((14, 10, 3), np.uint8)
    path = tmp_path / f"x{suffix}"
    Image.fromarray(img).save(path, format=fmt, **kwargs)
    out = read_image(path)
    assert out.dtype == np.uint8 and out.shape == (14, 10, 3)
    np.testing.assert_array_equal(out, img)


def test_jpeg_reads_as_rgb_uint8(tmp_path):
    img = np.full((16, 16, 3), (200, 40, 90), dtype=np.uint8)
    path = tmp_path / "x.jpg"
    Image.fromarray(img).save(path, quality=95)
    out = read_image(path)
    assert out.shape == (16, 16, 3) and out.dtype == np.uint8
    assert np.abs(out.astype(int) - img).max() <= 4


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    path = tmp_path / "c.jpg"
    Image.new("CMYK", (8, 6), (0, 255, 255, 0)).save(path)  # pure red in CMYK
    out = read_image(path)
    assert out.shape == (6, 8, 3)
    assert out[..., 0].min() > 240 and out[..., 1:].max() < 15


def test_palette_images(tmp_path):
    idx = RNG.integers(0, 4, (9, 7), dtype=np.uint8)
    palette = [10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 110, 120]
    im = Image.frombytes("P", (7, 9), idx.tobytes())
    im.putpalette(palette + [0] * (768 - len(palette)))
    im.save(tmp_path / "p.png")
    out = read_image(tmp_path / "p.png")
    assert out.shape == (9, 7, 3)
    np.testing.assert_array_equal(out, np.asarray(palette, dtype=np.uint8).reshape(4, 3)[idx])
    im.save(tmp_path / "pt.png", transparency=2)
    out = read_image(tmp_path / "pt.png")
    assert out.shape == (9, 7, 4)
    np.testing.assert_array_equal(out[..., 3], np.where(idx == 2, 0, 255))


def test_bilevel_gray_alpha_and_rgb_transparency(tmp_path):
    bits = RNG.integers(0, 2, (6, 9)).astype(bool)
    Image.fromarray(bits).save(tmp_path / "b.png")
    np.testing.assert_array_equal(read_image(tmp_path / "b.png")[..., 0], bits * 255)
    la = _random((6, 9, 2), np.uint8)
    Image.fromarray(la).save(tmp_path / "la.png")
    np.testing.assert_array_equal(read_image(tmp_path / "la.png"), la)
    rgb = _random((6, 9, 3), np.uint8)
    Image.fromarray(rgb).save(tmp_path / "t.png", transparency=tuple(int(v) for v in rgb[0, 0]))
    out = read_image(tmp_path / "t.png")
    assert out.shape == (6, 9, 4) and out[0, 0, 3] == 0


def test_16bit_gray_tiff_and_32bit_integer_modes(tmp_path):
    gray = _random((7, 5), np.uint16)
    Image.fromarray(gray).save(tmp_path / "g.tif")
    out = read_image(tmp_path / "g.tif")
    assert out.dtype == np.uint16
    np.testing.assert_array_equal(out[..., 0], gray)
    ints = gray.astype(np.int32)
    Image.fromarray(ints).save(tmp_path / "i.tif")
    np.testing.assert_array_equal(read_image(tmp_path / "i.tif")[..., 0], gray)
    Image.fromarray(ints * 4 + 70000).save(tmp_path / "big.tif")
    with pytest.raises(ImageError, match="outside 0..65535"):
        read_image(tmp_path / "big.tif")
    Image.fromarray(gray.astype(np.float32)).save(tmp_path / "f.tif")
    with pytest.raises(ImageError, match="float"):
        read_image(tmp_path / "f.tif")


def _tiff_rgb16(h: int, w: int) -> bytes:
    """A minimal uncompressed little-endian 16-bit RGB TIFF."""
    pixels = np.arange(h * w * 3, dtype="<u2").tobytes()
    n = 9
    ifd_offset, bits_offset = 8, 8 + 2 + n * 12 + 4
    data_offset = bits_offset + 6
    entries = [(256, 3, 1, w), (257, 3, 1, h), (258, 3, 3, bits_offset), (259, 3, 1, 1), (262, 3, 1, 2),
               (273, 4, 1, data_offset), (277, 3, 1, 3), (278, 3, 1, h), (279, 4, 1, len(pixels))]
    out = b"II*\x00" + struct.pack("<I", ifd_offset) + struct.pack("<H", n)
    out += b"".join(struct.pack("<HHII", *e) for e in entries) + struct.pack("<I", 0)
    return out + struct.pack("<3H", 16, 16, 16) + pixels


def test_16bit_colour_tiff_is_read_with_tifffile_or_refused_not_reduced(tmp_path, monkeypatch):
    path = tmp_path / "c16.tif"
    path.write_bytes(_tiff_rgb16(4, 5))
    expected = np.arange(4 * 5 * 3, dtype=np.uint16).reshape(4, 5, 3)
    try:
        import tifffile  # noqa: F401
    except ImportError:
        pass
    else:
        out = read_image(path)
        assert out.dtype == np.uint16
        np.testing.assert_array_equal(out, expected)
    monkeypatch.setitem(sys.modules, "tifffile", None)  # as if not installed
    with pytest.raises(ImageError, match="16-bit colour TIFF needs tifffile.*pip install"):
        read_image(path)


# --- errors -------------------------------------------------------------------------------------------

def _one_line(exc_info, path):
    msg = str(exc_info.value)
    assert "\n" not in msg and msg.startswith(str(path)), msg
    return msg


def test_bad_files_raise_one_line_image_errors(tmp_path):
    cases = {}
    cases["missing"] = (tmp_path / "nope.png", "no such file")
    (tmp_path / "dir.png").mkdir()
    cases["dir"] = (tmp_path / "dir.png", "directory")
    (tmp_path / "empty.png").write_bytes(b"")
    cases["empty"] = (tmp_path / "empty.png", "empty file")
    (tmp_path / "text.png").write_text("hello, not an image\n")
    cases["text"] = (tmp_path / "text.png", "not an image")
    img = _random((40, 40, 3), np.uint8)
    Image.fromarray(img).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    cases["truncated png"] = (tmp_path / "cut.png", "truncated")
    Image.fromarray(img).save(tmp_path / "full.jpg")
    jpg = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(jpg[: len(jpg) // 3])
    cases["truncated jpeg"] = (tmp_path / "cut.jpg", "truncated")
    data16 = _png_bytes(_random((30, 30, 3), np.uint16))
    (tmp_path / "cut16.png").write_bytes(data16[: len(data16) // 2])
    cases["truncated 16-bit png"] = (tmp_path / "cut16.png", "truncated")
    bad_crc = bytearray(data16)
    bad_crc[60] ^= 0xFF  # inside the IDAT data
    (tmp_path / "crc16.png").write_bytes(bytes(bad_crc))
    cases["corrupt 16-bit png"] = (tmp_path / "crc16.png", "corrupt")
    for name, (path, text) in cases.items():
        with pytest.raises(ImageError) as exc_info:
            read_image(path)
        assert text in _one_line(exc_info, path), name


@pytest.mark.parametrize("depth", [8, 16])
def test_decompression_bomb_dimensions_are_refused_before_decoding(tmp_path, depth):
    side = int(MAX_PIXELS ** 0.5) + 16
    arr = np.zeros((1, 1, 3), dtype=np.uint8 if depth == 8 else np.uint16)
    data = bytearray(_png_bytes(arr))
    data[16:24] = struct.pack(">II", side, side)  # claim a huge size in IHDR
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    path = tmp_path / "bomb.png"
    path.write_bytes(bytes(data))
    with pytest.raises(ImageError) as exc_info:
        read_image(path)
    assert "too large" in _one_line(exc_info, path)


def test_write_refuses_existing_files_unless_overwrite(tmp_path):
    path = tmp_path / "o.png"
    write_image(path, np.zeros((2, 2, 3), np.uint8))
    with pytest.raises(OutputExistsError):
        write_image(path, np.ones((2, 2, 3), np.uint8))
    assert read_image(path).max() == 0
    write_image(path, np.ones((2, 2, 3), np.uint8), overwrite=True)
    assert read_image(path).min() == 1


def test_write_rejects_bad_names_and_arrays(tmp_path):
    with pytest.raises(ImageError, match="unknown output extension '.bmp'"):
        write_image(tmp_path / "x.bmp", np.zeros((2, 2, 3), np.uint8))
    with pytest.raises(ImageError, match="dtype float32"):
        write_image(tmp_path / "x.png", np.zeros((2, 2, 3), np.float32))
    with pytest.raises(ImageError, match="shape"):
        write_image(tmp_path / "x.png", np.zeros((2, 2, 5), np.uint8))
    assert not list(tmp_path.iterdir())


# --- tensors and helpers -------------------------------------------------------------------------------

def test_image_to_tensor_and_back():
    img = _random((4, 6, 3), np.uint8)
    t = image_to_tensor(img)
    assert t.dtype == torch.float32 and t.shape == (3, 4, 6)
    assert torch.equal(t * 255, torch.from_numpy(img.transpose(2, 0, 1).astype(np.float32)))
    np.testing.assert_array_equal(tensor_to_image(t), img)
    np.testing.assert_array_equal(tensor_to_image(t[None]), img)
    img16 = _random((4, 6, 1), np.uint16)
    np.testing.assert_array_equal(tensor_to_image(image_to_tensor(img16), np.uint16), img16)
    assert image_to_tensor(img16).max() <= 1


def test_tensor_to_image_clamps_and_rounds_half_to_even():
    t = torch.tensor([-0.3, 0.5 / 255, 1.5 / 255, 2.5 / 255, 1.2]).view(1, 1, 5)
    np.testing.assert_array_equal(tensor_to_image(t)[0, :, 0], [0, 0, 2, 2, 255])


def test_split_and_merge_alpha():
    rgba = _random((3, 4, 4), np.uint8)
    color, alpha = split_alpha(rgba)
    assert color.shape == (3, 4, 3) and alpha.shape == (3, 4, 1)
    np.testing.assert_array_equal(merge_alpha(color, alpha), rgba)
    gray, none = split_alpha(rgba[..., :1])
    assert none is None and gray.shape == (3, 4, 1)
    la = rgba[..., :2]
    np.testing.assert_array_equal(merge_alpha(*split_alpha(la)), la)


def test_is_image_file_and_find_images(tmp_path):
    assert is_image_file("a/B.PNG") and is_image_file("x.jpeg") and is_image_file("y.TIF")
    assert not is_image_file("notes.txt") and not is_image_file("png")
    for rel in ["b.png", "sub/a.JPG", "sub/deeper/c.webp", ".hidden/d.png", "e.txt", ".f.png"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    found = [p.relative_to(tmp_path).as_posix() for p in find_images(tmp_path)]
    assert found == ["b.png", "sub/a.JPG", "sub/deeper/c.webp"]
    assert [p.name for p in find_images(tmp_path, recursive=False)] == ["b.png"]
    with pytest.raises(ImageError, match="not a folder"):
        find_images(tmp_path / "b.png")


# --- issue 23: orientation on every read path, bombs and format limits as one line -----------------------

def _orient(arr: np.ndarray, orientation: int) -> np.ndarray:
    """What a viewer shows, by Pillow's exif_transpose on an 8-bit copy's layout (independent of sisr)."""
    ops = {1: lambda a: a, 3: lambda a: a[::-1, ::-1], 6: lambda a: np.rot90(a, -1), 8: lambda a: np.rot90(a, 1)}
    return ops[orientation](arr)


@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
@pytest.mark.parametrize("layout", ["rgb", "rgba", "planar", "tiled_zlib"])
def test_16bit_tiff_orientation_is_applied(tmp_path, orientation, layout):
    """The orientation of 16-bit colour TIFF (read by tifffile) was reset to 1 but not applied."""
    tifffile = pytest.importorskip("tifffile")
    arr = _random((5, 7, 4 if layout == "rgba" else 3), np.uint16)
    options = dict(photometric="rgb", metadata=None, extratags=[(274, "H", 1, orientation, True)])
    data = arr
    if layout == "rgba":
        options["extrasamples"] = ["unassalpha"]
    if layout == "planar":
        options["planarconfig"] = "separate"
        data = np.moveaxis(arr, -1, 0)  # (S, H, W)
    if layout == "tiled_zlib":
        arr = data = _random((40, 24, 3), np.uint16)
        options.update(tile=(16, 16), compression="zlib")
    path = tmp_path / "o.tif"
    tifffile.imwrite(path, data, **options)
    np.testing.assert_array_equal(read_image(path), _orient(arr, orientation))
    # the 8-bit reading of the same file (Pillow) turns it the same way
    with Image.open(path) as im:
        if im.mode in ("RGB", "RGBA"):
            assert read_image(path).shape[:2] == (im.height, im.width)


def test_16bit_cmyk_tiff_is_converted_or_refused_with_a_profile(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    ink = np.zeros((2, 3, 4), np.uint16)
    ink[0, 0] = (0, 0, 0, 32768)
    ink[0, 1] = (65535, 0, 0, 0)
    tifffile.imwrite(tmp_path / "c.tif", ink, photometric="separated", metadata=None)
    out = read_image(tmp_path / "c.tif")
    assert out.dtype == np.uint16 and out.shape == (2, 3, 3)
    assert out[0, 0].tolist() == [32767] * 3 and out[0, 1].tolist() == [0, 65535, 65535] and (out[1] == 65535).all()
    tifffile.imwrite(tmp_path / "p.tif", ink, photometric="separated", metadata=None, iccprofile=b"\0" * 200)
    with pytest.raises(ImageError, match="16-bit CMYK with an ICC profile is not supported"):
        read_image(tmp_path / "p.tif")


def _text_orientation_exif() -> bytes:
    """EXIF whose Orientation is stored as ASCII text (a broken writer), with an Artist tag."""
    from PIL import TiffImagePlugin

    ifd = TiffImagePlugin.ImageFileDirectory_v2(prefix=b"II")
    ifd[0x0112] = "six"
    ifd.tagtype[0x0112] = 2
    ifd[0x013B] = "Ann"
    return b"Exif\x00\x00II*\x00\x08\x00\x00\x00" + ifd.tobytes(8)


def test_text_orientation_is_ignored_not_refused(tmp_path):
    from sisr.data.io import read_image_info

    img = _random((4, 6, 3), np.uint8)
    Image.fromarray(img).save(tmp_path / "t.png", exif=_text_orientation_exif())
    np.testing.assert_array_equal(read_image(tmp_path / "t.png"), img)
    Image.fromarray(img).save(tmp_path / "t.jpg", exif=_text_orientation_exif(), quality=95)
    assert read_image(tmp_path / "t.jpg").shape == (4, 6, 3)
    exif = Image.Exif()
    exif.load(read_image_info(tmp_path / "t.jpg").exif)
    assert exif[0x0112] == 1 and exif[0x013B] == "Ann"
    img16 = _random((4, 6, 3), np.uint16)
    (tmp_path / "t16.png").write_bytes(_png_bytes(img16, extra=[(b"eXIf", _text_orientation_exif()[6:])]))
    np.testing.assert_array_equal(read_image(tmp_path / "t16.png"), img16)


@pytest.mark.parametrize("depth", [8, 16])
def test_a_100000_square_png_header_is_one_image_error_from_both_readers(tmp_path, depth):
    from sisr.data.io import read_image_info

    arr = np.zeros((1, 1, 3), dtype=np.uint8 if depth == 8 else np.uint16)
    data = bytearray(_png_bytes(arr))
    data[16:24] = struct.pack(">II", 100000, 100000)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    path = tmp_path / "bomb.png"
    path.write_bytes(bytes(data))
    for reader in (read_image, read_image_info):
        with pytest.raises(ImageError) as exc_info:
            reader(path)
        assert "too large" in _one_line(exc_info, path), reader


def test_check_output_size_tells_before_the_work(tmp_path):
    from sisr.data.io import MAX_SIDE, check_output_size

    assert MAX_SIDE["WEBP"] == 16383 and MAX_SIDE["JPEG"] == 65500
    check_output_size(tmp_path / "a.webp", 16383, 2)
    check_output_size(tmp_path / "a.jpg", 1, 65500)
    check_output_size(tmp_path / "a.png", 100000, 100000)
    check_output_size(tmp_path / "a.tif", 100000, 100000)
    for name, h, w in (("a.webp", 2, 16384), ("a.jpg", 65501, 1), ("a.webp", 16384, 16384)):
        with pytest.raises(ImageError) as exc_info:
            check_output_size(tmp_path / name, h, w)
        assert f"{w}x{h} cannot be written as" in _one_line(exc_info, tmp_path / name)
    with pytest.raises(ImageError, match="unknown output extension"):
        check_output_size(tmp_path / "a.bmp", 2, 2)
    check_output_size(tmp_path / "a.jpg", 2, 2, channels=3)
    for channels in (2, 4):
        with pytest.raises(ImageError, match=r"a\.jpg: JPEG cannot hold transparency"):
            check_output_size(tmp_path / "a.jpg", 2, 2, channels=channels)
    check_output_size(tmp_path / "a.webp", 2, 2, channels=4)
    with pytest.raises(ImageError, match=r"a\.webp: 16384x1 cannot be written as WEBP \(at most 16383"):
        write_image(tmp_path / "a.webp", np.zeros((1, 16384, 3), np.uint8))  # not Pillow's ValueError
    assert not list(tmp_path.iterdir())


def test_16bit_tiff_premultiplied_alpha_is_unpremultiplied(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    arr = np.array([[[32768, 16384, 0, 32768], [1000, 2000, 3000, 65535], [0, 0, 0, 0]]], np.uint16)
    tifffile.imwrite(tmp_path / "a.tif", arr, photometric="rgb", extrasamples=["assocalpha"], metadata=None)
    out = read_image(tmp_path / "a.tif")
    assert out.tolist() == [[[65535, 32768, 0, 32768], [1000, 2000, 3000, 65535], [0, 0, 0, 0]]]


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("mode", ["L", "RGB", "P", "1"])
@pytest.mark.parametrize("compression", [None, "tiff_lzw"])
def test_8bit_tiff_orientation_in_every_mode(tmp_path, orientation, mode, compression):
    """Opened by path, Pillow memory-maps uncompressed gray TIFF and scrambled orientations 5-8."""
    base = Image.fromarray(_random((5, 7, 3), np.uint8)).convert(mode)
    base.save(tmp_path / "o.tif", tiffinfo={0x0112: orientation}, compression=compression)
    method = {2: 0, 3: 3, 4: 1, 5: 5, 6: 4, 7: 6, 8: 2}.get(orientation)  # Image.Transpose per orientation
    upright = base if method is None else base.transpose(Image.Transpose(method))
    expected = np.asarray(upright.convert("L" if mode in ("L", "1") else "RGB"))
    np.testing.assert_array_equal(read_image(tmp_path / "o.tif"), expected.reshape(expected.shape[:2] + (-1,)))
