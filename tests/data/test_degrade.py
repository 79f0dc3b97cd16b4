"""BI / BD / DN degradations (RCAN's Prepare_TestData_HR_LR.m convention)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sisr.data.degrade import bd_kernel_size, degrade, gaussian_kernel, modcrop, to_rgb
from sisr.data.io import read_image
from sisr.data.resize import imresize
from sisr.errors import ConfigError, ImageError

RNG = np.random.default_rng(3)


def test_modcrop_crops_bottom_and_right():
    img = np.arange(7 * 10).reshape(7, 10)
    out = modcrop(img, 3)
    assert out.shape == (6, 9)
    np.testing.assert_array_equal(out, img[:6, :9])
    assert modcrop(img, 1).shape == (7, 10)


def test_to_rgb_stacks_gray_and_drops_alpha():
    gray = RNG.integers(0, 256, (4, 5), dtype=np.uint8)
    for form in (gray, gray[..., None], np.stack([gray, gray * 0], axis=2)):
        out = to_rgb(form)
        assert out.shape == (4, 5, 3)
        assert all(np.array_equal(out[..., c], gray) for c in range(3))
    rgba = RNG.integers(0, 256, (4, 5, 4), dtype=np.uint8)
    np.testing.assert_array_equal(to_rgb(rgba), rgba[..., :3])


# --- BI: the MATLAB bicubic LR files ---------------------------------------------------------------

@pytest.mark.parametrize("scale", [2, 3, 4])
def test_bi_reproduces_set5_and_the_gray_set14_image(datasets_root, scale):
    for set_name, name in [("Set5", "butterfly"), ("Set5", "woman"), ("Set14", "bridge")]:
        hr = read_image(datasets_root / set_name / "HR" / f"{name}.png")
        lr = to_rgb(read_image(datasets_root / set_name / "LR_bicubic" / f"X{scale}" / f"{name}x{scale}.png"))
        out = degrade(hr, scale, "BI")
        assert out.dtype == np.uint8 and out.shape == lr.shape
        np.testing.assert_array_equal(out, lr, err_msg=f"{set_name}/{name} x{scale}")


def test_bi_border_option_reaches_the_resize(datasets_root):
    hr = read_image(datasets_root / "B100" / "HR" / "img_001.png")
    lr = read_image(datasets_root / "B100" / "LR_bicubic" / "X4" / "img_001x4.png")
    np.testing.assert_array_equal(degrade(hr, 4, "BI", border="replicate"), lr)
    assert not np.array_equal(degrade(hr, 4, "BI"), lr)


# --- BD: against a direct 2-D implementation of fspecial + imfilter + the script's subsampling -------

def _fspecial_gaussian(size: int, sigma: float) -> np.ndarray:
    half = (size - 1) / 2
    y, x = np.mgrid[-half:half + 1, -half:half + 1]
    h = np.exp(-(x * x + y * y) / (2 * sigma * sigma))
    h[h < np.finfo(float).eps * h.max()] = 0
    return h / h.sum()


def _imfilter_replicate(img: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Correlation, 'same' size, replicated borders, centre floor((k + 1) / 2) (1-based); rounded."""
    k = kernel.shape[0]
    before = (k + 1) // 2 - 1
    padded = np.pad(img.astype(np.float64), ((before, k - 1 - before), (before, k - 1 - before), (0, 0)), mode="edge")
    h, w = img.shape[:2]
    out = np.zeros(img.shape, dtype=np.float64)
    for i in range(k):
        for j in range(k):
            out += kernel[i, j] * padded[i:i + h, j:j + w]
    return np.clip(np.floor(out + 0.5), 0, 255)


