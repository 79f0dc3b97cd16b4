"""Property-based tests of the Python API (issue 23): any input, scale and options either give the right
shape with finite values, or one SisrError with a one-line message."""

from __future__ import annotations

import numpy as np
import pytest

import sisr
from sisr.errors import SisrError

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402

FAST = settings(max_examples=40, deadline=None, derandomize=True, database=None)
DTYPES = st.sampled_from([np.uint8, np.uint16, np.float32, np.float64, np.int32, np.bool_])
SHAPES = st.one_of(hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=6),
                   st.tuples(st.integers(1, 6), st.integers(1, 6), st.integers(1, 5)))
ELEMENTS = st.one_of(st.floats(-2.0, 2.0, width=32), st.sampled_from([np.nan, np.inf, -np.inf, 0.0, 1.0]))


def arrays():
    def make(dtype):
        if np.dtype(dtype).kind == "f":
            return hnp.arrays(dtype, SHAPES, elements=ELEMENTS)
        return hnp.arrays(dtype, SHAPES)
    return DTYPES.flatmap(make)


@pytest.fixture(scope="module")
def tiny_net():
    return sisr.create_model("edsr-baseline", scale=2, n_resblocks=1, n_feats=4).eval()


def _bad_floats(img) -> bool:
    """Float input the API must refuse: non-finite values or values outside [0, 1] (never clamped silently)."""
    return img.dtype.kind == "f" and img.size > 0 and not (np.isfinite(img).all() and img.min() >= 0 and img.max() <= 1)


def _check(img, run, must_fail: bool):
    try:
        out = run()
    except SisrError as exc:
        assert str(exc) and "\n" not in str(exc)
        return None
    assert not must_fail, "an input the API must refuse was accepted"
    assert np.isfinite(np.asarray(out, dtype=np.float64)).all()
    return out


@FAST
@given(img=arrays(), scale=st.sampled_from([2, 3, 2.5, 0, -1, "x2", True]),
       tile=st.sampled_from([None, 4, "auto", 0]), ensemble=st.booleans())
def test_bicubic_upscale_of_anything_is_right_or_one_error(img, scale, tile, ensemble):
    must_fail = _bad_floats(img) or scale not in (2, 3) or isinstance(scale, bool)  # 2.5 once ran x2
    out = _check(img, lambda: sisr.upscale(img, "bicubic", scale, tile=tile, self_ensemble=ensemble, device="cpu"),
                 must_fail)
    if out is not None:
        s = int(scale)
        assert out.shape[:2] == (img.shape[0] * s, img.shape[1] * s) and out.shape[2:] == img.shape[2:]
        assert out.dtype == (np.float32 if img.dtype.kind == "f" else img.dtype)


@FAST
@given(img=arrays(), precision=st.sampled_from(["fp32", "bf16", "fp64"]), alpha=st.sampled_from(["bicubic", "model", "x"]))
def test_a_network_on_anything_is_right_or_one_error(tiny_net, img, precision, alpha):
    out = _check(img, lambda: sisr.upscale(img, tiny_net, precision=precision, alpha=alpha),
                 _bad_floats(img) or precision == "fp64" or alpha == "x")
    if out is not None:
        assert out.shape[:2] == (img.shape[0] * 2, img.shape[1] * 2) and out.shape[2:] == img.shape[2:]
        if img.dtype.kind == "f":
            assert (out >= 0).all() and (out <= 1).all()
