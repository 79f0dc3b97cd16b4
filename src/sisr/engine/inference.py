"""Inference: run a network on a batch or an image, whole, tiled or chopped.

``run(model, x)`` maps a float batch in [0, 1] to the super-resolved batch,
clamped to [0, 1], under ``torch.inference_mode``. Options:

* ``tile=N`` (LR pixels) or ``"auto"``: overlapping tiles blended with a
  raised-cosine window. Each tile discards a margin of a quarter of the overlap
  at its inner edges (where the tile's zero padding differs from the real
  neighbourhood) and cross-fades over the middle half, so a network whose
  receptive field reaches less than ``overlap / 4`` LR pixels gives the
  whole-image result to float rounding, and deeper local networks differ by
  far less than one grey level (full EDSR baseline: 0.002). Networks with
  global statistics (RCAN, DeFiAN, ...) see other statistics in each tile and
  differ more; global attention (CSNLN) gets a warning. ``"auto"`` measures
  the network's memory on two small probes, picks the largest tile that fits
  in half of the free memory, and halves it on out-of-memory errors.
* ``chop=True``: the authors' ``forward_chop`` (RCAN, CSNLN, EDSR 1.x):
  recursive 4-quadrant split with ``chop_shave`` overlap, no blending, leaves
  once a quadrant (shave included) is smaller than ``chop_min_size`` LR
  pixels; halves stitched at ``s * (h // 2)``. EDSR-PyTorch master instead
  recurses while ``h * w >= 4 * min_size`` and stitches at ``(s * h) // 2``,
  which breaks on odd sizes; both rules agree on every benchmark image at the
  default 160000. Quadrants are clipped to the input (upstream indexes out of
  range for inputs under ``2 * shave``).
* ``self_ensemble=True``: mean of the 8 flip/transpose variants (EDSR
  ``forward_x8``); each pass is tiled or chopped when asked.
* ``precision``: ``fp32``, ``bf16`` or ``fp16`` through autocast (weights stay
  fp32), only where the model's ``ModelInfo.precisions`` lists it.
* ``channels_last`` / ``compile``: the optimised path (tested to match fp32
  eager within 2/255 on tiny models; see docs/performance.md).

``upscale(image, ...)`` does the same for numpy images and paths, keeping the
image's form (gray, alpha, 8/16 bit).
"""

from __future__ import annotations

import contextlib
import math
import os
import warnings
import weakref
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from tqdm.auto import tqdm

from ..errors import ConfigError, ImageError, SisrError
from ..utils.device import free_memory, is_out_of_memory, release_cached_memory, resolve_device

PRECISIONS: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
DEFAULT_TILE_OVERLAP = 32  # LR pixels between neighbouring tiles
CHOP_SHAVE = 10  # EDSR-PyTorch / RCAN / CSNLN forward_chop defaults
CHOP_MIN_SIZE = 160_000
DEFAULT_MODEL = "defian-s"
FALLBACK_MODEL = "bicubic"
AUTO_MEMORY_FRACTION = 0.5  # share of the free memory an automatic tile may use
_PROBE_SIZES = (16, 32)
_TILE_MULTIPLE = 8


class InferenceOutOfMemory(SisrError):
    """The network does not fit in memory at the requested size."""


def default_model(scale: int) -> tuple[str, str | None]:
    """The model ``upscale`` uses when none is named, and a notice when it is the fallback.

    ``defian-s`` when its shipped weights exist for ``scale``; otherwise
    ``bicubic`` (no trained network is shipped yet).
    """
    from ..weights.pretrained import pretrained_path

    if pretrained_path(DEFAULT_MODEL, scale) is not None:
        return DEFAULT_MODEL, None
    return FALLBACK_MODEL, (f"no shipped weights for {DEFAULT_MODEL} x{scale}: using bicubic interpolation "
                            f"(choose a network with --model/--weights)")


# ----------------------------------------------------------------------------- run


