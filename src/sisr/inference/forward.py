"""Inference: run a network on a batch or an image, whole, tiled or chopped.

``run(model, x, options)`` maps a float batch in [0, 1] to the super-resolved batch,
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
  fp32), only where the model's ``ModelInfo.capabilities.precisions`` lists it.
* ``backend``: ``auto`` and ``eager`` (the module as it is, in the memory layout it was loaded in:
  ``sisr.weights.resolve`` loads CPU networks in channels_last), ``compile`` (a cached AOTInductor
  package on the CPU, torch.compile on a GPU) or ``onnxruntime`` (see ``backends.py``; tested to
  match eager fp32 within 1/255). ``channels_last=True`` converts a contiguous module once, in place.

Every option travels in one :class:`~sisr.inference.options.RunOptions`, checked when it is made.

``upscale(image, ...)`` does the same for numpy images and paths, keeping the
image's form (gray, alpha, 8/16 bit).
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError, ImageError
from ..weights.handle import identify
from .network import Runner, call_checked, model_device, model_name
from .options import CHOP_MIN_SIZE, CHOP_SHAVE, RunOptions
from .tiling import Tiler

__all__ = ["run", "RunOptions", "CHOP_SHAVE", "CHOP_MIN_SIZE"]


def run(model: nn.Module, x: torch.Tensor, options: RunOptions | None = None, /, **keywords) -> torch.Tensor:
    """Super-resolve a float batch ``(N, C, H, W)`` in [0, 1]; returns ``(N, C, sH, sW)`` in [0, 1].

    ``options``: a :class:`RunOptions`; keywords (``tile=64``, ``self_ensemble=True``, ...) build or
    amend one. The network runs on its own device (the input's for networks without parameters) in
    its own memory layout; the result is on the input's device. A non-finite input is an ``ImageError``.
    """
    options = RunOptions.build(options, **keywords)
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or not x.is_floating_point():
        raise ConfigError("run() expects a float tensor of shape (N, C, H, W) in [0, 1]")
    if not bool(torch.isfinite(x).all()):
        raise ImageError("run(): the input has NaN or infinite values")
    device = model_device(model, x.device)
    tiler = Tiler(options, model_name(model)) if options.tile is not None else None
    was_training = model.training
    model.eval()
    try:
        pixels = options.tile ** 2 if isinstance(options.tile, int) else x.shape[-2] * x.shape[-1]
        runner = Runner(model, device, options, pixels)
        x = x.float()
        with torch.inference_mode():
            engine = _engine(options, runner, tiler, _scale(model, runner, x) if (tiler or options.chop) else 0)
            if not options.self_ensemble:
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


def _engine(options: RunOptions, runner: Runner, tiler: Tiler | None, scale: int):
    """One forward over a batch: chopped, tiled or whole."""
    if options.chop:
        return lambda v: _chop(runner, v, scale, options.chop_shave, options.chop_min_size,
                               options.chop_round_to_scale)
    if tiler is not None:
        return lambda v: tiler(runner, v, scale)
    return lambda v: call_checked(runner, v, "the whole image")


def _scale(model: nn.Module, runner: Runner, x: torch.Tensor) -> int:
    """The network's upscaling factor: from its spec, else measured on a small crop."""
    scale = identify(model).scale
    if scale is not None:
        return scale
    probe = x[:1, :, : min(8, x.shape[2]), : min(8, x.shape[3])]
    y = call_checked(runner, probe, "a scale probe", runner.eager)
    s = y.shape[-1] // probe.shape[-1]
    if s < 1 or y.shape[-2:] != (probe.shape[-2] * s, probe.shape[-1] * s):
        raise ConfigError(f"cannot tile/chop a network whose output size {tuple(y.shape[-2:])} "
                          f"is not an integer multiple of its input size {tuple(probe.shape[-2:])}")
    return s


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


def _chop(runner: Runner, x: torch.Tensor, scale: int, shave: int, min_size: int,
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
        return call_checked(runner, x, "chop")
    quads = [x[..., :h_size, :w_size], x[..., :h_size, w - w_size:],
             x[..., h - h_size:, :w_size], x[..., h - h_size:, w - w_size:]]
    if h_size * w_size < min_size:
        outs = [call_checked(runner, q, f"chop quadrants of {h_size}x{w_size}") for q in quads]
    else:
        outs = [_chop(runner, q, scale, shave, min_size, round_to_scale) for q in quads]
    H, W, hh, wh = h * scale, w * scale, h_half * scale, w_half * scale
    out = outs[0].new_empty((n, outs[0].shape[1], H, W))
    out[..., :hh, :wh] = outs[0][..., :hh, :wh]
    out[..., :hh, wh:] = outs[1][..., :hh, outs[1].shape[-1] - (W - wh):]
    out[..., hh:, :wh] = outs[2][..., outs[2].shape[-2] - (H - hh):, :wh]
    out[..., hh:, wh:] = outs[3][..., outs[3].shape[-2] - (H - hh):, outs[3].shape[-1] - (W - wh):]
    return out
