"""Image metadata: ICC profiles, EXIF, XMP, DPI and provenance carried through every output format."""

from __future__ import annotations

import struct
import sys

import numpy as np
import pytest
from PIL import Image, ImageCms

from sisr.data.io import ImageInfo, read_image, read_image_info, to_srgb, write_image
from sisr.errors import ImageError

ARTIST = 0x013B
ORIENTATION = 0x0112
XMP = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF/></x:xmpmeta>'


def _s15(v: float) -> bytes:
    return struct.pack(">i", int(round(v * 65536)))


def rgb_profile(red, green, blue, gamma: float, name: str) -> bytes:
    """A minimal ICC v2 RGB matrix/TRC display profile (primaries as D50 XYZ)."""
    def xyz(v):
        return b"XYZ \0\0\0\0" + b"".join(_s15(c) for c in v)

    text = name.encode("ascii") + b"\0"
    desc = b"desc\0\0\0\0" + struct.pack(">I", len(text)) + text + b"\0" * 8 + b"\0\0\0" + b"\0" * 67
    curv = b"curv\0\0\0\0" + struct.pack(">IH", 1, int(round(gamma * 256))) + b"\0\0"
    tags = [(b"desc", desc), (b"wtpt", xyz((0.9642, 1.0, 0.8249))), (b"rXYZ", xyz(red)), (b"gXYZ", xyz(green)),
            (b"bXYZ", xyz(blue)), (b"rTRC", curv), (b"gTRC", curv), (b"bTRC", curv),
            (b"cprt", b"text\0\0\0\0" + b"none\0")]
    offset = 128 + 4 + 12 * len(tags)
    table, data = b"", b""
    for sig, body in tags:
        body += b"\0" * (-len(body) % 4)
        table += sig + struct.pack(">II", offset + len(data), len(body))
        data += body
    size = offset + len(data)
    header = (struct.pack(">I", size) + b"\0" * 4 + struct.pack(">I", 0x02100000) + b"mntrRGB XYZ " + b"\0" * 12
              + b"acsp" + b"\0" * 24 + struct.pack(">I", 0) + _s15(0.9642) + _s15(1.0) + _s15(0.8249) + b"\0" * 48)
    assert len(header) == 128
    return header + struct.pack(">I", len(tags)) + table + data


ADOBE_RGB = rgb_profile((0.6097, 0.3111, 0.0195), (0.2053, 0.6257, 0.0609), (0.1492, 0.0632, 0.7446), 2.2,
                        "Adobe RGB-like test profile")


def photo(tmp_path, name="in.jpg", orientation=6, size=(12, 8)):
    """A JPEG as a camera writes it: ICC profile, EXIF with artist and orientation, XMP, DPI."""
    w, h = size
    rng = np.random.default_rng(0)
    pixels = np.clip(rng.normal(128, 40, (h, w, 3)), 0, 255).astype(np.uint8)
    exif = Image.Exif()
    exif[ARTIST] = "Ann Example"
    exif[ORIENTATION] = orientation
    path = tmp_path / name
    Image.fromarray(pixels).save(path, quality=98, icc_profile=ADOBE_RGB, exif=exif.tobytes(), dpi=(300, 300),
                                 xmp=XMP)
    return path


def test_the_test_profile_is_a_real_icc_profile():
    profile = ImageCms.ImageCmsProfile(__import__("io").BytesIO(ADOBE_RGB))
    assert "Adobe RGB-like" in ImageCms.getProfileDescription(profile)


def test_read_image_info_reports_profile_exif_xmp_dpi_with_orientation_reset(tmp_path):
    path = photo(tmp_path)
    info = read_image_info(path)
    assert info.icc_profile == ADOBE_RGB and info.xmp == XMP and info.dpi == (300.0, 300.0) and info.frames == 1
    exif = Image.Exif()
    exif.load(info.exif)
    assert exif[ARTIST] == "Ann Example" and exif[ORIENTATION] == 1
    assert read_image(path).shape == (12, 8, 3)  # read_image is unchanged: an upright array


