"""PNG line and bar charts drawn with Pillow (matplotlib is not a dependency).

>>> img = line_chart({"loss": [(100, 0.08), (200, 0.05)]}, title="training loss", xlabel="iteration")
>>> img = bar_chart(["Set5", "Set14"], {"bicubic": [33.66, 30.24], "edsr": [38.11, 33.92]},
...                 ylabel="PSNR (dB)", y_min=None)
>>> save_png(img, "psnr.png")

Both functions return a ``PIL.Image`` (RGB), so a caller can save it (``save_png``, atomic,
never overwriting unless asked), embed it (``png_bytes`` -> e.g. base64 in HTML) or paste it.
Axes get "nice" ticks (1, 2, 2.5, 5 x 10^k; k/M suffixes for large numbers); non-finite points
are left out; series of up to 50 points get point markers; several series get distinct colours
and a legend.
"""

from __future__ import annotations

import io
import math
import os
from pathlib import Path
from typing import Mapping, Sequence

from PIL import Image, ImageDraw, ImageFont

from .fs import atomic_write_bytes

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf")
BACKGROUND, AXIS, GRID, TEXT = "#ffffff", "#333333", "#e3e3e3", "#222222"

Point = tuple[float, float]


def font(size: int = 13) -> ImageFont.ImageFont:
    """Pillow's built-in font at ``size`` pixels (a fixed small bitmap font on Pillow < 10.1)."""
    try:
        return ImageFont.load_default(size=size)
    except TypeError:
        return ImageFont.load_default()


