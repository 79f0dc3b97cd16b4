"""sisr.metrics against MATLAB's numbers, scikit-image, a direct 2-D SSIM and the torch batch path."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch
from PIL import Image

from sisr.metrics import (
    MetricError,
    gaussian_window_1d,
    psnr,
    psnr_batch,
    psnr_y_batch,
    quantize,
    rgb_to_y,
    ssim,
    ssim_batch,
    ssim_y_batch,
)
from testing_utils import ground_truth_cases, require_case, shared_root


def _matlab_rows() -> list[dict]:
    root = shared_root()
    path = None if root is None else root / "fixtures" / "matlab" / "scores.csv"
    if path is None or not path.is_file():
        return []
    with path.open() as f:
        return list(csv.DictReader(f))


def _load(path) -> np.ndarray:
    return np.array(Image.open(path))


def _fixture_pair(fixtures_root, row):
    s, name = int(row["scale"]), row["image"]
    hr = _load(fixtures_root / "matlab" / "HR" / f"x{s}" / f"{name}_HR_x{s}.png")
    sr = _load(fixtures_root / "matlab" / "SR_RCAN" / f"x{s}" / f"{name}_{row['method']}_x{s}.png")
    return sr, hr, s


ROWS = _matlab_rows()
ROW_PARAMS = ground_truth_cases([pytest.param(r, id=f"{r['image']}-x{r['scale']}") for r in ROWS],
                                "../shared/fixtures/matlab/scores.csv")


@pytest.mark.parametrize("row", ROW_PARAMS)
def test_matlab_scores(row, fixtures_root):
    require_case(row, "../shared/fixtures/matlab/scores.csv")
    sr, hr, s = _fixture_pair(fixtures_root, row)
    assert abs(psnr(sr, hr, shave=s) - float(row["psnr_y"])) < 1e-5
    assert abs(ssim(sr, hr, shave=s) - float(row["ssim_y"])) < 1e-6


def test_matlab_fixture_has_every_row(fixtures_root):
    assert len(ROWS) == 10 and {int(r["scale"]) for r in ROWS} == {2, 3}


@pytest.mark.parametrize("row", ROW_PARAMS[:3])
def test_batch_matches_matlab_scores(row, fixtures_root):
    sr, hr, s = _fixture_pair(fixtures_root, row)
    to_t = lambda a: torch.from_numpy(a).permute(2, 0, 1)[None].float() / 255
    assert abs(psnr_y_batch(to_t(sr), to_t(hr), s).item() - float(row["psnr_y"])) < 1e-5
    assert abs(ssim_y_batch(to_t(sr), to_t(hr), s).item() - float(row["ssim_y"])) < 1e-6


def test_scikit_image_oracle(fixtures_root):
    skm = pytest.importorskip("skimage.metrics")
    rng = np.random.default_rng(0)
    pairs = [_fixture_pair(fixtures_root, r) for r in ROWS[:2]]
    hr = rng.integers(0, 256, (40, 53, 3), dtype=np.uint8)
    sr = np.clip(hr.astype(int) + rng.integers(-20, 21, hr.shape), 0, 255).astype(np.uint8)
    pairs.append((sr, hr, 3))
    for sr, hr, s in pairs:
        ya, yb = (rgb_to_y(x)[s:-s, s:-s] for x in (hr, sr))
        ref_p = skm.peak_signal_noise_ratio(ya, yb, data_range=255)
        ref_s = skm.structural_similarity(ya, yb, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                          data_range=255)
        assert abs(psnr(sr, hr, shave=s) - ref_p) < 1e-9
        assert abs(ssim(sr, hr, shave=s) - ref_s) < 1e-9
        # RGB: all channels for PSNR, mean of per-channel SSIM
        a, b = hr[s:-s, s:-s], sr[s:-s, s:-s]
        assert abs(psnr(sr, hr, shave=s, y_only=False) - skm.peak_signal_noise_ratio(a, b, data_range=255)) < 1e-9
        ref_rgb = skm.structural_similarity(a.astype(float), b.astype(float), gaussian_weights=True, sigma=1.5,
                                            use_sample_covariance=False, data_range=255, channel_axis=2)
        assert abs(ssim(sr, hr, shave=s, y_only=False) - ref_rgb) < 1e-9


def _ssim_direct(a: np.ndarray, b: np.ndarray) -> float:
    """Wang's ssim_index written out with the 2-D window and explicit loops over positions."""
    x = np.arange(11) - 5.0
    win = np.exp(-(x[:, None] ** 2 + x[None, :] ** 2) / (2 * 1.5**2))
    win /= win.sum()
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    vals = []
    for i in range(a.shape[0] - 10):
        for j in range(a.shape[1] - 10):
            pa, pb = a[i:i + 11, j:j + 11], b[i:i + 11, j:j + 11]
            ma, mb = (win * pa).sum(), (win * pb).sum()
            va, vb = (win * pa * pa).sum() - ma * ma, (win * pb * pb).sum() - mb * mb
            cov = (win * pa * pb).sum() - ma * mb
            vals.append((2 * ma * mb + c1) * (2 * cov + c2) / ((ma * ma + mb * mb + c1) * (va + vb + c2)))
    return float(np.mean(vals))


