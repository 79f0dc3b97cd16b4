"""LR images from HR images: BI, BD and DN as in the RCAN authors' MATLAB script.

Reference: ``RCAN_TestCode/Prepare_TestData_HR_LR.m`` in yulunzhang/RCAN (the script that made the
BI/BD/DN test sets of RCAN and of the papers that reuse its data). For each image it does:

* a gray image is stacked into three identical channels, then ``modcrop`` (bottom/right crop to a
  multiple of the scale);
* **BI**: MATLAB ``imresize(HR, 1/s, 'bicubic')``;
* **BD**: Gaussian blur with ``sigma = 1.6`` by ``imfilter(HR, fspecial('gaussian', k, sigma),
  'replicate')``, then subsampling. Odd scales: ``k = 2 * ceil(3 * sigma) + 1`` (11 for 1.6) except
  ``k = 7`` for x3 with sigma 1.6, and the subsampling is ``imresize(..., 1/s, 'nearest')``, which keeps
  pixels ``(s - 1) / 2 + s * i`` (0-based; 1, 4, 7, ... for x3). Even scales: ``k = 2 * ceil(3 * sigma) + 2``
  (12), and the script keeps pixels ``s / 2 - 1 + s * i`` (0-based);
* **DN**: BI, then ``uint8(single(LR) + single(30 * randn(size(LR))))``; the script calls
  ``randn('seed', 0)`` before every image of a test set.

Conventions here:

* uint8 in -> uint8 out; uint16 is accepted too (same steps, the uint16 range, noise level x 257).
* ``imfilter`` on integer images filters in double and rounds once (half away from zero, saturated);
  here the Gaussian is applied as two 1-D passes in float64 without rounding in between, which is the
  same filter up to float64 rounding (the 2-D kernel is the outer product of the 1-D one). For an
  even kernel size the centre is element ``k // 2`` (1-based ``floor((k + 1) / 2)``), as ``imfilter``.
* The noise uses numpy's generator: ``seed`` (an int, as the script's fixed seed) makes it
  reproducible, ``None`` draws fresh noise. MATLAB's ``randn`` stream cannot be reproduced, so DN
  images are statistically, not bitwise, equal to the authors' files.
* Gray images become RGB (three identical channels) as in the script, here inside :func:`degrade`
  (:func:`to_rgb`); an alpha channel is dropped (MATLAB's ``imread`` returns it separately).
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import ConfigError, ImageError
from .resize import INT_MAX, imresize, round_half_away

MODES = ("BI", "BD", "DN")
LR_FOLDERS = {"BI": "LR_bicubic", "BD": "LR_BD", "DN": "LR_DN"}
BD_SIGMA = 1.6
DN_NOISE_LEVEL = 30.0


def modcrop(img: np.ndarray, scale: int) -> np.ndarray:
    """Crop the bottom rows and right columns so that H and W are multiples of ``scale`` (MATLAB ``modcrop``)."""
    h, w = img.shape[:2]
    return img[: h - h % scale, : w - w % scale]


def to_rgb(img: np.ndarray) -> np.ndarray:
    """``(H, W, 3)``: gray (``(H, W)``, 1 or 2 channels) stacked to three channels; alpha dropped."""
    arr = np.asarray(img)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 2, 3, 4):
        raise ImageError(f"image array: shape {arr.shape} is not (H, W) or (H, W, C) with C in 1..4")
    if arr.shape[2] in (1, 2):
        return np.repeat(arr[..., :1], 3, axis=2)
    return arr[..., :3]


def gaussian_kernel(size: int, sigma: float) -> np.ndarray:
    """1-D factor of MATLAB ``fspecial('gaussian', size, sigma)`` (samples at offsets centred on the middle)."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2
    g = np.exp(-(x * x) / (2 * sigma * sigma))
    g[g < np.finfo(np.float64).eps * g.max()] = 0
    return g / g.sum()


def bd_kernel_size(scale: int, sigma: float = BD_SIGMA) -> int:
    """Kernel size the RCAN script uses for BD at this scale."""
    if scale % 2 == 1:
        return 7 if (scale == 3 and sigma == 1.6) else 2 * math.ceil(3 * sigma) + 1
    return 2 * math.ceil(3 * sigma) + 2


