"""PSNR and SSIM in the convention of the super-resolution papers.

The reference is the MATLAB evaluation of the RCAN/EDSR line of papers
(``Evaluate_PSNR_SSIM.m`` in yulunzhang/RCAN) and Wang et al.'s ``ssim_index``:

* luma ``Y = rgb2ycbcr(im2double(img)) * 255`` (BT.601, range 16..235), kept as
  float64 and **not rounded**: ``Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255``
  for R, G, B in 0..255;
* a gray image (``(H, W)`` or ``(H, W, 1)``) is its own luma, ``im2double(img) * 255``,
  as in the authors' script (the benchmark reader replicates gray images to RGB, as the
  EDSR/RCAN code does, so ``sisr eval`` uses the formula above unless asked to score
  them as gray: see ``sisr.evaluation.protocol``);
* ``shave`` pixels are cut from every border before scoring (papers: shave = scale);
* the SR image is quantised to uint8 first; float input is taken to be in [0, 1] and
  becomes ``round(clip(x, 0, 1) * 255)`` with round half to even (EDSR's ``quantize``
  and ``sisr.data.io.tensor_to_image``); uint16 input is divided by 65535 first;
* ``PSNR = 10 log10(255^2 / MSE)`` (infinite for identical images);
* SSIM of Wang et al. 2004: 11x11 Gaussian window (sigma 1.5, normalised), K = (0.01, 0.03),
  L = 255, 'valid' filtering (no padding), mean of the SSIM map. The Gaussian filter
  is applied as two 1-D passes (it is separable); the result equals the 2-D filter up to
  float64 rounding.

Choices beyond the MATLAB script: ``y_only=False`` gives PSNR over all channels and
SSIM as the mean of per-channel SSIMs (the BasicSR convention); the script computes
Y in single precision, here everything is float64 (differences < 1e-6 dB on the
RCAN fixture). Images smaller than the 11x11 window after shaving are an error
(MATLAB returns -Inf).

``psnr``/``ssim`` take numpy images; ``psnr_batch``/``ssim_batch`` (and the Y-only
shorthands ``psnr_y_batch``/``ssim_y_batch``) take torch batches ``(N, C, H, W)`` in
[0, 1] and return float64 tensors of shape ``(N,)`` equal to the numpy values.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from .data.degrade import gaussian_kernel
from .errors import SisrError

Y_WEIGHTS = (65.481, 128.553, 24.966)  # BT.601 luma rows of MATLAB rgb2ycbcr, for RGB in [0, 1] -> [0, 255]
Y_OFFSET = 16.0
PEAK = 255.0
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K = (0.01, 0.03)

CONVENTION = (
    "Y of BT.601 YCbCr 16-235 (rgb2ycbcr(im2double(img))*255, float64, not rounded); "
    "SR quantised to uint8 (round half to even); PSNR peak 255; "
    "SSIM Wang 2004 (Gaussian 11x11 sigma 1.5, K=0.01/0.03, L=255, valid); shave = border pixels cut"
)


def ssim_size_problem(h: int, w: int, shave: int) -> str | None:
    """Why SSIM cannot score an ``h`` x ``w`` image after shaving ``shave`` per side; None when it can. For checks
    made before the work (the metrics themselves raise :class:`MetricError` when called)."""
    if min(h, w) - 2 * shave < SSIM_WINDOW:
        return f"SSIM needs {SSIM_WINDOW}x{SSIM_WINDOW} pixels after shaving {shave} per side"
    return None


class MetricError(SisrError, ValueError):
    """Images that cannot be compared (shape mismatch, too small, unsupported form)."""


# --------------------------------------------------------------------------- numpy


def quantize(img: np.ndarray) -> np.ndarray:
    """An image as uint8 ``(H, W, C)``: uint8 kept, uint16 and float [0, 1] rounded half to even."""
    img = _as_hwc(img)
    if img.dtype == np.uint8:
        return img
    return np.round(np.clip(_im2double(img), 0.0, 1.0) * PEAK).astype(np.uint8)


def rgb_to_y(img: np.ndarray) -> np.ndarray:
    """Float64 luma ``(H, W)`` on 16..235 (``rgb2ycbcr(im2double(img))*255``); gray is ``im2double*255``.

    ``img`` is uint8/uint16 or float in [0, 1], shape ``(H, W)``, ``(H, W, 1)`` or ``(H, W, 3)``.
    """
    x = _im2double(img)
    if x.shape[2] == 1:
        return x[:, :, 0] * PEAK
    if x.shape[2] != 3:
        raise MetricError(f"luma needs a gray or RGB image, got {x.shape[2]} channels")
    wr, wg, wb = (w / PEAK for w in Y_WEIGHTS)
    y = wr * x[:, :, 0] + wg * x[:, :, 1] + wb * x[:, :, 2] + Y_OFFSET / PEAK
    return y * PEAK


def psnr(sr: np.ndarray, hr: np.ndarray, shave: int = 0, y_only: bool = True) -> float:
    """PSNR in dB (peak 255) of ``sr`` against ``hr``; ``inf`` when they are equal after shaving."""
    a, b = _prepare(sr, hr, shave, y_only)
    mse = float(np.mean((a - b) ** 2))
    return math.inf if mse == 0.0 else 10.0 * math.log10(PEAK**2 / mse)


def ssim(sr: np.ndarray, hr: np.ndarray, shave: int = 0, y_only: bool = True) -> float:
    """Mean SSIM (Wang et al. 2004) of ``sr`` against ``hr``; per-channel mean when not ``y_only``."""
    a, b = _prepare(sr, hr, shave, y_only)
    if min(a.shape[:2]) < SSIM_WINDOW:
        raise MetricError(f"SSIM needs at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels after shaving, got {a.shape[1]}x{a.shape[0]}")
    return float(np.mean([_ssim_channel(a[:, :, c], b[:, :, c]) for c in range(a.shape[2])]))


def _as_hwc(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img)
    if img.ndim == 2:
        img = img[:, :, None]
    if img.ndim != 3:
        raise MetricError(f"image must be (H, W) or (H, W, C), got shape {img.shape}")
    return img


def _im2double(img: np.ndarray) -> np.ndarray:
    img = _as_hwc(img)
    if img.dtype == np.uint8:
        return img.astype(np.float64) / PEAK
    if img.dtype == np.uint16:
        return img.astype(np.float64) / 65535.0
    if np.issubdtype(img.dtype, np.floating):
        return img.astype(np.float64)
    raise MetricError(f"image dtype must be uint8, uint16 or float in [0, 1], got {img.dtype}")


def _prepare(sr: np.ndarray, hr: np.ndarray, shave: int, y_only: bool) -> tuple[np.ndarray, np.ndarray]:
    """Quantised, shaved float64 ``(H, W, C)`` arrays (C = 1 for Y)."""
    sr_q, hr_q = quantize(sr), quantize(hr)
    if sr_q.shape != hr_q.shape:
        raise MetricError(f"SR and HR shapes differ: {tuple(np.shape(sr))} vs {tuple(np.shape(hr))}")
    if sr_q.shape[2] not in (1, 3):
        raise MetricError(f"metrics need gray or RGB images, got {sr_q.shape[2]} channels")
    if y_only:
        a, b = rgb_to_y(sr_q)[:, :, None], rgb_to_y(hr_q)[:, :, None]
    else:
        a, b = sr_q.astype(np.float64), hr_q.astype(np.float64)
    shave = _check_shave(shave, a.shape[0], a.shape[1])
    if shave:
        a, b = a[shave:-shave, shave:-shave], b[shave:-shave, shave:-shave]
    return a, b


def _check_shave(shave: int, h: int, w: int) -> int:
    shave = int(shave)
    if shave < 0:
        raise MetricError(f"shave must be >= 0, got {shave}")
    if 2 * shave >= min(h, w):
        raise MetricError(f"shave {shave} leaves nothing of a {w}x{h} image")
    return shave


def gaussian_window_1d() -> np.ndarray:
    """The normalised 1-D factor of ``fspecial('gaussian', 11, 1.5)`` (its outer product is the 2-D window)."""
    return gaussian_kernel(SSIM_WINDOW, SSIM_SIGMA)


def _filter_valid(maps: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Separable 'valid' filtering of ``(K, H, W)`` maps with the 1-D window ``g`` (shift-and-add)."""
    n = len(g)
    h, w = maps.shape[1] - n + 1, maps.shape[2] - n + 1
    rows = g[0] * maps[:, 0:h, :]
    for k in range(1, n):
        rows += g[k] * maps[:, k:k + h, :]
    out = g[0] * rows[:, :, 0:w]
    for k in range(1, n):
        out += g[k] * rows[:, :, k:k + w]
    return out


