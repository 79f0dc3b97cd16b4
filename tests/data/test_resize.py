"""MATLAB-exact bicubic resize.

The strongest checks compare with every MATLAB-made LR file under ../shared (100% identical
pixels required); the others compare with a slow per-pixel reference written here from the
definition, and check shapes, dtypes and the matrix form.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from sisr.data.io import read_image
from sisr.data.resize import contributions, imresize, output_shape, resize_bands, resize_matrix, round_half_away
from sisr.errors import ConfigError, ImageError

RNG = np.random.default_rng(7)


def _modcrop(img, s):
    return img[: img.shape[0] - img.shape[0] % s, : img.shape[1] - img.shape[1] % s]


# --- ground truth: MATLAB LR files ---------------------------------------------------------------------

# (set, LR folder, scale, border rule, float path)
DATASET_CASES = [
    *[(name, "LR_bicubic", s, "symmetric", False) for name in ("Set5", "Set14") for s in (2, 3, 4)],
    *[("B100", "LR_bicubic", s, "replicate", False) for s in (2, 3, 4)],
    *[(name, "LR_bicubic", 8, "replicate", False) for name in ("Set5", "Set14")],
    ("Set5", "LR_bicubic_double", 8, "symmetric", True),
]


def _pairs(root: Path, set_name: str, folder: str, scale: int):
    lr_files = sorted((root / set_name / folder / f"X{scale}").glob("*.png"))
    return [(root / set_name / "HR" / f"{p.stem[: -len(f'x{scale}')]}.png", p) for p in lr_files]


@pytest.fixture(autouse=True)
def one_thread(_torch_threads):
    # Hundreds of small products: one thread is as fast, and immune to a busy shared CPU.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("set_name,folder,scale,border,float_path", DATASET_CASES,
                         ids=[f"{c[0]}-{c[1]}-x{c[2]}-{c[3]}" for c in DATASET_CASES])
def test_every_matlab_lr_file_is_reproduced_exactly(datasets_root, set_name, folder, scale, border, float_path):
    pairs = _pairs(datasets_root, set_name, folder, scale)
    assert pairs, f"no LR files in {set_name}/{folder}/X{scale}"
    same = total = 0
    bad = []
    for hr_path, lr_path in pairs:
        hr = _modcrop(read_image(hr_path), scale)
        if float_path:  # im2double -> imresize -> im2uint8
            ours = round_half_away(imresize(hr / 255.0, 1 / scale, border=border) * 255.0).astype(np.uint8)
        else:
            ours = imresize(hr, 1 / scale, border=border)
        lr = read_image(lr_path)
        if lr.shape[2] == 3 and ours.shape[2] == 1:  # Set14 bridge: gray HR, RGB X8 file
            ours = np.repeat(ours, 3, axis=2)
        assert ours.shape == lr.shape, f"{lr_path.name}: {ours.shape} vs {lr.shape}"
        n_same = int((ours == lr).sum())
        same, total = same + n_same, total + lr.size
        if n_same != lr.size:
            bad.append(f"{lr_path.name} ({lr.size - n_same} differ)")
    assert same == total, f"{same}/{total} identical values; files with differences: {', '.join(bad[:10])}"


@pytest.mark.parametrize("scale", [2, 3])
def test_rcan_matlab_fixture_replicate_border(fixtures_root, scale):
    lr_files = sorted((fixtures_root / "matlab" / "LR_replicate" / f"x{scale}").glob("*.png"))
    assert len(lr_files) == 5
    for lr_path in lr_files:
        name = lr_path.name.split("_LRBI_")[0]
        hr = read_image(fixtures_root / "matlab" / "HR" / f"x{scale}" / f"{name}_HR_x{scale}.png")
        np.testing.assert_array_equal(imresize(hr, 1 / scale, border="replicate"), read_image(lr_path),
                                      err_msg=lr_path.name)


def test_border_rules_differ_on_real_data(datasets_root):
    hr = _modcrop(read_image(datasets_root / "Set5" / "HR" / "bird.png"), 4)
    sym, rep = imresize(hr, 0.25), imresize(hr, 0.25, border="replicate")
    assert not np.array_equal(sym, rep)
    np.testing.assert_array_equal(sym[2:-2, 2:-2], rep[2:-2, 2:-2])  # only the 2 outer LR pixels differ


# --- an independent per-pixel reference ----------------------------------------------------------------

def _keys(t: float) -> float:
    t = abs(t)
    if t <= 1:
        return 1.5 * t**3 - 2.5 * t**2 + 1
    if t <= 2:
        return -0.5 * t**3 + 2.5 * t**2 - 4 * t + 2
    return 0.0


def _fold(k: int, n: int, border: str) -> int:
    """1-based index k folded into 1..n."""
    if border == "replicate":
        return min(max(k, 1), n)
    while k < 1 or k > n:
        k = 1 - k if k < 1 else 2 * n + 1 - k  # 0 -> 1, -1 -> 2; n+1 -> n
    return k


def _reference_taps(n_in: int, n_out: int, scale: float, border: str):
    rows = []
    for x in range(1, n_out + 1):
        u = x / scale + 0.5 * (1 - 1 / scale)
        width = 4 / scale if scale < 1 else 4
        left = math.floor(u - width / 2)
        taps = []
        for k in range(left, left + math.ceil(width) + 2):
            w = scale * _keys(scale * (u - k)) if scale < 1 else _keys(u - k)
            taps.append((_fold(k, n_in, border) - 1, w))
        total = sum(w for _, w in taps)
        rows.append([(i, w / total) for i, w in taps])
    return rows


def _reference_resize(img, out_hw, scales, border, max_value=None):
    """Per-output-pixel loops; smaller scale first (rows on a tie); round/clamp per pass for ints."""
    x = img.astype(np.float64)
    order = [0, 1] if scales[0] <= scales[1] else [1, 0]
    for axis in order:
        taps = _reference_taps(x.shape[axis], out_hw[axis], scales[axis], border)
        moved = np.moveaxis(x, axis, 0)
        out = np.zeros((len(taps),) + moved.shape[1:])
        for o, row in enumerate(taps):
            for i, w in row:
                out[o] += w * moved[i]
        x = np.moveaxis(out, 0, axis)
        if max_value is not None:
            x = np.clip(np.floor(x + 0.5), 0, max_value)
    return x


CASES = [  # (input H, W, scale)
    (13, 11, 1 / 2), (14, 9, 1 / 3), (17, 16, 1 / 4), (16, 20, 1 / 8),
    (7, 9, 2), (5, 6, 3), (4, 7, 4), (1, 5, 2), (3, 2, 1 / 2),
]


@pytest.mark.parametrize("border", ["symmetric", "replicate"])
@pytest.mark.parametrize("h,w,scale", CASES)
def test_matches_per_pixel_reference(h, w, scale, border):
    img = RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)
    oh, ow = output_shape(h, w, scale)
    assert (oh, ow) == (math.ceil(h * scale), math.ceil(w * scale))
    ref = _reference_resize(img, (oh, ow), (scale, scale), border, max_value=255)
    np.testing.assert_array_equal(imresize(img, scale, border=border), ref.astype(np.uint8))
    f = img.astype(np.float64) / 255
    np.testing.assert_allclose(imresize(f, scale, border=border),
                               _reference_resize(f, (oh, ow), (scale, scale), border), rtol=0, atol=1e-12)


@pytest.mark.parametrize("border", ["symmetric", "replicate"])
def test_output_size_and_dimension_order_match_reference(border):
    img = RNG.integers(0, 256, (12, 15), dtype=np.uint8)
    for out_hw in [(6, 4), (5, 9), (30, 7), (12, 30), (12, 15)]:
        scales = (out_hw[0] / 12, out_hw[1] / 15)
        ref = _reference_resize(img[..., None], out_hw, scales, border, max_value=255)[..., 0]
        got = imresize(img, output_size=out_hw, border=border)
        assert got.shape == out_hw
        np.testing.assert_array_equal(got, ref.astype(np.uint8), err_msg=str(out_hw))


def test_uint16_rounds_and_clamps_per_pass_in_its_own_range():
    img = RNG.integers(0, 65536, (10, 13, 2), dtype=np.uint16)
    img[:3] = 65535  # bright edge: the kernel's negative lobes overshoot and must clamp
    img[3:5] = 0
    for scale in (1 / 3, 2):
        oh, ow = output_shape(10, 13, scale)
        ref = _reference_resize(img, (oh, ow), (scale, scale), "symmetric", max_value=65535)
        out = imresize(img, scale)
        assert out.dtype == np.uint16
        np.testing.assert_array_equal(out, ref.astype(np.uint16))


# --- upscaling, matrix form, float path ----------------------------------------------------------------

@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("border", ["symmetric", "replicate"])
def test_upscaling_equals_matrix_products(scale, border):
    img = RNG.random((9, 14, 3))
    out = imresize(img, scale, border=border)
    assert out.shape == (9 * scale, 14 * scale, 3) and out.dtype == np.float64
    mh, mw = resize_matrix(9, scale, border=border), resize_matrix(14, scale, border=border)
    assert mh.shape == (9 * scale, 9) and mw.shape == (14 * scale, 14)
    np.testing.assert_allclose(out, np.einsum("ih,hwc,jw->ijc", mh, img, mw), rtol=0, atol=1e-12)
    np.testing.assert_allclose(mh.sum(axis=1), 1, atol=1e-12)
    # uint8: the same products with rounding after each pass
    img8 = (img * 255).round().astype(np.uint8)
    rows = round_half_away(np.einsum("ih,hwc->iwc", mh, img8.astype(np.float64)))
    np.testing.assert_array_equal(imresize(img8, scale, border=border),
                                  round_half_away(np.einsum("iwc,jw->ijc", rows, mw)).astype(np.uint8))

    # Float and uint8 paths agree within one grey level where no pass overshoots 0..255 (the
    # uint8 path clamps between passes, the float path does not): a smooth image in 30..225.
    yy, xx = np.mgrid[0:23, 0:31]
    smooth = (127.5 + 95 * np.sin(xx / 3.1) * np.cos(yy / 4.3)).round().astype(np.uint8)
    diff = imresize(smooth, scale, border=border).astype(int) - round_half_away(
        imresize(smooth / 255.0, scale, border=border) * 255)
    assert np.abs(diff).max() <= 1
    assert np.abs(diff).max() == 1  # the per-pass rounding is visible


def test_shape_forms_and_dtypes_are_kept():
    gray = RNG.integers(0, 256, (8, 6), dtype=np.uint8)
    assert imresize(gray, 2).shape == (16, 12)
    assert imresize(gray[..., None], 0.5).shape == (4, 3, 1)
    for dtype in (np.float16, np.float32, np.float64):
        assert imresize(gray.astype(dtype), 3).dtype == dtype
    assert imresize(RNG.integers(0, 256, (8, 6, 4), dtype=np.uint8), 1 / 3).shape == (3, 2, 4)
    const = np.full((10, 7, 3), 123, np.uint8)
    for scale in (1 / 2, 1 / 3, 1 / 4, 2, 3):
        assert (imresize(const, scale) == 123).all()
    same = imresize(gray, 1)
    np.testing.assert_array_equal(same, gray)
    same[0, 0] ^= 1
    assert not np.array_equal(same, gray)  # a new array, not a view of the input
    np.testing.assert_array_equal(resize_matrix(5, 1), np.eye(5))


def test_contributions_drop_all_zero_taps_and_fold_indices():
    weights, idx = contributions(6, 3, 0.5, "symmetric")
    assert (weights != 0).any(axis=0).all()
    assert idx.min() >= 0 and idx.max() <= 5
    _, idx_rep = contributions(6, 3, 0.5, "replicate")
    assert idx_rep[0, 0] == 0 and idx[0, 0] == 2  # first kept tap, 1-based index -2: clamps to 1, mirrors to 3
    np.testing.assert_allclose(resize_matrix(6, out_len=3), resize_matrix(6, 0.5))


def test_invalid_arguments():
    img = np.zeros((4, 4), np.uint8)
    with pytest.raises(ConfigError, match="border"):
        imresize(img, 2, border="reflect")
    with pytest.raises(ConfigError, match="exactly one"):
        imresize(img, 2, output_size=(3, 3))
    with pytest.raises(ConfigError, match="exactly one"):
        imresize(img)
    with pytest.raises(ConfigError, match="positive"):
        imresize(img, -1)
    with pytest.raises(ImageError, match="dtype int32"):
        imresize(img.astype(np.int32), 2)
    with pytest.raises(ImageError, match="shape"):
        imresize(np.zeros((0, 4), np.uint8), 2)


# --- the bicubic model uses the same weights ---------------------------------------------------------

def test_bicubic_model_is_the_float_path_of_imresize():
    import sisr

    x = RNG.random((2, 3, 7, 10))
    for scale in (2, 3, 4, 8):
        model = sisr.create_model("bicubic", scale=scale)
        out = model(torch.from_numpy(x)).numpy()  # float64 in, float64 out
        expected = np.stack([imresize(img.transpose(1, 2, 0), scale).transpose(2, 0, 1) for img in x])
        np.testing.assert_allclose(out, expected, rtol=0, atol=1e-12)
        y32 = model(torch.from_numpy(x).float())
        assert y32.dtype == torch.float32 and y32.shape == (2, 3, 7 * scale, 10 * scale)
        assert model(torch.from_numpy(x).to(torch.bfloat16)).dtype == torch.bfloat16
    replicate = sisr.create_model("bicubic", scale=2, border="replicate")
    np.testing.assert_allclose(replicate(torch.from_numpy(x)).numpy()[0],
                               imresize(x[0].transpose(1, 2, 0), 2, border="replicate").transpose(2, 0, 1),
                               rtol=0, atol=1e-12)


def _dense(in_len: int, scale: int, border: str = "symmetric") -> np.ndarray:
    """The dense (s*L, L) matrix built here from the contributions, independent of resize_matrix."""
    weights, idx = contributions(in_len, in_len * scale, scale, border)
    m = np.zeros((in_len * scale, in_len))
    np.add.at(m, (np.repeat(np.arange(in_len * scale), weights.shape[1]), idx.ravel()), weights.ravel())
    return m


@pytest.mark.parametrize("shape", [(2, 3, 7, 10), (1, 2, 5, 1300), (1, 1, 1100, 3)])
def test_bicubic_model_equals_the_dense_products(shape):
    """Bit-identical to ``Wh @ x @ Ww^T`` while one band covers a side (<= 1024 px); banded above, equal
    in float64 to 1e-12 and in float32 within 2 ulps (the products' sums run in another blocking)."""
    import sisr

    x = torch.from_numpy(RNG.random(shape))
    for scale in (2, 3):
        model = sisr.create_model("bicubic", scale=scale)
        for dtype in (torch.float64, torch.float32, torch.bfloat16):
            xd = x.to(dtype)
            dense = torch.from_numpy(_dense(shape[2], scale)).to(dtype) @ xd @ \
                torch.from_numpy(_dense(shape[3], scale)).to(dtype).T
            out = model(xd)
            if max(shape[2:]) <= 1024 or dtype == torch.bfloat16:
                assert torch.equal(out, dense), (scale, dtype)
            else:
                tol = 1e-12 if dtype == torch.float64 else 2.5e-7
                torch.testing.assert_close(out, dense, rtol=0, atol=tol)


def test_bicubic_model_and_bands_use_memory_linear_in_the_size():
    """A 2x3000 image at x2: the dense matrices were 6000x3000 (144 MB of float64); bands stay small."""
    import tracemalloc

    from torch.utils._python_dispatch import TorchDispatchMode

    import sisr

    class LargestTensor(TorchDispatchMode):
        largest = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in out if isinstance(out, (tuple, list)) else (out,):
                if isinstance(t, torch.Tensor):
                    LargestTensor.largest = max(LargestTensor.largest, t.numel())
            return out

    model = sisr.create_model("bicubic", scale=2)
    x = torch.rand(1, 1, 2, 3000)
    with LargestTensor():
        model(x[..., :10])  # first-call set-up outside the measurement
    tracemalloc.start()
    try:
        with LargestTensor():
            y = model(x)
        _, numpy_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert y.shape == (1, 1, 4, 6000)
    assert LargestTensor.largest <= 200_000  # a band (512 x ~262), not 6000 x 3000 = 18 M
    assert numpy_peak < 8 * 2**20, numpy_peak
    total = sum(band.size for *_, band in resize_bands(33000, 2))
    assert total < 100 * 66000  # ~ 64 + 4 per output pixel at x2 (dense: 33000 per output pixel)
    with pytest.raises(ImageError, match=r"^resize_matrix: a dense 66000x33000 matrix needs 16\.2 GiB; use"):
        resize_matrix(33000, 2)
