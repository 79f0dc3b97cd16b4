"""A synthetic test chart, rendered by sisr itself (no third-party image in the package).

It holds what a super-resolution network can restore and a viewer can judge at a glance: text in
three sizes, anti-aliased edges at many angles (a rotated square, rings, a fan of spokes), gratings
and a brick texture whose periods lie below the Nyquist limit of the x4 LR image (so they survive
downscaling and come back sharper), and smooth colour gradients. Everything is drawn at 4x the size
and reduced by area averaging, so the chart itself is free of aliasing. Deterministic for a given
Pillow version (the text uses Pillow's built-in font).
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

SUPERSAMPLE = 4
TEXT = ("Super-resolution", "sisr x2 x3 x4  0123456789", "The quick brown fox jumps over the lazy dog")


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: a fixed small bitmap font
        return ImageFont.load_default()


def _background(width: int, height: int) -> Image.Image:
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    rgb = np.stack([0.55 + 0.3 * x / width, 0.5 + 0.35 * y / height, 0.85 - 0.3 * (x + y) / (width + height)], -1)
    return Image.fromarray(np.round(rgb * 255).astype(np.uint8))


def _shapes(draw: ImageDraw.ImageDraw, w: int, h: int, k: int) -> None:
    """Rotated square, rings and a fan of spokes (edges at every angle), drawn at supersampled size."""
    cx, cy, r = 0.16 * w, 0.68 * h, 0.12 * w
    angle = np.radians(7)
    corners = [(cx + r * np.cos(angle + a), cy + r * np.sin(angle + a)) for a in np.arange(4) * np.pi / 2]
    draw.polygon(corners, fill=(30, 30, 40))
    for i, radius in enumerate((0.09, 0.075, 0.06, 0.045)):
        rr = radius * w
        draw.ellipse([cx - rr, cy - rr, cx + rr, cy + rr], fill=(235, 235, 225) if i % 2 == 0 else (200, 40, 40))
    fx, fy, length = 0.43 * w, 0.68 * h, 0.13 * w
    for i in range(24):  # 24 wedges of 6 degrees: widths stay above the LR pixel size near the rim
        a0, a1 = np.radians(i * 15), np.radians(i * 15 + 6)
        draw.polygon([(fx, fy), (fx + length * np.cos(a0), fy + length * np.sin(a0)),
                      (fx + length * np.cos(a1), fy + length * np.sin(a1))], fill=(20, 60, 120))


def _textures(img: np.ndarray, w: int, h: int, k: int) -> None:
    """Gratings of periods 24, 16 and 12 chart pixels (> 2 x 4: below the x4 LR Nyquist) and bricks."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64) / k
    top, bottom = int(0.55 * h), int(0.95 * h)
    for i, period in enumerate((24, 16, 12)):
        x0, x1 = int((0.60 + 0.08 * i) * w), int((0.67 + 0.08 * i) * w)
        theta = np.radians(20 + 35 * i)
        wave = 0.5 + 0.45 * np.sin(2 * np.pi * (x * np.cos(theta) + y * np.sin(theta)) / period)
        img[top:bottom, x0:x1] = (wave[top:bottom, x0:x1, None] * 255)
    bx0, bx1 = int(0.85 * w), int(0.98 * w)
    row = (y // 10).astype(int)
    mortar = ((y % 10) < 2) | (((x + 10 * (row % 2)) % 20) < 2)
    bricks = np.where(mortar[..., None], (215, 210, 200), (160, 70, 50))
    img[top:bottom, bx0:bx1] = bricks[top:bottom, bx0:bx1]


def render_chart(width: int = 384, height: int = 288) -> np.ndarray:
    """Deterministic RGB uint8 chart of shape (height, width, 3)."""
    if width < 64 or height < 64:
        raise ValueError(f"chart must be at least 64x64, got {width}x{height}")
    k = SUPERSAMPLE
    w, h = width * k, height * k
    canvas = _background(w, h)
    draw = ImageDraw.Draw(canvas)
    y = int(0.04 * h)
    for text, size in zip(TEXT, (0.085, 0.055, 0.042)):
        font = _font(int(size * h))
        draw.text((int(0.04 * w), y), text, fill=(15, 15, 25), font=font)
        y += int(size * h * 1.45)
    _shapes(draw, w, h, k)
    img = np.asarray(canvas, dtype=np.float64).copy()
    _textures(img, w, h, k)
    small = img.reshape(height, k, width, k, 3).mean(axis=(1, 3))  # area average: no aliasing
    return np.clip(np.round(small), 0, 255).astype(np.uint8)
