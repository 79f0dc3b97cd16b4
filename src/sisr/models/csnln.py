"""CSNLN: Image Super-Resolution with Cross-Scale Non-Local Attention and Exhaustive Self-Exemplars Mining.

Mei, Fan, Zhou, Huang, Huang, Shi, CVPR 2020. Authors' code: SHI-Labs/Cross-Scale-Non-Local-Attention
@ 531aec92 (``src/model/csnln.py``, ``src/model/attention.py``); module and parameter names, shapes and
parameter counts follow it (x2/x3/x4: 3,061,289 / 6,010,409 / 6,568,627) so the released
``model_x{s}.pt`` state dicts load with strict key matching.

Layout (C = n_feats = 128)::

    x -> MeanShift(-mean) -> head: 2 x [conv3x3 + PReLU]
      -> depth=12 x SEM (ONE weight-shared module; each step returns the next LR state and an
         sH x sW estimate h_i) -> tail: conv3x3 over concat(h_1..h_depth) (C*depth -> 3)
      -> MeanShift(+mean)

SEM (x2, x3; (k, stride, pad) = (6, 2, 2) / (9, 3, 3)): ``u = MSP(x)``;
``h = u + deconv(x - conv(u))`` (back-projection); ``x' = conv3x3(conv(h))``.
x4 runs a second 2x stage on ``h`` (MSP_2, then 8/4/2 strided (de)convolutions back to 1x).
MSP (mutual-projected fusion): ``d = deconv(NL(x))``; ``return d + ResBlock(CSA(x) - d)``.
Every (de)convolution is followed by its own single-slope PReLU.

Cross-scale attention (CSA), as in the authors' code: values = the 3s x 3s patches (stride s,
TF 'same' zero padding) of a 1x1 PReLU embedding of x; keys = 3x3 patches of a 1x1 embedding of
``bilinear(x, 1/s)`` (raw features, align_corners=False), each divided by
``max(||key||_2, escape_NaN=1e-4)`` (queries are not normalised); queries = 3x3 patches of a
third embedding of x; weights = softmax over the keys of 10 * <query, key>; the output is the
transposed convolution (stride s, padding s) of the weights with the value patches, divided
by 6 (the authors' fixed overlap constant; the true overlap count is 9). In-scale non-local
attention (NL): softmax(theta^T phi) g with 1x1 PReLU embeddings, no 1/sqrt(d), no output conv.

Two implementations of the attention, numerically equivalent (``attention=``):
* ``"reference"``: the authors' direct formulation (per-sample loop, unfold, correlation
  convolution, softmax, transposed convolution, /6; NL as two full matmuls; the tail on the
  concatenated estimates). It materialises the (HW/s^2) x HW cross-scale and HW x HW in-scale
  score maps.
* ``"fast"`` (default): batched and memory-bounded. CSA: queries processed in blocks (whole
  rows, or parts of one row when a row alone exceeds the budget) against all keys (scores,
  softmax and patch aggregation as matrix products on patch matrices, folded back by
  overlap-add), the block size bounded by ``attention_budget`` bytes; under autograd every block
  is checkpointed (recomputed in backward) so training memory is bounded too. NL:
  ``scaled_dot_product_attention`` with scale 1 (queries/keys zero-padded to the value width so
  the fused memory-efficient kernels apply). The tail convolution is summed over the iterations
  instead of concatenating the estimates.

Ablation variants (paper Tables 3-5; defaults = the authors' network; docs/models/csnln.md,
"Ablation variants"): ``local``, ``in_scale``, ``cross_scale`` switch the SEM branches (a missing
branch drops its term from the fusion; none at all gives the paper's baseline, a recurrent block of
10 convolutions, ``ConvRecurrentBlock``); ``patch_size`` is the cross-scale matching patch p (odd,
the overlap-add divided by 6 p^2 / 9); ``fusion`` is ``"mutual"`` (mutual projection), ``"add"`` or
``"concat"``.

Conventions and deviations (docs/models/csnln.md has the reasons):
* Input/output RGB in [0, 1]; the network runs at ``rgb_range`` (1, as the official models).
* Any input size: the authors' code needs H, W divisible by s (x2, x3) or even (x4). Inputs
  are padded at the bottom/right by edge replication to that multiple and the output is
  cropped to sH x sW; the non-local searches cover the whole padded input.
* The official attention modules hard-code 128 channels; ours follow ``n_feats`` (identical at
  128), so smaller test configurations work.
* The authors' unused options (``stride``, ``average=False`` hard attention, the NL module's
  ignored arguments) are not reproduced.
* Under bf16 autocast the fast path computes the key norms and the cross-scale softmax in
  float32.
"""

