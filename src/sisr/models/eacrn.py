"""EACRN: Expectation-Maximization Attention Cross Residual Network.

Du, Niu, Liu, CVPRW 2021. There is no public code: the network is built from the
paper (section 3, section 4.2, Table 3), with the EM attention unit following the
EMANet code (``XiaLiPKU/EMANet`` ``network.py`` class ``EMAU``, read as a
specification). ``docs/models/eacrn.md`` gives the full reasoning and the
parameter breakdown; the choices in short:

Layout (G = n_groups = 10, B = n_blocks = 4, C = n_feats = 64):
MeanShift(-DIV2K mean) -> conv3x3 3->C (eq. 2) -> G x CRG -> conv3x3 C->C (W_LSC), plus
the long skip from F_0 (eq. 4) -> sub-pixel upsampler -> conv3x3 C->3 -> MeanShift(+mean).

CRG (eq. 5-9): ``blocks[i]`` is H_{g,i+1} (CRB + EM attention). F1 = H1(x), F2 = H2(x),
F3 = H3(F1), F4 = H4(F2), then W_conv = conv3x3 2C->C on [F1 + F4, F2 + F3]. For B > 4
(not in the paper) each path gets longer: odd-numbered blocks chain on path 1, even-numbered
ones on path 2, and the cross sums join each path's first output with the other's last.

CRB (section 3.3, the CRG wiring one level down): two head branches of 5x5 convs,
b1 = relu(conv5x5(x)), b2 = relu(conv5x5(x)); the multi-scale layer gives branch 1 a 3x3
and branch 2 a 5x5 conv, b3 = relu(conv3x3(b1)), b4 = relu(conv5x5(b2)); cross residual
fusion out = x + conv1x1([b1 + b4, b2 + b3]) (MSRN's 1x1 bottleneck and block shortcut).

Table 1's ablations (same blocks and widths, docs/models/eacrn.md "Ablation variants"):
``cross_group=False`` drops the CRG's cross sums (W_conv on [F3, F4]); ``cross_block=False`` drops
the CRB's (fusion of [b3, b4], shortcut kept); ``ema_placement="none"`` drops the EM attention.

EM attention (section 3.4; EMANet's EMAU): 1x1 conv, ``em_stages`` E/M iterations with
``em_bases`` unit-norm bases (A_E softmax responsibilities, A_M responsibility-weighted
means, l2-normalised), re-estimation A_R = relu(mu z^T), 1x1 conv, plus the input.

Choices and deviations (each explained in the docs):
* EM attention after every CRB (``ema_placement="block"``, 40 units): Table 1 treats EMA as
  a component beside CRG and CRB, and the count decides: 15,361,947 at x2 rounds to Table
  3's 15.4M (-0.25%); one unit per CRG after W_conv (``"group"``) gives 15,112,347 (15.1M).
* The "cross short skip connection" (3.2) is read as eq. 9's cross sums F1 + F4, F2 + F3
  (skips inside the group that cross the two paths); eq. 9 has no identity term, so the CRG
  does not add its input by default (``group_skip=True`` adds it, RCAN's short skip).
* W_conv is 3x3 (like W_LSC and RCAN's group-tail conv); with 1x1 the count is 14.71M,
  4.5% under Table 3's 15.4M.
* Training recipe: LR patch 48 at every scale (HR 192 at x4, RCAN's setting): HR 192 at x2
  (LR 96) would be ~13.6 TFLOP per step, 1e6 steps ~4x the paper's "7 days on a 1080 Ti".
* Batch norm after EMAU's second 1x1 conv is dropped (the paper follows EDSR in avoiding
  BN; eval stays batch-independent) and that conv gets a bias instead of BN's shift. EMAU's
  final ReLU after the residual sum is dropped too: the trunk's residual stream stays linear
  as in EDSR/RCAN.
* Gradients: the first ``em_stages - 1`` iterations run without autograd (as EMAU); the last
  E and M steps and the re-estimation are differentiable, so conv1 learns (in EMAU it gets
  no gradient at all).
* The bases' moving average (EMANet does it in its training script) is done by the unit in
  training mode: mu <- l2norm(m * mu + (1 - m) * batch mean of the final bases), m = 0.9,
  without autograd; the re-normalisation keeps the bases unit-norm (EMANet's does not).
  Eval mode never changes the buffer.
* The EM statistics run in float32 even under fp16/bf16 (a sum of responsibilities over an
  image's pixels exceeds the fp16 range).
* rgb_range 255 with a frozen DIV2K mean shift (EDSR/RCAN code, which the paper reproduces
  and compares with); the paper states no input normalisation.
* The bases are estimated over the whole image, so tiling changes the output slightly.
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ModelError
from .common import GlobalResidualSR, default_conv
from .registry import TILING_GLOBAL_STATS, Capabilities, ModelInfo, Reference


def l2norm(t: torch.Tensor, dim: int) -> torch.Tensor:
    """``t / (1e-6 + ||t||)`` along ``dim`` (EMAU's normalisation)."""
    return t / (1e-6 + t.norm(dim=dim, keepdim=True))


def _autocast_off(device: torch.device):
    """Context that disables autocast on ``device`` (a no-op where autocast does not exist)."""
    try:
        return torch.autocast(device.type, enabled=False)
    except RuntimeError:  # e.g. the meta device used for FLOP counting
        return contextlib.nullcontext()


class EMAttention(nn.Module):
    """Expectation-maximization attention unit (EMAU without BN, one-step gradient).

    ``mu`` (1, C, K) holds the unit-norm initial bases; in training mode every forward moves
    it towards the batch mean of the converged bases (``momentum``), outside autograd.
    """

    def __init__(self, channels: int, n_bases: int = 64, n_stages: int = 3, momentum: float = 0.9):
        super().__init__()
        self.n_stages = n_stages
        self.momentum = momentum
        mu = torch.randn(1, channels, n_bases) * math.sqrt(2.0 / n_bases)
        self.register_buffer("mu", l2norm(mu, dim=1))
        self.conv1 = nn.Conv2d(channels, channels, 1)
        self.conv2 = nn.Conv2d(channels, channels, 1)

    @staticmethod
    def e_step(x: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
        """A_E: responsibilities z (B, N, K), softmax over the bases of x^T mu."""
        return F.softmax(torch.bmm(x.transpose(1, 2), mu), dim=2)

    @staticmethod
    def m_step(x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """A_M: bases (B, C, K) = l2-normalised responsibility-weighted means of x."""
        z = z / (1e-6 + z.sum(dim=1, keepdim=True))
        return l2norm(torch.bmm(x, z), dim=1)

    def estimate(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """EM iterations on x (B, C, N) float32 from the stored bases; final (z, mu)."""
        mu = self.mu.float().repeat(x.shape[0], 1, 1)  # a copy: the buffer may change in place later
        with torch.no_grad():
            for _ in range(self.n_stages - 1):
                mu = self.m_step(x, self.e_step(x, mu))
        z = self.e_step(x, mu)
        return z, self.m_step(x, z)

    @torch.no_grad()
    def update_bases(self, mu: torch.Tensor) -> None:
        """Moving average of the bases with the batch mean of ``mu`` (B, C, K)."""
        mean = mu.detach().float().mean(dim=0, keepdim=True)
        self.mu.copy_(l2norm(self.momentum * self.mu.float() + (1.0 - self.momentum) * mean, dim=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.conv1(x)
        b, c, h, w = feats.shape
        with _autocast_off(x.device):
            z, mu = self.estimate(feats.reshape(b, c, h * w).float())
            recon = F.relu(torch.bmm(mu, z.transpose(1, 2)))  # A_R
        if self.training:
            self.update_bases(mu)
        return x + self.conv2(recon.view(b, c, h, w).to(x.dtype))


EMA_PLACEMENTS = ("block", "group", "none")


class CrossResidualBlock(nn.Module):
    """CRB: two 5x5 head branches, a 3x3/5x5 multi-scale layer, cross sums, 1x1 fusion, shortcut;
    with ``ema`` an EM attention unit on the block's output. ``cross=False`` (Table 1's CRB without
    cross residual learning) fuses [b3, b4], the two branches' outputs, without the cross sums."""

    def __init__(self, n_feats: int, ema: EMAttention | None = None, cross: bool = True):
        super().__init__()
        self.cross = cross
        self.head1 = default_conv(n_feats, n_feats, 5)
        self.head2 = default_conv(n_feats, n_feats, 5)
        self.ms3 = default_conv(n_feats, n_feats, 3)
        self.ms5 = default_conv(n_feats, n_feats, 5)
        self.fuse = default_conv(2 * n_feats, n_feats, 1)
        self.relu = nn.ReLU(inplace=True)
        self.ema = ema

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.relu(self.head1(x))
        b2 = self.relu(self.head2(x))
        b3 = self.relu(self.ms3(b1))
        b4 = self.relu(self.ms5(b2))
        pair = [b1 + b4, b2 + b3] if self.cross else [b3, b4]
        out = x + self.fuse(torch.cat(pair, dim=1))
        return out if self.ema is None else self.ema(out)


class CrossResidualGroup(nn.Module):
    """CRG (eq. 5-9): two chains of CRBs with cross sums, W_conv 3x3 fusion.

    ``ema_placement="block"``: an EM attention unit after every CRB (``blocks[i].ema``);
    ``"group"``: one after W_conv (``ema``); ``"none"``: no EM attention (Table 1 without EMA).
    ``group_skip`` adds the group input (not in eq. 9). ``cross_group=False`` (Table 1's CRG without
    cross residual learning) fuses [last of path 1, last of path 2] = [F3, F4] without the cross sums;
    ``cross_block`` is the CRBs' ``cross``.
    """

    def __init__(self, n_feats: int, n_blocks: int = 4, em_bases: int = 64, em_stages: int = 3,
                 em_momentum: float = 0.9, ema_placement: str = "block", group_skip: bool = False,
                 cross_group: bool = True, cross_block: bool = True):
        super().__init__()
        def unit() -> EMAttention:
            return EMAttention(n_feats, em_bases, em_stages, em_momentum)
        per_block = ema_placement == "block"
        self.blocks = nn.ModuleList(CrossResidualBlock(n_feats, unit() if per_block else None, cross_block)
                                    for _ in range(n_blocks))
        self.fuse = default_conv(2 * n_feats, n_feats, 3)
        self.ema = unit() if ema_placement == "group" else None
        self.group_skip = group_skip
        self.cross_group = cross_group

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        path1 = self.blocks[0](x)  # F1
        path2 = self.blocks[1](x)  # F2
        first1, first2 = path1, path2
        for i in range(2, len(self.blocks), 2):
            path1 = self.blocks[i](path1)  # F3 = H3(F1)
            path2 = self.blocks[i + 1](path2)  # F4 = H4(F2)
        pair = [first1 + path2, first2 + path1] if self.cross_group else [path1, path2]
        out = self.fuse(torch.cat(pair, dim=1))
        if self.ema is not None:
            out = self.ema(out)
        return x + out if self.group_skip else out


class EACRN(GlobalResidualSR):
    def __init__(self, scale: int, n_groups: int = 10, n_blocks: int = 4, n_feats: int = 64,
                 em_bases: int = 64, em_stages: int = 3, em_momentum: float = 0.9, ema_placement: str = "block",
                 group_skip: bool = False, cross_group: bool = True, cross_block: bool = True,
                 rgb_range: float = 255.0):
        super().__init__()
        # body: the groups, then W_LSC of eq. 4
        self.build_skeleton(scale, n_feats, lambda: [
            CrossResidualGroup(n_feats, n_blocks, em_bases, em_stages, em_momentum, ema_placement, group_skip,
                               cross_group, cross_block)
            for _ in range(n_groups)], rgb_range)


def build_eacrn(scale: int, n_groups: int = 10, n_blocks: int = 4, n_feats: int = 64, em_bases: int = 64,
                em_stages: int = 3, em_momentum: float = 0.9, ema_placement: str = "block",
                group_skip: bool = False, cross_group: bool = True, cross_block: bool = True,
                rgb_range: float = 255.0) -> EACRN:
    if n_blocks < 4 or n_blocks % 2:
        raise ModelError(f"eacrn: n_blocks must be an even number >= 4 (two cross-wired paths), got {n_blocks}")
    if min(n_groups, n_feats, em_bases, em_stages) < 1:
        raise ModelError("eacrn: n_groups, n_feats, em_bases and em_stages must be >= 1")
    if not 0.0 <= em_momentum < 1.0:
        raise ModelError(f"eacrn: em_momentum must be in [0, 1), got {em_momentum}")
    if ema_placement not in EMA_PLACEMENTS:
        raise ModelError(f"eacrn: ema_placement must be one of {', '.join(EMA_PLACEMENTS)}, got {ema_placement!r}")
    return EACRN(scale, n_groups=n_groups, n_blocks=n_blocks, n_feats=n_feats, em_bases=em_bases,
                 em_stages=em_stages, em_momentum=em_momentum, ema_placement=ema_placement,
                 group_skip=bool(group_skip), cross_group=bool(cross_group), cross_block=bool(cross_block),
                 rgb_range=rgb_range)


MODELS = [
    ModelInfo(
        name="eacrn",
        title="EACRN (10 cross residual groups x 4 cross residual blocks, EM attention, 64 channels)",
        build=build_eacrn,
        scales=(2, 3, 4, 8),
        defaults={"n_groups": 10, "n_blocks": 4, "n_feats": 64, "em_bases": 64, "em_stages": 3,
                  "em_momentum": 0.9, "ema_placement": "block", "group_skip": False, "cross_group": True,
                  "cross_block": True, "rgb_range": 255.0},
        tiny={"n_groups": 2, "n_blocks": 4, "n_feats": 8, "em_bases": 4},
        variants={
            "group-ema": {"ema_placement": "group"},  # one EM unit per CRG (the other reading of the paper)
            "group-skip": {"group_skip": True},  # RCAN's identity short skip around each CRG
        },
        reference=Reference(
            paper="Du, Niu, Liu, Expectation-Maximization Attention Cross Residual Network for Single Image "
                  "Super-resolution, CVPRW 2021",
            code=None,
            params={2: 15_400_000},
            params_source="paper Table 3 (15.4M, scale not stated; attached to x2); ours 15,361,947 (-0.25%)",
            params_tolerance=0.05,
        ),
        capabilities=Capabilities(tiling=TILING_GLOBAL_STATS, train_precisions=("fp32", "bf16", "fp16")),
        notes="built from the paper (no public code); EM bases are estimated over the whole image, "
              "so tiles differ slightly; choices in docs/models/eacrn.md",
    ),
]
