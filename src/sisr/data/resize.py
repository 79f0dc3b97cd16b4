"""MATLAB-compatible bicubic resizing: ``imresize(A, scale, 'bicubic')``, byte-exact.

The algorithm (Image Processing Toolbox ``imresize`` with the default ``'bicubic'`` method and
antialiasing), as documented in ``../shared/fixtures/README.md`` and checked against MATLAB outputs:

* Keys cubic kernel, a = -0.5; when shrinking (scale < 1) the kernel is stretched by 1/scale and
  scaled by ``scale`` (antialiasing), so it covers 4/scale input pixels.
* Output length ``ceil(in_len * scale)``; output pixel x (1-based) samples input coordinate
  ``u = x / scale + 0.5 * (1 - 1 / scale)``; taps ``floor(u - width / 2) + 0 .. ceil(width) + 1``;
  the weights of each output pixel are normalised to sum 1.
* Out-of-range taps are folded back: ``"symmetric"`` mirrors with the edge pixel repeated
  (... 2 1 | 1 2 3 ..., modern MATLAB) and ``"replicate"`` clamps the index (older MATLAB releases;
  the RCAN test package, B100 and the X8 LR files were made that way).
* One 1-D pass per dimension, the dimension with the smaller scale first, rows first on a tie.
* Integer input (uint8, uint16): after each pass the result is rounded half away from zero and
  clamped to the type's range, because MATLAB keeps the input class between passes.
  Float input: float64 throughout, no rounding, no clamping; the result has the input's dtype.

Each pass is a banded matrix product in float64 (blocks of output rows times the slab of input
rows they touch, computed with torch), which keeps it exact and several times faster than a
gather formulation.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch

from ..errors import ConfigError, ImageError

BORDERS = ("symmetric", "replicate")
KERNEL_WIDTH = 4.0  # support of the Keys cubic kernel in input pixels (unscaled)
INT_MAX = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}
_FLOAT_TYPES = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))
BAND_INPUT_ROWS = 64  # input rows each banded product spans (imresize, the bicubic model)
MAX_DENSE_ELEMENTS = 2**26  # resize_matrix refuses larger dense matrices (512 MiB of float64)


def cubic(x: np.ndarray) -> np.ndarray:
    """Keys cubic convolution kernel with a = -0.5 (MATLAB's ``cubic``)."""
    ax = np.abs(x)
    ax2 = ax * ax
    ax3 = ax2 * ax
    near = (1.5 * ax3 - 2.5 * ax2 + 1.0) * (ax <= 1)
    far = (-0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0) * ((ax > 1) & (ax <= 2))
    return near + far


def contributions(in_len: int, out_len: int, scale: float, border: str = "symmetric") -> tuple[np.ndarray, np.ndarray]:
    """Weights and 0-based input indices of every output pixel along one dimension.

    Returns ``(weights, indices)``, both ``(out_len, taps)``; weights are float64 and sum to 1 per
    row. Tap columns whose weights are all zero are dropped, as MATLAB does.
    """
    _check_border(border)
    width = KERNEL_WIDTH / scale if scale < 1 else KERNEL_WIDTH
    x = np.arange(1, out_len + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = np.floor(u - width / 2)
    taps = int(math.ceil(width)) + 2
    idx = left[:, None] + np.arange(taps, dtype=np.float64)
    dist = u[:, None] - idx
    weights = scale * cubic(scale * dist) if scale < 1 else cubic(dist)
    weights = weights / weights.sum(axis=1, keepdims=True)
    idx0 = idx.astype(np.int64) - 1
    if border == "symmetric":
        period = np.mod(idx0, 2 * in_len)
        idx0 = np.where(period < in_len, period, 2 * in_len - 1 - period)
    else:
        idx0 = np.clip(idx0, 0, in_len - 1)
    keep = np.any(weights != 0, axis=0)
    return weights[:, keep], idx0[:, keep]


def resize_matrix(in_len: int, scale: float | None = None, out_len: int | None = None,
                  border: str = "symmetric") -> np.ndarray:
    """Dense ``(out_len, in_len)`` float64 matrix of the 1-D resize: ``out = M @ in``.

    Give ``scale`` (output length ``ceil(in_len * scale)``), ``out_len`` (scale ``out_len / in_len``)
    or both (MATLAB uses the given scale for the coordinate mapping). Its size grows with
    ``in_len * out_len``: above ``MAX_DENSE_ELEMENTS`` it is refused with one line; use
    :func:`resize_bands` (memory linear in the length) instead.
    """
    scale, out_len = _dim_scale_and_length(in_len, scale, out_len)
    if out_len * in_len > MAX_DENSE_ELEMENTS:
        raise ImageError(f"resize_matrix: a dense {out_len}x{in_len} matrix needs "
                         f"{out_len * in_len * 8 / 2**30:.1f} GiB; use resize_bands() for lengths this large")
    ((_, _, lo, hi, band),) = resize_bands(in_len, scale, out_len, border, block=out_len)
    matrix = np.zeros((out_len, in_len), dtype=np.float64)
    matrix[:, lo:hi] = band
    return matrix


def resize_bands(in_len: int, scale: float | None = None, out_len: int | None = None, border: str = "symmetric",
                 *, block: int | None = None):
    """The 1-D resize as banded blocks: yields ``(start, stop, lo, hi, band)`` with
    ``out[start:stop] = band @ in[lo:hi]`` (``band`` float64). ``block`` output rows per band
    (default: enough for ~``BAND_INPUT_ROWS`` input rows), so memory is linear in the length.
    """
    scale, out_len = _dim_scale_and_length(in_len, scale, out_len)
    weights, idx = contributions(in_len, out_len, scale, border)
    if block is None:
        block = max(16, int(math.ceil(BAND_INPUT_ROWS * out_len / in_len)))
    return _bands(weights, idx, block)


def output_shape(in_h: int, in_w: int, scale: float | None = None,
                 output_size: tuple[int, int] | None = None) -> tuple[int, int]:
    """``(H, W)`` that :func:`imresize` returns for these arguments."""
    (_, oh), (_, ow) = _scales_and_lengths(in_h, in_w, scale, output_size)
    return oh, ow


def imresize(img: np.ndarray, scale: float | None = None, *, output_size: tuple[int, int] | None = None,
             border: str = "symmetric") -> np.ndarray:
    """MATLAB ``imresize(img, scale, 'bicubic')`` (or ``imresize(img, [H W], 'bicubic')``).

    ``img`` is ``(H, W)`` or ``(H, W, C)``; the result keeps that form and the dtype. uint8/uint16
    are rounded half away from zero and clamped after each 1-D pass (byte-exact with MATLAB);
    float input is computed in float64 without rounding. ``scale`` < 1 shrinks (0.25 = 1/4), > 1
    enlarges; or give ``output_size=(H, W)``.
    """
    arr = np.asarray(img)
    if arr.ndim not in (2, 3) or arr.shape[0] == 0 or arr.shape[1] == 0 or (arr.ndim == 3 and arr.shape[2] == 0):
        raise ImageError(f"image array: shape {arr.shape} is not (H, W) or (H, W, C) with H, W, C >= 1")
    if arr.dtype not in INT_MAX and arr.dtype not in _FLOAT_TYPES:
        raise ImageError(f"image array: unsupported dtype {arr.dtype} (expected uint8, uint16 or float)")
    _check_border(border)
    in_h, in_w = arr.shape[:2]
    (scale_h, out_h), (scale_w, out_w) = _scales_and_lengths(in_h, in_w, scale, output_size)
    max_value = INT_MAX.get(arr.dtype)

    x = arr[..., None] if arr.ndim == 2 else arr  # (H, W, C)
    passes = [(0, scale_h, out_h), (1, scale_w, out_w)]
    if scale_w < scale_h:  # MATLAB resizes the dimension with the smaller scale first
        passes.reverse()
    for dim, dim_scale, out_len in passes:
        if dim_scale == 1 and out_len == x.shape[dim]:
            continue  # the cubic kernel at integer offsets is the identity
        moved = np.moveaxis(x, dim, 0)  # the resized dimension first: one matrix (L, rest)
        mat = np.ascontiguousarray(moved).reshape(moved.shape[0], -1)
        mat = _resize_rows(mat, dim_scale, out_len, border, max_value)
        x = np.moveaxis(mat.reshape((out_len,) + moved.shape[1:]), 0, dim)
    out = x[..., 0] if arr.ndim == 2 else x
    return np.array(out, dtype=arr.dtype, order="C")  # a new array even when nothing was resized


def round_half_away(x: np.ndarray, max_value: float = 255.0) -> np.ndarray:
    """Round half away from zero and clamp to ``[0, max_value]`` (MATLAB's float -> uint cast); float64."""
    return _round_half_away_clamp_(np.array(x, dtype=np.float64), max_value)


def _round_half_away_clamp_(x: np.ndarray, max_value: float) -> np.ndarray:
    """In place on float64 ``x``. floor + (fraction >= 0.5) is exact, floor(x + 0.5) is not for x
    just below a half; values below zero clamp to 0 either way, so the sign never matters."""
    whole = np.floor(x)
    x -= whole
    whole += x >= 0.5
    return np.clip(whole, 0.0, max_value, out=x)


def _resize_rows(mat: np.ndarray, scale: float, out_len: int, border: str, max_value: float | None) -> np.ndarray:
    """Resize the rows of an ``(L, N)`` matrix into a float64 ``(out_len, N)`` one.

    Banded products ``W[block] @ mat[slab]``: each block of output rows times the slab of input
    rows it touches, converted to float64 slab by slab and, for integer images, rounded and
    clamped block by block while still in cache. The products run in torch, so they follow
    torch's thread setting (one thread in DataLoader workers) rather than numpy's BLAS threads.
    """
    src = _tensor_view(mat)
    out = np.empty((out_len, mat.shape[1]), dtype=np.float64)
    out_t = torch.from_numpy(out)
    for start, stop, lo, hi, band in resize_bands(mat.shape[0], scale, out_len, border):
        torch.matmul(torch.from_numpy(band), src[lo:hi].to(torch.float64), out=out_t[start:stop])
        if max_value is not None:
            _round_half_away_clamp_(out[start:stop], max_value)
    return out


def _tensor_view(arr: np.ndarray) -> torch.Tensor:
    """``torch.from_numpy`` that also accepts read-only arrays (the tensor is only read)."""
    if arr.flags.writeable:
        return torch.from_numpy(arr)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(arr)


def _bands(weights: np.ndarray, idx: np.ndarray, block: int):
    """Yield ``(start, stop, lo, hi, band)``: output rows start:stop = band @ input rows lo:hi."""
    out_len, taps = weights.shape
    for start in range(0, out_len, block):
        stop = min(start + block, out_len)
        block_idx = idx[start:stop]
        lo, hi = int(block_idx.min()), int(block_idx.max()) + 1
        band = np.zeros((stop - start, hi - lo), dtype=np.float64)
        rows = np.repeat(np.arange(stop - start), taps)
        np.add.at(band, (rows, (block_idx - lo).ravel()), weights[start:stop].ravel())
        yield start, stop, lo, hi, band


def _check_border(border: str) -> None:
    if border not in BORDERS:
        raise ConfigError(f"unknown border rule '{border}'; choose {' or '.join(BORDERS)}")


def _dim_scale_and_length(in_len: int, scale: float | None, out_len: int | None) -> tuple[float, int]:
    if in_len < 1:
        raise ConfigError(f"cannot resize a dimension of length {in_len}")
    if scale is None and out_len is None:
        raise ConfigError("give a scale or an output size")
    if scale is not None:
        scale = float(scale)
        if not math.isfinite(scale) or scale <= 0:
            raise ConfigError(f"scale must be a positive number, got {scale}")
    if out_len is None:
        out_len = int(math.ceil(in_len * scale))
    out_len = int(out_len)
    if out_len < 1:
        raise ConfigError(f"output size must be >= 1, got {out_len}")
    if scale is None:
        scale = out_len / in_len
    return scale, out_len


def _scales_and_lengths(in_h: int, in_w: int, scale: float | None,
                        output_size: tuple[int, int] | None) -> tuple[tuple[float, int], tuple[float, int]]:
    if (scale is None) == (output_size is None):
        raise ConfigError("give exactly one of scale and output_size")
    if output_size is not None:
        if len(output_size) != 2:
            raise ConfigError(f"output_size must be (H, W), got {output_size!r}")
        return _dim_scale_and_length(in_h, None, output_size[0]), _dim_scale_and_length(in_w, None, output_size[1])
    return _dim_scale_and_length(in_h, scale, None), _dim_scale_and_length(in_w, scale, None)
