"""Image metadata: ICC profiles, EXIF, XMP, DPI and provenance carried through every output format."""

from __future__ import annotations

import struct
import sys

import numpy as np
import pytest
from PIL import Image, ImageCms

import sisr

from sisr.data import imagemeta
from sisr.data.io import ImageInfo, read_image, read_image_info, to_srgb, write_image
from sisr.errors import ImageError

ARTIST = 0x013B
ORIENTATION = 0x0112
XMP = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF/></x:xmpmeta>'


def _s15(v: float) -> bytes:
    return struct.pack(">i", int(round(v * 65536)))


def _icc(device_class: bytes, space: bytes, tags: list[tuple[bytes, bytes]]) -> bytes:
    """An ICC v2 profile (PCS XYZ, D50) of the given class and colour space with these tags."""
    offset = 128 + 4 + 12 * len(tags)
    table, data = b"", b""
    for sig, body in tags:
        body += b"\0" * (-len(body) % 4)
        table += sig + struct.pack(">II", offset + len(data), len(body))
        data += body
    size = offset + len(data)
    header = (struct.pack(">I", size) + b"\0" * 4 + struct.pack(">I", 0x02100000) + device_class + space + b"XYZ "
              + b"\0" * 12 + b"acsp" + b"\0" * 24 + struct.pack(">I", 0) + _s15(0.9642) + _s15(1.0) + _s15(0.8249)
              + b"\0" * 48)
    assert len(header) == 128
    return header + struct.pack(">I", len(tags)) + table + data


def _xyz(v) -> bytes:
    return b"XYZ \0\0\0\0" + b"".join(_s15(c) for c in v)


def _desc(name: str) -> bytes:
    text = name.encode("ascii") + b"\0"
    return b"desc\0\0\0\0" + struct.pack(">I", len(text)) + text + b"\0" * 8 + b"\0\0\0" + b"\0" * 67


def _common(name: str) -> list[tuple[bytes, bytes]]:
    return [(b"desc", _desc(name)), (b"wtpt", _xyz((0.9642, 1.0, 0.8249))), (b"cprt", b"text\0\0\0\0none\0")]


def _curve(gamma: float) -> bytes:
    return b"curv\0\0\0\0" + struct.pack(">IH", 1, int(round(gamma * 256))) + b"\0\0"


def rgb_profile(red, green, blue, gamma: float, name: str) -> bytes:
    """A minimal ICC v2 RGB matrix/TRC display profile (primaries as D50 XYZ)."""
    return _icc(b"mntr", b"RGB ", _common(name) + [(b"rXYZ", _xyz(red)), (b"gXYZ", _xyz(green)), (b"bXYZ", _xyz(blue)),
                                                    (b"rTRC", _curve(gamma)), (b"gTRC", _curve(gamma)),
                                                    (b"bTRC", _curve(gamma))])


def gray_profile(gamma: float = 2.2) -> bytes:
    """A minimal ICC v2 gray display profile (a gamma curve)."""
    return _icc(b"mntr", b"GRAY", _common("Gray test profile") + [(b"kTRC", _curve(gamma))])


SRGB_D50 = np.array([[0.4361, 0.3851, 0.1431], [0.2225, 0.7169, 0.0606], [0.0139, 0.0971, 0.7141]])


def cmyk_profile() -> bytes:
    """A minimal ICC v2 CMYK output profile: A2B0 is a 2-point lut16 giving linear-light RGB
    ``(1 - C)(1 - K)``, ``(1 - M)(1 - K)``, ``(1 - Y)(1 - K)`` as D50 XYZ, so half K is sRGB ~188, not 127."""
    nodes = []
    for c, m, y, k in np.ndindex(2, 2, 2, 2):  # the first input channel varies slowest
        rgb = np.array([(1 - c) * (1 - k), (1 - m) * (1 - k), (1 - y) * (1 - k)], dtype=float)
        nodes += [int(round(v * 32768)) for v in SRGB_D50 @ rgb]  # u1Fixed15 XYZ: 0x8000 = 1.0
    identity = struct.pack(">2H", 0, 65535)
    lut = (b"mft2\0\0\0\0" + bytes([4, 3, 2, 0]) + b"".join(_s15(v) for v in (1, 0, 0, 0, 1, 0, 0, 0, 1))
           + struct.pack(">HH", 2, 2) + identity * 4 + struct.pack(f">{len(nodes)}H", *nodes) + identity * 3)
    return _icc(b"prtr", b"CMYK", _common("CMYK test profile") + [(b"A2B0", lut)])


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


