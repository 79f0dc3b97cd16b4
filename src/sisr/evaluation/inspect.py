"""The papers' interpretability figures, read from a network by forward hooks (the networks are unchanged).

DeFiAN (Huang et al., TIP 2021), per DeFiAM (``SingleModule``):

* ``hessian`` (Fig. 1): for each MSHF kernel k, the channel mean of the largest eigenvalue of the scaled
  Hessian of the module's residue (the RCAB chain's output): lambda_k. The hook on the RCAB chain calls
  the module's own ``MSHF`` (its ``forward``: the paper's formula); the network computes the same mean in
  fewer passes (``MSHF.channel_mean``) and feeds it to the DiEnDec (tests check both are equal).
* ``attention`` (Fig. 1, 10): the channel mean of the gate ``a`` of the residue (``output = x + resin * a``):
  ``sigmoid(DAC(v, x))`` from the ``DAC``'s output; in the ablation variants without a DAC the sigmoid of
  the DiEnDec's output or of the mean lambda map, 1 without an attention branch. Each is checked against
  the module's output as it runs (a module gated otherwise is an error, never a wrong map).
* ``endec`` (Fig. 13): the features of one ``DiEnDec`` (after each dilated (de)convolution and its ReLU),
  its input (the lambda maps) and its output v.

CSNLN (Mei et al., CVPR 2020), ``correlation`` (Fig. 6), for one query pixel of the input and every
recurrent step: the in-scale correlation (the ``NonLocalAttention``'s softmax row: weights over the
positions of its feature map) and the cross-scale one (the ``CrossScaleAttention``'s softmax over the
1/s-scale key patches). Both are intermediates of the modules' forward, so the hooks recompute them from
the module's input with the module's own layers (tests rebuild each module's output from them).

CRAN (Zhang et al., ICCV 2021), ``diversity`` (Fig. 8, over a set of images): per image and per ``CRAC``, the
Euclidean distance between its attention mask F_A (``W* = W * F_A``, from ``CRAC.mask`` of the layer's input)
and the all-ones tensor: how far each input modulates the kernels. Constant distances would mean W* does not
depend on the input.

>>> net = load_model("defian-s", scale=2)
>>> maps = defian_maps(net, image_batch(read_image("x.png")))   # arrays: maps.hessian, maps.attention, ...
>>> figures = render(net, read_image("x.png"), ("hessian", "attention"), label="defian-s x2, x.png")
>>> write_figures(figures, "figs", "x")                          # figs/x-hessian.png, figs/x-attention.png
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from torch import nn

from ..data.arrays import as_hwc, image_to_tensor, split_alpha
from ..errors import ConfigError, ModelError
from ..models.cran import CRAC
from ..models.csnln import CrossScaleAttention, NonLocalAttention
from ..models.defian import DAC, MSHF, DiEnDec, SingleModule
from ..utils.fs import check_outputs
from ..utils.plot import heatmap, line_chart, quantize, save_png, tile_grid

DEFIAN_WHATS = ("hessian", "attention", "endec")
CSNLN_WHATS = ("correlation",)
CRAN_WHATS = ("diversity",)  # over a set of images (the others: one image)
WHATS = DEFIAN_WHATS + CSNLN_WHATS + CRAN_WHATS
ROBUST = 1.0  # heat maps span the 1st..99th percentile of each map
NOTE = "each map scaled to its own 1st-99th percentile (viridis: dark = low, yellow = high)"


@dataclass
class DefianMaps:
    """Maps of every DeFiAM (index 0 = the first module), float32 arrays at the input's size (H, W).

    ``attention`` is 1 for a module without an attention branch (the paper's Fig. 10(a)); ``hessian`` is
    None without MSHF. ``endec`` layers are at their own resolution (the hourglass variant pools).
    """

    kernels: tuple[int, ...] = ()  # MSHF kernel of each lambda map
    hessian: np.ndarray | None = None  # (modules, kernels, H, W)
    attention: np.ndarray | None = None  # (modules, H, W); (modules, C, H, W) with channel_mean=False
    endec_module: int | None = None  # 0-based DeFiAM of ``endec``
    endec: list[tuple[str, np.ndarray]] = field(default_factory=list)  # (layer, (channels, h, w)) in order


@dataclass
class StageCorrelation:
    """One attention stage (CSNLN x4 has two): the maps of every recurrent step for one query."""

    name: str  # module path of the module holding the attentions (CSNLN: the mutual-projected fusion)
    factor: int  # the cross-scale attention's s
    query: tuple[int, int]  # (x, y) at this stage's resolution
    resolution: int = 1  # this stage's size / the input's
    in_scale: list[np.ndarray] = field(default_factory=list)  # per step (h, w), padded size: softmax over positions
    cross_scale: list[np.ndarray] = field(default_factory=list)  # per step (h / s, w / s): softmax over keys


def available(net: nn.Module) -> tuple[str, ...]:
    """The maps ``net`` has modules for (every DeFiAM has a gate, 1 without an attention branch)."""
    kinds = {type(m) for m in net.modules()}
    have = {"hessian": MSHF in kinds, "attention": SingleModule in kinds, "endec": DiEnDec in kinds,
            "correlation": bool(kinds & {CrossScaleAttention, NonLocalAttention}), "diversity": CRAC in kinds}
    return tuple(w for w in WHATS if have[w])


def parse_what(text: str | Sequence[str], net: nn.Module | None = None) -> tuple[str, ...]:
    """``"hessian,attention"``, ``"all"`` (what ``net`` has) or a list; ``ConfigError`` naming a bad one."""
    items = [w.strip().lower() for w in (text.split(",") if isinstance(text, str) else text) if w.strip()]
    if not items:
        raise ConfigError(f"--what: empty; choose from {', '.join(WHATS)} or all")
    for item in items:
        if item not in WHATS + ("all",):
            raise ConfigError(f"--what '{item}': unknown; choose from {', '.join(WHATS)} or all")
    if net is None:
        return tuple(dict.fromkeys(items))
    have = available(net)
    if "all" in items:
        if not have:
            raise ConfigError("--what all: this network has no DeFiAM, non-local attention or CRAC modules to inspect")
        return have
    for item in items:
        if item not in have:
            family = ("a DeFiAN model" if item in DEFIAN_WHATS else "a CSNLN model" if item in CSNLN_WHATS
                      else "a CRAN-family model")
            choice = f"it has: {', '.join(have)}" if have else "it has nothing to inspect"
            raise ConfigError(f"--what {item}: needs {family} with those modules ({choice})")
    return tuple(dict.fromkeys(items))


def parse_query(text: str) -> tuple[int, int]:
    """``"X,Y"`` (pixel column and row of the input, from 0) -> ``(x, y)``."""
    parts = text.replace(" ", "").split(",")
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise ConfigError(f"--query '{text}': expected X,Y (pixel column and row of the input image, from 0)")
    return int(parts[0]), int(parts[1])


def check_query(query: tuple[int, int], size: tuple[int, int], name: str = "the image") -> None:
    """``ConfigError`` unless ``(x, y)`` lies in an image of ``size`` = (H, W)."""
    (x, y), (h, w) = query, size
    if not (0 <= x < w and 0 <= y < h):
        raise ConfigError(f"--query {x},{y}: outside {name} ({w}x{h}: X 0..{w - 1}, Y 0..{h - 1})")


def image_batch(image: np.ndarray) -> torch.Tensor:
    """A ``read_image`` array as a ``(1, 3, H, W)`` float batch: gray repeated, alpha dropped."""
    color, _ = split_alpha(as_hwc(image, "image"))
    x = image_to_tensor(color)
    return x.expand(3, -1, -1)[None].contiguous()


@contextlib.contextmanager
def _hooks(pairs: Sequence[tuple[nn.Module, Callable]]) -> Iterator[None]:
    handles = [module.register_forward_hook(fn) for module, fn in pairs]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _run(net: nn.Module, x: torch.Tensor, pairs: Sequence[tuple[nn.Module, Callable]]) -> None:
    device = next((p.device for p in net.parameters()), torch.device("cpu"))
    with _hooks(pairs), torch.no_grad():
        net(x.to(device))


def _array(t: torch.Tensor) -> np.ndarray:
    return t.detach().to("cpu", torch.float32).numpy().copy()


def _kernel(mshf: MSHF) -> int:
    return 2 * int(mshf.grad_xx.dilation[0]) + 1


def _defiams(net: nn.Module) -> list[SingleModule]:
    modules = [m for m in net.modules() if isinstance(m, SingleModule)]
    if not modules:
        raise ConfigError("this network has no DeFiAM modules (hessian, attention and endec need a DeFiAN model)")
    return modules


def check_module(net: nn.Module, module: int) -> None:
    """``ConfigError`` unless ``module`` (1-based) is one of the network's DeFiAMs."""
    count = len(_defiams(net))
    if not 1 <= module <= count:
        raise ConfigError(f"--module {module}: the network has DeFiAMs 1..{count}")


class _DefiamProbe:
    """Hooks of one DeFiAM: its residue, lambda maps, DiEnDec / DAC outputs, and the gate it applied.

    The gate ``a`` (``output = x + resin * a``) is ``sigmoid`` of the DAC's output, or of the DiEnDec's
    output without a DAC, or of the mean lambda map without either, or 1 without an attention branch
    (the ablation variants of docs/models/defian.md); it is checked against the module's output.
    """

    def __init__(self, index: int, module: SingleModule, what: Sequence[str], channel_mean: bool):
        self.index, self.module, self.channel_mean = index, module, channel_mean
        self.mshfs = sorted((m for m in module.modules() if isinstance(m, MSHF)), key=_kernel)
        self.want_hessian, self.want_attention = "hessian" in what, "attention" in what
        self.resin = self.lambdas = self.gate_input = None
        self.hessian: np.ndarray | None = None
        self.attention: np.ndarray | None = None

    def hooks(self) -> list[tuple[nn.Module, Callable]]:
        pairs: list[tuple[nn.Module, Callable]] = [(self.module.body_block, self.on_residue)]
        if self.want_attention:
            pairs += [(m, self.on_gate_input) for m in self.module.modules() if isinstance(m, (DiEnDec, DAC))]
            pairs.append((self.module, self.on_output))
        return pairs

    def on_residue(self, _m, _inp, resin: torch.Tensor) -> None:
        self.resin = resin
        if self.mshfs and (self.want_hessian or self.want_attention):
            self.lambdas = torch.cat([m(resin).mean(dim=1, keepdim=True) for m in self.mshfs], dim=1)
            self.hessian = _array(self.lambdas[0]) if self.want_hessian else None

    def on_gate_input(self, _m, _inp, out: torch.Tensor) -> None:
        self.gate_input = out.float().clone()  # the DAC runs after the DiEnDec: the last one is the gate's

    def on_output(self, _m, inp: tuple, out: torch.Tensor) -> None:
        x, resin = inp[0], self.resin
        if self.gate_input is not None:
            gate = self.gate_input.sigmoid()
        elif self.lambdas is not None:
            gate = self.lambdas.float().mean(dim=1, keepdim=True).sigmoid()
        else:
            gate = torch.ones_like(x[:, :1], dtype=torch.float32)
        rebuilt = torch.addcmul(x.float(), resin.float(), gate)
        if not torch.allclose(rebuilt, out.float(), rtol=1e-4, atol=1e-4 * (1 + float(out.abs().max()))):
            raise ModelError(f"DeFiAM {self.index + 1}: its output is not x + resin * sigmoid(DAC / DiEnDec / "
                             "mean-map output); sisr inspect cannot recover this module's attention")
        gate = gate[0].expand(x.shape[1], -1, -1)
        self.attention = _array(gate.mean(dim=0) if self.channel_mean else gate)
        self.resin = self.lambdas = self.gate_input = None


def defian_maps(net: nn.Module, x: torch.Tensor, what: Sequence[str] = DEFIAN_WHATS, *,
                endec_module: int | None = None, channel_mean: bool = True) -> DefianMaps:
    """The DeFiAN maps of ``what`` for a ``(1, 3, H, W)`` batch in [0, 1].

    ``endec_module``: the 0-based DeFiAM whose DiEnDec features are kept (default: the third, the
    paper's Fig. 13, or the last when there are fewer). ``channel_mean=False`` keeps the attention of
    every channel.
    """
    modules = _defiams(net)
    if endec_module is None:
        endec_module = min(2, len(modules) - 1)
    check_module(net, endec_module + 1)
    probes = [_DefiamProbe(i, m, what, channel_mean) for i, m in enumerate(modules)]
    found = DefianMaps(kernels=tuple(_kernel(m) for m in probes[0].mshfs),
                       endec_module=endec_module if "endec" in what else None)
    pairs = [pair for probe in probes for pair in probe.hooks()]
    if "endec" in what:
        pairs += _endec_hooks(modules[endec_module], found.endec)
    _run(net, x, pairs)
    if "hessian" in what and all(p.hessian is not None for p in probes):
        found.hessian = np.stack([p.hessian for p in probes])
    if "attention" in what:
        found.attention = np.stack([p.attention for p in probes])
    return found


def _endec_hooks(module: SingleModule, out: list[tuple[str, np.ndarray]]) -> list[tuple[nn.Module, Callable]]:
    """Hooks on the module's DiEnDec: its input, each ReLU after a (de)convolution, and its output."""
    coder = next((m for m in module.modules() if isinstance(m, DiEnDec)), None)
    if coder is None:
        return []

    def keep(label: str) -> Callable:
        return lambda _m, _inp, value: out.append((label, _array(value[0])))

    source = "lambda maps" if any(isinstance(m, MSHF) for m in module.modules()) else "mean of resin"
    pairs: list[tuple[nn.Module, Callable]] = [
        (coder, lambda _m, inp, _out: out.insert(0, (f"input: {source}", _array(inp[0][0]))))]
    for part in ("encoder", "decoder"):
        dilation, step = 1, 0
        for layer in getattr(coder, part, ()):
            if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d)):
                dilation, step = int(layer.dilation[0]), step + 1
            elif isinstance(layer, nn.ReLU):
                pairs.append((layer, keep(f"{part} {step} (dilation {dilation})")))
    pairs.append((coder, keep("output v")))
    return pairs