def check_mode_and_scale(mode: str, scale: int) -> tuple[str, int]:
    """``(MODE, scale)`` normalised; ``ConfigError`` for an unknown mode or a scale that is not an integer >= 2."""
    if mode.upper() not in MODES:
        raise ConfigError(f"unknown degradation '{mode}'; choose {', '.join(MODES)}")
    if isinstance(scale, bool) or int(scale) != scale or scale < 2:
        raise ConfigError(f"scale must be an integer >= 2, got {scale}")
    return mode.upper(), int(scale)


MAX_BLUR_SIGMA = 50.0  # a 302-tap kernel; sigma 1e6 would build millions of taps per pixel


def check_degradation(mode: str, noise_level: float, blur_sigma: float) -> None:
    """``ConfigError`` for a DN noise level or a BD blur sigma the mode would use and that makes no image."""
    if mode == "DN" and not (math.isfinite(noise_level) and noise_level >= 0):
        raise ConfigError(f"noise level must be a finite number >= 0 (sigma on 0..255), got {noise_level}")
    if mode == "BD" and not (math.isfinite(blur_sigma) and 0 < blur_sigma <= MAX_BLUR_SIGMA):
        raise ConfigError(f"blur sigma must be a number in (0, {MAX_BLUR_SIGMA:g}], got {blur_sigma}")


def degrade(hr: np.ndarray, scale: int, mode: str = "BI", *, noise_level: float = DN_NOISE_LEVEL,
            seed: int | np.random.Generator | None = None, border: str = "symmetric",
            blur_sigma: float = BD_SIGMA) -> np.ndarray:
    """LR image of ``hr`` (uint8 or uint16, gray/RGB, alpha dropped) by BI, BD or DN; ``(H/s, W/s, 3)``.

    ``hr`` is mod-cropped first. ``border`` is the bicubic border rule (BI and DN); BD always
    filters with replicated borders, as the script does. ``seed`` (int or numpy Generator) makes the
    DN noise reproducible.
    """
    mode, scale = check_mode_and_scale(mode, scale)
    check_degradation(mode, noise_level, blur_sigma)
    arr = np.asarray(hr)
    if arr.dtype not in INT_MAX:
        raise ImageError(f"image array: unsupported dtype {arr.dtype} (expected uint8 or uint16)")
    img = modcrop(to_rgb(arr), scale)
    if img.shape[0] == 0 or img.shape[1] == 0:
        raise ImageError(f"image array: {arr.shape[1]}x{arr.shape[0]} is smaller than the scale {scale}")
    max_value = INT_MAX[arr.dtype]
    if mode == "BD":
        return _blur_downsample(img, scale, blur_sigma, max_value)
    lr = imresize(img, 1 / scale, border=border)
    if mode == "BI":
        return lr
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    sigma = noise_level * max_value / 255.0
    noise = (sigma * rng.standard_normal(lr.shape)).astype(np.float32)
    noisy = lr.astype(np.float32) + noise  # MATLAB: single(LR) + single(sigma * randn)
    return round_half_away(noisy, max_value).astype(arr.dtype)


def _blur_downsample(img: np.ndarray, scale: int, sigma: float, max_value: float) -> np.ndarray:
    """imfilter(img, fspecial('gaussian', k, sigma), 'replicate'), kept at the script's sample positions."""
    size = bd_kernel_size(scale, sigma)
    g = gaussian_kernel(size, sigma)
    before = (size + 1) // 2 - 1  # taps before the centre (imfilter's centre for even sizes)
    first = (scale - 1) // 2 if scale % 2 == 1 else scale // 2 - 1
    h, w = img.shape[:2]
    rows = np.arange(first, h, scale)
    cols = np.arange(first, w, scale)
    x = img.astype(np.float64)
    # Only the kept rows and columns are filtered; taps outside the image are clamped (replicate).
    y = np.zeros((rows.size, w, img.shape[2]))
    for k in range(size):
        y += g[k] * x[np.clip(rows + k - before, 0, h - 1)]
    z = np.zeros((rows.size, cols.size, img.shape[2]))
    for k in range(size):
        z += g[k] * y[:, np.clip(cols + k - before, 0, w - 1)]
    return round_half_away(z, max_value).astype(img.dtype)