# --- issue 23: only descriptive EXIF travels, stated DPI only, profiles only with their colour space ----

def _exif_of(info_or_bytes) -> Image.Exif:
    exif = Image.Exif()
    data = getattr(info_or_bytes, "exif", info_or_bytes)
    if data:
        exif.load(data)
    return exif


def _tiff(tmp_path, name, pixels, **options):
    path = tmp_path / name
    if options.pop("tiled", False):
        tifffile = pytest.importorskip("tifffile")
        tifffile.imwrite(path, pixels, tile=(16, 16), compression="zlib",
                         photometric="rgb" if pixels.ndim == 3 else "minisblack", metadata=None)
    else:
        Image.fromarray(pixels).save(path, **options)
    return path


@pytest.mark.parametrize("options", [{}, {"compression": "tiff_lzw"}, {"compression": "tiff_adobe_deflate"},
                                     {"tiled": True}], ids=["raw", "lzw", "zlib", "tiled"])
@pytest.mark.parametrize("channels", [1, 3])
def test_tiff_layout_tags_never_travel_into_outputs(tmp_path, options, channels):
    """The TIFF's own IFD0 (ImageWidth, StripOffsets...) was carried as EXIF: a TIFF output was cropped
    to the input's width, and JPEG/PNG/WebP outputs held the input's layout tags."""
    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 256, (48, 64, channels), dtype=np.uint8)
    src = _tiff(tmp_path, "in.tif", pixels[..., 0] if channels == 1 else pixels, **options)
    info = read_image_info(src)
    assert set(_exif_of(info)) <= imagemeta.DESCRIPTIVE_TAGS
    assert info.dpi is None  # no resolution tags: none (Pillow would say 1 dpi)
    bigger = np.repeat(np.repeat(read_image(src), 2, axis=0), 2, axis=1)
    for ext in (".tif", ".png", ".jpg", ".webp"):
        out = write_image(tmp_path / f"out{ext}", bigger, info=info)
        back = read_image(out)
        assert back.shape[:2] == (96, 128), ext
        if ext in (".tif", ".png"):
            np.testing.assert_array_equal(back, bigger)
        with Image.open(out) as im:
            layout = {256, 257, 273, 279, 322, 323, 324, 325} & set(im.getexif()) if ext != ".tif" else set()
        assert not layout, (ext, layout)
        assert read_image_info(out).dpi is None, ext


