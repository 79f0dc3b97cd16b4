"""DeFiAN: Interpretable Detail-Fidelity Attention Network for Single Image Super-Resolution.

Huang, Li, Gao, Hu, Lu, IEEE TIP 2021. Authors' code: YuanfeiHuang/DeFiAN @ fb64caf2
(``model.py``, class ``Generator``); module names, shapes and parameter counts follow it so
that the released ``DeFiAN_{S,L}_x{s}.pth`` state dicts load with strict key matching
(S x2/x3/x4: 1,027,610 / 1,073,690 / 1,064,474; L: 15,186,057 / 15,370,377 / 15,333,513).

Layout (C channels, N modules of M blocks)::

    x -> ImageNet normalise -> input conv 3->C -> N x DeFiAM -> tail conv, + input features
      -> sub-pixel upsampler (no bias) -> output conv C->3 -> ImageNet un-normalise

DeFiAM: M x RCAB (convs without bias) give ``resin``; the attention branch takes the
channel mean of the largest Hessian eigenvalue at three dilations (MSHF, depthwise
3x3 second-difference filters with biases, dilation 1/2/3), fuses the 3 maps with a
dilated encoder-decoder (DiEnDec) into one map, aligns it to the channel statistics of
the module input (DAC), and gates ``resin`` with its sigmoid; plus the module input.

Choices and deviations (docs/models/defian.md has the reasons):
* Input/output RGB in [0, 1]; the ImageNet normalisation of the authors' scripts lives
  inside the model as non-persistent buffers (official state dicts load strictly).
  The authors' test script un-normalises with rounded constants ((y + 2.118) / 4.367, ...);
  we use the exact inverse y * std + mean (differs by < 1e-4).
* The square root of the eigenvalue formula is exact in the forward pass; where its
  argument is exactly 0 its gradient is taken as 0 instead of inf/NaN.
* MSHF kernels and biases are parameters (counted, saved, loaded). They are frozen by
  default (``freeze_hessian=True``, as the authors' HEAD and the paper's fixed operators);
  the release that produced the official checkpoints trained them (``freeze_hessian=False``).
* The DAC statistics use the unbiased variance as upstream; for a 1-pixel input (where
  upstream returns NaN) the variance is taken as 0.
* Under fp16/bf16 the Hessian eigenvalue and the DAC statistics and gate are computed in
  float32 (squares of features overflow fp16).
* Speed, same values up to float rounding: the channel mean of the Hessian eigenvalue is computed
  from combined depthwise kernels (``MSHF.channel_mean``), the DAC variance in two passes instead of
  ``torch.var``, residual gates with ``addcmul`` (DeFiAN-S x2 eager CPU 1.26x faster, 0.0003/255);
  without gradients the eigenvalue root and the RCAB gate are computed in place (1.05x more).
* x8 uses three x2 sub-pixel stages, as the authors' upsampler would build; no official
  x8 weights or paper figures exist.
* Ablation switches ``mshf``, ``mshf_kernels``, ``endec``, ``endec_depth``, ``dac`` (paper Tables
  III-V; not in the authors' code): what each "without" means follows from the printed parameter
  counts, which every cell reproduces; HGEnDec/ConvEnDec are DiEnDec without dilation (with pooling).
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ModelError
from .common import IMAGENET_MEAN, IMAGENET_STD, Upsampler, count_indexed
from .edsr import upsampler_scale
from .registry import TILING_GLOBAL_STATS, Capabilities, ModelInfo, OfficialFormat, Reference

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def _stats_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 for half-precision tensors, the tensor's own dtype otherwise."""
    return torch.float32 if dtype in _LOW_PRECISION else dtype


