"""Images through a network: numpy arrays and files (gray, alpha, 16 bit), with the model resolved once.

The model rules (a name, a weights file, a module, the default model) live in :func:`sisr.weights.resolve`;
``default_model`` is re-exported here.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import ImageError
from ..weights.handle import LoadedModel
from ..weights.loading import DEFAULT_MODEL, FALLBACK_MODEL, default_model, resolve
from .forward import run
from .options import ALPHA_MODES, RunOptions

__all__ = ["upscale", "upscale_array", "default_model", "rgb_to_gray", "DEFAULT_MODEL", "FALLBACK_MODEL",
           "ALPHA_MODES"]


def upscale(image: np.ndarray | str | os.PathLike, model: str | os.PathLike | nn.Module | LoadedModel | None = None,
            scale: int | None = None, *, weights: str | os.PathLike | None = None,
            device: str | torch.device = "auto", options: RunOptions | None = None, **keywords) -> np.ndarray:
    """Super-resolve a numpy image (or an image file) and return a numpy image of the same form.

    ``image``: ``(H, W)`` or ``(H, W, C)`` with C = 1 gray, 2 gray+alpha, 3 RGB,
    4 RGBA; uint8, uint16 (kept, through float32) or float in [0, 1] (float32
    out; values outside [0, 1], NaN or infinity are refused). Gray runs through the network as RGB (the gray
    value in all three channels) and is brought back with the BT.601 luma weights; alpha is
    upscaled separately with MATLAB-exact bicubic interpolation and clamped
    (``alpha="model"``: through the network as gray instead).
    ``model``: registry name, weights file, ``nn.Module``, ``LoadedModel`` or None (the default model);
    ``scale`` defaults to the weights file's, else 2; see :func:`sisr.weights.resolve`. ``options``: a
    :class:`RunOptions`; keywords (``tile="auto"``, ``self_ensemble=True``, ...) build or amend one.
    Loading a network per call is slow: for many images pass a module from :func:`sisr.load_model`.
    """
    options = RunOptions.build(options, **keywords)
    if isinstance(image, (str, os.PathLike)):
        from ..data.io import read_image

        image = read_image(Path(image))
    loaded = resolve(model, scale, weights=weights, device=device, channels_last=options.load_channels_last)
    return upscale_array(image, loaded, options)


GRAY_LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601, as PIL's convert("L")


def rgb_to_gray(y: torch.Tensor) -> torch.Tensor:
    """``(3, H, W)`` -> ``(1, H, W)`` with the BT.601 luma weights (how gray images come back from RGB)."""
    return (y * torch.tensor(GRAY_LUMA, dtype=y.dtype, device=y.device).view(3, 1, 1)).sum(0, keepdim=True)


def upscale_array(image: np.ndarray, net: nn.Module | LoadedModel, options: RunOptions | None = None, /,
                  **keywords) -> np.ndarray:
    """``upscale`` for a numpy image and a ready network (a module or a ``LoadedModel``).

    ``options.alpha``: ``bicubic`` (MATLAB-exact, clamped) or ``model`` (the alpha plane through the
    network as a gray image); the other options go to :func:`run`.
    """
    options = RunOptions.build(options, **keywords)
    module = net.module if isinstance(net, LoadedModel) else net
    from ..data.io import image_to_tensor, tensor_to_image

    arr = _checked_array(image)
    is_float = arr.dtype.kind == "f"
    channels = arr.shape[2]
    gray = channels <= 2
    color = arr[:, :, :1] if gray else arr[:, :, :3]
    alpha_plane = arr[:, :, -1] if channels in (2, 4) else None

    def to_tensor(a: np.ndarray) -> torch.Tensor:
        if is_float:
            return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).permute(2, 0, 1)
        return image_to_tensor(a)

    x = to_tensor(color)
    if gray:
        x = x.expand(3, -1, -1)
    y = run(module, x[None].contiguous(), options)[0]
    if gray:
        y = rgb_to_gray(y)
    y = y.cpu()
    if alpha_plane is not None:
        a = to_tensor(alpha_plane[:, :, None])
        if options.alpha == "model":
            a = rgb_to_gray(run(module, a.expand(3, -1, -1)[None].contiguous(), options)[0]).cpu()[0].clamp(0, 1)
        else:
            a = _upscale_alpha(a[0], y.shape[-2:])
        y = torch.cat([y, a[None]], 0)
    if is_float:
        out = y.clamp(0, 1).permute(1, 2, 0).numpy().astype(np.float32)
    else:
        out = tensor_to_image(y, arr.dtype)
    return out[:, :, 0] if np.ndim(image) == 2 else out


def _checked_array(image: np.ndarray) -> np.ndarray:
    """``image`` as ``(H, W, C)``; ``ImageError`` for shapes, dtypes and float values ``upscale`` cannot take."""
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 2, 3, 4) or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ImageError(f"image: expected (H, W) or (H, W, C) with C in 1..4, got shape {arr.shape}")
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all():
            raise ImageError("image: has NaN or infinite values")
        low, high = float(arr.min()), float(arr.max())
        if low < 0 or high > 1:
            raise ImageError(f"image: float values must lie in [0, 1], got {low:g} to {high:g} (divide 8-bit "
                             f"values by 255, 16-bit ones by 65535, or pass the uint8/uint16 array)")
    elif arr.dtype not in (np.uint8, np.uint16):
        raise ImageError(f"image: unsupported dtype {arr.dtype} (uint8, uint16 or float in [0, 1])")
    return arr


def _upscale_alpha(alpha: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Alpha (H, W) in [0, 1] to ``size`` with MATLAB-exact bicubic, clamped to [0, 1]."""
    from ..data.resize import imresize

    up = imresize(alpha.numpy().astype(np.float64), output_size=tuple(int(s) for s in size))
    return torch.from_numpy(np.asarray(up, dtype=np.float32)).clamp_(0, 1)
