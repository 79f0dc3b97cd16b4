"""Blocks shared by several networks (EDSR-PyTorch / RCAN conventions).

Module and parameter names follow the authors' code so that official
state_dicts load with strict key matching.
"""

from __future__ import annotations

import math

from typing import Callable

import torch
from torch import nn

DIV2K_MEAN = (0.4488, 0.4371, 0.4040)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def default_conv(in_channels: int, out_channels: int, kernel_size: int, bias: bool = True) -> nn.Conv2d:
    """Convolution with 'same' zero padding (kernel_size // 2)."""
    return nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=bias)


class MeanShift(nn.Conv2d):
    """1x1 convolution adding (sign=+1) or subtracting (sign=-1) the dataset mean.

    weight = I / std, bias = sign * rgb_range * mean / std, as in EDSR-PyTorch.
    The parameters are frozen unless ``trainable``; they are still counted and
    saved (the official checkpoints contain them).
    """

    def __init__(self, rgb_range: float, mean=DIV2K_MEAN, std=(1.0, 1.0, 1.0), sign: int = -1,
                 trainable: bool = False):
        super().__init__(3, 3, kernel_size=1)
        std_t = torch.tensor(std, dtype=torch.float32)
        with torch.no_grad():
            self.weight.copy_(torch.eye(3).view(3, 3, 1, 1) / std_t.view(3, 1, 1, 1))
            self.bias.copy_(sign * rgb_range * torch.tensor(mean, dtype=torch.float32) / std_t)
        for p in self.parameters():
            p.requires_grad_(trainable)


class Upsampler(nn.Sequential):
    """Sub-pixel upsampler: [conv n->4n, PixelShuffle(2)] x log2(s), or [conv n->9n, PixelShuffle(3)]."""

    def __init__(self, scale: int, n_feats: int, bias: bool = True, conv=default_conv):
        layers: list[nn.Module] = []
        if scale & (scale - 1) == 0:
            for _ in range(int(math.log2(scale))):
                layers += [conv(n_feats, 4 * n_feats, 3, bias=bias), nn.PixelShuffle(2)]
        elif scale == 3:
            layers += [conv(n_feats, 9 * n_feats, 3, bias=bias), nn.PixelShuffle(3)]
        else:
            raise ValueError(f"sub-pixel upsampler supports scales 2^n and 3, got {scale}")
        super().__init__(*layers)


class GlobalResidualSR(nn.Module):
    """The EDSR skeleton shared by EDSR, RCAN, CRAN and EACRN.

    ``x * rgb_range -> sub_mean -> head -> h + body(h) -> tail -> add_mean -> / rgb_range``;
    subclasses create ``rgb_range``, ``sub_mean``, ``head``, ``body``, ``tail``, ``add_mean``
    (module names as in the authors' code), RCAN's way with :meth:`build_skeleton`.
    """

    def build_skeleton(self, scale: int, n_feats: int, make_groups: Callable[[], list[nn.Module]],
                       rgb_range: float, trainable_mean: bool = False) -> None:
        """RCAN's layout: head conv, ``body = [*groups, conv]`` (the long skip's W_LSC), sub-pixel tail.

        Modules are created in the authors' order (so seeded initialisations match theirs);
        ``make_groups`` builds the residual groups after the mean shift and the head.
        """
        self.scale = scale
        self.rgb_range = rgb_range
        self.sub_mean = MeanShift(rgb_range, sign=-1, trainable=trainable_mean)
        self.head = nn.Sequential(default_conv(3, n_feats, 3))
        self.body = nn.Sequential(*make_groups(), default_conv(n_feats, n_feats, 3))
        self.tail = nn.Sequential(Upsampler(scale, n_feats), default_conv(n_feats, 3, 3))
        self.add_mean = MeanShift(rgb_range, sign=1, trainable=trainable_mean)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.sub_mean(x * self.rgb_range)
        x = self.head(x)
        x = x + self.body(x)
        x = self.add_mean(self.tail(x))
        return x / self.rgb_range


class ChannelAttention(nn.Module):
    """RCAN channel attention: global average pool, 1x1 bottleneck, sigmoid gate."""

    def __init__(self, channels: int, reduction: int = 16, bias: bool = True):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.conv_du = nn.Sequential(
            nn.Conv2d(channels, channels // reduction, 1, bias=bias),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels // reduction, channels, 1, bias=bias),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.conv_du(self.avg_pool(x))


class RCAB(nn.Module):
    """Residual channel attention block: conv-ReLU-conv-CA, plus the input."""

    def __init__(self, n_feats: int, kernel_size: int = 3, reduction: int = 16, bias: bool = True,
                 res_scale: float = 1.0, conv=default_conv):
        super().__init__()
        self.body = nn.Sequential(
            conv(n_feats, n_feats, kernel_size, bias=bias),
            nn.ReLU(inplace=True),
            conv(n_feats, n_feats, kernel_size, bias=bias),
            ChannelAttention(n_feats, reduction),
        )
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x) * self.res_scale


class ResBlock(nn.Module):
    """EDSR residual block without batch norm: conv-ReLU-conv, scaled, plus the input."""

    def __init__(self, n_feats: int, kernel_size: int = 3, bias: bool = True, res_scale: float = 1.0,
                 conv=default_conv):
        super().__init__()
        self.body = nn.Sequential(
            conv(n_feats, n_feats, kernel_size, bias=bias),
            nn.ReLU(inplace=True),
            conv(n_feats, n_feats, kernel_size, bias=bias),
        )
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x) * self.res_scale


class ResidualGroup(nn.Module):
    """RCAN residual group: blocks, a trailing 3x3 conv (unless ``tail_conv=False``), and a group skip
    (keys body.{i})."""

    def __init__(self, blocks: list[nn.Module], n_feats: int, conv=default_conv, tail_conv: bool = True):
        super().__init__()
        self.body = nn.Sequential(*blocks, *([conv(n_feats, n_feats, 3)] if tail_conv else []))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def state_dict_has(sd, *keys: str) -> bool:
    """True if every key is in the state dict (helper for official-layout detection)."""
    return all(k in sd for k in keys)


def count_indexed(sd, prefix: str) -> int:
    """Number of consecutive integer children ``prefix.{0,1,...}`` present in a state dict."""
    idx = set()
    for k in sd:
        if k.startswith(prefix):
            head = k[len(prefix):].split(".", 1)[0]
            if head.isdigit():
                idx.add(int(head))
    n = 0
    while n in idx:
        n += 1
    return n