def _ssim_channel(a: np.ndarray, b: np.ndarray) -> float:
    c1, c2 = (SSIM_K[0] * PEAK) ** 2, (SSIM_K[1] * PEAK) ** 2
    mu_a, mu_b, aa, bb, ab = _filter_valid(np.stack([a, b, a * a, b * b, a * b]), gaussian_window_1d())
    return float(np.mean(_ssim_map(mu_a, mu_b, aa, bb, ab, c1, c2)))


def _ssim_map(mu_a, mu_b, aa, bb, ab, c1, c2):
    mu_aa, mu_bb, mu_ab = mu_a * mu_a, mu_b * mu_b, mu_a * mu_b
    var_a, var_b, cov = aa - mu_aa, bb - mu_bb, ab - mu_ab
    return ((2 * mu_ab + c1) * (2 * cov + c2)) / ((mu_aa + mu_bb + c1) * (var_a + var_b + c2))


# --------------------------------------------------------------------------- torch (batched)


def psnr_batch(sr: torch.Tensor, hr: torch.Tensor, shave: int = 0, y_only: bool = True) -> torch.Tensor:
    """Per-image PSNR, float64 ``(N,)``, of batches ``(N, C, H, W)`` in [0, 1] (C = 1 or 3); same as :func:`psnr`."""
    a, b = _prepare_batch(sr, hr, shave, y_only)
    mse = ((a - b) ** 2).flatten(1).mean(dim=1)
    return 10.0 * torch.log10(PEAK**2 / mse)  # mse 0 -> inf


