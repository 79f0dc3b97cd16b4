"""Image arrays: the ``(H, W, C)`` layout, float tensors, alpha and EXIF orientation.

Arrays are ``(H, W, C)``: C = 1 gray, 2 gray + alpha, 3 RGB, 4 RGBA; dtype uint8 or uint16. Tensors
are float32 ``(C, H, W)`` in [0, 1]. No file is read or written here (that is :mod:`sisr.data.io`).
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import ImageError


def as_hwc(img: np.ndarray, name: str) -> np.ndarray:
    """``img`` as an ``(H, W, C)`` uint8/uint16 array (a 2-D array gains C = 1); ``ImageError`` naming ``name``."""
    arr = np.asarray(img)
    if arr.dtype not in (np.uint8, np.uint16):
        raise ImageError(f"{name}: unsupported dtype {arr.dtype} (expected uint8 or uint16)")
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 2, 3, 4) or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ImageError(f"{name}: shape {arr.shape} is not (H, W) or (H, W, C) with C in 1..4")
    return arr


def image_to_tensor(img: np.ndarray) -> torch.Tensor:
    """``(H, W[, C])`` uint8/uint16 array -> float32 ``(C, H, W)`` in [0, 1] (divided by 255 or 65535)."""
    arr = as_hwc(img, "image array")
    scale = 255.0 if arr.dtype == np.uint8 else 65535.0
    t = torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1))).to(torch.float32)
    return t.div_(scale)


def tensor_to_image(t: torch.Tensor, dtype: np.dtype | type = np.uint8) -> np.ndarray:
    """``(C, H, W)`` (or ``(1, C, H, W)``) float tensor -> ``(H, W, C)`` array of ``dtype``.

    Clamp to [0, 1], scale to 255 or 65535, round half to even (``torch.round``): the EDSR
    ``quantize`` convention. NaN becomes 0 (+inf 1, -inf 0), so every float tensor gives one image.
    """
    dtype = np.dtype(dtype)
    if dtype not in (np.uint8, np.uint16):
        raise ImageError(f"image array: cannot convert a tensor to {dtype} (expected uint8 or uint16)")
    if t.ndim == 4 and t.shape[0] == 1:
        t = t[0]
    if t.ndim != 3 or not 1 <= t.shape[0] <= 4 or t.shape[1] == 0 or t.shape[2] == 0:
        raise ImageError(f"image array: tensor shape {tuple(t.shape)} is not (C, H, W) with C in 1..4")
    if t.is_complex():
        raise ImageError(f"image array: cannot convert a {t.dtype} tensor to an image")
    peak = 255.0 if dtype == np.uint8 else 65535.0
    x = torch.nan_to_num(t.detach().to("cpu", torch.float32), nan=0.0, posinf=1.0, neginf=0.0)
    q = torch.round(x.clamp(0, 1) * peak)
    return np.ascontiguousarray(q.permute(1, 2, 0).numpy().astype(dtype))


def split_alpha(img: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """``(colour, alpha)``: gray+alpha -> (gray, alpha), RGBA -> (RGB, alpha); alpha None otherwise."""
    arr = as_hwc(img, "image array")
    if arr.shape[2] in (2, 4):
        return arr[..., :-1], arr[..., -1:]
    return arr, None


def merge_alpha(color: np.ndarray, alpha: np.ndarray | None) -> np.ndarray:
    """Inverse of :func:`split_alpha` (alpha ``(H, W)`` or ``(H, W, 1)``)."""
    color = as_hwc(color, "image array")
    if alpha is None:
        return color
    alpha = np.asarray(alpha)
    alpha = alpha[..., None] if alpha.ndim == 2 else alpha
    if alpha.shape[:2] != color.shape[:2] or alpha.shape[2] != 1 or alpha.dtype != color.dtype:
        raise ImageError(f"image array: alpha {alpha.shape} {alpha.dtype} does not fit {color.shape} {color.dtype}")
    return np.concatenate([color, alpha], axis=2)


def apply_orientation(arr: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (1-8) to an ``(H, W, C)`` array, as Pillow's ``exif_transpose``."""
    if orientation == 2:
        return arr[:, ::-1]
    if orientation == 3:
        return arr[::-1, ::-1]
    if orientation == 4:
        return arr[::-1]
    if orientation == 5:
        return arr.transpose(1, 0, 2)
    if orientation == 6:
        return np.rot90(arr, -1)
    if orientation == 7:
        return arr[::-1, ::-1].transpose(1, 0, 2)
    if orientation == 8:
        return np.rot90(arr, 1)
    return arr