def run(model: nn.Module, x: torch.Tensor, *, self_ensemble: bool = False, tile: int | str | None = None,
        tile_overlap: int | None = None, chop: bool = False, chop_shave: int = CHOP_SHAVE,
        chop_min_size: int = CHOP_MIN_SIZE, chop_round_to_scale: bool = False, precision: str = "fp32",
        channels_last: bool = False, compile: bool = False, progress: bool = False) -> torch.Tensor:
    """Super-resolve a float batch ``(N, C, H, W)`` in [0, 1]; returns ``(N, C, sH, sW)`` in [0, 1].

    The network runs on its own device (the input's for networks without
    parameters); the result is on the input's device. ``chop_round_to_scale``
    rounds chop quadrants up as CSNLN's copy of ``forward_chop`` does
    (``size += s - size % s``). See the module docstring for the options.
    """
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or not x.is_floating_point():
        raise ConfigError("run() expects a float tensor of shape (N, C, H, W) in [0, 1]")
    if tile is not None and chop:
        raise ConfigError("choose tiling (tile=...) or the authors' chop (chop=True), not both")
    device = model_device(model, x.device)
    dtype = check_precision(model, precision, device)
    overlap = DEFAULT_TILE_OVERLAP if tile_overlap is None else int(tile_overlap)
    tiler = _Tiler(tile, overlap, progress, _model_name(model)) if tile is not None else None
    if chop and (chop_shave < 0 or chop_min_size < 1):
        raise ConfigError(f"chop needs shave >= 0 and min_size >= 1 (got {chop_shave}, {chop_min_size})")

    was_training = model.training
    model.eval()
    try:
        runner = _Runner(model, device, dtype, channels_last, compile)
        x = x.float()
        with torch.inference_mode():
            scale = _scale(model, runner, x) if (tiler or chop) else None
            if chop:
                def engine(v):
                    return _chop(runner, v, scale, chop_shave, chop_min_size, chop_round_to_scale)
            elif tiler is not None:
                def engine(v):
                    return tiler(runner, v, scale)
            else:
                def engine(v):
                    return _checked_oom(runner, v, "the whole image")
            if not self_ensemble:
                out = engine(x)
            else:
                out = None
                for k in range(8):
                    y = _undo_dihedral(engine(_dihedral(x, k)), k)
                    out = y if out is None else out.add_(y)
                out = out.div_(8)
            return out.clamp_(0.0, 1.0)
    finally:
        model.train(was_training)


class _Runner:
    """Calls the network: moves the input to its device, autocast, fp32 result on the input's device."""

    def __init__(self, model: nn.Module, device: torch.device, dtype: torch.dtype | None,
                 channels_last: bool, compile: bool):
        self.eager = model
        self.device = device
        self.dtype = dtype
        self.channels_last = channels_last
        if channels_last:
            model.to(memory_format=torch.channels_last)  # in place; values unchanged
        self.fn = _compiled_model(model) if compile else model

    def autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def __call__(self, x: torch.Tensor, fn: Callable | None = None) -> torch.Tensor:
        arg, src = x, x.device
        x = x.to(self.device)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with self.autocast():
            y = (fn or self.fn)(x)
        y = y.float().to(src)
        if y.untyped_storage().data_ptr() == arg.untyped_storage().data_ptr():
            y = y.clone()  # a network that returns its input: results are written in place later
        return y


def _compiled_model(model: nn.Module) -> Callable:
    """``torch.compile(model)``, made once and kept on the module (outside its sub-modules and state_dict)."""
    fn = model.__dict__.get("_sisr_compiled")
    if fn is None:
        fn = torch.compile(model)
        object.__setattr__(model, "_sisr_compiled", fn)
    return fn


def model_device(model: nn.Module, fallback: torch.device | str = "cpu") -> torch.device:
    """Device of the network's first parameter or buffer; ``fallback`` for networks with neither."""
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device(fallback)