@pytest.mark.parametrize("ext", [".png", ".jpg", ".webp", ".tif"])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_every_format_carries_profile_exif_xmp_and_provenance(tmp_path, ext, dtype):
    if ext == ".tif" and dtype == np.uint16:
        pytest.importorskip("tifffile")
    info = read_image_info(photo(tmp_path))
    pixels = read_image(tmp_path / "in.jpg").astype(dtype)
    if dtype == np.uint16:
        pixels = pixels * np.uint16(257)
    out = write_image(tmp_path / f"out{ext}", pixels, info=info, provenance='{"model": "bicubic"}')
    back = read_image_info(out)
    assert back.icc_profile == ADOBE_RGB
    assert back.xmp == XMP
    assert back.provenance == '{"model": "bicubic"}'
    exif = Image.Exif()
    exif.load(back.exif or b"")
    assert exif.get(ARTIST) == "Ann Example"
    assert exif.get(ORIENTATION, 1) == 1
    if ext != ".webp":  # WebP has no resolution field
        assert back.dpi is not None and abs(back.dpi[0] - 300) < 0.01
    img = read_image(out)
    lossless_16 = ext in (".png", ".tif") and dtype == np.uint16
    assert img.shape == pixels.shape and img.dtype == (np.uint16 if lossless_16 else np.uint8)
    if ext in (".png", ".tif"):
        np.testing.assert_array_equal(img, pixels)


def test_16bit_tiff_without_tifffile_is_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tifffile", None)
    with pytest.raises(ImageError, match=r"out\.tif: writing 16-bit TIFF needs tifffile.*pip install"):
        write_image(tmp_path / "out.tif", np.zeros((2, 2, 3), np.uint16))
    assert not (tmp_path / "out.tif").exists()


def test_jpeg_refuses_transparency_and_webp_takes_gray(tmp_path):
    with pytest.raises(ImageError, match="JPEG cannot hold transparency"):
        write_image(tmp_path / "a.jpg", np.zeros((2, 2, 4), np.uint8))
    write_image(tmp_path / "g.webp", np.full((3, 3, 2), 200, np.uint8), lossless=True)
    assert read_image(tmp_path / "g.webp").shape == (3, 3, 4)


def test_quality_and_lossless_webp(tmp_path):
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    low = write_image(tmp_path / "low.jpg", pixels, quality=10)
    high = write_image(tmp_path / "high.jpg", pixels, quality=95)
    assert low.stat().st_size < high.stat().st_size
    np.testing.assert_array_equal(read_image(write_image(tmp_path / "l.webp", pixels, lossless=True)), pixels)
    with pytest.raises(ImageError, match="quality must be 1..100"):
        write_image(tmp_path / "q.jpg", pixels, quality=0)


def test_to_srgb_converts_with_the_profile(tmp_path):
    pixels = np.array([[[40, 200, 60], [200, 40, 60]]], np.uint8)
    srgb_profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    same = to_srgb(pixels, srgb_profile).astype(int)
    assert np.abs(same - pixels).max() <= 2  # sRGB -> sRGB: unchanged up to rounding
    converted = to_srgb(pixels, ADOBE_RGB).astype(int)
    assert np.abs(converted - pixels).max() > 10  # a wider gamut: saturated colours move
    assert to_srgb(pixels, None) is not None and np.array_equal(to_srgb(pixels, None), pixels)
    rgba = np.concatenate([pixels, np.full((1, 2, 1), 7, np.uint8)], axis=2)
    assert np.array_equal(to_srgb(rgba, ADOBE_RGB)[..., 3], rgba[..., 3])
    with pytest.raises(ImageError, match="8-bit images only"):
        to_srgb(pixels.astype(np.uint16), ADOBE_RGB)


def test_animated_gif_reports_its_frames(tmp_path):
    frames = [Image.fromarray(np.full((4, 5, 3), v, np.uint8)) for v in (10, 200)]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:])
    assert read_image_info(tmp_path / "a.gif").frames == 2
    assert read_image(tmp_path / "a.gif").shape[:2] == (4, 5)


def test_image_info_defaults_write_plain_files(tmp_path):
    out = write_image(tmp_path / "p.png", np.zeros((2, 2, 3), np.uint8), info=ImageInfo())
    assert read_image_info(out) == ImageInfo()
