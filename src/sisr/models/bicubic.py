"""Bicubic upsampling: the baseline row of the papers' tables.

MATLAB ``imresize(LR, s, 'bicubic')`` on float input (no intermediate rounding): the 1-D weights of
:func:`sisr.data.resize.resize_matrix` (Keys cubic a = -0.5, symmetric border by default) applied as
two matrix products, ``Wh @ x @ Ww^T``, on the input's device and dtype. When enlarging, MATLAB's
rows-first order and a single order of products give the same values up to float rounding, so the
order here is chosen for speed.

The module has no parameters. The papers' bicubic rows were computed in MATLAB from uint8 images,
which rounds and clamps after each pass; the float path differs from that mostly by +-1 after
quantisation, by more at strong edges where the uint8 path clamps the first pass (docs/data.md).
"""

from __future__ import annotations

import torch
from torch import nn

from ..data.resize import BORDERS, resize_matrix
from .registry import TILING_LOCAL, ModelInfo


class Bicubic(nn.Module):
    """``(N, C, H, W)`` -> ``(N, C, sH, sW)`` by MATLAB bicubic interpolation (float path)."""

    def __init__(self, scale: int, border: str = "symmetric"):
        super().__init__()
        if border not in BORDERS:
            raise ValueError(f"border must be one of {', '.join(BORDERS)}, got '{border}'")
        self.scale = scale
        self.border = border

    def weights(self, in_len: int, like: torch.Tensor) -> torch.Tensor:
        """``(s * in_len, in_len)`` interpolation matrix in the dtype and on the device of ``like``."""
        m = resize_matrix(in_len, self.scale, border=self.border)
        return torch.from_numpy(m).to(device=like.device, dtype=like.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        return self.weights(h, x) @ x @ self.weights(w, x).T

    def extra_repr(self) -> str:
        return f"scale={self.scale}, border={self.border!r}"


def build_bicubic(scale: int, border: str = "symmetric") -> Bicubic:
    return Bicubic(scale, border=border)


MODELS = [
    ModelInfo(
        name="bicubic",
        onnx_unsupported=('its interpolation matrices are computed with NumPy from the input size at run time; a '
            'graph can only hold them as constants for the trace size'),
        title="Bicubic interpolation (MATLAB imresize, float path)",
        paper="Keys, Cubic convolution interpolation for digital image processing, IEEE TASSP 1981",
        build=build_bicubic,
        scales=(2, 3, 4, 8),
        defaults={"border": "symmetric"},
        reference_params={2: 0, 3: 0, 4: 0, 8: 0},
        reference_source="no parameters",
        tiling=TILING_LOCAL,
        input_size="any H, W >= 1",
        precisions=("fp32", "bf16", "fp16"),
        notes="MATLAB imresize(LR, s, 'bicubic') on float input; the 'Bicubic' rows of the papers' tables",
    ),
]