def _patches(t: torch.Tensor, k: int, points: Sequence[tuple[int, int]]) -> torch.Tensor:
    """The k x k patches (zero padded) centred on ``(x, y)`` points, flattened as ``F.unfold``: (n, d*k*k, q)."""
    pad = k // 2
    padded = F.pad(t, (pad, pad, pad, pad))
    return torch.stack([padded[:, :, y:y + k, x:x + k].flatten(1) for x, y in points], dim=2)


def _all_points(h: int, w: int) -> list[tuple[int, int]]:
    return [(x, y) for y in range(h) for x in range(w)]


def nonlocal_weights(module: NonLocalAttention, x: torch.Tensor,
                     points: Sequence[tuple[int, int]] | None = None) -> torch.Tensor:
    """In-scale attention weights of the query pixels ``(x, y)`` (default: all, row-major): (n, q, h*w)."""
    h, w = x.shape[-2:]
    points = _all_points(h, w) if points is None else points
    theta = _patches(module.conv_match1(x), 1, points)  # (n, c/2, q)
    phi = module.conv_match2(x).flatten(2)  # (n, c/2, h*w)
    return torch.softmax(torch.bmm(theta.transpose(1, 2), phi), dim=2)


def cross_scale_weights(module: CrossScaleAttention, x: torch.Tensor,
                        points: Sequence[tuple[int, int]] | None = None) -> torch.Tensor:
    """Cross-scale attention weights of the query pixels ``(x, y)`` (default: all, row-major) over the
    key patches of the 1/s-scale features: (n, q, (h / s) * (w / s))."""
    h, w = x.shape[-2:]
    s, k = module.scale, module.ksize
    points = _all_points(h, w) if points is None else points
    queries = _patches(module.conv_match_1(x), k, points)  # (n, d*k*k, q)
    ref = module.conv_match_2(F.interpolate(x, size=(h // s, w // s), mode="bilinear", align_corners=False))
    keys = F.unfold(ref, k, padding=k // 2)  # (n, d*k*k, L)
    keys = keys / torch.maximum(keys.norm(dim=1, keepdim=True), module.escape_NaN)
    scores = torch.bmm(queries.transpose(1, 2), keys) * module.softmax_scale  # (n, q, L)
    return torch.softmax(scores, dim=2)


def correlation_maps(net: nn.Module, x: torch.Tensor, query: tuple[int, int]) -> list[StageCorrelation]:
    """CSNLN's in-scale and cross-scale correlation maps of the input pixel ``query = (x, y)`` at every
    recurrent step, one stage per module holding the attentions (x4 has two; the second at twice the
    input's resolution, where the query is ``(2x, 2y)``)."""
    check_query(query, tuple(x.shape[-2:]))
    stages: dict[str, StageCorrelation] = {}
    pairs: list[tuple[nn.Module, Callable]] = []
    base: list[int] = []  # height of the first attention input: the input's (padded) resolution

    def stage_query(stage: StageCorrelation, height: int) -> tuple[int, int]:
        base[:] = base or [height]
        stage.resolution = max(1, height // base[0])
        stage.query = (query[0] * stage.resolution, query[1] * stage.resolution)
        return stage.query

    def on_cross(stage: StageCorrelation, module: CrossScaleAttention, inp: tuple) -> None:
        h, w = inp[0].shape[-2:]
        weights = cross_scale_weights(module, inp[0], [stage_query(stage, h)])
        stage.cross_scale.append(_array(weights[0, 0].view(h // module.scale, w // module.scale)))

    def on_local(stage: StageCorrelation, module: NonLocalAttention, inp: tuple) -> None:
        h, w = inp[0].shape[-2:]
        weights = nonlocal_weights(module, inp[0], [stage_query(stage, h)])
        stage.in_scale.append(_array(weights[0, 0].view(h, w)))

    for name, module in net.named_modules():
        if isinstance(module, (CrossScaleAttention, NonLocalAttention)):
            parent = name.rpartition(".")[0]
            stage = stages.setdefault(parent, StageCorrelation(parent, 1, query))
            if isinstance(module, CrossScaleAttention):
                stage.factor = module.scale
                pairs.append((module, lambda m, a, _o, st=stage: on_cross(st, m, a)))
            else:
                pairs.append((module, lambda m, a, _o, st=stage: on_local(st, m, a)))
    if not stages:
        raise ConfigError("this network has no non-local attention modules (correlation needs a CSNLN model)")
    _run(net, x, pairs)
    return list(stages.values())


# Figures

def input_tile(x: torch.Tensor) -> Image.Image:
    """The ``(1, 3, H, W)`` batch as an RGB image."""
    rgb = x[0].detach().to("cpu", torch.float32).clamp(0, 1).mul(255).round().to(torch.uint8)
    return Image.fromarray(rgb.permute(1, 2, 0).numpy(), "RGB")


def mark(image: Image.Image, point: tuple[int, int]) -> Image.Image:
    """A copy of ``image`` with a red ring (white-edged) around the pixel ``(x, y)``."""
    out = image.copy()
    draw = ImageDraw.Draw(out)
    r = max(2, round(max(image.size) / 32))
    x, y = point
    draw.ellipse([x - r - 1, y - r - 1, x + r + 1, y + r + 1], outline=(255, 255, 255))
    draw.ellipse([x - r, y - r, x + r, y + r], outline=(230, 20, 20))
    return out


def _heat(values: np.ndarray) -> Image.Image:
    return heatmap(values, robust=ROBUST)


def _wrap(tiles: list, columns: int) -> list[list]:
    return [tiles[i:i + columns] for i in range(0, len(tiles), columns)]


def render_hessian(maps: DefianMaps, image: Image.Image, title: str = "") -> Image.Image:
    """Fig. 1: one row per DeFiAM, the input and the lambda map of each MSHF kernel."""
    rows = [[("input" if i == 0 else "", image if i == 0 else None)]
            + [(f"lambda_{k}", _heat(m)) for k, m in zip(maps.kernels, per_module)]
            for i, per_module in enumerate(maps.hessian)]
    labels = [f"DeFiAM {i + 1}" for i in range(len(rows))]
    return tile_grid(rows, title=title, row_labels=labels,
                     note="lambda_k: channel mean of the largest Hessian eigenvalue of the residue (MSHF, kernel k); "
                     + NOTE)


def _range(values: np.ndarray) -> str:
    lo, hi = float(values.min()), float(values.max())
    return f"constant {lo:.4g}" if lo == hi else f"{lo:.4g}..{hi:.4g}"


def render_attention(maps: DefianMaps, image: Image.Image, title: str = "", columns: int = 6) -> Image.Image:
    """Fig. 1 / 10: the input and the channel-mean attention a of each DeFiAM, its range in the label."""
    mean = maps.attention if maps.attention.ndim == 3 else maps.attention.mean(axis=1)
    tiles = [("input", image)] + [(f"DeFiAM {i + 1}: {_range(a)}", _heat(a)) for i, a in enumerate(mean)]
    return tile_grid(_wrap(tiles, columns), title=title,
                     note="a: channel mean of sigmoid(DAC(v, x)), the gate of the residue (min..max in the label); "
                     + NOTE)


def varied_channels(features: np.ndarray, count: int) -> list[int]:
    """The ``count`` channels with the largest spatial standard deviation, in channel order."""
    spread = features.reshape(len(features), -1).std(axis=1)
    return sorted(np.argsort(-spread, kind="stable")[:count].tolist())


def render_endec(maps: DefianMaps, title: str = "", channels: int = 3) -> Image.Image:
    """Fig. 13: one row per DiEnDec stage: its channel mean and its ``channels`` most varied channels
    (the input: its lambda maps)."""
    rows, labels = [], []
    for label, f in maps.endec:
        chosen = [("mean", _heat(f.mean(axis=0)))] if len(f) > 1 else []
        if label == "input: lambda maps" and len(f) == len(maps.kernels):
            chosen += [(f"lambda_{k}", _heat(m)) for k, m in zip(maps.kernels, f)]
        else:
            chosen += [(f"channel {c + 1}", _heat(f[c])) for c in varied_channels(f, channels)]
        rows.append(chosen)
        flat = int((f.reshape(len(f), -1).std(axis=1) == 0).sum())
        labels.append(f"{label} [{len(f)} ch" + (f", {flat} constant]" if flat else "]"))
    return tile_grid(rows, title=title, row_labels=labels,
                     note="DiEnDec features after each dilated (de)convolution + ReLU [channels]: the channel mean and "
                     f"the {channels} channels of largest spatial spread; " + NOTE)


def _stage_maps(stage: StageCorrelation, step: int, size: tuple[int, int]) -> tuple[np.ndarray | None, ...]:
    """The step's in-scale and cross-scale maps at this stage's resolution, cropped to ``size`` (h, w)."""
    h, w = size
    local = stage.in_scale[step][:h, :w] if step < len(stage.in_scale) else None
    cross = None
    if step < len(stage.cross_scale):
        s = stage.factor
        cross = np.repeat(np.repeat(stage.cross_scale[step], s, axis=0), s, axis=1)[:h, :w]
    return local, cross


def render_correlation(stages: Sequence[StageCorrelation], image: Image.Image, title: str = "") -> Image.Image:
    """Fig. 6: per attention stage, rows of in-scale and cross-scale correlation maps, one column per step."""
    rows, labels = [], []
    for i, stage in enumerate(stages):
        steps = max(len(stage.in_scale), len(stage.cross_scale))
        scale = stage.resolution
        size = (image.height * scale, image.width * scale)
        shown = image if scale == 1 else image.resize((image.width * scale, image.height * scale),
                                                      Image.Resampling.NEAREST)
        first = [("input" if scale == 1 else f"input (x{scale})", mark(shown, stage.query))]
        for kind, index in (("in-scale", 0), ("cross-scale", 1)):
            cells = []
            for step in range(steps):
                m = _stage_maps(stage, step, size)[index]
                cells.append((f"step {step + 1}", mark(_heat(m), stage.query) if m is not None else None))
            if any(img is not None for _, img in cells):
                rows.append((first if kind == "in-scale" else [("", None)]) + cells)
                labels.append(f"{kind}" + (f" (stage {i + 1})" if len(stages) > 1 else ""))
    note = ("in-scale: softmax weights of the query over all positions; cross-scale: over the 1/s-scale patches "
            "(each shown on its s x s block); query ringed; " + NOTE)
    return tile_grid(rows, title=title, row_labels=labels, note=note)


def mask_distances(net: nn.Module, batches: Iterable[torch.Tensor]) -> tuple[list[str], np.ndarray]:
    """CRAN Fig. 8: the names of the network's CRACs and, per image (batch of one) and CRAC, ||F_A - 1||_2."""
    cracs = [(name, m) for name, m in net.named_modules() if isinstance(m, CRAC)]
    if not cracs:
        raise ModelError("this network has no CRAC layers (CRAN's Fig. 8 needs a CRAN-family model)")
    rows: list[list[float]] = []
    for x in batches:
        row: list[float] = []  # each hook appends its layer's distance, in module order
        _run(net, x, [(m, lambda mod, inputs, out, row=row: row.append(_mask_distance(mod, inputs[0])))
                      for _, m in cracs])
        rows.append(row)
    return [name for name, _ in cracs], np.asarray(rows, dtype=np.float64)


def _mask_distance(crac: CRAC, x: torch.Tensor) -> float:
    return float(torch.linalg.vector_norm(crac.mask(x).float() - 1))


def render_diversity(distances: np.ndarray, title: str = "") -> Image.Image:
    """Per image: the mean distance over the CRACs, and the smallest and largest one."""
    index = range(1, distances.shape[0] + 1)
    series = {name: list(zip(index, values)) for name, values in (
        ("mean over the CRACs", distances.mean(1)), ("smallest CRAC", distances.min(1)),
        ("largest CRAC", distances.max(1)))}
    return line_chart(series, title=title, xlabel="image", ylabel="||F_A - 1||  (W* = W * F_A)")


def figure_names(stem: str, what: Sequence[str]) -> list[str]:
    """File names of the figures: ``<stem>-<what>.png``."""
    return [f"{stem}-{w}.png" for w in what]


def render(net: nn.Module, image: np.ndarray, what: Sequence[str], *, query: tuple[int, int] | None = None,
           module: int | None = None, label: str = "") -> dict[str, Image.Image]:
    """The figures of ``what`` (see :func:`parse_what`) for a ``read_image`` array, keyed by what.

    ``query``: the ``(x, y)`` pixel of the correlation maps (default: the centre); ``module``: the
    1-based DeFiAM of the DiEnDec features (default: the third, or the last); ``label`` starts the titles.
    """
    x = image_batch(image)
    h, w = x.shape[-2:]
    tile = input_tile(x)
    prefix = f"{label}: " if label else ""
    out: dict[str, Image.Image] = {}
    defian = [v for v in what if v in DEFIAN_WHATS]
    if defian:
        maps = defian_maps(net, x, defian, endec_module=None if module is None else module - 1)
        if "hessian" in defian:
            out["hessian"] = render_hessian(maps, tile, prefix + "Hessian eigenvalue maps per DeFiAM (Fig. 1)")
        if "attention" in defian:
            out["attention"] = render_attention(maps, tile, prefix + "averaged attention per DeFiAM (Fig. 1, 10)")
        if "endec" in defian:
            out["endec"] = render_endec(maps, prefix + f"DiEnDec features of DeFiAM {maps.endec_module + 1} (Fig. 13)")
    if "correlation" in what:
        point = query if query is not None else (w // 2, h // 2)
        stages = correlation_maps(net, x, point)
        title = prefix + f"correlation maps of the pixel ({point[0]}, {point[1]}) (Fig. 6)"
        out["correlation"] = render_correlation(stages, tile, title)
    return {v: out[v] for v in what}


def write_figures(figures: dict[str, Image.Image], folder: str | os.PathLike, stem: str,
                  overwrite: bool = False) -> list[Path]:
    """Write ``<stem>-<what>.png`` into ``folder`` atomically; none is written if one exists (unless ``overwrite``)."""
    folder = Path(folder)
    names = figure_names(stem, list(figures))
    check_outputs(folder, names, overwrite=overwrite)
    folder.mkdir(parents=True, exist_ok=True)
    return [save_png(quantize(img), folder / name, overwrite=overwrite) for name, img in zip(names, figures.values())]
