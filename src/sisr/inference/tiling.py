"""Tiled inference: tile layout, raised-cosine blending, automatic tile size from a memory estimate."""

from __future__ import annotations

import math
import warnings
import weakref

import torch
from tqdm.auto import tqdm

from ..errors import ConfigError
from ..utils.device import free_memory, is_out_of_memory, release_cached_memory
from ..utils.memory import PeakMemory
from .network import InferenceOutOfMemory, Runner, call_checked
from .options import DEFAULT_TILE_OVERLAP, RunOptions

__all__ = ["DEFAULT_TILE_OVERLAP", "Tiler", "tile_starts", "tile_window", "estimate_memory"]
AUTO_MEMORY_FRACTION = 0.5  # share of the free memory an automatic tile may use
_PROBE_SIZES = (16, 32)
_TILE_MULTIPLE = 8


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


class Tiler:
    """Tiled forward with a fixed or automatic tile size (kept across self-ensemble passes)."""

    def __init__(self, options: RunOptions, model_name: str | None):
        self.auto = options.tile == "auto"  # the sizes were checked when the options were made
        self.tile: int | None = None if self.auto else int(options.tile)
        self.chosen = False
        self.overlap = options.tile_overlap
        self.progress = options.progress
        self.model_name = model_name

    def __call__(self, runner: Runner, x: torch.Tensor, scale: int) -> torch.Tensor:
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

    def _tiled(self, runner: Runner, x: torch.Tensor, scale: int, tile: int | None) -> torch.Tensor:
        n, _, h, w = x.shape
        th, tw = (h, w) if tile is None else (min(tile, h), min(tile, w))
        ys, xs = tile_starts(h, th, self.overlap), tile_starts(w, tw, self.overlap)
        if len(ys) * len(xs) == 1:
            return call_checked(runner, x, "the whole image")
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
                    y = call_checked(runner, x[..., y0:y0 + th, x0:x0 + tw], f"{tile}-pixel tiles")
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


def _warn_if_global(name: str) -> None:
    from ..models import get_info
    from ..models.registry import TILING_GLOBAL_ATTENTION

    if get_info(name).capabilities.tiling == TILING_GLOBAL_ATTENTION:
        warnings.warn(f"{name} attends over the whole image: tiling limits its attention to each tile and "
                      f"changes the result (use the whole image, or chop=True for the authors' protocol)",
                      UserWarning, stacklevel=6)  # the caller of run()


def _auto_tile(runner: Runner, x: torch.Tensor, scale: int, overlap: int) -> int | None:
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


def estimate_memory(runner: Runner, channels: int = 3) -> tuple[float, float]:
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


def _peak_bytes(runner: Runner, probe: torch.Tensor) -> int:
    dev = runner.device
    if dev.type == "cuda":
        with PeakMemory(dev) as mem:
            runner(probe.to(dev), runner.eager)
        return max(mem.bytes, 1)
    with _live_bytes_tracker() as tracker:
        runner(probe, runner.eager)
    return max(tracker.peak, 1)


def _live_bytes_tracker():
    """A dispatch mode counting the peak bytes of tensors allocated by operators (views and in-place
    results are not new memory). Built on first use: it rests on torch's private dispatch API."""
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_leaves

    class LiveBytes(TorchDispatchMode):
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

    return LiveBytes()