def test_ssim_equals_direct_2d_window():
    rng = np.random.default_rng(1)
    hr = rng.integers(0, 256, (24, 30, 3), dtype=np.uint8)
    sr = np.clip(hr.astype(int) + rng.integers(-30, 31, hr.shape), 0, 255).astype(np.uint8)
    ref = _ssim_direct(rgb_to_y(sr)[2:-2, 2:-2], rgb_to_y(hr)[2:-2, 2:-2])
    assert abs(ssim(sr, hr, shave=2) - ref) < 1e-12


def test_gaussian_window_is_fspecial():
    g = gaussian_window_1d()
    assert g.shape == (11,) and abs(g.sum() - 1) < 1e-15 and np.allclose(g, g[::-1])
    x = np.arange(11) - 5.0
    w2 = np.exp(-(x[:, None] ** 2 + x[None, :] ** 2) / 4.5)
    np.testing.assert_allclose(np.outer(g, g), w2 / w2.sum(), rtol=1e-13)


def test_rgb_to_y_values():
    img = np.array([[[0, 0, 0], [255, 255, 255], [255, 0, 0], [0, 255, 0], [0, 0, 255]]], dtype=np.uint8)
    np.testing.assert_allclose(rgb_to_y(img)[0], [16, 235, 16 + 65.481, 16 + 128.553, 16 + 24.966], atol=1e-12)
    assert rgb_to_y(img).dtype == np.float64
    # not rounded
    assert rgb_to_y(np.array([[[10, 20, 30]]], np.uint8))[0, 0] != round(rgb_to_y(np.array([[[10, 20, 30]]], np.uint8))[0, 0])
    # float [0, 1] and uint16 inputs are the same image
    np.testing.assert_allclose(rgb_to_y(img.astype(np.float32) / 255), rgb_to_y(img), atol=1e-4)
    np.testing.assert_allclose(rgb_to_y(img.astype(np.uint16) * 257), rgb_to_y(img), atol=1e-12)


def test_gray_is_its_own_luma():
    rng = np.random.default_rng(2)
    hr = rng.integers(0, 256, (20, 25), dtype=np.uint8)
    sr = np.clip(hr.astype(int) + rng.integers(-9, 10, hr.shape), 0, 255).astype(np.uint8)
    mse = np.mean((hr[1:-1, 1:-1].astype(float) - sr[1:-1, 1:-1]) ** 2)
    expected = 10 * math.log10(255**2 / mse)
    assert abs(psnr(sr, hr, shave=1) - expected) < 1e-12
    assert psnr(sr[:, :, None], hr[:, :, None], shave=1) == psnr(sr, hr, shave=1)
    assert psnr(sr, hr, shave=1, y_only=False) == psnr(sr, hr, shave=1)
    assert ssim(sr[:, :, None], hr, shave=1) == ssim(sr, hr, shave=1)