from __future__ import annotations

from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..errors import ModelError
from .common import MeanShift, default_conv
from .registry import TILING_GLOBAL_ATTENTION, Capabilities, ModelInfo, OfficialFormat, Reference

ATTENTION_MODES = ("fast", "reference")
DEFAULT_ATTENTION_BUDGET = 64 * 2**20  # bytes of temporaries per cross-scale attention block
OVERLAP_NORMALISER = 6.0  # the authors' divisor of the overlap-added 3x3 value patches (9 overlaps)
FUSIONS = ("mutual", "add", "concat")  # SEM fusion (Table 5): mutual projection, addition, concatenation
BASELINE_CONVS = 10  # conv layers of Table 3's branch-less recurrent block

# scale -> (kernel, stride, padding) of the strided (de)convolutions, cross-scale factor of the attention
_PROJECTION = {2: ((6, 2, 2), 2), 3: ((9, 3, 3), 3), 4: ((6, 2, 2), 2)}
_X4_SECOND_STAGE = (8, 4, 2)


def _conv_prelu(in_channels: int, out_channels: int, kernel_size: int) -> nn.Sequential:
    """EDSR ``BasicBlock``: 'same' convolution + single-slope PReLU (keys .0, .1)."""
    return nn.Sequential(default_conv(in_channels, out_channels, kernel_size), nn.PReLU())


def _strided(channels: int, kernel: int, stride: int, padding: int, transposed: bool) -> nn.Sequential:
    conv = nn.ConvTranspose2d if transposed else nn.Conv2d
    return nn.Sequential(conv(channels, channels, kernel, stride=stride, padding=padding), nn.PReLU())


