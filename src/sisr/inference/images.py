"""Images through a network: the default model, model resolution, numpy arrays and files (gray, alpha, 16 bit)."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError, ImageError
from ..utils.device import resolve_device
from ..weights.loading import load_model
from ..weights.pretrained import pretrained_path
from .forward import CHOP_MIN_SIZE, CHOP_SHAVE, run

DEFAULT_MODEL = "defian-s"
FALLBACK_MODEL = "bicubic"


def default_model(scale: int) -> tuple[str, str | None]:
    """The model ``upscale`` uses when none is named, and a notice when it is the fallback.

    ``defian-s`` when its shipped weights exist for ``scale``; otherwise
    ``bicubic`` (no trained network is shipped yet).
    """
    if pretrained_path(DEFAULT_MODEL, scale) is not None:
        return DEFAULT_MODEL, None
    return FALLBACK_MODEL, (f"no shipped weights for {DEFAULT_MODEL} x{scale}: using bicubic interpolation "
                            f"(choose a network with --model/--weights)")

def resolve_model(model: str | os.PathLike | nn.Module | None = None, scale: int | None = None, *,
                  weights: str | os.PathLike | None = None, device: str | torch.device = "auto",
                  notify: Callable[[str], None] | None = None) -> nn.Module:
    """The network ``upscale`` uses: a module as given, a registry name or a weights file, or the default.

    A module stays on its device when ``device="auto"`` and is moved otherwise.
    ``notify`` receives the one-line notice of the default-model rule (default:
    a ``UserWarning``).
    """
    if isinstance(model, nn.Module):
        if weights is not None:
            raise ConfigError("weights= applies to a model name, not to a module")
        own = getattr(getattr(model, "sisr_spec", None), "scale", None)
        if scale is not None and own is not None and int(scale) != int(own):
            raise ConfigError(f"the module upscales x{own}, not x{scale}")
        if str(device) != "auto":
            model.to(resolve_device(device))
        return model.eval()
    if model is None and weights is None:
        model, notice = default_model(int(scale or 2))
        if notice:
            (notify or (lambda m: warnings.warn(m, UserWarning, stacklevel=3)))(notice)
        return load_model(model, int(scale or 2), device=device)
    if model is None:
        return load_model(weights, scale, device=device)
    return load_model(model, scale, weights=weights, device=device)


def upscale(image: np.ndarray | str | os.PathLike, model: str | os.PathLike | nn.Module | None = None,
            scale: int | None = None, *, weights: str | os.PathLike | None = None,
            device: str | torch.device = "auto", tile: int | str | None = None, tile_overlap: int | None = None,
            chop: bool = False, chop_shave: int = CHOP_SHAVE, chop_min_size: int = CHOP_MIN_SIZE,
            chop_round_to_scale: bool = False, self_ensemble: bool = False, precision: str = "fp32",
            channels_last: bool = False, compile: bool = False, progress: bool = False,
            alpha: str = "bicubic", backend: str = "auto") -> np.ndarray:
    """Super-resolve a numpy image (or an image file) and return a numpy image of the same form.

    ``image``: ``(H, W)`` or ``(H, W, C)`` with C = 1 gray, 2 gray+alpha, 3 RGB,
    4 RGBA; uint8, uint16 (kept, through float32) or float in [0, 1] (float32
    out). Gray runs through the network as RGB (the gray value in all three
    channels) and is brought back with the BT.601 luma weights; alpha is
    upscaled separately with MATLAB-exact bicubic interpolation and clamped
    (``alpha="model"``: through the network as gray instead).
    ``model``: registry name, weights file or ``nn.Module`` (default: see
    :func:`default_model`); ``scale`` defaults to the weights file's, else 2.
    Loading a network per call is slow: for many images pass a module from
    :func:`sisr.load_model`.
    """
    if isinstance(image, (str, os.PathLike)):
        from ..data.io import read_image

        image = read_image(Path(image))
    net = resolve_model(model, scale, weights=weights, device=device)
    return upscale_array(image, net, tile=tile, tile_overlap=tile_overlap, chop=chop, chop_shave=chop_shave,
                         chop_min_size=chop_min_size, chop_round_to_scale=chop_round_to_scale,
                         self_ensemble=self_ensemble, precision=precision, channels_last=channels_last,
                         compile=compile, progress=progress, alpha=alpha, backend=backend)


GRAY_LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601, as PIL's convert("L")


def rgb_to_gray(y: torch.Tensor) -> torch.Tensor:
    """``(3, H, W)`` -> ``(1, H, W)`` with the BT.601 luma weights (how gray images come back from RGB)."""
    return (y * torch.tensor(GRAY_LUMA, dtype=y.dtype, device=y.device).view(3, 1, 1)).sum(0, keepdim=True)


ALPHA_MODES = ("bicubic", "model")


def upscale_array(image: np.ndarray, net: nn.Module, *, alpha: str = "bicubic", **run_options) -> np.ndarray:
    """``upscale`` for a numpy image and a ready network; ``run_options`` go to :func:`run`.

    ``alpha``: ``bicubic`` (MATLAB-exact, clamped) or ``model`` (the alpha plane through the
    network as a gray image).
    """
    if alpha not in ALPHA_MODES:
        raise ConfigError(f"alpha must be one of {', '.join(ALPHA_MODES)}, got '{alpha}'")
    from ..data.io import image_to_tensor, tensor_to_image

    arr = np.asarray(image)
    flat = arr.ndim == 2
    if flat:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 2, 3, 4) or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ImageError(f"image: expected (H, W) or (H, W, C) with C in 1..4, got shape {arr.shape}")
    is_float = arr.dtype.kind == "f"
    if not is_float and arr.dtype not in (np.uint8, np.uint16):
        raise ImageError(f"image: unsupported dtype {arr.dtype} (uint8, uint16 or float in [0, 1])")
    channels = arr.shape[2]
    gray = channels <= 2
    color = arr[:, :, :1] if gray else arr[:, :, :3]
    alpha_plane = arr[:, :, -1] if channels in (2, 4) else None

    def to_tensor(a: np.ndarray) -> torch.Tensor:
        if is_float:
            return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).permute(2, 0, 1).clamp(0, 1)
        return image_to_tensor(a)

    x = to_tensor(color)
    if gray:
        x = x.expand(3, -1, -1)
    y = run(net, x[None].contiguous(), **run_options)[0]
    if gray:
        y = rgb_to_gray(y)
    y = y.cpu()
    if alpha_plane is not None:
        a = to_tensor(alpha_plane[:, :, None])
        if alpha == "model":
            a = rgb_to_gray(run(net, a.expand(3, -1, -1)[None].contiguous(), **run_options)[0]).cpu()[0].clamp(0, 1)
        else:
            a = _upscale_alpha(a[0], y.shape[-2:])
        y = torch.cat([y, a[None]], 0)
    if is_float:
        out = y.clamp(0, 1).permute(1, 2, 0).numpy().astype(np.float32)
    else:
        out = tensor_to_image(y, arr.dtype)
    return out[:, :, 0] if flat else out


def _upscale_alpha(alpha: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Alpha (H, W) in [0, 1] to ``size`` with MATLAB-exact bicubic, clamped to [0, 1]."""
    from ..data.resize import imresize

    up = imresize(alpha.numpy().astype(np.float64), output_size=tuple(int(s) for s in size))
    return torch.from_numpy(np.asarray(up, dtype=np.float32)).clamp_(0, 1)