def test_rgb_psnr_formula():
    rng = np.random.default_rng(3)
    hr = rng.integers(0, 256, (16, 18, 3), dtype=np.uint8)
    sr = rng.integers(0, 256, (16, 18, 3), dtype=np.uint8)
    mse = np.mean((hr[2:-2, 2:-2].astype(float) - sr[2:-2, 2:-2]) ** 2)
    assert abs(psnr(sr, hr, shave=2, y_only=False) - 10 * math.log10(65025 / mse)) < 1e-12


def test_identical_images():
    img = np.random.default_rng(4).integers(0, 256, (30, 30, 3), dtype=np.uint8)
    assert psnr(img, img, shave=2) == math.inf
    assert psnr(img, img, y_only=False) == math.inf
    assert ssim(img, img, shave=2) == pytest.approx(1.0, abs=1e-12)
    t = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255
    assert torch.isinf(psnr_batch(t, t, 2)).all()


def test_float_sr_is_quantised_half_to_even():
    hr = np.full((16, 16, 3), 100, np.uint8)
    sr = np.full((16, 16, 3), 100, np.uint8)
    sr[5, 5] = 101
    # 100.5 / 255 rounds (half to even) to 100, 101.49/255 to 101; out of range values are clipped
    f = np.full((16, 16, 3), 100.5 / 255)
    f[5, 5] = 101.49 / 255
    assert psnr(f, hr) == psnr(sr, hr)
    assert np.array_equal(quantize(np.array([[-0.2, 1.7, 0.5 / 255, 1.5 / 255]])), [[[0], [255], [0], [2]]])


def test_batch_equals_numpy():
    torch.manual_seed(0)
    hr = torch.rand(3, 3, 27, 31)
    sr = (hr + 0.05 * torch.randn_like(hr)).clamp(-0.1, 1.1)  # out of range: clipped by quantisation
    for y_only in (True, False):
        p = psnr_batch(sr, hr, shave=3, y_only=y_only)
        s = ssim_batch(sr, hr, shave=3, y_only=y_only)
        assert p.dtype == s.dtype == torch.float64 and p.shape == s.shape == (3,)
        for i in range(3):
            a, b = (x[i].permute(1, 2, 0).numpy() for x in (sr, hr))
            assert abs(p[i].item() - psnr(a, b, shave=3, y_only=y_only)) < 1e-10
            assert abs(s[i].item() - ssim(a, b, shave=3, y_only=y_only)) < 1e-12
    assert torch.equal(psnr_y_batch(sr, hr, 3), psnr_batch(sr, hr, 3))
    assert torch.equal(ssim_y_batch(sr, hr, 3), ssim_batch(sr, hr, 3))
    gray = psnr_batch(sr[:, :1], hr[:, :1], 1)
    assert abs(gray[0].item() - psnr(sr[0, 0].numpy(), hr[0, 0].numpy(), 1)) < 1e-10


def test_errors_are_clear():
    a = np.zeros((20, 20, 3), np.uint8)
    with pytest.raises(MetricError, match=r"shapes differ: \(20, 20, 3\) vs \(20, 21, 3\)"):
        psnr(a, np.zeros((20, 21, 3), np.uint8))
    with pytest.raises(MetricError, match="shapes differ"):
        ssim_batch(torch.zeros(1, 3, 20, 20), torch.zeros(1, 3, 20, 21))
    with pytest.raises(MetricError, match="shave 10 leaves nothing"):
        psnr(a, a, shave=10)
    with pytest.raises(MetricError, match="at least 11x11"):
        ssim(a, a, shave=5)
    with pytest.raises(MetricError, match="4 channels"):
        psnr(np.zeros((20, 20, 4), np.uint8), np.zeros((20, 20, 4), np.uint8))
    with pytest.raises(MetricError, match="dtype"):
        psnr(a.astype(np.int32), a.astype(np.int32))