def _balanced(length: int, most: int) -> int:
    """Block length <= most splitting ``length`` into the fewest blocks of (nearly) equal size."""
    blocks = -(-length // min(length, most))
    return -(-length // blocks)


def _same_pad(x: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    """TensorFlow 'same' zero padding for a kernel x kernel window at ``stride`` (extra row/col at the end)."""
    pads = []
    for size in (x.shape[-1], x.shape[-2]):
        total = max(0, (-(-size // stride) - 1) * stride + kernel - size)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads)


class ResBlock(nn.Module):
    """conv3x3 - PReLU - conv3x3, plus the input (keys body.0, body.1, body.2)."""

    def __init__(self, channels: int, kernel_size: int = 3):
        super().__init__()
        self.body = nn.Sequential(default_conv(channels, channels, kernel_size), nn.PReLU(),
                                  default_conv(channels, channels, kernel_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + x


class NonLocalAttention(nn.Module):
    """In-scale non-local attention: softmax(theta(x)^T phi(x)) g(x), no scaling, no residual."""

    def __init__(self, channels: int = 128, reduction: int = 2):
        super().__init__()
        self.conv_match1 = _conv_prelu(channels, channels // reduction, 1)
        self.conv_match2 = _conv_prelu(channels, channels // reduction, 1)
        self.conv_assembly = _conv_prelu(channels, channels, 1)
        self.mode = "fast"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        theta = self.conv_match1(x).flatten(2).transpose(1, 2)  # (n, hw, c/2)
        phi = self.conv_match2(x).flatten(2)  # (n, c/2, hw)
        values = self.conv_assembly(x).flatten(2).transpose(1, 2)  # (n, hw, c)
        if self.mode == "reference":
            out = torch.matmul(F.softmax(torch.matmul(theta, phi), dim=2), values)
        else:
            # zero-padding queries/keys to the value width leaves every dot product unchanged and
            # makes the fused (flash / memory-efficient) kernels applicable on CPU and CUDA
            extra = values.shape[-1] - theta.shape[-1]
            q = F.pad(theta, (0, extra)).unsqueeze(1)
            k = F.pad(phi.transpose(1, 2), (0, extra)).unsqueeze(1)
            out = F.scaled_dot_product_attention(q, k, values.contiguous().unsqueeze(1), scale=1.0).squeeze(1)
        return out.transpose(1, 2).reshape(n, -1, h, w)


def _cross_scale_block(queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, scale: int,
                       ksize: int, rows: int, cols: int) -> torch.Tensor:
    """Cross-scale attention of a rows x cols block of query positions, folded to its HR output block.

    queries: the block's query patches (n, d*ksize^2, rows*cols); keys: scaled, normalised key
    patches (n, L, d*ksize^2); values: value patches in unfold layout (n, c*K*K, L), K = scale*ksize.
    Returns the overlap-added value patches, (n, c, s*(rows-1) + K, s*(cols-1) + K).
    """
    scores = torch.bmm(keys, queries)  # (n, L, q)
    weights = torch.softmax(scores, dim=1, dtype=torch.float32).to(values.dtype)
    patches = torch.bmm(values, weights)  # (n, c*K*K, q)
    kernel = scale * ksize
    return F.fold(patches, (scale * (rows - 1) + kernel, scale * (cols - 1) + kernel), kernel, stride=scale)


class CrossScaleAttention(nn.Module):
    """Cross-scale non-local attention: (n, c, H, W) -> (n, c, sH, sW); H, W must be multiples of s.

    ``ksize`` is the matching patch size p (odd; the authors' 3): p x p query patches of x against
    p x p key patches of x at 1/s, each match pasting an sp x sp value patch. The overlap-add is
    divided by 6 p^2 / 9 (the authors' 6 at p = 3, see the module docstring).
    """

    def __init__(self, channels: int = 128, reduction: int = 2, ksize: int = 3, scale: int = 2,
                 softmax_scale: float = 10.0):
        super().__init__()
        self.ksize = ksize
        self.scale = scale
        self.softmax_scale = softmax_scale
        self.margin = scale * (ksize // 2)  # 'same' padding of the sp x sp value patches at stride s
        self.normaliser = OVERLAP_NORMALISER * (ksize / 3) ** 2
        self.register_buffer("escape_NaN", torch.tensor([1e-4]))
        self.conv_match_1 = _conv_prelu(channels, channels // reduction, 1)
        self.conv_match_2 = _conv_prelu(channels, channels // reduction, 1)
        self.conv_assembly = _conv_prelu(channels, channels, 1)
        self.mode = "fast"
        self.budget = DEFAULT_ATTENTION_BUDGET

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        s = self.scale
        if h % s or w % s:
            raise ValueError(f"CrossScaleAttention: input {h}x{w} is not a multiple of the scale {s}")
        embed = self.conv_assembly(x)  # values
        match = self.conv_match_1(x)  # queries
        ref = F.interpolate(x, size=(h // s, w // s), mode="bilinear", align_corners=False)
        ref = self.conv_match_2(ref)  # keys, at 1/s
        if self.mode == "reference":
            return self._reference(embed, match, ref)
        return self._fast(embed, match, ref)

    def _reference(self, embed: torch.Tensor, match: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        n, c = embed.shape[:2]
        s, k = self.scale, self.ksize
        big = s * k
        raw = F.unfold(_same_pad(embed, big, s), big, stride=s)  # (n, c*K*K, L)
        raw = raw.view(n, c, big, big, -1).permute(0, 4, 1, 2, 3)  # (n, L, c, K, K)
        keys = F.unfold(_same_pad(ref, k, 1), k)
        keys = keys.view(n, ref.shape[1], k, k, -1).permute(0, 4, 1, 2, 3)  # (n, L, c/2, k, k)
        out = []
        for i in range(n):
            key = keys[i]
            norm = torch.sqrt(key.pow(2).sum(dim=(1, 2, 3), keepdim=True))
            key = key / torch.max(norm, self.escape_NaN)
            score = F.conv2d(_same_pad(match[i:i + 1], k, 1), key)  # (1, L, H, W)
            score = F.softmax(score * self.softmax_scale, dim=1)
            out.append(F.conv_transpose2d(score, raw[i], stride=s, padding=self.margin) / self.normaliser)
        return torch.cat(out, dim=0)

    def _fast(self, embed: torch.Tensor, match: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        n, c, h, w = embed.shape
        s, k, m = self.scale, self.ksize, self.margin
        big = s * k
        # TF 'same' padding of an sp x sp window at stride s on a multiple of s is s * (p // 2) on every
        # side; the overlap normaliser is applied to the values (a pass over C*H*W instead of C*sH*sW)
        values = F.unfold(F.pad(embed / self.normaliser, (m, m, m, m)), big, stride=s)  # (n, c*K*K, L)
        keys = F.unfold(ref, k, padding=k // 2).float()  # (n, d*k*k, L)
        norm = torch.maximum(keys.norm(dim=1, keepdim=True), self.escape_NaN.float())
        keys = (keys * (self.softmax_scale / norm)).to(match.dtype).transpose(1, 2)  # (n, L, d*k*k)
        queries = F.unfold(match, k, padding=k // 2)  # (n, d*k*k, H*W); a block is a column range
        n_keys, n_values = keys.shape[1], values.shape[1]
        # temporaries per query: scores and fp32 weights (+ a low-precision copy), its value-patch
        # column, its share of the folded block
        per_query = n * (n_keys * (8 + values.element_size()) + (n_values + c * s * s) * values.element_size())
        most = max(1, self.budget // per_query)
        if most >= w:  # whole rows, in blocks of (nearly) equal size
            rows, cols = _balanced(h, most // w), w
        else:  # parts of one row
            rows, cols = 1, _balanced(w, most)
        train = torch.is_grad_enabled() and any(t.requires_grad for t in (keys, values, queries))
        out = values.new_zeros(n, c, s * h + 2 * m, s * w + 2 * m)  # output with an m-pixel margin
        for r0 in range(0, h, rows):
            r1 = min(h, r0 + rows)
            for c0 in range(0, w, cols):
                c1 = min(w, c0 + cols)
                block = queries[:, :, r0 * w + c0:(r1 - 1) * w + c1]
                args = (block, keys, values, s, k, r1 - r0, c1 - c0)
                if train:
                    folded = checkpoint(_cross_scale_block, *args, use_reentrant=False, preserve_rng_state=False)
                else:
                    folded = _cross_scale_block(*args)
                out[:, :, s * r0:s * r1 + 2 * m, s * c0:s * c1 + 2 * m] += folded
        return out[:, :, m:m + s * h, m:m + s * w]


class MultisourceProjection(nn.Module):
    """The non-local SEM branches and their mutual projection (paper Eqs. 5-6).

    In-scale branch F_I = deconv(NL(x)), cross-scale branch F_C = CSA(x), both at the stage's 2x/3x;
    ``forward`` returns F_I + ResBlock(F_C - F_I) (the authors' form of conv(R_IC) + F_I), or the
    one branch built when the other is switched off (no residual to project).
    """

    def __init__(self, channels: int, kernel_size: int = 3, scale: int = 2, in_scale: bool = True,
                 cross_scale: bool = True, patch_size: int = 3, project: bool = True):
        super().__init__()
        (kernel, stride, padding), factor = _PROJECTION[scale]
        self.in_scale, self.cross_scale = in_scale, cross_scale
        if cross_scale:
            self.up_attention = CrossScaleAttention(channels, ksize=patch_size, scale=factor)
        if in_scale:
            self.down_attention = NonLocalAttention(channels)
            self.upsample = _strided(channels, kernel, stride, padding, transposed=True)
        self.project = project and in_scale and cross_scale
        if self.project:
            self.encoder = ResBlock(channels, kernel_size)

    def branches(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The HR features of the branches built, in-scale first."""
        features = []
        if self.in_scale:
            features.append(self.upsample(self.down_attention(x)))
        if self.cross_scale:
            features.append(self.up_attention(x))
        return features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.branches(x)
        if self.project:
            down_map, up_map = features
            return down_map + self.encoder(up_map - down_map)
        return features[0]


class RecurrentProjection(nn.Module):
    """The Self-Exemplars Mining cell: returns the next LR state and the HR estimate.

    Ablation switches (paper Tables 3-5, docs/models/csnln.md): ``local``, ``in_scale``,
    ``cross_scale`` build the SEM branches; ``fusion`` combines them per stage:
    ``"mutual"`` (the authors'): F_IC by mutual projection, then back-projection of the local
    branch, H = F_IC + up(x - down(F_IC)) (Eqs. 7-8); a missing non-local branch leaves the other
    as F_IC, without the local branch H = F_IC, with the local branch alone H = up(x).
    ``"add"`` / ``"concat"``: H = the sum / a 1x1 convolution of the concatenation of up(x), F_I, F_C.
    """

    def __init__(self, channels: int, kernel_size: int = 3, scale: int = 2, local: bool = True,
                 in_scale: bool = True, cross_scale: bool = True, patch_size: int = 3, fusion: str = "mutual"):
        super().__init__()
        self.scale, self.fusion = scale, fusion
        (kernel, stride, padding), _ = _PROJECTION[scale]
        non_local = in_scale or cross_scale
        msp = dict(in_scale=in_scale, cross_scale=cross_scale, patch_size=patch_size, project=fusion == "mutual")
        back_project = local and non_local and fusion == "mutual"
        fused = local + in_scale + cross_scale
        # x4 with the local branch alone: H = error_encode_2(x) from the LR state, no 2x stage
        self.first_stage = non_local or scale != 4
        if non_local:
            self.multi_source_projection = MultisourceProjection(channels, kernel_size, scale, **msp)
        if back_project:
            self.down_sample_1 = _strided(channels, kernel, stride, padding, transposed=False)
        if scale != 4:
            self.down_sample_2 = _strided(channels, kernel, stride, padding, transposed=False)
        if local and self.first_stage:
            self.error_encode = _strided(channels, kernel, stride, padding, transposed=True)
        self.post_conv = _conv_prelu(channels, channels, kernel_size)
        if fusion == "concat" and self.first_stage:
            self.fuse = nn.Conv2d(channels * fused, channels, 1)
        if scale == 4:
            if non_local:
                self.multi_source_projection_2 = MultisourceProjection(channels, kernel_size, scale, **msp)
            if back_project:
                self.down_sample_3 = _strided(channels, *_X4_SECOND_STAGE, transposed=False)
            self.down_sample_4 = _strided(channels, *_X4_SECOND_STAGE, transposed=False)
            if local:
                self.error_encode_2 = _strided(channels, *_X4_SECOND_STAGE, transposed=True)
            if fusion == "concat":
                self.fuse_2 = nn.Conv2d(channels * fused, channels, 1)

    def _stage(self, features: torch.Tensor, x: torch.Tensor, suffix: str = "") -> torch.Tensor:
        """One fusion stage: the HR estimate from the stage input ``features`` and the LR state ``x``."""
        msp = getattr(self, "multi_source_projection" + suffix, None)
        up = getattr(self, "error_encode" + suffix, None)
        if self.fusion == "mutual":
            fused = msp(features) if msp is not None else None
            if up is None:
                return fused
            if fused is None:
                return up(x)
            down = self.down_sample_3 if suffix else self.down_sample_1
            return fused + up(x - down(fused))
        branches = ([up(x)] if up is not None else []) + (msp.branches(features) if msp is not None else [])
        if self.fusion == "concat":
            return getattr(self, "fuse" + suffix)(torch.cat(branches, dim=1))
        out = branches[0]
        for branch in branches[1:]:
            out = out + branch
        return out

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self._stage(x, x) if self.first_stage else x
        if self.scale == 4:
            h = self._stage(h, x, "_2")
            return self.post_conv(self.down_sample_4(h)), h
        return self.post_conv(self.down_sample_2(h)), h


class ConvRecurrentBlock(nn.Module):
    """Table 3's baseline cell without SEM branches: 10 conv3x3 + PReLU at LR, one stride
    deconvolution to sH x sW (the estimate), and the two-layer output CNN (stride conv, conv3x3)."""

    def __init__(self, channels: int, kernel_size: int = 3, scale: int = 2, n_convs: int = BASELINE_CONVS):
        super().__init__()
        kernel, stride, padding = _X4_SECOND_STAGE if scale == 4 else _PROJECTION[scale][0]
        self.body = nn.Sequential(*[_conv_prelu(channels, channels, kernel_size) for _ in range(n_convs)])
        self.upsample = _strided(channels, kernel, stride, padding, transposed=True)
        self.down_sample = _strided(channels, kernel, stride, padding, transposed=False)
        self.post_conv = _conv_prelu(channels, channels, kernel_size)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.upsample(self.body(x))
        return self.post_conv(self.down_sample(h)), h


def _check_variant(local: bool, in_scale: bool, cross_scale: bool, patch_size: int, fusion: str) -> None:
    """``ModelError`` for switch values no SEM cell can build."""
    for name, value in (("local", local), ("in_scale", in_scale), ("cross_scale", cross_scale)):
        if not isinstance(value, bool):
            raise ModelError(f"csnln {name} (an SEM branch) must be true or false; got {value!r}")
    if isinstance(patch_size, bool) or not isinstance(patch_size, int) or patch_size < 1 or patch_size % 2 == 0:
        raise ModelError(f"csnln patch_size (cross-scale matching patch) must be an odd size >= 1 such as 1, 3, 5; "
                         f"got {patch_size!r}")
    if fusion not in FUSIONS:
        raise ModelError(f"csnln fusion must be one of {', '.join(FUSIONS)}; got {fusion!r}")
    if patch_size != 3 and not cross_scale:
        raise ModelError("csnln patch_size sets the cross-scale attention, which cross_scale=false removes")
    if fusion != "mutual" and local + in_scale + cross_scale < 2:
        raise ModelError(f"csnln fusion {fusion!r} needs at least two SEM branches (local, in_scale, cross_scale)")


class CSNLN(nn.Module):
    """Cross-scale non-local network: RGB in [0, 1], (N, 3, H, W) -> (N, 3, sH, sW)."""

    def __init__(self, scale: int, n_feats: int = 128, depth: int = 12, rgb_range: float = 1,
                 n_colors: int = 3, attention: str = "fast", local: bool = True, in_scale: bool = True,
                 cross_scale: bool = True, patch_size: int = 3, fusion: str = "mutual"):
        super().__init__()
        if scale not in _PROJECTION:
            raise ModelError(f"csnln supports scales 2, 3, 4; got {scale}")
        _check_variant(local, in_scale, cross_scale, patch_size, fusion)
        self.scale = scale
        self.depth = depth
        self.rgb_range = rgb_range
        self.sub_mean = MeanShift(rgb_range, sign=-1)
        if local or in_scale or cross_scale:
            self.SEM = RecurrentProjection(n_feats, 3, scale, local=local, in_scale=in_scale,
                                           cross_scale=cross_scale, patch_size=patch_size, fusion=fusion)
        else:
            self.SEM = ConvRecurrentBlock(n_feats, 3, scale)
        self.add_mean = MeanShift(rgb_range, sign=1)
        self.head = nn.Sequential(_conv_prelu(n_colors, n_feats, 3), _conv_prelu(n_feats, n_feats, 3))
        self.tail = nn.Sequential(nn.Conv2d(n_feats * depth, n_colors, 3, padding=1))
        self._budget = DEFAULT_ATTENTION_BUDGET
        self.attention = attention

    @property
    def attention(self) -> str:
        """``"fast"`` (memory-bounded, default) or ``"reference"`` (the authors' formulation)."""
        return self._attention

    @attention.setter
    def attention(self, mode: str) -> None:
        if mode not in ATTENTION_MODES:
            raise ModelError(f"csnln attention must be one of {', '.join(ATTENTION_MODES)}; got {mode!r}")
        self._attention = mode
        for m in self.modules():
            if isinstance(m, (CrossScaleAttention, NonLocalAttention)):
                m.mode = mode

    @property
    def attention_budget(self) -> int:
        """Bytes of temporaries one cross-scale attention block may use (fast path; at least one query)."""
        return self._budget

    @attention_budget.setter
    def attention_budget(self, nbytes: int) -> None:
        if nbytes <= 0:
            raise ModelError(f"csnln attention_budget must be a positive number of bytes; got {nbytes}")
        self._budget = int(nbytes)
        for m in self.modules():
            if isinstance(m, CrossScaleAttention):
                m.budget = int(nbytes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        multiple = 2 if self.scale == 4 else self.scale
        pad_h, pad_w = -h % multiple, -w % multiple
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        x = self.head(self.sub_mean(x * self.rgb_range))
        if self.attention == "reference":
            bag = []
            for _ in range(self.depth):
                x, estimate = self.SEM(x)
                bag.append(estimate)
            y = self.tail(torch.cat(bag, dim=1))
        else:
            # tail(concat(h_1..h_depth)) = sum_i conv(h_i, W_i) + bias: no concatenated copy
            tail = self.tail[0]
            weights = tail.weight.split(tail.weight.shape[1] // self.depth, dim=1)
            y = None
            for i in range(self.depth):
                x, estimate = self.SEM(x)
                part = F.conv2d(estimate, weights[i], tail.bias if i == 0 else None, padding=1)
                y = part if y is None else y + part
        y = self.add_mean(y) / self.rgb_range
        return y[..., :self.scale * h, :self.scale * w]


def build_csnln(scale: int, n_feats: int = 128, depth: int = 12, rgb_range: float = 1,
                attention: str = "fast", local: bool = True, in_scale: bool = True, cross_scale: bool = True,
                patch_size: int = 3, fusion: str = "mutual") -> CSNLN:
    return CSNLN(scale, n_feats=n_feats, depth=depth, rgb_range=rgb_range, attention=attention, local=local,
                 in_scale=in_scale, cross_scale=cross_scale, patch_size=patch_size, fusion=fusion)


def _official(sd: Mapping[str, torch.Tensor]) -> dict | None:
    """Hyper-parameters of an official CSNLN state dict, None for other layouts."""
    needed = ("SEM.multi_source_projection.up_attention.escape_NaN", "SEM.down_sample_1.0.weight",
              "head.0.0.weight", "tail.0.weight", "sub_mean.bias")
    if not all(k in sd for k in needed):
        return None
    n_feats = sd["head.0.0.weight"].shape[0]
    if "SEM.multi_source_projection_2.upsample.0.weight" in sd:
        scale = 4
    else:
        scale = {6: 2, 9: 3}.get(sd["SEM.down_sample_1.0.weight"].shape[-1])
    depth, rest = divmod(sd["tail.0.weight"].shape[1], n_feats)
    if scale is None or rest or depth < 1:
        return None
    rgb_range = 1 if float(sd["sub_mean.bias"].abs().max()) < 2.0 else 255
    return {"scale": scale, "n_feats": n_feats, "depth": depth, "rgb_range": rgb_range}


MODELS = [
    ModelInfo(
        name="csnln",
        title="CSNLN (cross-scale non-local attention, 12 recurrent SEM steps, 128 channels)",
        build=build_csnln,
        scales=(2, 3, 4),
        defaults={"n_feats": 128, "depth": 12, "rgb_range": 1},
        tiny={"n_feats": 8, "depth": 2},
        variants={"reference": {"attention": "reference"}},  # the authors' formulation (same network, slower)
        reference=Reference(
            paper="Mei et al., Image Super-Resolution with Cross-Scale Non-Local Attention and Exhaustive "
                  "Self-Exemplars Mining, CVPR 2020",
            code="SHI-Labs/Cross-Scale-Non-Local-Attention@531aec92 src/model/csnln.py, src/model/attention.py",
            params={2: 3_061_289, 3: 6_010_409, 4: 6_568_627},
            params_source="authors' code (reference-architectures.md section 2.7)",
        ),
        capabilities=Capabilities(
            tiling=TILING_GLOBAL_ATTENTION,
            input_size="any H, W >= 1 (padded inside to a multiple of s (x2, x3) or 2 (x4) by edge replication)",
            train_precisions=("fp32", "bf16"),
            cpu_train_compile=False,  # measured 0.94x of eager on the CPU (benchmarks/train_throughput.py)
            onnx_unsupported=("its cross-scale attention runs in blocks whose number and size depend on the input "
                              "size (the 'reference' path correlates with kernels cut from the input instead) and "
                              "it pads the input to a multiple of the scale with size-dependent control flow; "
                              "torch.onnx either fails or fixes the input size"),
        ),
        official=OfficialFormat(
            detect=_official,
            convention="output = official(input): images in [0, 1] (rgb_range 1, DIV2K mean shift inside)",
        ),
        notes="attention='fast' (default, memory-bounded) or 'reference' (the authors' formulation); "
              "the whole (padded) input is searched, so tiling changes the result; ablation switches "
              "local/in_scale/cross_scale, patch_size, fusion (paper Tables 3-5)",
    ),
]