def ssim_batch(sr: torch.Tensor, hr: torch.Tensor, shave: int = 0, y_only: bool = True) -> torch.Tensor:
    """Per-image SSIM, float64 ``(N,)``, of batches ``(N, C, H, W)`` in [0, 1]; same as :func:`ssim`."""
    a, b = _prepare_batch(sr, hr, shave, y_only)
    if min(a.shape[-2:]) < SSIM_WINDOW:
        raise MetricError(f"SSIM needs at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels after shaving, got {a.shape[-1]}x{a.shape[-2]}")
    n, c = a.shape[:2]
    g = torch.from_numpy(gaussian_window_1d()).to(a.device)
    maps = torch.stack([a, b, a * a, b * b, a * b], dim=2).reshape(n * c * 5, 1, *a.shape[-2:])
    maps = F.conv2d(F.conv2d(maps, g.view(1, 1, -1, 1)), g.view(1, 1, 1, -1))
    mu_a, mu_b, aa, bb, ab = maps.view(n, c, 5, *maps.shape[-2:]).unbind(dim=2)
    c1, c2 = (SSIM_K[0] * PEAK) ** 2, (SSIM_K[1] * PEAK) ** 2
    return _ssim_map(mu_a, mu_b, aa, bb, ab, c1, c2).flatten(2).mean(dim=2).mean(dim=1)


def psnr_y_batch(sr: torch.Tensor, hr: torch.Tensor, shave: int = 0) -> torch.Tensor:
    """Y-channel PSNR per image (the papers' number) of RGB batches in [0, 1]."""
    return psnr_batch(sr, hr, shave, y_only=True)


def ssim_y_batch(sr: torch.Tensor, hr: torch.Tensor, shave: int = 0) -> torch.Tensor:
    """Y-channel SSIM per image (the papers' number) of RGB batches in [0, 1]."""
    return ssim_batch(sr, hr, shave, y_only=True)


def _prepare_batch(sr: torch.Tensor, hr: torch.Tensor, shave: int, y_only: bool) -> tuple[torch.Tensor, torch.Tensor]:
    if sr.shape != hr.shape:
        raise MetricError(f"SR and HR shapes differ: {tuple(sr.shape)} vs {tuple(hr.shape)}")
    if sr.dim() != 4 or sr.shape[1] not in (1, 3):
        raise MetricError(f"batches must be (N, 1 or 3, H, W), got {tuple(sr.shape)}")
    a, b = (torch.round(x.detach().to(torch.float64).clamp(0.0, 1.0) * PEAK) for x in (sr, hr))
    if y_only and a.shape[1] == 3:
        w = torch.tensor([wt / PEAK for wt in Y_WEIGHTS], dtype=torch.float64, device=a.device).view(1, 3, 1, 1)
        a, b = ((((x / PEAK) * w).sum(dim=1, keepdim=True) + Y_OFFSET / PEAK) * PEAK for x in (a, b))
    shave = _check_shave(shave, a.shape[-2], a.shape[-1])
    if shave:
        a, b = a[..., shave:-shave, shave:-shave], b[..., shave:-shave, shave:-shave]
    return a, b
