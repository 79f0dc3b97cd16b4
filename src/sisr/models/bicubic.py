"""Bicubic upsampling: the baseline row of the papers' tables.

MATLAB ``imresize(LR, s, 'bicubic')`` on float input (no intermediate rounding): the 1-D weights of
:func:`sisr.data.resize.resize_bands` (Keys cubic a = -0.5, symmetric border by default) applied as
``Wh @ x @ Ww^T``, on the input's device and dtype. Each product is banded: a block of output
rows times the slab of input rows it touches (one block covers a length up to ``DENSE_MAX_LEN``,
the whole dense matrix), so memory stays linear in the image size. When enlarging, MATLAB's
rows-first order and a single order of products give the same values up to float rounding, so the
order here is chosen for speed.

The module has no parameters. The papers' bicubic rows were computed in MATLAB from uint8 images,
which rounds and clamps after each pass; the float path differs from that mostly by +-1 after
quantisation, by more at strong edges where the uint8 path clamps the first pass (docs/data.md).
"""

from __future__ import annotations

import torch
from torch import nn

from ..data.resize import BORDERS, resize_bands
from .registry import TILING_LOCAL, Capabilities, ModelInfo, Reference

DENSE_MAX_LEN = 1024  # up to this input length one product with the whole (s*L, L) matrix
BAND_LEN = 256  # above it, blocks of s*BAND_LEN output rows (a slab of ~BAND_LEN + 6 input rows each)


class Bicubic(nn.Module):
    """``(N, C, H, W)`` -> ``(N, C, sH, sW)`` by MATLAB bicubic interpolation (float path)."""

    def __init__(self, scale: int, border: str = "symmetric"):
        super().__init__()
        if border not in BORDERS:
            raise ValueError(f"border must be one of {', '.join(BORDERS)}, got '{border}'")
        self.scale = scale
        self.border = border

    def bands(self, in_len: int, like: torch.Tensor):
        """``(start, stop, lo, hi, band)``: output rows ``start:stop`` = ``band @ input[lo:hi]``, with
        ``band`` in the dtype and on the device of ``like``; one band when ``in_len <= DENSE_MAX_LEN``."""
        block = self.scale * in_len if in_len <= DENSE_MAX_LEN else self.scale * BAND_LEN
        for start, stop, lo, hi, band in resize_bands(in_len, self.scale, border=self.border, block=block):
            yield start, stop, lo, hi, torch.from_numpy(band).to(device=like.device, dtype=like.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = [band @ x[..., lo:hi, :] for _, _, lo, hi, band in self.bands(x.shape[-2], x)]
        y = rows[0] if len(rows) == 1 else torch.cat(rows, dim=-2)
        cols = [y[..., lo:hi] @ band.T for _, _, lo, hi, band in self.bands(x.shape[-1], x)]
        return cols[0] if len(cols) == 1 else torch.cat(cols, dim=-1)

    def extra_repr(self) -> str:
        return f"scale={self.scale}, border={self.border!r}"


def build_bicubic(scale: int, border: str = "symmetric") -> Bicubic:
    return Bicubic(scale, border=border)


MODELS = [
    ModelInfo(
        name="bicubic",
        title="Bicubic interpolation (MATLAB imresize, float path)",
        build=build_bicubic,
        scales=(2, 3, 4, 8),
        defaults={"border": "symmetric"},
        reference=Reference(
            paper="Keys, Cubic convolution interpolation for digital image processing, IEEE TASSP 1981",
            params={2: 0, 3: 0, 4: 0, 8: 0},
            params_source="no parameters",
        ),
        capabilities=Capabilities(
            tiling=TILING_LOCAL,
            input_size="any H, W >= 1",
            precisions=("fp32", "bf16", "fp16"),
            onnx_unsupported=("its interpolation matrices are computed with NumPy from the input size at run time; "
                              "a graph can only hold them as constants for the trace size"),
        ),
        notes="MATLAB imresize(LR, s, 'bicubic') on float input; the 'Bicubic' rows of the papers' tables",
    ),
]