def nice_ticks(lo: float, hi: float, target: int = 6) -> list[float]:
    """Round tick values covering ``[lo, hi]`` with about ``target`` intervals."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"tick range must be finite, got {lo}..{hi}")
    if hi < lo:
        lo, hi = hi, lo
    if hi == lo:
        pad = abs(lo) * 0.05 or 1.0
        lo, hi = lo - pad, hi + pad
    raw = (hi - lo) / max(target, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw * (1 - 1e-9))
    first, last = math.floor(lo / step + 1e-9), math.ceil(hi / step - 1e-9)
    return [round(i * step, 12) for i in range(first, last + 1)]


def format_tick(value: float, step: float) -> str:
    """Tick label: k/M suffixes from 10 000 on, otherwise as many decimals as the step needs."""
    if abs(value) >= 1e4 or (abs(step) >= 1e4 and value):
        for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
            if abs(value) >= div or abs(step) >= div:
                text = f"{value / div:.3f}".rstrip("0").rstrip(".")
                return f"{text}{suffix}"
    decimals = max(0, -math.floor(math.log10(abs(step)) + 1e-9)) if step else 0
    if step and abs(step * 10**decimals - round(step * 10**decimals)) > 1e-6:
        decimals += 1
    return f"{value:.{decimals}f}"


class _Canvas:
    def __init__(self, size: tuple[int, int], title: str, xlabel: str, ylabel: str, bottom_extra: int = 0,
                 left_labels: Sequence[str] = (), right_extra: int = 0):
        self.image = Image.new("RGB", size, BACKGROUND)
        self.draw = ImageDraw.Draw(self.image)
        self.font, self.title_font = font(13), font(16)
        tick_w = max([self.text_size(t)[0] for t in left_labels] or [0])
        self.left = 16 + (22 if ylabel else 0) + tick_w + 8
        self.top = 14 + (self.text_size(title, self.title_font)[1] + 12 if title else 0)
        self.right = size[0] - 20 - right_extra
        self.bottom = size[1] - 14 - (22 if xlabel else 0) - 20 - bottom_extra
        if title:
            w, _ = self.text_size(title, self.title_font)
            self.draw.text(((size[0] - w) / 2, 12), title, fill=TEXT, font=self.title_font)
        if xlabel:
            w, h = self.text_size(xlabel)
            self.draw.text(((self.left + self.right - w) / 2, size[1] - 12 - h), xlabel, fill=TEXT, font=self.font)
        if ylabel:
            self.paste_rotated(ylabel, 12, (self.top + self.bottom) / 2)

    def text_size(self, text: str, fnt=None) -> tuple[int, int]:
        box = self.draw.textbbox((0, 0), text, font=fnt or self.font)
        return box[2] - box[0], box[3] - box[1]

    def paste_rotated(self, text: str, x: float, y_center: float, anchor_top: bool = False) -> None:
        """Text turned 90 degrees counter-clockwise; centred on (x, y_center) or hanging below (x, y)."""
        w, h = self.text_size(text)
        strip = Image.new("RGB", (w + 4, h + 6), BACKGROUND)
        ImageDraw.Draw(strip).text((2, 0), text, fill=TEXT, font=self.font)
        turned = strip.rotate(90, expand=True)
        top = y_center if anchor_top else y_center - turned.height / 2
        self.image.paste(turned, (int(x - turned.width / 2), int(top)))

    def y_axis(self, ticks: list[float], to_y, labels: list[str]) -> None:
        for value, label in zip(ticks, labels):
            y = to_y(value)
            self.draw.line([(self.left, y), (self.right, y)], fill=GRID, width=1)
            w, h = self.text_size(label)
            self.draw.text((self.left - 6 - w, y - h / 2 - 2), label, fill=TEXT, font=self.font)

    def frame(self) -> None:
        self.draw.line([(self.left, self.top), (self.left, self.bottom), (self.right, self.bottom)], fill=AXIS, width=1)

    def legend_width(self, names: Sequence[str]) -> int:
        return max(self.text_size(n)[0] for n in names) + 34 if len(names) >= 2 else 0

    def legend(self, names: Sequence[str], colors: Sequence[str], outside: bool = False) -> None:
        """Legend box in the top-right corner of the plot, or right of it (``outside``, space reserved)."""
        if len(names) < 2:
            return
        width = self.legend_width(names)
        line_h = self.text_size("Ag")[1] + 8
        x0, y0 = (self.right + 12 if outside else self.right - width - 8), self.top + 8
        self.draw.rectangle([x0, y0, x0 + width, y0 + line_h * len(names) + 6], fill=BACKGROUND, outline=GRID)
        for i, (name, color) in enumerate(zip(names, colors)):
            y = y0 + 6 + i * line_h + line_h / 2 - 3
            self.draw.rectangle([x0 + 8, y - 4, x0 + 22, y + 4], fill=color)
            self.draw.text((x0 + 28, y - line_h / 2 + 3), name, fill=TEXT, font=self.font)


def line_chart(series: Mapping[str, Sequence[Point]], *, title: str = "", xlabel: str = "", ylabel: str = "",
               size: tuple[int, int] = (800, 480), log_y: bool = False,
               colors: Mapping[str, str] | None = None) -> Image.Image:
    """One line per series of ``(x, y)`` points; ``log_y`` for a logarithmic y axis (positive values)."""
    names = list(series)
    colors = {n: (colors or {}).get(n, PALETTE[i % len(PALETTE)]) for i, n in enumerate(names)}
    clean = {n: [(float(x), float(y)) for x, y in pts if math.isfinite(float(x)) and math.isfinite(float(y))
                 and (not log_y or float(y) > 0)] for n, pts in series.items()}
    points = [p for pts in clean.values() for p in pts]
    if not points:
        canvas = _Canvas(size, title, xlabel, ylabel)
        canvas.frame()
        msg = "no data"
        w, h = canvas.text_size(msg)
        canvas.draw.text(((canvas.left + canvas.right - w) / 2, (canvas.top + canvas.bottom - h) / 2), msg,
                         fill=TEXT, font=canvas.font)
        return canvas.image
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    xticks = nice_ticks(min(xs), max(xs))
    fy = math.log10 if log_y else (lambda v: v)
    if log_y:
        lo, hi = math.floor(math.log10(min(ys))), math.ceil(math.log10(max(ys)))
        hi = max(hi, lo + 1)
        yticks = [10.0**k for k in range(lo, hi + 1)]
        if hi - lo <= 1:
            yticks = sorted({m * 10.0**k for k in range(lo, hi + 1) for m in (1, 2, 5) if 10.0**lo <= m * 10.0**k <= 10.0**hi})
        ylabels = [format_tick(v, v) for v in yticks]
    else:
        yticks = nice_ticks(min(ys), max(ys))
        ylabels = [format_tick(v, yticks[1] - yticks[0]) for v in yticks]
    canvas = _Canvas(size, title, xlabel, ylabel, left_labels=ylabels)
    x0, x1 = xticks[0], xticks[-1]
    y0, y1 = fy(yticks[0]), fy(yticks[-1])

    def to_x(v: float) -> float:
        return canvas.left + (v - x0) / (x1 - x0) * (canvas.right - canvas.left)

    def to_y(v: float) -> float:
        return canvas.bottom - (fy(v) - y0) / (y1 - y0) * (canvas.bottom - canvas.top)

    canvas.y_axis(yticks, to_y, ylabels)
    xstep = xticks[1] - xticks[0]
    for value in xticks:
        x = to_x(value)
        label = format_tick(value, xstep)
        w, _ = canvas.text_size(label)
        canvas.draw.line([(x, canvas.bottom), (x, canvas.bottom + 4)], fill=AXIS)
        canvas.draw.text((x - w / 2, canvas.bottom + 6), label, fill=TEXT, font=canvas.font)
    canvas.frame()
    for name in names:
        pts = [(to_x(x), to_y(y)) for x, y in sorted(clean[name])]
        if len(pts) > 1:
            canvas.draw.line(pts, fill=colors[name], width=2, joint="curve")
        if len(pts) <= 50:  # few points (e.g. validations): mark them
            for x, y in pts:
                canvas.draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colors[name])
    canvas.legend(names, [colors[n] for n in names])
    return canvas.image


def bar_chart(categories: Sequence[str], values: Mapping[str, Sequence[float | None]] | Sequence[float | None], *,
              title: str = "", ylabel: str = "", xlabel: str = "", size: tuple[int, int] | None = None,
              y_min: float | None = 0.0, value_format: str | None = "{:.2f}",
              colors: Mapping[str, str] | None = None) -> Image.Image:
    """Grouped vertical bars: one group per category, one bar per series (a plain list is one series).

    ``values[series][i]`` belongs to ``categories[i]``; ``None``/NaN leaves a gap. ``y_min``: the
    axis start (``None``: a round value below the smallest bar, for close values such as PSNRs).
    ``value_format`` writes each value above its bar (``None``: no labels). Long category names
    are turned vertical. ``size`` defaults to a width that fits the bars.
    """
    table = {"": list(values)} if not isinstance(values, Mapping) else {k: list(v) for k, v in values.items()}
    for name, row in table.items():
        if len(row) != len(categories):
            raise ValueError(f"series '{name}' has {len(row)} values for {len(categories)} categories")
    names = list(table)
    colors = {n: (colors or {}).get(n, PALETTE[i % len(PALETTE)]) for i, n in enumerate(names)}
    finite = [float(v) for row in table.values() for v in row if v is not None and math.isfinite(float(v))]
    n_bars = max(1, len(categories) * len(names))
    probe = _Canvas((10, 10), "", "", "")
    legend_names = [n for n in names if n]
    legend_w = probe.legend_width(legend_names)
    if size is None:
        size = (max(480, min(1600, 140 + n_bars * 34 + len(categories) * 16)) + legend_w, 480)
    group_w = (size[0] - 200) / max(1, len(categories))
    label_w = max([probe.text_size(c)[0] for c in categories] or [0])
    vertical = label_w > group_w - 6
    bottom_extra = label_w - 10 if vertical else 0
    if finite:
        hi = max(finite + ([y_min] if y_min is not None else []))
        lo = min(finite) if y_min is None else y_min
        if value_format:
            hi += 0.06 * ((hi - lo) or abs(hi) or 1.0)  # room for the value labels
        if y_min is None:
            span = (hi - lo) or abs(hi) * 0.1 or 1.0
            lo = lo - 0.25 * span
        yticks = nice_ticks(min(lo, hi), hi)
        if y_min is not None:
            yticks = [t for t in yticks if t >= y_min - 1e-12] or [y_min]
            if yticks[0] > y_min:
                yticks.insert(0, y_min)
    else:
        yticks = [0.0, 1.0]
    ystep = (yticks[1] - yticks[0]) if len(yticks) > 1 else 1.0
    ylabels = [format_tick(v, ystep) for v in yticks]
    canvas = _Canvas(size, title, xlabel, ylabel, bottom_extra=bottom_extra, left_labels=ylabels,
                     right_extra=legend_w + 12 if legend_w else 0)  # the legend never covers a bar
    lo_v, hi_v = yticks[0], yticks[-1] if yticks[-1] > yticks[0] else yticks[0] + 1

    def to_y(v: float) -> float:
        v = min(max(v, lo_v), hi_v)
        return canvas.bottom - (v - lo_v) / (hi_v - lo_v) * (canvas.bottom - canvas.top)

    canvas.y_axis(yticks, to_y, ylabels)
    width = canvas.right - canvas.left
    group = width / max(1, len(categories))
    bar = group * 0.8 / max(1, len(names))
    for ci, category in enumerate(categories):
        gx = canvas.left + ci * group + group * 0.1
        for si, name in enumerate(names):
            v = table[name][ci]
            if v is None or not math.isfinite(float(v)):
                continue
            x0, x1 = gx + si * bar + 1, gx + (si + 1) * bar - 1
            y0, y1 = sorted((to_y(float(v)), to_y(0.0 if lo_v < 0 < hi_v else lo_v)))  # signed bars grow from 0
            canvas.draw.rectangle([x0, y0, x1, y1], fill=colors[name])
            if value_format:
                text = value_format.format(float(v))
                w, h = canvas.text_size(text)
                if w <= bar - 4:
                    canvas.draw.text(((x0 + x1 - w) / 2, to_y(float(v)) - h - 6), text, fill=TEXT, font=canvas.font)
        cx = canvas.left + (ci + 0.5) * group
        if vertical:
            canvas.paste_rotated(category, cx, canvas.bottom + 6, anchor_top=True)
        else:
            w, _ = canvas.text_size(category)
            canvas.draw.text((cx - w / 2, canvas.bottom + 6), category, fill=TEXT, font=canvas.font)
    canvas.frame()
    canvas.legend(legend_names, [colors[n] for n in legend_names], outside=True)
    return canvas.image


def png_bytes(image: Image.Image) -> bytes:
    """The image encoded as PNG (for embedding, e.g. base64 in an HTML page)."""
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def save_png(image: Image.Image, path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write the image as PNG atomically; an existing file is kept unless ``overwrite``."""
    return atomic_write_bytes(path, png_bytes(image), overwrite=overwrite)


