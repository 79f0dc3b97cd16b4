"""EDSR: Enhanced Deep Residual Networks for Single Image Super-Resolution.

Lim, Son, Kim, Nah, Lee, CVPRW 2017. Authors' code: sanghyun-son/EDSR-PyTorch
(``src/model/edsr.py``), read through the file index; layer names, shapes and
parameter counts follow it so official checkpoints load with strict matching.

Layout: MeanShift(-DIV2K mean) -> conv 3->F -> R x ResBlock(conv-ReLU-conv, x res_scale)
-> conv F->F, plus the long skip -> sub-pixel upsampler -> conv F->3 -> MeanShift(+mean).
Baseline: R=16, F=64, res_scale 1; full: R=32, F=256, res_scale 0.1.

Conventions and deviations:
* Input/output are RGB in [0, 1]; the network works in [0, rgb_range] (255, as the
  official checkpoints) and the conversion is done inside ``forward``.
* MeanShift parameters are frozen (``requires_grad=False``) as in EDSR-PyTorch master;
  they are parameters (24 of them) and are counted and saved, as upstream.
"""

from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

from .common import GlobalResidualSR, MeanShift, ResBlock, Upsampler, count_indexed, default_conv
from .registry import TILING_LOCAL, Capabilities, ModelInfo, OfficialFormat, Reference


class EDSR(GlobalResidualSR):
    def __init__(self, scale: int, n_resblocks: int = 16, n_feats: int = 64, res_scale: float = 1.0,
                 rgb_range: float = 255.0, n_colors: int = 3):
        super().__init__()
        self.scale = scale
        self.rgb_range = rgb_range
        self.sub_mean = MeanShift(rgb_range, sign=-1)
        self.add_mean = MeanShift(rgb_range, sign=1)
        self.head = nn.Sequential(default_conv(n_colors, n_feats, 3))
        self.body = nn.Sequential(
            *[ResBlock(n_feats, 3, res_scale=res_scale) for _ in range(n_resblocks)],
            default_conv(n_feats, n_feats, 3),
        )
        self.tail = nn.Sequential(Upsampler(scale, n_feats), default_conv(n_feats, n_colors, 3))


def build_edsr(scale: int, n_resblocks: int = 16, n_feats: int = 64, res_scale: float = 1.0,
               rgb_range: float = 255.0) -> EDSR:
    return EDSR(scale, n_resblocks=n_resblocks, n_feats=n_feats, res_scale=res_scale, rgb_range=rgb_range)


def upsampler_scale(sd: Mapping[str, torch.Tensor], prefix: str, n_feats: int) -> int | None:
    """Scale of an EDSR-style sub-pixel upsampler from its conv shapes (convs at even indices)."""
    outs = []
    i = 0
    while f"{prefix}{i}.weight" in sd:
        outs.append(sd[f"{prefix}{i}.weight"].shape[0])
        i += 2
    if outs == [9 * n_feats]:
        return 3
    if outs and all(o == 4 * n_feats for o in outs):
        return 2 ** len(outs)
    return None


def rgb_range_from_mean_shift(sd: Mapping[str, torch.Tensor], default: float = 255.0) -> float:
    """255 or 1, judged from the MeanShift bias (about -0.45 at range 1, -114 at 255)."""
    bias = sd.get("sub_mean.bias")
    if bias is None:
        return default
    return 1.0 if float(bias.abs().max()) < 2.0 else 255.0


def _edsr_layout(sd: Mapping[str, torch.Tensor]) -> dict | None:
    if "head.0.weight" not in sd or "tail.1.weight" not in sd or "body.0.body.0.weight" not in sd:
        return None
    if "body.0.body.0.body.0.weight" in sd:  # RCAN (residual groups)
        return None
    n_feats = sd["head.0.weight"].shape[0]
    n_resblocks = count_indexed(sd, "body.") - 1
    scale = upsampler_scale(sd, "tail.0.", n_feats)
    if scale is None or n_resblocks < 1:
        return None
    return {"scale": scale, "n_resblocks": n_resblocks, "n_feats": n_feats,
            "res_scale": 0.1 if n_feats >= 256 else 1.0, "rgb_range": rgb_range_from_mean_shift(sd)}


def _official_baseline(sd):
    hp = _edsr_layout(sd)
    return hp if hp and (hp["n_resblocks"], hp["n_feats"]) == (16, 64) else None


def _official_full(sd):
    hp = _edsr_layout(sd)
    return hp if hp and (hp["n_resblocks"], hp["n_feats"]) != (16, 64) else None


_PAPER = "Lim et al., Enhanced Deep Residual Networks for Single Image Super-Resolution, CVPRW 2017"
_CONVENTION = "official(255 * x) / 255 (rgb_range 255, DIV2K mean shift inside the network)"

_CODE = "sanghyun-son/EDSR-PyTorch src/model/edsr.py"

MODELS = [
    ModelInfo(
        name="edsr-baseline",
        title="EDSR baseline (16 blocks, 64 channels)",
        build=build_edsr,
        scales=(2, 3, 4, 8),
        defaults={"n_resblocks": 16, "n_feats": 64, "res_scale": 1.0, "rgb_range": 255.0},
        tiny={"n_resblocks": 2, "n_feats": 8},
        reference=Reference(
            paper=_PAPER,
            code=_CODE,
            params={2: 1_369_883},
            params_source="authors' code (../shared/fixtures/parity/edsr_baseline_x2.json)",
        ),
        capabilities=Capabilities(tiling=TILING_LOCAL, train_precisions=("fp32", "bf16", "fp16")),
        official=OfficialFormat(detect=_official_baseline, convention=_CONVENTION),
    ),
    ModelInfo(
        name="edsr",
        title="EDSR (32 blocks, 256 channels, residual scaling 0.1)",
        build=build_edsr,
        scales=(2, 3, 4, 8),
        defaults={"n_resblocks": 32, "n_feats": 256, "res_scale": 0.1, "rgb_range": 255.0},
        tiny={"n_resblocks": 2, "n_feats": 8},
        reference=Reference(
            paper=_PAPER,
            code=_CODE,
            params={2: 40_730_000},
            params_source="CRAN paper Table 7 (40.73M, x2; rounded to 10k)",
            params_tolerance=0.0002,
        ),
        capabilities=Capabilities(tiling=TILING_LOCAL, train_precisions=("fp32", "bf16", "fp16")),
        official=OfficialFormat(detect=_official_full, convention=_CONVENTION),
    ),
]