def test_tifffile_shape_description_does_not_travel(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    tifffile.imwrite(tmp_path / "in.tif", np.zeros((4, 6, 3), np.uint16), photometric="rgb")  # '{"shape": ...}'
    with Image.open(tmp_path / "in.tif") as im:
        assert str(im.getexif()[270]).startswith('{"shape"')
    assert 270 not in _exif_of(read_image_info(tmp_path / "in.tif"))


def test_descriptive_tiff_tags_and_resolution_travel(tmp_path):
    pixels = np.full((6, 9, 3), 90, np.uint8)
    src = tmp_path / "in.tif"
    Image.fromarray(pixels).save(src, tiffinfo={ARTIST: "Ann Example", 270: "a test"}, dpi=(300, 300))
    info = read_image_info(src)
    assert info.dpi == (300.0, 300.0)
    for ext in (".tif", ".jpg", ".png"):
        back = read_image_info(write_image(tmp_path / f"o{ext}", np.tile(pixels, (2, 2, 1)), info=info))
        exif = _exif_of(back)
        assert exif.get(ARTIST) == "Ann Example" and exif.get(270) == "a test", ext
        assert back.dpi == pytest.approx((300.0, 300.0), abs=0.01), ext  # PNG stores dots per metre


def test_jpeg_dpi_only_when_stated(tmp_path):
    exif = Image.Exif()
    exif[ARTIST] = "x"
    pixels = np.zeros((4, 4, 3), np.uint8)
    Image.fromarray(pixels).save(tmp_path / "none.jpg", exif=exif.tobytes())
    Image.fromarray(pixels).save(tmp_path / "stated.jpg", exif=exif.tobytes(), dpi=(150, 150))
    assert read_image_info(tmp_path / "none.jpg").dpi is None  # Pillow reports 72 here
    assert read_image_info(tmp_path / "stated.jpg").dpi == (150.0, 150.0)


def test_exif_pixel_dimensions_follow_the_written_size(tmp_path):
    exif = Image.Exif()
    exif[ARTIST] = "Ann"
    exif[imagemeta.EXIF_IFD] = {0xA002: 12, 0xA003: 8, 0x9003: "2020:01:01 00:00:00"}
    exif[imagemeta.GPS_IFD] = {1: "N", 2: (1.0, 2.0, 3.0)}
    Image.fromarray(np.zeros((8, 12, 3), np.uint8)).save(tmp_path / "in.jpg", exif=exif.tobytes())
    out = write_image(tmp_path / "out.jpg", np.zeros((16, 24, 3), np.uint8), info=read_image_info(tmp_path / "in.jpg"))
    back = _exif_of(read_image_info(out))
    assert back[ARTIST] == "Ann"
    assert back.get_ifd(imagemeta.EXIF_IFD) == {0xA002: 24, 0xA003: 16, 0x9003: "2020:01:01 00:00:00"}
    assert back.get_ifd(imagemeta.GPS_IFD) == {1: "N", 2: (1.0, 2.0, 3.0)}


def _cmyk_jpeg(tmp_path, profile):
    im = Image.new("CMYK", (4, 3))
    im.putdata([(0, 0, 0, 128), (255, 0, 0, 0), (0, 0, 0, 0), (0, 255, 255, 0)] * 3)
    path = tmp_path / "cmyk.jpg"
    im.save(path, icc_profile=profile, quality=100)
    return path


def test_cmyk_jpeg_is_converted_through_its_profile_and_the_profile_never_travels(tmp_path):
    path = _cmyk_jpeg(tmp_path, cmyk_profile())
    pixels = read_image(path)
    assert pixels.shape == (3, 4, 3)
    assert abs(int(pixels[0, 0, 0]) - 187) <= 2  # half K through the profile; Pillow's naive conversion gives 127
    assert pixels[0, 1].tolist() == [0, 255, 255] and pixels[0, 3].tolist() == [255, 0, 0]
    info = read_image_info(path)
    assert info.icc_profile is None  # the pixels are sRGB now; a CMYK profile must not travel with them
    out = write_image(tmp_path / "out.png", pixels, info=info)
    assert read_image_info(out).icc_profile is None
    with pytest.raises(ImageError, match=r"^x: its ICC profile is for CMYK pixels, not RGB"):
        to_srgb(pixels, cmyk_profile(), "x")
    (tmp_path / "plain").mkdir()
    assert read_image(_cmyk_jpeg(tmp_path / "plain", None))[0, 0, 0] == 127  # no profile: Pillow's conversion


@pytest.mark.parametrize("color", ["keep", "srgb"])
def test_upscale_of_a_cmyk_jpeg_with_its_profile(tmp_path, color):
    from sisr.cli import main

    src = _cmyk_jpeg(tmp_path, cmyk_profile())
    out = tmp_path / f"out_{color}.png"
    assert main(["upscale", str(src), "-o", str(out), "--model", "bicubic", "--color", color]) == 0
    from sisr.inference.images import upscale_array

    img = read_image(out)
    assert img.shape == (6, 8, 3)
    assert read_image_info(out).icc_profile is None
    np.testing.assert_array_equal(img, upscale_array(read_image(src), sisr.create_model("bicubic", scale=2)))


def test_write_image_attaches_a_profile_only_to_pixels_of_its_colour_space(tmp_path):
    gray = np.full((4, 5, 1), 100, np.uint8)
    assert read_image_info(write_image(tmp_path / "g.png", gray, info=ImageInfo(icc_profile=ADOBE_RGB))).icc_profile \
        is None
    assert read_image_info(write_image(tmp_path / "g2.png", gray, info=ImageInfo(icc_profile=gray_profile()))) \
        .icc_profile == gray_profile()
    # WebP holds gray as RGB: a gray profile does not fit it any more
    assert read_image_info(write_image(tmp_path / "g.webp", gray, info=ImageInfo(icc_profile=gray_profile()),
                                       lossless=True)).icc_profile is None
    rgb = np.full((4, 5, 3), 100, np.uint8)
    assert read_image_info(write_image(tmp_path / "c.jpg", rgb, info=ImageInfo(icc_profile=cmyk_profile()))) \
        .icc_profile is None


def test_to_srgb_converts_gray_with_a_gray_profile():
    gray = np.array([[[10], [128], [250]]], np.uint8)
    out = to_srgb(gray, gray_profile(1.0))  # linear gray: mid-gray is sRGB ~188
    assert out.shape == (1, 3, 1) and abs(int(out[0, 1, 0]) - 188) <= 2
    with pytest.raises(ImageError, match="for RGB pixels, not gray"):
        to_srgb(gray, ADOBE_RGB)