# Heat maps and labelled tile grids (sisr inspect)

# viridis sampled at 10 evenly spaced points; colours in between are interpolated linearly in sRGB
VIRIDIS = ("#440154", "#482878", "#3e4989", "#31688e", "#26828e", "#1f9e89", "#35b779", "#6ece58", "#b5de2b",
           "#fde725")
NON_FINITE = (128, 128, 128)


def colormap_lut(anchors: Sequence[str] = VIRIDIS, n: int = 256) -> "np.ndarray":
    """``(n, 3)`` uint8 colours running through the ``#rrggbb`` anchors (low to high)."""
    import numpy as np

    rgb = np.array([[int(a[i:i + 2], 16) for i in (1, 3, 5)] for a in anchors], dtype=np.float64)
    pos = np.linspace(0.0, 1.0, len(anchors))
    t = np.linspace(0.0, 1.0, n)
    return np.stack([np.interp(t, pos, rgb[:, c]) for c in range(3)], axis=1).round().astype(np.uint8)


def heatmap(values, *, lo: float | None = None, hi: float | None = None, robust: float = 0.0,
            anchors: Sequence[str] = VIRIDIS) -> Image.Image:
    """A 2-D array as an RGB image through the colour map (low: dark blue, high: yellow for viridis).

    The range is ``lo..hi``; a bound not given is the minimum/maximum of the finite values, or their
    ``robust`` and ``100 - robust`` percentiles. Values outside are clipped; non-finite values are grey;
    a constant map is drawn in the middle colour.
    """
    import numpy as np

    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"heatmap needs a 2-D array, got shape {arr.shape}")
    finite = np.isfinite(arr)
    data = arr[finite]
    if lo is None:
        lo = float(np.percentile(data, robust)) if data.size else 0.0
    if hi is None:
        hi = float(np.percentile(data, 100 - robust)) if data.size else 1.0
    lut = colormap_lut(anchors)
    span = hi - lo
    norm = np.clip((arr - lo) / span, 0.0, 1.0) if span > 0 else np.full(arr.shape, 0.5)
    index = np.round(np.where(finite, norm, 0.0) * (len(lut) - 1)).astype(np.intp)
    rgb = lut[index]
    rgb[~finite] = NON_FINITE
    return Image.fromarray(rgb, "RGB")


