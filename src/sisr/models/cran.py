"""CRAN: Context Reasoning Attention Network for Image Super-Resolution.

Zhang, Wei, Qin, Wang, Pfister, Fu, ICCV 2021. There is no author code (and no
official weights); this is built from the paper, sections 3.1-3.5, with the
context-gated convolution (CGC, Lin et al., ECCV 2020, the paper's [37]) as the
reference for what the paper leaves open. Not to be confused with the unrelated
"Compressed Residual Attention Network" that shares the acronym.

CRAC (context reasoning attention convolution), for a c_in -> c_out k x k conv:

1. context: average-pool x to k x k, a shared linear W_E (k*k -> e, no bias)
   per channel: descriptors F_C (c_in x e), e column vectors f_i in R^c_in.
2. CDRR (eq. 1-2): R = (W_varphi F_C)^T (W_phi F_C) (e x e);
   F_C* = sigmoid([(R F_C^T W_g) W_r]^T) * F_C + F_C.
3. channel interaction: grouped linear W_ci (c_in/g x c_out/g, g = 16 groups)
   maps F_C* to F_CI (c_out x e).
4. spatial interaction: F_A1 = F_CI W_A1 (c_out x k*k), F_A2 = F_C* W_A2 (c_in x k*k).
5. mask (eq. 3-4): F_A[o, i, :, :] = sigmoid(F_A1[o] + F_A2[i]); kernel (eq. 5):
   W* = W * F_A, one kernel per sample, applied as ONE grouped convolution over
   the batch (batch folded into channels, groups = N); never unfolded.

CRAB (eq. 6) = CRAC-ReLU-CRAC + x. Network = RCAN without channel attention:
MeanShift -> conv 3->64 -> 10 residual groups (19 EDSR RBs + 1 CRAB, last;
group skip) -> conv, long skip -> ESPCN upsampler -> conv 64->3 -> MeanShift.

Ablations (section 4.2, registry ``cran-edsr``): the EDSR baseline (16 blocks, 64 channels) with
each block an RB, an RCAB or a CRAB (the RB with its two convs replaced by CRACs, as 3.4 says);
``crab_at`` puts CRABs at chosen positions; CRAC switches ``cdrr`` (off: F_C* = F_C, CGC's layer),
``spatial_out`` (F_A1), ``spatial_in`` (F_A2), ``channel_interaction`` (F_C1; off: F_A1 = F_C* W_A1).

Choices where the paper is ambiguous (details, parameter counts: docs/models/cran.md):

* e = k1 k2 / 2 is 4.5 for 3x3: we use CGC's int(k*k/2 + 1) = 5 (the paper cites
  CGC for this bottleneck; ``n_descriptors`` selects another value).
* No normalisation layers: CGC's BatchNorm1d on the descriptors is absent from the
  paper's equations and would make a sample's output depend on its batch during
  training (and differ between train and eval); SR networks avoid BN (EDSR).
  Without BN we also follow the equations in having no ReLU inside the mask path
  (CGC's ReLUs sit after its BNs; un-normalised descriptors would lose their
  negative half).
* W_varphi, W_phi, W_g, W_r are c_in x c_in, acting on the descriptors f_i (the
  c_in axis); no biases, R not normalised (as eq. 1-2). W_g W_r is a product of
  two linear maps, kept as two matrices as written.
* Grouped linear: g = 16 is the number of groups (the paper says so; CGC uses 16
  as the group size), one c_in/g x c_out/g matrix shared by all groups (the
  paper's weight shape, and CGC's sharing).
* The conv bias is kept and added after the modulated convolution (eq. 6 omits
  biases "for simplicity"; CGC silently drops it, a bug).
* RCAN's per-group tail conv is kept (``group_conv=False`` drops it): Table 7's 372.99 G
  "FLOPs" (MACs) equal RCAN's layout *with* the group conv less exactly the 20 CRAC
  convolutions, and that layout counted by module hooks (CRAC kernels unseen) lands on
  14.94M: the paper's counts miss the CRAC kernels. Ours, counted honestly: 15,659,367 at
  x2 (+4.8% vs 14.94M; docs/models/cran.md has the arithmetic).
* Deviation (``descriptor_norm="rms"``, default): each descriptor f_i is divided by its root
  mean square over the channels before CDRR (per sample, no parameters). Eq. 1-5 as written
  (``descriptor_norm="none"``) see trunk features of magnitude 60-1000 (rgb_range 255, no
  normalisation), so eq. 4's sigmoid saturates: measured at init (x2, seed 0, 48x48 crop of
  Set5 babyx2.png) a median of 6.8% of each CRAC's mask entries lie in (0.01, 0.99) (min
  0.5%) and 0% of the CDRR gates; with the RMS normalisation at least 98.6% of the mask
  entries in every CRAC (median 99.8%) and a median of 93% of the gates. The mask then
  depends on the direction of the descriptors, not on their scale. ``"layer"`` also
  subtracts the mean (99.9% median).
* RCAN's channel attention is removed (3.4 replaces every RCAB by an RB or a CRAB).
* MeanShift is frozen (no checkpoints to load it from), rgb_range 255 as RCAN.
* Precisions fp32 and bf16: in the paper form R is quadratic in the feature magnitude and
  overflows fp16; with the normalisation the squares inside the RMS can still overflow it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ModelError
from .common import RCAB, GlobalResidualSR, MeanShift, ResBlock, ResidualGroup, Upsampler, default_conv
from .registry import TILING_GLOBAL_STATS, Capabilities, ModelInfo, Reference


def modulated_conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """Convolve each sample with its own kernel: x (N, C, H, W), weight (N, O, C, k1, k2).

    'Same' zero padding, stride 1. The batch is folded into the channels and the
    whole batch runs as one grouped convolution (groups = N).
    """
    n, c, h, w = x.shape
    _, o, _, k1, k2 = weight.shape
    out = F.conv2d(x.reshape(1, n * c, h, w), weight.reshape(n * o, c, k1, k2),
                   bias=None if bias is None else bias.repeat(n), padding=(k1 // 2, k2 // 2), groups=n)
    return out.view(n, o, h, w)


def modulated_conv2d_unfold(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """Reference formulation of :func:`modulated_conv2d` (CGC's): unfold + batched matmul.

    Materialises C*k1*k2 x H*W columns per sample; for tests and benchmarks only.
    """
    n, c, h, w = x.shape
    _, o, _, k1, k2 = weight.shape
    cols = F.unfold(x, (k1, k2), padding=(k1 // 2, k2 // 2))  # (N, C*k1*k2, H*W)
    out = torch.bmm(weight.reshape(n, o, c * k1 * k2), cols).view(n, o, h, w)
    return out if bias is None else out + bias.view(1, o, 1, 1)


DESCRIPTOR_NORMS = ("rms", "layer", "none")


def normalise_descriptors(desc: torch.Tensor, mode: str, eps: float = 1e-6) -> torch.Tensor:
    """Per-sample normalisation of the descriptors F_C^T (N, e, c) over the channel axis, no parameters.

    ``rms``: each f_i divided by its root mean square; ``layer``: zero mean, unit variance;
    ``none``: eq. 1-5 as written (saturated masks at rgb_range 255, see the module docstring).
    """
    if mode == "none":
        return desc
    if mode == "layer":
        desc = desc - desc.mean(dim=-1, keepdim=True)
    return desc * torch.rsqrt(desc.pow(2).mean(dim=-1, keepdim=True) + eps)


class CDRR(nn.Module):
    """Context descriptor relationship reasoning (eq. 1-2) on descriptors (N, e, c)."""

    def __init__(self, channels: int):
        super().__init__()
        self.varphi = nn.Linear(channels, channels, bias=False)  # W_varphi
        self.phi = nn.Linear(channels, channels, bias=False)  # W_phi
        self.gcn = nn.Linear(channels, channels, bias=False)  # W_g
        self.residual = nn.Linear(channels, channels, bias=False)  # W_r

    def forward(self, desc: torch.Tensor) -> torch.Tensor:
        affinity = self.varphi(desc) @ self.phi(desc).transpose(1, 2)  # R, (N, e, e)
        gate = torch.sigmoid(self.residual(self.gcn(affinity @ desc)))  # [(R F_C^T W_g) W_r], (N, e, c)
        return gate * desc + desc


class CRAC(nn.Module):
    """Context reasoning attention convolution: a k x k 'same' convolution whose
    kernel is modulated per sample by a mask computed from the global context.

    The switches drop one part each (CRAN's ablations, Tables 1-2; all on = the paper's CRAC):
    ``cdrr`` (eq. 2; off: F_C* = F_C, CGC's layer), ``spatial_out`` (F_A1, the output-channel term
    of eq. 4), ``spatial_in`` (F_A2, the input-channel term), ``channel_interaction`` (F_CI = F_C* W_ci;
    off: F_A1 = F_C* W_A1, which needs c_in = c_out).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, bias: bool = True,
                 n_descriptors: int = 5, ci_groups: int = 16, descriptor_norm: str = "rms", cdrr: bool = True,
                 spatial_out: bool = True, spatial_in: bool = True, channel_interaction: bool = True):
        super().__init__()
        check_crac_options(in_channels, out_channels, kernel_size, ci_groups, descriptor_norm, spatial_out,
                           spatial_in, channel_interaction)
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
        self.ci_groups = ci_groups
        self.descriptor_norm = descriptor_norm
        kk = kernel_size * kernel_size
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        self.register_parameter("bias", nn.Parameter(torch.empty(out_channels)) if bias else None)
        self.encode = nn.Linear(kk, n_descriptors, bias=False)  # W_E
        self.cdrr = CDRR(in_channels) if cdrr else None
        self.channel_interaction = (nn.Linear(in_channels // ci_groups, out_channels // ci_groups, bias=False)
                                    if channel_interaction else None)  # W_ci
        self.spatial_out = nn.Linear(n_descriptors, kk, bias=False) if spatial_out else None  # W_A1
        self.spatial_in = nn.Linear(n_descriptors, kk, bias=False) if spatial_in else None  # W_A2
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Kernel and bias initialised as ``nn.Conv2d`` does."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.in_channels * self.kernel_size ** 2)
            nn.init.uniform_(self.bias, -bound, bound)

    def descriptors(self, x: torch.Tensor) -> torch.Tensor:
        """F_C*^T (N, e, c_in): pooled context, W_E, normalisation, CDRR (when on)."""
        pooled = F.adaptive_avg_pool2d(x, self.kernel_size).flatten(2)  # (N, c_in, k*k)
        desc = normalise_descriptors(self.encode(pooled).transpose(1, 2), self.descriptor_norm)
        return desc if self.cdrr is None else self.cdrr(desc)

    def mask(self, x: torch.Tensor) -> torch.Tensor:
        """Attention mask F_A in (0, 1), shape (N, c_out, c_in, k, k) (an expanded view when a term is off)."""
        n, k, g = x.shape[0], self.kernel_size, self.ci_groups
        desc = self.descriptors(x)
        logits = None
        if self.spatial_out is not None:
            f_ci = desc
            if self.channel_interaction is not None:
                grouped = desc.reshape(n, -1, g, self.in_channels // g).transpose(1, 2)  # (N, g, e, c_in/g)
                f_ci = self.channel_interaction(grouped).transpose(1, 2).reshape(n, -1, self.out_channels)
            logits = self.spatial_out(f_ci.transpose(1, 2))[:, :, None]  # F_A1, (N, c_out, 1, k*k)
        if self.spatial_in is not None:
            a_in = self.spatial_in(desc.transpose(1, 2))[:, None]  # F_A2, (N, 1, c_in, k*k)
            logits = a_in if logits is None else logits + a_in
        mask = torch.sigmoid(logits)
        return mask.view(n, mask.shape[1], mask.shape[2], k, k).expand(n, self.out_channels, self.in_channels, k, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return modulated_conv2d(x, self.weight * self.mask(x), self.bias)

    def extra_repr(self) -> str:
        off = [name for name in ("cdrr", "spatial_out", "spatial_in", "channel_interaction")
               if getattr(self, name) is None]
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"bias={self.bias is not None}, ci_groups={self.ci_groups}, descriptor_norm={self.descriptor_norm!r}"
                + (f", off={'+'.join(off)}" if off else ""))


def check_crac_options(in_channels: int, out_channels: int, kernel_size: int, ci_groups: int, descriptor_norm: str,
                       spatial_out: bool, spatial_in: bool, channel_interaction: bool) -> None:
    """One-line ``ModelError`` for a CRAC that cannot be built."""
    if descriptor_norm not in DESCRIPTOR_NORMS:
        raise ModelError(f"CRAC descriptor_norm must be one of {', '.join(DESCRIPTOR_NORMS)}, got {descriptor_norm!r}")
    if kernel_size % 2 == 0:
        raise ModelError(f"CRAC kernel_size must be odd for 'same' padding, got {kernel_size}")
    if in_channels % ci_groups or out_channels % ci_groups:
        raise ModelError(f"CRAC channels ({in_channels}->{out_channels}) must be divisible by "
                         f"ci_groups={ci_groups}")
    if not (spatial_out or spatial_in):
        raise ModelError("CRAC needs spatial_out (F_A1) or spatial_in (F_A2): without both the mask is constant")
    if channel_interaction and not spatial_out:
        raise ModelError("CRAC channel_interaction feeds only spatial_out (F_A1): set channel_interaction=False "
                         "when spatial_out=False")
    if not channel_interaction and in_channels != out_channels:
        raise ModelError(f"CRAC without channel_interaction needs in_channels == out_channels, got "
                         f"{in_channels}->{out_channels}")


class CRAB(nn.Module):
    """Context reasoning attention block (eq. 6): CRAC-ReLU-CRAC, plus the input.

    ``crac_options`` go to both CRACs (``n_descriptors``, ``ci_groups``, ``descriptor_norm`` and the
    ablation switches ``cdrr``, ``spatial_out``, ``spatial_in``, ``channel_interaction``).
    """

    def __init__(self, n_feats: int, kernel_size: int = 3, **crac_options):
        super().__init__()
        self.body = nn.Sequential(
            CRAC(n_feats, n_feats, kernel_size, **crac_options),
            nn.ReLU(inplace=True),
            CRAC(n_feats, n_feats, kernel_size, **crac_options),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def cran_group(n_feats: int, n_resblocks: int, n_descriptors: int, ci_groups: int, group_conv: bool,
               descriptor_norm: str = "rms") -> ResidualGroup:
    """(n_resblocks - 1) EDSR residual blocks, a CRAB, optionally RCAN's tail conv; group skip."""
    blocks: list[nn.Module] = [ResBlock(n_feats, 3) for _ in range(n_resblocks - 1)]
    blocks.append(CRAB(n_feats, 3, n_descriptors=n_descriptors, ci_groups=ci_groups, descriptor_norm=descriptor_norm))
    return ResidualGroup(blocks, n_feats, tail_conv=group_conv)


class CRAN(GlobalResidualSR):
    def __init__(self, scale: int, n_resgroups: int = 10, n_resblocks: int = 20, n_feats: int = 64,
                 n_descriptors: int = 5, ci_groups: int = 16, group_conv: bool = True, descriptor_norm: str = "rms",
                 rgb_range: float = 255.0):
        super().__init__()
        self.build_skeleton(scale, n_feats, lambda: [
            cran_group(n_feats, n_resblocks, n_descriptors, ci_groups, group_conv, descriptor_norm)
            for _ in range(n_resgroups)], rgb_range)


def build_cran(scale: int, n_resgroups: int = 10, n_resblocks: int = 20, n_feats: int = 64, n_descriptors: int = 5,
               ci_groups: int = 16, group_conv: bool = True, descriptor_norm: str = "rms",
               rgb_range: float = 255.0) -> CRAN:
    if n_resgroups < 1 or n_resblocks < 1:
        raise ModelError(f"cran needs n_resgroups >= 1 and n_resblocks >= 1, got {n_resgroups}, {n_resblocks}")
    if n_descriptors < 1:
        raise ModelError(f"cran needs n_descriptors >= 1, got {n_descriptors}")
    if n_feats % ci_groups:
        raise ModelError(f"cran n_feats={n_feats} must be divisible by ci_groups={ci_groups}")
    if descriptor_norm not in DESCRIPTOR_NORMS:
        raise ModelError(f"cran descriptor_norm must be one of {', '.join(DESCRIPTOR_NORMS)}, got {descriptor_norm!r}")
    return CRAN(scale, n_resgroups=n_resgroups, n_resblocks=n_resblocks, n_feats=n_feats,
                n_descriptors=n_descriptors, ci_groups=ci_groups, group_conv=group_conv,
                descriptor_norm=descriptor_norm, rgb_range=rgb_range)


# ---------------------------------------------------------------- the ablation backbone (cran-edsr)

BLOCK_TYPES = ("rb", "rcab", "crab")
CRAC_SWITCHES = ("cdrr", "spatial_out", "spatial_in", "channel_interaction")


def edsr_block(kind: str, n_feats: int, reduction: int, crac_options: dict) -> nn.Module:
    """One residual block of the ablation backbone: EDSR's RB, RCAN's RCAB or a CRAB (an RB with CRACs)."""
    if kind == "crab":
        return CRAB(n_feats, 3, **crac_options)
    if kind == "rcab":
        return RCAB(n_feats, 3, reduction)
    return ResBlock(n_feats, 3)


class EDSRBlocks(GlobalResidualSR):
    """The EDSR baseline (section 4.2's ablation backbone) with each residual block an RB, RCAB or CRAB.

    Layout and module names are EDSR's (``head.0``, ``body.0..R-1``, ``body.R``, ``tail``), created in
    EDSR's order, so the all-RB network is ``edsr-baseline`` (same parameters, same seeded weights).
    ``kinds`` names the block at each position.
    """

    def __init__(self, scale: int, kinds: list[str], n_feats: int, reduction: int, crac_options: dict,
                 rgb_range: float = 255.0):
        super().__init__()
        self.scale = scale
        self.rgb_range = rgb_range
        self.block_kinds = tuple(kinds)
        self.sub_mean = MeanShift(rgb_range, sign=-1)
        self.add_mean = MeanShift(rgb_range, sign=1)
        self.head = nn.Sequential(default_conv(3, n_feats, 3))
        self.body = nn.Sequential(*[edsr_block(k, n_feats, reduction, crac_options) for k in kinds],
                                  default_conv(n_feats, n_feats, 3))
        self.tail = nn.Sequential(Upsampler(scale, n_feats), default_conv(n_feats, 3, 3))


def crab_positions(crab_at, n_resblocks: int) -> tuple[int, ...]:
    """``crab_at`` (an int or a list of 1-based block positions) as a sorted tuple, checked."""
    positions = [crab_at] if isinstance(crab_at, int) and not isinstance(crab_at, bool) else crab_at
    if not isinstance(positions, (list, tuple)) or not all(
            isinstance(p, int) and not isinstance(p, bool) for p in positions):
        raise ModelError(f"cran-edsr crab_at must be a list of block positions (1-based), got {crab_at!r}")
    bad = [p for p in positions if not 1 <= p <= n_resblocks]
    if bad or len(set(positions)) != len(positions):
        raise ModelError(f"cran-edsr crab_at must hold distinct positions in 1..{n_resblocks} "
                         f"(n_resblocks={n_resblocks}), got {list(positions)}")
    return tuple(sorted(positions))


def block_kinds(n_resblocks: int, block: str, crab_at) -> list[str]:
    """The block type at each position: ``block`` everywhere, a CRAB at the ``crab_at`` positions."""
    if n_resblocks < 1:
        raise ModelError(f"cran-edsr needs n_resblocks >= 1, got {n_resblocks}")
    if block not in BLOCK_TYPES:
        raise ModelError(f"cran-edsr block must be one of {', '.join(BLOCK_TYPES)}, got {block!r}")
    positions = crab_positions(crab_at, n_resblocks)
    return ["crab" if i + 1 in positions else block for i in range(n_resblocks)]


def build_cran_edsr(scale: int, n_resblocks: int = 16, n_feats: int = 64, block: str = "rb", crab_at=(),
                    reduction: int = 16, n_descriptors: int = 5, ci_groups: int = 16, descriptor_norm: str = "rms",
                    cdrr: bool = True, spatial_out: bool = True, spatial_in: bool = True,
                    channel_interaction: bool = True, rgb_range: float = 255.0) -> EDSRBlocks:
    kinds = block_kinds(n_resblocks, block, crab_at)
    switches = dict(cdrr=cdrr, spatial_out=spatial_out, spatial_in=spatial_in, channel_interaction=channel_interaction)
    if "crab" not in kinds and not all(switches.values()):
        off = ", ".join(k for k, v in switches.items() if not v)
        raise ModelError(f"cran-edsr: {off} switched off but no block is a CRAB (set block=crab or crab_at)")
    if "rcab" in kinds and not 1 <= reduction <= n_feats:
        raise ModelError(f"cran-edsr reduction must be in 1..n_feats={n_feats} for RCABs, got {reduction}")
    crac_options = dict(n_descriptors=n_descriptors, ci_groups=ci_groups, descriptor_norm=descriptor_norm,
                        **{k: bool(v) for k, v in switches.items()})
    if "crab" in kinds:
        check_crac_options(n_feats, n_feats, 3, ci_groups, descriptor_norm, spatial_out, spatial_in,
                           channel_interaction)
    return EDSRBlocks(scale, kinds, n_feats, reduction, crac_options, rgb_range)


_PAPER = ("Zhang, Wei, Qin, Wang, Pfister, Fu, Context Reasoning Attention Network for Image "
          "Super-Resolution, ICCV 2021")

MODELS = [
    ModelInfo(
        name="cran",
        title="CRAN (10 groups x (19 RB + 1 CRAB), 64 channels)",
        build=build_cran,
        scales=(2, 3, 4, 8),
        defaults={"n_resgroups": 10, "n_resblocks": 20, "n_feats": 64, "n_descriptors": 5, "ci_groups": 16,
                  "group_conv": True, "descriptor_norm": "rms", "rgb_range": 255.0},
        tiny={"n_resgroups": 2, "n_resblocks": 2, "n_feats": 16, "ci_groups": 4},
        variants={
            "paper-form": {"descriptor_norm": "none"},  # eq. 1-5 as written (saturated masks)
            "no-group-conv": {"group_conv": False},  # no per-group tail convolution
        },
        reference=Reference(
            paper=_PAPER,
            code=None,
            params={2: 14_940_000},
            params_source="CRAN paper Table 7 (14.94M, x2, which leaves out the 20 CRAC kernels); ours 15,659,367 "
                          "(+4.8%), see docs/models/cran.md",
            params_tolerance=0.05,
        ),
        capabilities=Capabilities(
            tiling=TILING_GLOBAL_STATS,
            train_precisions=("fp32", "bf16"),
            onnx_unsupported=("each CRAC convolution applies per-sample kernels as one grouped convolution with a "
                              "group per sample (ONNX Conv needs a constant group count, so the batch cannot be "
                              "dynamic) and pools the features to k x k with adaptive average pooling, which the "
                              "exporter only gets right at the trace size"),
        ),
        notes="built from the paper (no author code or weights); fp16 left out: the descriptor affinities "
              "(squared feature magnitudes at rgb_range 255) overflow its range",
    ),
    ModelInfo(
        name="cran-edsr",
        title="CRAN's ablation backbone: EDSR baseline (16 blocks, 64 channels), each block an RB, RCAB or CRAB",
        build=build_cran_edsr,
        scales=(2, 3, 4, 8),
        defaults={"n_resblocks": 16, "n_feats": 64, "block": "rb", "crab_at": [], "reduction": 16,
                  "n_descriptors": 5, "ci_groups": 16, "descriptor_norm": "rms", "cdrr": True, "spatial_out": True,
                  "spatial_in": True, "channel_interaction": True, "rgb_range": 255.0},
        tiny={"n_feats": 16, "ci_groups": 4, "reduction": 4},  # depth kept at 16: Table 3's positions exist
        reference=Reference(
            paper=_PAPER + " (section 4.2, Tables 1-3)",
            code=None,
            params={2: 1_369_883},
            params_source="the default (16 RBs) is the EDSR baseline, authors' code "
                          "(../shared/fixtures/parity/edsr_baseline_x2.json); the paper prints no counts for the "
                          "variants: docs/models/cran.md, 'Ablation variants'",
        ),
        capabilities=Capabilities(
            tiling=TILING_GLOBAL_STATS,
            train_precisions=("fp32", "bf16"),
            onnx_unsupported=("its CRABs' CRAC convolutions apply per-sample kernels as one grouped convolution "
                              "with a group per sample and pool with adaptive average pooling (as cran); the "
                              "all-RB default is edsr-baseline, which exports"),
        ),
        notes="for CRAN's ablations (experiments cran-table1..3): block=rb|rcab|crab, crab_at=[positions], "
              "CRAC switches cdrr, spatial_out (F_A1), spatial_in (F_A2), channel_interaction (F_C1)",
    ),
]
