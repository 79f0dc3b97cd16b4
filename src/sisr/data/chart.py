"""A synthetic test chart, rendered by sisr itself (no third-party image in the package).

It holds what super-resolution is judged on: a zone plate (all frequencies and
orientations), slanted edges, line-pair groups of decreasing pitch, smooth
colour gradients and a small checkerboard.
"""

from __future__ import annotations

import numpy as np


def render_chart(width: int = 384, height: int = 288) -> np.ndarray:
    """Deterministic RGB uint8 chart of shape (height, width, 3)."""
    if width < 64 or height < 64:
        raise ValueError(f"chart must be at least 64x64, got {width}x{height}")
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    img = np.empty((height, width, 3), dtype=np.float64)

    # background: smooth colour gradients
    img[..., 0] = 0.25 + 0.5 * x / width
    img[..., 1] = 0.25 + 0.5 * y / height
    img[..., 2] = 0.6 - 0.3 * (x + y) / (width + height)

    # zone plate in the left half: cos(k r^2), frequency rising towards the rim
    cx, cy, radius = width * 0.27, height * 0.5, min(width * 0.25, height * 0.45)
    r2 = (x - cx) ** 2 + (y - cy) ** 2
    inside = r2 < radius**2
    zone = 0.5 + 0.5 * np.cos(np.pi * r2 / (2.2 * radius))
    img[inside] = zone[inside, None]

    # slanted edge (5 degrees), top right
    x0, y0, x1, y1 = int(width * 0.56), int(height * 0.06), int(width * 0.76), int(height * 0.42)
    region = (slice(y0, y1), slice(x0, x1))
    edge = (x[region] - x0 - (y[region] - y0) * np.tan(np.radians(5))) > (x1 - x0) / 2
    img[region] = np.where(edge[..., None], 0.9, 0.1)

    # line pairs of pitch 6, 4, 3, 2 pixels, top far right
    lx0, ly0, lw = int(width * 0.80), int(height * 0.06), int(height * 0.36)
    for i, pitch in enumerate((6, 4, 3, 2)):
        cols = slice(lx0 + i * (width // 22), lx0 + (i + 1) * (width // 22) - 2)
        rows = slice(ly0, ly0 + lw)
        bars = ((y[rows, cols] - ly0) // (pitch / 2)) % 2 == 0
        img[rows, cols] = np.where(bars[..., None], 0.95, 0.05)

    # checkerboard of 3-pixel squares and colour bars, bottom right
    bx0, by0 = int(width * 0.56), int(height * 0.55)
    rows, cols = slice(by0, by0 + int(height * 0.18)), slice(bx0, bx0 + int(width * 0.18))
    checker = ((x[rows, cols] // 3 + y[rows, cols] // 3) % 2)[..., None]
    img[rows, cols] = 0.15 + 0.7 * checker
    colours = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [0, 1, 1], [1, 0, 1], [1, 1, 1], [0, 0, 0]])
    bar_w = int(width * 0.42) // len(colours)
    for i, c in enumerate(colours):
        img[int(height * 0.80):int(height * 0.94), bx0 + i * bar_w:bx0 + (i + 1) * bar_w] = 0.1 + 0.8 * c

    return np.clip(np.round(img * 255.0), 0, 255).astype(np.uint8)