def _script_subsample(blurred: np.ndarray, scale: int) -> np.ndarray:
    if scale % 2 == 0:  # blur_HR(s/2:s:end-s/2, ...) in 1-based indices
        h, w = blurred.shape[:2]
        return blurred[scale // 2 - 1:h - scale // 2:scale, scale // 2 - 1:w - scale // 2:scale]
    # imresize(blur_HR, 1/s, 'nearest'): output x (1-based) takes input round(u), u = x*s + (1-s)/2
    def rows(n):
        return np.array([math.floor(x * scale + 0.5 * (1 - scale) + 0.5) - 1 for x in range(1, n // scale + 1)])
    return blurred[rows(blurred.shape[0])][:, rows(blurred.shape[1])]


@pytest.mark.parametrize("scale", [2, 3, 4, 5])
def test_bd_matches_direct_2d_filter_and_subsampling(scale):
    hr = RNG.integers(0, 256, (6 * scale + 1, 6 * scale - 1, 3), dtype=np.uint8)
    size = bd_kernel_size(scale)
    expected = _script_subsample(_imfilter_replicate(modcrop(hr, scale), _fspecial_gaussian(size, 1.6)), scale)
    out = degrade(hr, scale, "BD")
    assert out.shape == (6, 5, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, expected.astype(np.uint8))


def test_bd_kernel_sizes_and_gaussian():
    assert [bd_kernel_size(s) for s in (2, 3, 4, 5, 8)] == [12, 7, 12, 11, 12]
    assert bd_kernel_size(3, sigma=2.0) == 13
    g = gaussian_kernel(7, 1.6)
    np.testing.assert_allclose(np.outer(g, g), _fspecial_gaussian(7, 1.6), rtol=1e-12)
    np.testing.assert_allclose(g, g[::-1])


def test_bd_keeps_flat_images_flat_and_uses_replicate_borders():
    flat = np.full((12, 12, 3), 77, np.uint8)
    assert (degrade(flat, 3, "BD") == 77).all()
    ramp = np.repeat(np.repeat(np.arange(0, 240, 20, dtype=np.uint8)[:, None], 12, 1)[..., None], 3, 2)
    out = degrade(ramp, 2, "BD")
    assert out[0, 0, 0] < 20  # replicated border: close to the edge value, not pulled towards 0 or a mirror


# --- DN -----------------------------------------------------------------------------------------------

def test_dn_is_bicubic_plus_seeded_gaussian_noise():
    hr = np.full((96, 96, 3), 128, np.uint8)
    hr[::7] = 100
    bi = degrade(hr, 2, "BI")
    a = degrade(hr, 2, "DN", seed=5)
    np.testing.assert_array_equal(a, degrade(hr, 2, "DN", seed=5))
    assert not np.array_equal(a, degrade(hr, 2, "DN", seed=6))
    assert not np.array_equal(degrade(hr, 2, "DN"), degrade(hr, 2, "DN"))
    noise = a.astype(float) - bi
    assert abs(noise.mean()) < 1.0 and 28.0 < noise.std() < 32.0
    np.testing.assert_array_equal(degrade(hr, 2, "DN", noise_level=0), bi)
    gen_out = degrade(hr, 2, "DN", seed=np.random.default_rng(5))
    np.testing.assert_array_equal(gen_out, a)  # a Generator works like its seed


def test_dn_rounds_and_saturates_like_matlab_uint8():
    hr = np.zeros((8, 8, 3), np.uint8)
    hr[:, :4] = 255
    out = degrade(hr, 2, "DN", seed=0, noise_level=200)
    assert out.min() == 0 and out.max() == 255
    rng = np.random.default_rng(0)
    noise = (200 * rng.standard_normal(out.shape)).astype(np.float32)
    expected = np.clip(np.floor(degrade(hr, 2, "BI").astype(np.float32) + noise + np.float32(0.5)), 0, 255)
    np.testing.assert_array_equal(out, expected.astype(np.uint8))


def test_uint16_images_stay_uint16():
    hr = (RNG.integers(0, 256, (12, 12, 3)) * 257).astype(np.uint16)
    for mode in ("BI", "BD", "DN"):
        out = degrade(hr, 3, mode, seed=1)
        assert out.dtype == np.uint16 and out.shape == (4, 4, 3)
    np.testing.assert_array_equal(degrade(hr, 3, "BI"), imresize(hr, 1 / 3))
    flat = np.full((60, 60, 3), 30000, np.uint16)
    noise = degrade(flat, 2, "DN", seed=2).astype(float) - 30000
    assert 25 * 257 < noise.std() < 35 * 257  # noise level 30 on 0..255 = 30 * 257 on 0..65535


def test_invalid_arguments():
    hr = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(ConfigError, match="unknown degradation"):
        degrade(hr, 2, "XX")
    for scale in (1, 2.5):
        with pytest.raises(ConfigError, match="integer >= 2"):
            degrade(hr, scale)
    with pytest.raises(ImageError, match="smaller than the scale"):
        degrade(hr[:3], 4)
    with pytest.raises(ImageError, match="dtype float32"):
        degrade(hr.astype(np.float32), 2)
    assert degrade(hr, 2, "bi").shape == (4, 4, 3)  # mode names are case-insensitive