def calc_mean_std(feat: torch.Tensor, eps: float = 1e-5) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample, per-channel spatial mean and sqrt(unbiased variance + eps), shape (N, C, 1, 1).

    A single pixel has variance 0 here (upstream divides by H*W - 1 = 0 and returns NaN).
    """
    pixels = feat.shape[2] * feat.shape[3]
    mean = feat.mean(dim=(2, 3), keepdim=True)
    var = (feat - mean).square().sum(dim=(2, 3), keepdim=True) / max(pixels - 1, 1)  # two-pass; torch.var is ~6x slower
    return mean, (var + eps).sqrt()


def sqrt_zero_safe(x: torch.Tensor) -> torch.Tensor:
    """``sqrt(x)`` for x >= 0, with gradient 0 (not inf/NaN) where x == 0; forward is exact."""
    positive = x > 0
    root = torch.where(positive, x, 1.0).sqrt()
    return torch.where(positive, root, 0.0)


class MSHF(nn.Module):
    """Scaled Hessian filtering: largest eigenvalue of the per-channel 2x2 Hessian.

    Depthwise 3x3 second differences (with biases) dilated by (kernel - 1) / 2, so
    ``kernel`` 3, 5, 7 give supports 3, 5, 7. Output has the input's shape.
    """

    def __init__(self, n_channels: int, kernel: int = 3):
        super().__init__()
        dilation = (kernel - 1) // 2

        def depthwise() -> nn.Conv2d:
            return nn.Conv2d(n_channels, n_channels, 3, padding=dilation, dilation=dilation,
                             groups=n_channels, bias=True)

        self.grad_xx = depthwise()
        self.grad_yy = depthwise()
        self.grad_xy = depthwise()
        with torch.no_grad():  # biases keep PyTorch's default random init, as upstream
            for conv in (self.grad_xx, self.grad_yy, self.grad_xy):
                conv.weight.zero_()
            self.grad_xx.weight[:, :, 1] = torch.tensor([1.0, -2.0, 1.0])
            self.grad_yy.weight[:, :, :, 1] = torch.tensor([1.0, -2.0, 1.0])
            self.grad_xy.weight[:, :, 0::2, 0::2] = torch.tensor([[1.0, -1.0], [-1.0, 1.0]])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = _stats_dtype(x.dtype)
        fxx = self.grad_xx(x).to(dtype)
        fyy = self.grad_yy(x).to(dtype)
        fxy = self.grad_xy(x).to(dtype)
        return ((fxx + fyy) + sqrt_zero_safe((fxx - fyy) ** 2 + 4 * fxy ** 2)) / 2

    def channel_mean(self, x: torch.Tensor) -> torch.Tensor:
        """``forward(x).mean(dim=1, keepdim=True)`` in fewer passes over full-size tensors.

        The eigenvalue is ``(t + sqrt(d^2 + e^2)) / 2`` with ``t = fxx + fyy``, ``d = fxx - fyy``
        and ``e = 2 fxy``; all three are linear in ``x``, so each is one depthwise conv with the
        combined kernels and biases (``w_xx + w_yy``, ``w_xx - w_yy``, ``2 w_xy``), and the root is
        computed in place without gradients. Equal to ``forward`` up to float rounding; about a dozen
        elementwise passes become three.
        """
        xx, yy, xy = self.grad_xx, self.grad_yy, self.grad_xy
        c = xx.weight.shape[0]

        def conv(weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
            out = F.conv2d(x, weight, bias, padding=xx.padding, dilation=xx.dilation, groups=c)
            return out.to(_stats_dtype(out.dtype))

        t = conv(xx.weight + yy.weight, xx.bias + yy.bias)
        d = conv(xx.weight - yy.weight, xx.bias - yy.bias)
        e = conv(2 * xy.weight, 2 * xy.bias)
        if torch.is_grad_enabled():
            root = sqrt_zero_safe(d * d + e * e)
        else:  # no graph to keep: in place on this call's temporaries (hypot measured 1.3x slower)
            root = d.mul_(d).addcmul_(e, e).sqrt_()
        return (t.mean(dim=1, keepdim=True) + root.mean(dim=1, keepdim=True)) / 2


class RCABlock(nn.Module):
    """RCAB without residual scaling: conv-ReLU-conv (no biases), channel attention (reduction 16)."""

    def __init__(self, n_channels: int):
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv2d(n_channels, n_channels, 3, padding=1, bias=False),
            nn.ReLU(inplace=True),
            nn.Conv2d(n_channels, n_channels, 3, padding=1, bias=False),
        )
        self.calayer = nn.Sequential(
            nn.Conv2d(n_channels, n_channels // 16, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(n_channels // 16, n_channels, 1),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residue = self.block(x)
        gate = self.calayer(F.adaptive_avg_pool2d(residue, 1))
        # without gradients the result goes into ``residue`` (this call's own map): one map less to fill
        return torch.addcmul(x, residue, gate, out=None if torch.is_grad_enabled() else residue)


ENDEC_KINDS = ("diendec", "convendec", "hgendec")


class DiEnDec(nn.Module):
    """Full-resolution encoder-decoder: ``depth`` convs (channels doubling), ``depth`` transposed, a 1x1 gate.

    ``kind`` (paper Table V): ``"diendec"`` dilates encoder layer i (and its mirror) by 2^i, the
    authors' DiEnDec at depth 3 (d 1, 2, 4); ``"convendec"`` keeps dilation 1 (Mao et al.);
    ``"hgendec"`` keeps dilation 1 and halves the resolution before each encoder layer after the
    first (max-pool 2), restoring it after each mirrored decoder layer (nearest), as an hourglass
    (Newell et al.) without skip branches. All three have the same layers and parameters.
    """

    def __init__(self, n_channels: int = 3, depth: int = 3, kind: str = "diendec"):
        super().__init__()
        widths = [n_channels * 2 ** i for i in range(depth + 1)]
        dilations = [2 ** i if kind == "diendec" else 1 for i in range(depth)]
        encoder: list[nn.Module] = []
        decoder: list[nn.Module] = []
        for i in range(depth):
            encoder += [nn.Conv2d(widths[i], widths[i + 1], 3, padding=dilations[i], dilation=dilations[i]),
                        nn.ReLU(inplace=True)]
        for i in reversed(range(depth)):
            decoder += [nn.ConvTranspose2d(widths[i + 1], widths[i], 3, padding=dilations[i], dilation=dilations[i]),
                        nn.ReLU(inplace=True)]
        self.pooled = kind == "hgendec"
        self.encoder = nn.Sequential(*encoder)
        self.decoder = nn.Sequential(*decoder)
        self.gate = nn.Conv2d(n_channels, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.pooled:
            return self.gate(self.decoder(self.encoder(x)))
        sizes = []
        for i in range(0, len(self.encoder), 2):
            if i:
                sizes.append(x.shape[-2:])
                x = F.max_pool2d(x, 2, ceil_mode=True)
            x = self.encoder[i + 1](self.encoder[i](x))
        for i in range(0, len(self.decoder), 2):
            x = self.decoder[i + 1](self.decoder[i](x))
            if sizes:
                x = F.interpolate(x, size=sizes.pop(), mode="nearest")
        return self.gate(x)


class DAC(nn.Module):
    """Distribution alignment cell: standardise the observed map, rescale it with MLPs of the reference statistics.

    ``observed`` is (N, 1 or C, H, W) (a 1-channel map stands for its channel-wise copy),
    ``referred`` (N, C, H, W). Returns (N, C, H, W), in float32 when the inputs are fp16/bf16.
    """

    def __init__(self, n_channels: int):
        super().__init__()

        def mlp() -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(n_channels, n_channels // 16, 1, bias=False),
                nn.ReLU(inplace=True),
                nn.Conv2d(n_channels // 16, n_channels, 1, bias=False),
            )

        self.mean = mlp()
        self.std = mlp()

    def forward(self, observed: torch.Tensor, referred: torch.Tensor) -> torch.Tensor:
        dtype = _stats_dtype(referred.dtype)
        ref_mean, ref_std = calc_mean_std(referred.to(dtype))
        observed = observed.to(dtype)
        obs_mean, obs_std = calc_mean_std(observed)
        normalized = (observed - obs_mean) / obs_std
        mean = self.mean(ref_mean.to(referred.dtype)).to(dtype)
        std = self.std(ref_std.to(referred.dtype)).to(dtype)
        return torch.addcmul(mean, normalized, std)


class SingleModule(nn.Module):
    """DeFiAM: M RCABs, gated by the detail-fidelity attention (MSHF -> DiEnDec -> DAC -> sigmoid), plus the input.

    Ablation switches (paper Tables III-V; docs/models/defian.md): ``mshf=False`` replaces each
    Hessian filter by the identity (its map is the channel mean of ``resin``); ``endec_depth=0``
    fuses the maps by their mean instead of an encoder-decoder; ``dac=False`` gates with the sigmoid
    of the fused map itself, copied to every channel. With all three off there is no attention
    branch (output ``resin + x``, as ``attention=False``).
    """

    def __init__(self, n_channels: int, n_blocks: int, attention: bool = True, mshf: bool = True,
                 mshf_kernels: tuple[int, ...] = (3, 5, 7), endec: str = "diendec", endec_depth: int = 3,
                 dac: bool = True):
        super().__init__()
        self.body_block = nn.Sequential(*[RCABlock(n_channels) for _ in range(n_blocks)])
        self.attention = attention and (mshf or endec_depth > 0 or dac)
        self.n_maps = len(mshf_kernels)
        self.mshf_names = [f"hessian{k}" for k in mshf_kernels] if mshf else []
        self.has_endec = self.attention and endec_depth > 0
        self.has_dac = self.attention and dac
        if not self.attention:
            return
        if endec_depth:  # Sequential wrappers give the official key prefixes coder.0., dac.0., hessian3.0.
            self.coder = nn.Sequential(DiEnDec(self.n_maps, endec_depth, endec))
        if dac:
            self.dac = nn.Sequential(DAC(n_channels))
        for name, kernel in zip(self.mshf_names, mshf_kernels):
            setattr(self, name, nn.Sequential(MSHF(n_channels, kernel=kernel)))

    def detail_maps(self, resin: torch.Tensor) -> torch.Tensor:
        """(N, K, H, W): channel means of the K scaled Hessian eigenvalues (or of ``resin``, without MSHF)."""
        if not self.mshf_names:
            return resin.mean(dim=1, keepdim=True).expand(-1, self.n_maps, -1, -1)
        return torch.cat([getattr(self, name)[0].channel_mean(resin) for name in self.mshf_names], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        resin = self.body_block(x)
        if not self.attention:
            return resin + x
        maps = self.detail_maps(resin)
        if self.has_endec:
            gate_map = self.coder(maps.to(resin.dtype))
        else:
            gate_map = maps.mean(dim=1, keepdim=True)
        if self.has_dac:
            attention = self.dac[0](gate_map, x).sigmoid_()
        else:
            attention = gate_map.to(_stats_dtype(gate_map.dtype)).sigmoid()
        return torch.addcmul(x, resin, attention.to(resin.dtype))


def _check_variant(mshf_kernels: Any, endec: str, endec_depth: int) -> tuple[int, ...]:
    """The MSHF kernel sizes as a tuple; ``ModelError`` for a switch value no DeFiAM can build."""
    kernels = (mshf_kernels,) if isinstance(mshf_kernels, int) else tuple(mshf_kernels or ())
    if not kernels or any(isinstance(k, bool) or not isinstance(k, int) or k < 3 or k % 2 == 0 for k in kernels) \
            or len(set(kernels)) != len(kernels):
        raise ModelError(f"defian: mshf_kernels must be distinct odd sizes >= 3 such as [3, 5, 7], got {mshf_kernels!r}"
                         " (mshf=false removes the Hessian filtering)")
    if endec not in ENDEC_KINDS:
        raise ModelError(f"defian: endec must be one of {', '.join(ENDEC_KINDS)}, got {endec!r}")
    if isinstance(endec_depth, bool) or not isinstance(endec_depth, int) or not 0 <= endec_depth <= 6:
        raise ModelError(f"defian: endec_depth (half depth d of the encoder-decoder) must be 0..6, got {endec_depth!r}")
    return kernels


class DeFiAN(nn.Module):
    """DeFiAN (the authors' ``Generator`` with one upsampler); RGB in [0, 1] to RGB in [0, 1].

    ``mshf``, ``mshf_kernels``, ``endec``, ``endec_depth`` and ``dac`` select the ablation variants of
    the paper's Tables III-V (see ``SingleModule``); the defaults are the authors' network.
    """

    def __init__(self, scale: int, n_channels: int = 32, n_blocks: int = 10, n_modules: int = 5,
                 attention: bool = True, freeze_hessian: bool = True, mshf: bool = True,
                 mshf_kernels: Any = (3, 5, 7), endec: str = "diendec", endec_depth: int = 3, dac: bool = True):
        super().__init__()
        if n_channels < 16:
            raise ModelError(f"defian: n_channels must be >= 16 (attention reduction 16), got {n_channels}")
        if n_blocks < 1 or n_modules < 1:
            raise ModelError(f"defian: n_blocks and n_modules must be >= 1, got {n_blocks} and {n_modules}")
        variant = {"mshf": bool(mshf), "mshf_kernels": _check_variant(mshf_kernels, endec, endec_depth),
                   "endec": endec, "endec_depth": endec_depth, "dac": bool(dac)}
        self.scale = scale
        self.n_modules = n_modules
        self.register_buffer("img_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("img_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.input = nn.Conv2d(3, n_channels, 3, padding=1)
        self.body = nn.Sequential(*[SingleModule(n_channels, n_blocks, attention, **variant)
                                    for _ in range(n_modules)])
        self.tail = nn.Conv2d(n_channels, n_channels, 3, padding=1)  # unused when n_modules == 1, as upstream
        self.upscale = nn.ModuleList([Upsampler(scale, n_channels, bias=False)])
        self.output = nn.Conv2d(n_channels, 3, 3, padding=1)
        if freeze_hessian:
            for module in self.modules():
                if isinstance(module, MSHF):
                    module.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.img_mean) / self.img_std
        features = self.input(x)
        body = self.body(features)
        if self.n_modules == 1:  # upstream: no tail and no global skip for a single module
            up = self.upscale[0](body)
        else:
            up = self.upscale[0](self.tail(body) + features)
        return self.output(up) * self.img_std + self.img_mean


def build_defian(scale: int, n_channels: int = 32, n_blocks: int = 10, n_modules: int = 5,
                 attention: bool = True, freeze_hessian: bool = True, mshf: bool = True,
                 mshf_kernels: Any = (3, 5, 7), endec: str = "diendec", endec_depth: int = 3,
                 dac: bool = True) -> DeFiAN:
    return DeFiAN(scale, n_channels=n_channels, n_blocks=n_blocks, n_modules=n_modules, attention=attention,
                  freeze_hessian=freeze_hessian, mshf=mshf, mshf_kernels=mshf_kernels, endec=endec,
                  endec_depth=endec_depth, dac=dac)


def _unwrap(sd: Mapping[str, Any]) -> Mapping[str, Any]:
    """Accept the authors' ``{"epoch", "state_dict"}`` container and DataParallel ``module.`` keys too."""
    inner = sd.get("state_dict")
    if isinstance(inner, Mapping):
        sd = inner
    if sd and all(isinstance(k, str) and k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


def _defian_layout(sd: Mapping[str, Any]) -> dict | None:
    """Official DeFiAN hyper-parameters from state-dict shapes and counts, None if not that layout."""
    sd = _unwrap(sd)
    if not all(k in sd for k in ("input.weight", "tail.weight", "output.weight", "upscale.0.0.weight",
                                 "body.0.body_block.0.block.0.weight", "body.0.body_block.0.calayer.0.weight")):
        return None
    n_channels = int(sd["input.weight"].shape[0])
    hp: dict[str, Any] = {"scale": upsampler_scale(sd, "upscale.0.", n_channels),
                          "n_channels": n_channels,
                          "n_blocks": count_indexed(sd, "body.0.body_block."),
                          "n_modules": count_indexed(sd, "body.")}
    if hp["scale"] is None:
        return None
    if "body.0.hessian3.0.grad_xx.weight" not in sd:
        hp["attention"] = False
    return hp


_S = (32, 10, 5)


def _official_s(sd) -> dict | None:
    hp = _defian_layout(sd)
    return hp if hp and (hp["n_channels"], hp["n_blocks"], hp["n_modules"]) == _S else None


def _official_l(sd) -> dict | None:
    hp = _defian_layout(sd)
    return hp if hp and (hp["n_channels"], hp["n_blocks"], hp["n_modules"]) != _S else None


_PAPER = ("Huang, Li, Gao, Hu, Lu, Interpretable Detail-Fidelity Attention Network for Single Image "
          "Super-Resolution, IEEE TIP 2021")
_CODE = "YuanfeiHuang/DeFiAN@fb64caf2 model.py (Generator)"
_CONVENTION = ("official((x - mean) / std) * std + mean with ImageNet mean (0.485, 0.456, 0.406) and std "
               "(0.229, 0.224, 0.225); checkpoint {'epoch', 'state_dict'}, keys possibly prefixed 'module.'")
_NOTES = ("MSHF Hessian filters frozen by default (freeze_hessian=False trains them, as the release that made the "
          "official checkpoints); sqrt gradient 0 at 0; eigenvalue and DAC statistics in float32 under fp16/bf16; "
          "x8 has no official weights")

_ONNX_NOTES = "a 1-pixel input gives NaN in the ONNX graph (PyTorch takes the variance of one pixel as 0)"
_VARIANTS = {"no-attention": {"attention": False}}  # the authors' constructor flag: Table III's RCAN-like baseline

MODELS = [
    ModelInfo(
        name="defian-s",
        title="DeFiAN_S (C32, M10 RCABs x N5 DeFiAMs)",
        build=build_defian,
        scales=(2, 3, 4, 8),
        defaults={"n_channels": 32, "n_blocks": 10, "n_modules": 5},
        tiny={"n_channels": 16, "n_blocks": 1, "n_modules": 2},
        variants=_VARIANTS,
        reference=Reference(
            paper=_PAPER,
            code=_CODE,
            params={2: 1_027_610, 3: 1_073_690, 4: 1_064_474},
            params_source="authors' code (reference-architectures.md section 3.1; paper Table II in thousands)",
        ),
        capabilities=Capabilities(
            tiling=TILING_GLOBAL_STATS,
            precisions=("fp32", "bf16", "fp16"),
            train_precisions=("fp32", "bf16", "fp16"),
            onnx_notes=_ONNX_NOTES,
        ),
        official=OfficialFormat(detect=_official_s, convention=_CONVENTION),
        notes=_NOTES,
    ),
    ModelInfo(
        name="defian-l",
        title="DeFiAN_L (C64, M20 RCABs x N10 DeFiAMs)",
        build=build_defian,
        scales=(2, 3, 4, 8),
        defaults={"n_channels": 64, "n_blocks": 20, "n_modules": 10},
        tiny={"n_channels": 16, "n_blocks": 1, "n_modules": 2},
        variants=_VARIANTS,
        reference=Reference(
            paper=_PAPER,
            code=_CODE,
            params={2: 15_186_057, 3: 15_370_377, 4: 15_333_513},
            params_source="authors' code (reference-architectures.md section 3.1; paper Table I in thousands)",
        ),
        capabilities=Capabilities(
            tiling=TILING_GLOBAL_STATS,
            train_precisions=("fp32", "bf16", "fp16"),
            onnx_notes=_ONNX_NOTES,
        ),
        official=OfficialFormat(detect=_official_l, convention=_CONVENTION),
        notes=_NOTES,
    ),
]
