"""Property-based tests (Hypothesis) of image I/O and the array <-> tensor conversions (issue 23).

Arbitrary shapes, dtypes, channel counts and values either round-trip exactly (or as the format
documents: 8 bit and RGB(A) for WebP) or raise one ``SisrError`` with a one-line message, and a
refused write leaves no file behind. Bounded (few examples, no deadline) so it stays fast.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

from data.test_image_metadata import ADOBE_RGB, XMP, gray_profile
from sisr.data.io import ImageInfo, image_to_tensor, read_image, read_image_info, tensor_to_image, write_image
from sisr.errors import ImageError, SisrError

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402

FAST = settings(max_examples=30, deadline=None, derandomize=True, database=None)
IMAGE_DTYPES = st.sampled_from([np.uint8, np.uint16])
ANY_DTYPES = st.sampled_from([np.uint8, np.uint16, np.int8, np.int16, np.int32, np.uint32, np.int64, np.float16,
                              np.float32, np.float64, np.bool_])


@st.composite
def images(draw, dtypes=IMAGE_DTYPES, flat_gray=True):
    """Valid images: (H, W, C) with C in 1..4 (or (H, W)), uint8 or uint16, any values."""
    dtype = draw(dtypes)
    h, w, c = draw(st.integers(1, 9)), draw(st.integers(1, 9)), draw(st.integers(1, 4))
    arr = draw(hnp.arrays(dtype, (h, w, c), elements=st.integers(0, np.iinfo(dtype).max)))
    return arr[..., 0] if flat_gray and c == 1 and draw(st.booleans()) else arr


def hwc(arr: np.ndarray) -> np.ndarray:
    return arr[..., None] if arr.ndim == 2 else arr


def one_line(exc: SisrError, start: str = "") -> None:
    message = str(exc)
    assert message and "\n" not in message and message.startswith(start), message


def as_written(arr: np.ndarray, ext: str) -> np.ndarray:
    """What the format stores: JPEG/WebP hold 8 bit; WebP holds RGB(A)."""
    arr = hwc(arr)
    if ext in (".webp", ".jpg") and arr.dtype == np.uint16:
        arr = ((arr.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    if ext == ".webp" and arr.shape[2] <= 2:
        arr = np.concatenate([arr[..., :1]] * 3 + [arr[..., 1:]], axis=2)
    return arr


@FAST
@given(img=images(), ext=st.sampled_from([".png", ".tif", ".webp"]))
def test_lossless_formats_round_trip_exactly(img, ext):
    pytest.importorskip("tifffile")
    with tempfile.TemporaryDirectory() as tmp:
        path = write_image(Path(tmp) / f"x{ext}", img, lossless=True)
        back = read_image(path)
    np.testing.assert_array_equal(back, as_written(img, ext))
    assert back.dtype == as_written(img, ext).dtype and back.flags.c_contiguous and back.flags.writeable


@FAST
@given(img=images())
def test_jpeg_keeps_the_shape_or_refuses_alpha(img):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "x.jpg"
        if hwc(img).shape[2] in (2, 4):
            with pytest.raises(ImageError) as exc_info:
                write_image(path, img)
            one_line(exc_info.value, str(path))
            assert not list(Path(tmp).iterdir())
            return
        back = read_image(write_image(path, img, quality=100))
    assert back.shape == hwc(img).shape and back.dtype == np.uint8


@FAST
@given(arr=hnp.arrays(ANY_DTYPES, hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5)),
       ext=st.sampled_from([".png", ".tif"]))
def test_any_array_is_written_exactly_or_refused_in_one_line(arr, ext):
    pytest.importorskip("tifffile")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"x{ext}"
        try:
            write_image(path, arr)
        except SisrError as exc:
            assert isinstance(exc, ImageError)
            one_line(exc, str(path))
            assert not list(Path(tmp).iterdir())  # nothing half-written
            return
        back = read_image(path)
    assert arr.dtype in (np.uint8, np.uint16)
    np.testing.assert_array_equal(back, hwc(arr))


@FAST
@given(img=images())
def test_tensor_round_trip_is_exact(img):
    t = image_to_tensor(img)
    assert t.dtype == torch.float32 and t.shape == (hwc(img).shape[2],) + img.shape[:2]
    assert float(t.min()) >= 0 and float(t.max()) <= 1
    np.testing.assert_array_equal(tensor_to_image(t, img.dtype), hwc(img))
    np.testing.assert_array_equal(tensor_to_image(t[None], img.dtype), hwc(img))


@FAST
@given(arr=hnp.arrays(ANY_DTYPES, hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5)))
def test_image_to_tensor_of_any_array_is_exact_or_one_error(arr):
    try:
        t = image_to_tensor(arr)
    except SisrError as exc:
        one_line(exc, "image array")
        return
    peak = 255 if arr.dtype == np.uint8 else 65535
    assert arr.dtype in (np.uint8, np.uint16)
    np.testing.assert_array_equal((t.double() * peak).round().numpy().transpose(1, 2, 0), hwc(arr))


@FAST
@given(t=hnp.arrays(st.sampled_from([np.float16, np.float32, np.float64]),
                    hnp.array_shapes(min_dims=0, max_dims=5, min_side=0, max_side=5),
                    elements=st.floats(width=16, allow_nan=True, allow_infinity=True)),
       dtype=IMAGE_DTYPES)
def test_tensor_to_image_of_any_tensor_is_one_image_or_one_error(t, dtype):
    tensor = torch.from_numpy(t)
    try:
        out = tensor_to_image(tensor, dtype)
    except SisrError as exc:
        one_line(exc, "image array")
        return
    chw = t[0] if t.ndim == 4 else t
    assert out.dtype == dtype and out.shape == chw.shape[1:] + chw.shape[:1] and 1 <= out.shape[2] <= 4
    peak = 255 if dtype == np.uint8 else 65535
    x = np.nan_to_num(chw.astype(np.float32), nan=0.0, posinf=1.0, neginf=0.0)
    expected = np.round(np.clip(x, 0, 1) * np.float32(peak)).transpose(1, 2, 0)  # half to even, as torch
    np.testing.assert_array_equal(out, expected.astype(dtype))


@FAST
@given(channels=st.sampled_from([1, 3, 4]), dtype=IMAGE_DTYPES, ext=st.sampled_from([".png", ".tif", ".jpg", ".webp"]),
       icc=st.booleans(), xmp=st.booleans(), dpi=st.one_of(st.none(), st.integers(1, 3000)),
       provenance=st.one_of(st.none(), st.text(alphabet=st.characters(codec="ascii", exclude_characters="\0"),
                                               max_size=40)))
def test_metadata_round_trips_where_the_format_holds_it(channels, dtype, ext, icc, xmp, dpi, provenance):
    pytest.importorskip("tifffile")
    if ext == ".jpg" and channels == 4:
        channels = 3
    img = np.full((3, 4, channels), 7, dtype)
    profile = (gray_profile() if channels == 1 else ADOBE_RGB) if icc else None
    info = ImageInfo(icc_profile=profile, xmp=XMP if xmp else None, dpi=None if dpi is None else (dpi, dpi))
    with tempfile.TemporaryDirectory() as tmp:
        back = read_image_info(write_image(Path(tmp) / f"x{ext}", img, info=info, provenance=provenance))
    fits = not (ext == ".webp" and channels == 1)  # WebP stores gray as RGB: a gray profile no longer fits
    assert back.icc_profile == (profile if fits else None)
    assert back.xmp == info.xmp
    assert back.provenance == provenance
    if ext == ".webp" or dpi is None:
        assert back.dpi is None
    else:
        assert back.dpi == pytest.approx((dpi, dpi), abs=0.02)  # PNG stores dots per metre


@FAST
@given(provenance=st.text(min_size=1, max_size=10).filter(lambda s: not s.isascii() or "\0" in s))
def test_provenance_that_no_format_holds_is_refused_before_writing(provenance):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "x.png"
        with pytest.raises(ImageError) as exc_info:
            write_image(path, np.zeros((2, 2, 3), np.uint8), provenance=provenance)
        one_line(exc_info.value, str(path))
        assert not path.exists()