def _model_name(model: nn.Module) -> str | None:
    spec = getattr(model, "sisr_spec", None)
    return getattr(spec, "name", None)


def _model_info(model: nn.Module):
    name = _model_name(model)
    if name is None:
        return None
    from ..models import get_info

    return get_info(name)


def check_precision(model: nn.Module, precision: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype for ``precision``; ``ConfigError`` if the model or the device does not support it."""
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision '{precision}'; use {', '.join(PRECISIONS)}")
    info = _model_info(model)
    if info is not None and precision not in info.precisions:
        raise ConfigError(f"model '{info.name}' does not support {precision} (supported: {', '.join(info.precisions)})")
    if precision == "fp16" and device.type == "cpu":
        raise ConfigError("fp16 is not supported on the CPU (use bf16 or fp32, or a GPU)")
    return PRECISIONS[precision]


def _scale(model: nn.Module, runner: _Runner, x: torch.Tensor) -> int:
    """The network's upscaling factor: from its spec, else measured on a small crop."""
    spec = getattr(model, "sisr_spec", None)
    if spec is not None:
        return int(spec.scale)
    probe = x[:1, :, : min(8, x.shape[2]), : min(8, x.shape[3])]
    y = _checked_oom(runner, probe, "a scale probe", runner.eager)
    s = y.shape[-1] // probe.shape[-1]
    if s < 1 or y.shape[-2:] != (probe.shape[-2] * s, probe.shape[-1] * s):
        raise ConfigError(f"cannot tile/chop a network whose output size {tuple(y.shape[-2:])} "
                          f"is not an integer multiple of its input size {tuple(probe.shape[-2:])}")
    return s


# ----------------------------------------------------------------------------- self-ensemble


def _dihedral(x: torch.Tensor, k: int) -> torch.Tensor:
    """Variant k of EDSR's forward_x8: bit 0 flips W, bit 1 flips H, bit 2 transposes (in that order)."""
    if k & 1:
        x = x.flip(-1)
    if k & 2:
        x = x.flip(-2)
    if k & 4:
        x = x.transpose(-2, -1)
    return x.contiguous()


def _undo_dihedral(y: torch.Tensor, k: int) -> torch.Tensor:
    if k & 4:
        y = y.transpose(-2, -1)
    if k & 2:
        y = y.flip(-2)
    if k & 1:
        y = y.flip(-1)
    return y.contiguous()


# ----------------------------------------------------------------------------- chop


def _chop(runner: _Runner, x: torch.Tensor, scale: int, shave: int, min_size: int,
          round_to_scale: bool) -> torch.Tensor:
    """The authors' forward_chop (RCAN / EDSR 1.x stitching; see docs/usage.md for EDSR master)."""
    n, _, h, w = x.shape
    h_half, w_half = h // 2, w // 2
    h_size, w_size = h_half + shave, w_half + shave
    if round_to_scale:  # CSNLN: always adds, even when already a multiple
        h_size += scale - h_size % scale
        w_size += scale - w_size % scale
    h_size, w_size = min(h_size, h), min(w_size, w)  # small images: upstream would index out of range
    if (h_size, w_size) == (h, w):  # the quadrants would be the whole input
        return _checked_oom(runner, x, "chop")
    quads = [x[..., :h_size, :w_size], x[..., :h_size, w - w_size:],
             x[..., h - h_size:, :w_size], x[..., h - h_size:, w - w_size:]]
    if h_size * w_size < min_size:
        outs = [_checked_oom(runner, q, f"chop quadrants of {h_size}x{w_size}") for q in quads]
    else:
        outs = [_chop(runner, q, scale, shave, min_size, round_to_scale) for q in quads]
    H, W, hh, wh = h * scale, w * scale, h_half * scale, w_half * scale
    out = outs[0].new_empty((n, outs[0].shape[1], H, W))
    out[..., :hh, :wh] = outs[0][..., :hh, :wh]
    out[..., :hh, wh:] = outs[1][..., :hh, outs[1].shape[-1] - (W - wh):]
    out[..., hh:, :wh] = outs[2][..., outs[2].shape[-2] - (H - hh):, :wh]
    out[..., hh:, wh:] = outs[3][..., outs[3].shape[-2] - (H - hh):, outs[3].shape[-1] - (W - wh):]
    return out


# ----------------------------------------------------------------------------- tiling


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Tile offsets along one axis: the fewest tiles whose neighbours overlap by >= ``overlap``, evenly spread."""
    if length <= tile:
        return [0]
    n = math.ceil((length - overlap) / (tile - overlap))
    return [(i * (length - tile)) // (n - 1) for i in range(n)]


def tile_window(length: int, has_prev: bool, has_next: bool, overlap: int) -> torch.Tensor:
    """1-D blending weights of one tile (HR pixels): zero margin, raised-cosine ramp, then one.

    The margin is ``overlap // 4`` and the ramp the rest of the overlap minus the
    opposite margin, so two tiles overlapping by exactly ``overlap`` sum to one.
    """
    margin = overlap // 4
    ramp = overlap - 2 * margin
    i = torch.arange(ramp, dtype=torch.float64)
    rise = torch.sin(0.5 * math.pi * (i + 0.5) / max(ramp, 1)) ** 2
    left = torch.ones(length, dtype=torch.float64)
    left[:margin] = 0.0
    left[margin:margin + ramp] = rise[: max(0, min(ramp, length - margin))]
    w = torch.ones(length, dtype=torch.float64)
    if has_prev:
        w = w * left
    if has_next:
        w = w * left.flip(0)
    return w.float()


class _Tiler:
    """Tiled forward with a fixed or automatic tile size (kept across self-ensemble passes)."""

    def __init__(self, tile: int | str, overlap: int, progress: bool, model_name: str | None):
        self.auto = isinstance(tile, str)
        if self.auto and tile != "auto":
            raise ConfigError(f"tile must be a number of LR pixels or 'auto', got '{tile}'")
        if overlap < 0:
            raise ConfigError(f"tile overlap must be >= 0, got {overlap}")
        if not self.auto:
            tile = int(tile)
            if tile < 2 * overlap or tile < 1:
                raise ConfigError(f"tile ({tile}) must be at least twice the tile overlap ({overlap}) and >= 1")
        self.tile: int | None = None if self.auto else tile
        self.chosen = False
        self.overlap = overlap
        self.progress = progress
        self.model_name = model_name

    def __call__(self, runner: _Runner, x: torch.Tensor, scale: int) -> torch.Tensor:
        if not self.auto:
            return self._tiled(runner, x, scale, self.tile)
        if not self.chosen:
            self.tile = _auto_tile(runner, x, scale, self.overlap)
            self.chosen = True
        while True:
            try:
                return self._tiled(runner, x, scale, self.tile)
            except Exception as exc:  # noqa: BLE001 - only out-of-memory errors are retried
                if not is_out_of_memory(exc) and not isinstance(exc, InferenceOutOfMemory):
                    raise
                release_cached_memory(runner.device)
                current = self.tile or max(x.shape[-2:])
                smaller = (current // 2) // _TILE_MULTIPLE * _TILE_MULTIPLE or current // 2
                if smaller < max(2 * self.overlap, 1):
                    raise InferenceOutOfMemory(
                        f"out of memory on {runner.device} even with {current}-pixel tiles; "
                        f"use a smaller --tile-overlap, --precision bf16/fp16 or another device") from None
                self.tile = smaller

    def _tiled(self, runner: _Runner, x: torch.Tensor, scale: int, tile: int | None) -> torch.Tensor:
        n, _, h, w = x.shape
        th, tw = (h, w) if tile is None else (min(tile, h), min(tile, w))
        ys, xs = tile_starts(h, th, self.overlap), tile_starts(w, tw, self.overlap)
        if len(ys) * len(xs) == 1:
            return _checked_oom(runner, x, "the whole image")
        if self.model_name is not None:
            _warn_if_global(self.model_name)
        ov = self.overlap * scale
        wy = {y0: tile_window(th * scale, y0 > 0, y0 + th < h, ov).to(x.device) for y0 in ys}
        wx = {x0: tile_window(tw * scale, x0 > 0, x0 + tw < w, ov).to(x.device) for x0 in xs}
        out = weight = None
        bar = tqdm(total=len(ys) * len(xs), desc="tiles", unit="tile", leave=False,
                   disable=None if self.progress else True)
        with bar:
            for y0 in ys:
                for x0 in xs:
                    y = _checked_oom(runner, x[..., y0:y0 + th, x0:x0 + tw], f"{tile}-pixel tiles")
                    if y.shape[-2:] != (th * scale, tw * scale):
                        raise ConfigError(f"tile output {tuple(y.shape[-2:])} is not x{scale} of the tile {(th, tw)}")
                    if out is None:
                        out = x.new_zeros((n, y.shape[1], h * scale, w * scale))
                        weight = x.new_zeros((1, 1, h * scale, w * scale))
                    win = wy[y0][:, None] * wx[x0][None, :]
                    ry, rx = slice(y0 * scale, (y0 + th) * scale), slice(x0 * scale, (x0 + tw) * scale)
                    out[..., ry, rx] += y * win
                    weight[..., ry, rx] += win
                    bar.update()
        return out.div_(weight)


def _checked_oom(runner: _Runner, x: torch.Tensor, what: str, fn: Callable | None = None) -> torch.Tensor:
    """Run the network; an allocation failure becomes a one-line ``InferenceOutOfMemory``."""
    try:
        return runner(x, fn)
    except Exception as exc:  # noqa: BLE001 - re-raised unless it is an allocation failure
        if not is_out_of_memory(exc):
            raise
        release_cached_memory(runner.device)
        raise InferenceOutOfMemory(
            f"out of memory on {runner.device} with {what} (input {x.shape[-2]}x{x.shape[-1]}); "
            f"use --tile auto or a smaller --tile") from None


def _warn_if_global(name: str) -> None:
    from ..models import get_info
    from ..models.registry import TILING_GLOBAL_ATTENTION

    if get_info(name).tiling == TILING_GLOBAL_ATTENTION:
        warnings.warn(f"{name} attends over the whole image: tiling limits its attention to each tile and "
                      f"changes the result (use the whole image, or chop=True for the authors' protocol)",
                      UserWarning, stacklevel=6)  # the caller of run()


def _auto_tile(runner: _Runner, x: torch.Tensor, scale: int, overlap: int) -> int | None:
    """Largest tile (None = whole image) whose estimated memory fits in a share of the free memory."""
    n, c, h, w = x.shape
    linear, quadratic = estimate_memory(runner, c)
    budget = AUTO_MEMORY_FRACTION * free_memory(runner.device)
    if x.device == runner.device:  # the output canvas lives there too
        budget -= (n * c + 1) * h * w * scale * scale * 4
    per_image = budget / max(n, 1)
    if quadratic > 0:
        pixels = (-linear + math.sqrt(linear * linear + 4 * quadratic * max(per_image, 0))) / (2 * quadratic)
    else:
        pixels = per_image / max(linear, 1e-9)
    if pixels >= h * w:
        return None
    side = int(math.sqrt(max(pixels, 0))) // _TILE_MULTIPLE * _TILE_MULTIPLE
    return max(side, 2 * overlap, _TILE_MULTIPLE)


def estimate_memory(runner: _Runner, channels: int = 3) -> tuple[float, float]:
    """Peak activation memory of one image as ``linear * P + quadratic * P**2`` bytes (P = LR pixels).

    Measured on two small square probes (CUDA: the allocator's peak; elsewhere:
    the live tensors the operators allocate). The quadratic term captures
    attention over all pixel pairs.
    """
    points = []
    for side in _PROBE_SIZES:
        probe = torch.rand(1, channels, side, side, generator=torch.Generator().manual_seed(side))
        try:
            points.append((side * side, _peak_bytes(runner, probe)))
        except Exception as exc:  # noqa: BLE001 - re-raised unless it is an allocation failure
            if not is_out_of_memory(exc):
                raise
            raise InferenceOutOfMemory(f"out of memory on {runner.device} already for a {side}x{side} probe") from None
    (p1, m1), (p2, m2) = points
    quadratic = (m2 * p1 - m1 * p2) / (p1 * p2 * (p2 - p1))
    linear = (m1 - quadratic * p1 * p1) / p1
    if quadratic <= 0 or linear <= 0:
        return max(m1 / p1, m2 / p2), 0.0
    return linear, quadratic


def _peak_bytes(runner: _Runner, probe: torch.Tensor) -> int:
    dev = runner.device
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        base = torch.cuda.memory_allocated(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        runner(probe.to(dev), runner.eager)
        torch.cuda.synchronize(dev)
        return max(torch.cuda.max_memory_allocated(dev) - base, 1)
    with _LiveBytes() as tracker:
        runner(probe, runner.eager)
    return max(tracker.peak, 1)


class _LiveBytes(TorchDispatchMode):
    """Peak bytes of tensors allocated by operators (views and in-place results are not new memory)."""

    def __init__(self):
        super().__init__()
        self.live = 0
        self.peak = 0

    def _free(self, nbytes: int) -> None:
        self.live -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {id(a) for a in tree_leaves((args, kwargs)) if isinstance(a, torch.Tensor)}
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor) and id(t) not in inputs and not t._is_view():
                nbytes = t.untyped_storage().nbytes()
                self.live += nbytes
                self.peak = max(self.peak, self.live)
                weakref.finalize(t, self._free, nbytes)
        return out


# ----------------------------------------------------------------------------- numpy images


def resolve_model(model: str | os.PathLike | nn.Module | None = None, scale: int | None = None, *,
                  weights: str | os.PathLike | None = None, device: str | torch.device = "auto",
                  notify: Callable[[str], None] | None = None) -> nn.Module:
    """The network ``upscale`` uses: a module as given, a registry name or a weights file, or the default.

    A module stays on its device when ``device="auto"`` and is moved otherwise.
    ``notify`` receives the one-line notice of the default-model rule (default:
    a ``UserWarning``).
    """
    from .loading import load_model

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
            channels_last: bool = False, compile: bool = False, progress: bool = False) -> np.ndarray:
    """Super-resolve a numpy image (or an image file) and return a numpy image of the same form.

    ``image``: ``(H, W)`` or ``(H, W, C)`` with C = 1 gray, 2 gray+alpha, 3 RGB,
    4 RGBA; uint8, uint16 (kept, through float32) or float in [0, 1] (float32
    out). Gray runs through the network as RGB (the gray value in all three
    channels) and is brought back with the BT.601 luma weights; alpha is
    upscaled separately with MATLAB-exact bicubic interpolation and clamped.
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
                         compile=compile, progress=progress)


GRAY_LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601, as PIL's convert("L")


def rgb_to_gray(y: torch.Tensor) -> torch.Tensor:
    """``(3, H, W)`` -> ``(1, H, W)`` with the BT.601 luma weights (how gray images come back from RGB)."""
    return (y * torch.tensor(GRAY_LUMA, dtype=y.dtype, device=y.device).view(3, 1, 1)).sum(0, keepdim=True)


def upscale_array(image: np.ndarray, net: nn.Module, **run_options) -> np.ndarray:
    """``upscale`` for a numpy image and a ready network; ``run_options`` go to :func:`run`."""
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
    alpha = arr[:, :, -1] if channels in (2, 4) else None

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
    if alpha is not None:
        a = _upscale_alpha(to_tensor(alpha[:, :, None])[0], y.shape[-2:])
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
