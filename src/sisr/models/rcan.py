"""RCAN: Image Super-Resolution Using Very Deep Residual Channel Attention Networks.

Zhang, Li, Li, Wang, Zhong, Fu, ECCV 2018. Authors' code: yulunzhang/RCAN @ f722e5d0
(``RCAN_TestCode/code/model/rcan.py``); names, shapes and parameter counts follow it
(x2/x3/x4: 15,444,667 / 15,629,307 / 15,592,379).

Layout: MeanShift -> conv 3->64 -> 10 residual groups (20 RCAB + conv, group skip)
-> conv, long skip -> sub-pixel upsampler -> conv 64->3 -> MeanShift.
RCAB = conv-ReLU-conv-channel attention (reduction 16), plus the input.

Conventions and deviations:
* Input/output RGB in [0, 1]; the network runs at rgb_range 255 internally.
* The authors' MeanShift sets ``module.requires_grad = False``, which does not freeze its
  parameters, so the official models trained them. We reproduce that (``trainable_mean=True``)
  and always load them from checkpoints.
"""

from __future__ import annotations

import torch
from torch import nn

from .common import RCAB, GlobalResidualSR, ResidualGroup, count_indexed
from .edsr import rgb_range_from_mean_shift, upsampler_scale
from .registry import TILING_GLOBAL_STATS, Capabilities, ModelInfo, OfficialFormat, Reference


class RCAN(GlobalResidualSR):
    def __init__(self, scale: int, n_resgroups: int = 10, n_resblocks: int = 20, n_feats: int = 64,
                 reduction: int = 16, rgb_range: float = 255.0, trainable_mean: bool = True):
        super().__init__()
        self.build_skeleton(scale, n_feats, lambda: [
            ResidualGroup([RCAB(n_feats, 3, reduction) for _ in range(n_resblocks)], n_feats)
            for _ in range(n_resgroups)], rgb_range, trainable_mean)


def build_rcan(scale: int, n_resgroups: int = 10, n_resblocks: int = 20, n_feats: int = 64,
               reduction: int = 16, rgb_range: float = 255.0, trainable_mean: bool = True) -> RCAN:
    return RCAN(scale, n_resgroups=n_resgroups, n_resblocks=n_resblocks, n_feats=n_feats,
                reduction=reduction, rgb_range=rgb_range, trainable_mean=trainable_mean)


def _official(sd) -> dict | None:
    if not all(k in sd for k in ("head.0.weight", "tail.1.weight", "body.0.body.0.body.0.weight",
                                 "body.0.body.0.body.3.conv_du.0.weight")):
        return None
    n_feats = sd["head.0.weight"].shape[0]
    n_resgroups = count_indexed(sd, "body.") - 1
    n_resblocks = count_indexed(sd, "body.0.body.") - 1
    scale = upsampler_scale(sd, "tail.0.", n_feats)
    if scale is None:
        return None
    reduction = n_feats // sd["body.0.body.0.body.3.conv_du.0.weight"].shape[0]
    return {"scale": scale, "n_resgroups": n_resgroups, "n_resblocks": n_resblocks, "n_feats": n_feats,
            "reduction": reduction, "rgb_range": rgb_range_from_mean_shift(sd)}


MODELS = [
    ModelInfo(
        name="rcan",
        title="RCAN (10 groups x 20 RCAB, 64 channels)",
        build=build_rcan,
        scales=(2, 3, 4, 8),
        defaults={"n_resgroups": 10, "n_resblocks": 20, "n_feats": 64, "reduction": 16, "rgb_range": 255.0},
        tiny={"n_resgroups": 2, "n_resblocks": 2, "n_feats": 16, "reduction": 4},
        reference=Reference(
            paper="Zhang et al., Image Super-Resolution Using Very Deep Residual Channel Attention Networks, ECCV 2018",
            code="yulunzhang/RCAN@f722e5d0 RCAN_TestCode/code/model/rcan.py",
            params={2: 15_444_667, 3: 15_629_307, 4: 15_592_379},
            params_source="authors' code (reference-architectures.md section 4.4)",
        ),
        capabilities=Capabilities(tiling=TILING_GLOBAL_STATS, train_precisions=("fp32", "bf16", "fp16")),
        official=OfficialFormat(
            detect=_official,
            convention="official(255 * x) / 255 (rgb_range 255, DIV2K mean shift inside the network)",
        ),
    ),
]