def fit_tile(image: Image.Image, size: int) -> Image.Image:
    """The image with its longer side brought near ``size``: enlarged by a whole factor (nearest
    neighbour, pixels stay sharp) when smaller, reduced with a box filter when larger."""
    longest = max(image.size)
    if longest < size:
        k = size // longest
        return image.resize((image.width * k, image.height * k), Image.Resampling.NEAREST) if k > 1 else image
    if longest > size:
        w, h = (max(1, round(d * size / longest)) for d in image.size)
        return image.resize((w, h), Image.Resampling.BOX)
    return image


Tile = tuple[str, "Image.Image | None"]


def wrap_text(text: str, width: int, fnt=None) -> list[str]:
    """``text`` broken at spaces into lines at most ``width`` pixels wide (a longer word stays whole)."""
    probe = _Canvas((10, 10), "", "", "")
    lines: list[str] = []
    for word in text.split():
        if lines and probe.text_size(f"{lines[-1]} {word}", fnt)[0] <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines


def tile_grid(rows: Sequence[Sequence[Tile]], *, title: str = "", row_labels: Sequence[str] = (),
              note: str = "", tile_size: int = 160, gap: int = 8) -> Image.Image:
    """Tiles in rows, each with its label above it; ``None`` leaves a cell empty.

    Every tile is fitted to ``tile_size`` (:func:`fit_tile`); cells are as large as the largest
    tile or label. ``row_labels`` are written left of the rows, ``title`` above and ``note`` (wrapped
    to the grid's width) below.
    """
    fitted = [[(label, fit_tile(img, tile_size) if img is not None else None) for label, img in row] for row in rows]
    probe = _Canvas((10, 10), "", "", "")
    text_h = probe.text_size("Ag")[1] + 6
    images = [img for row in fitted for _, img in row if img is not None]
    labels = [label for row in fitted for label, _ in row]
    cell_w = max([img.width for img in images] + [probe.text_size(lb)[0] for lb in labels] + [1])
    cell_h = max([img.height for img in images] or [1])
    left = gap + (max(probe.text_size(lb)[0] for lb in row_labels) + gap if row_labels else 0)
    top = gap + (probe.text_size(title, probe.title_font)[1] + 2 * gap if title else 0)
    n_cols = max((len(row) for row in fitted), default=1)
    width = max(left + n_cols * (cell_w + gap), probe.text_size(title, probe.title_font)[0] + 2 * gap, 320)
    note_lines = wrap_text(note, width - 2 * gap) if note else []
    grid_h = top + len(fitted) * (cell_h + text_h + gap)
    canvas = Image.new("RGB", (width, grid_h + len(note_lines) * text_h + (gap if note_lines else 0)), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((gap, gap), title, fill=TEXT, font=probe.title_font)
    for r, row in enumerate(fitted):
        y = top + r * (cell_h + text_h + gap)
        if r < len(row_labels):
            draw.text((gap, y + text_h + cell_h // 2 - text_h // 2), row_labels[r], fill=TEXT, font=probe.font)
        for c, (label, img) in enumerate(row):
            x = left + c * (cell_w + gap)
            if label:
                draw.text((x, y), label, fill=TEXT, font=probe.font)
            if img is not None:
                canvas.paste(img, (x, y + text_h))
    for i, line in enumerate(note_lines):
        draw.text((gap, grid_h + i * text_h), line, fill=TEXT, font=probe.font)
    return canvas


def quantize(image: Image.Image, colors: int = 256) -> Image.Image:
    """The image with a palette of at most ``colors`` (PNG files of heat maps become 2-4x smaller)."""
    return image.convert("RGB").quantize(colors, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
