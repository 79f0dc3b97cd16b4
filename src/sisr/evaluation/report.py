"""Visual report: metrics table, bar charts and zoomed crops of several models, as one HTML page.

``make_report(["edsr-baseline", "run/best.safetensors"], ["Set5", "Set14"], 4, "report/")`` writes::

    report/index.html                        the page (inline CSS, relative links to the files below)
    report/metrics.json                      every model's sisr.evaluation.protocol results and the crop windows
    report/charts/psnr.png                   mean PSNR per model and set
    report/charts/psnr_<set>.png             PSNR per model and image of one set
    report/crops/<set>/<image>/overview.png  the HR image, reduced, with the crops outlined
    report/crops/<set>/<image>/c<k>_<i>_<model>.png  crop k of column i (HR, bicubic, models), zoomed

Scores are those of :func:`sisr.evaluation.protocol.evaluate` (paper protocol: Y PSNR/SSIM, shave =
scale, SR quantised to uint8), one pass per model through :func:`~sisr.evaluation.protocol.evaluate_images`;
``bicubic`` is always included. The crops are cut from the very outputs that were scored (each
image result carries them), matched to their image by set and name.

Crops are chosen without looking at the models: per image, the ``crop_size`` x ``crop_size``
HR window with the largest sum of squared Y error of the bicubic upscaling, searched in the
scored area (``scale`` border pixels excluded); each further crop is the next largest window
that overlaps none chosen before; ties go to the topmost, then leftmost window. Crops are
enlarged by pixel repetition (nearest neighbour) so that single pixels stay visible. The PSNR
under a crop is Y PSNR over the whole crop (no shave) of the quantised output.
"""

from __future__ import annotations

import datetime as _dt
import html
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw
from tqdm import tqdm

from .. import __version__
from ..data.benchmark import BenchmarkSet, DatasetError, default_roots, find_root
from ..errors import ConfigError
from ..metrics import CONVENTION, psnr, rgb_to_y
from ..utils.device import resolve_device
from ..utils.fs import OutputExistsError, atomic_write_text, slug
from ..utils.plot import bar_chart, font, save_png
from ..weights.handle import LoadedModel
from ..weights.loading import is_model_name, resolve, whole_scale
from ..inference.options import RunOptions
from .protocol import EvalResults, ImageResult, _json_safe, evaluate_images, load_layout

__all__ = ["make_report", "select_crops", "file_label", "ReportModel"]

CROP_DISPLAY = 256  # target width in screen pixels of a zoomed crop when zoom is automatic
OVERVIEW_SIZE = 256  # longest side of the overview image
OUTLINE = ("#ffd400", "#00e5ff", "#ff3df2", "#7cff00", "#ff7a00")
SELECTION = (
    "Crops are chosen from the bicubic result only, the same way for every model: per image, the {c}x{c} HR "
    "window (smaller when the image is) with the largest sum of squared Y error of the bicubic upscaling, searched inside the scored area "
    "(the {shave}-pixel border excluded); each further crop is the next largest window that overlaps none chosen "
    "before; ties go to the topmost, then leftmost window. Crops are enlarged {zoom}x by pixel repetition "
    "(nearest neighbour). The PSNR under a crop is Y PSNR (BT.601) over the whole crop, no shave, of the output "
    "quantised to uint8."
)


@dataclass
class ReportModel:
    """One column of the report: a label, where the network came from, and its scores."""

    label: str
    source: str  # registry name or weights file, as given
    weights: str | None
    loaded: LoadedModel | None = None
    results: EvalResults | None = None


@dataclass
class _Image:
    """One test image: its crops (HR and per model) and where they lie."""

    dataset: str
    name: str
    size: tuple[int, int]  # HR (width, height) after modcrop
    windows: list[tuple[int, int, int]]  # (top, left, size) in HR pixels
    hr_crops: list[np.ndarray]
    overview: Image.Image
    sr_crops: dict[str, list[np.ndarray]] = field(default_factory=dict)  # label -> one per window


def make_report(
    models: Sequence[str | os.PathLike | torch.nn.Module | LoadedModel],
    datasets: Sequence[str],
    scale: int,
    out_dir: str | os.PathLike,
    *,
    data_root: str | os.PathLike | None = None,
    weights: Mapping[str, str | os.PathLike] | None = None,
    crop_size: int = 64,
    crops_per_image: int = 1,
    zoom: int | None = None,
    device: str | torch.device = "cpu",
    options: RunOptions | None = None,
    overwrite: bool = False,
    progress: bool = True,
    command: str | None = None,
) -> Path:
    """Write the report folder ``out_dir`` (see the module docstring); return the path of its index.html.

    ``models``: registry names (shipped weights, or ``weights[name]``), weights files, modules with
    ``sisr_spec`` or ``LoadedModel``s (see :func:`sisr.weights.resolve`); ``bicubic`` is added first when
    absent. ``datasets``: set
    folders under ``data_root`` (default: ``$SISR_DATASETS``, ``./datasets``, ``../shared/datasets``).
    ``crop_size``: crop side in HR pixels (smaller when the image is); ``zoom``: pixel repetition
    of the crops (default: ``256 // crop_size``, at least 1). ``out_dir`` must be absent or empty
    unless ``overwrite``. ``options``: how every network runs (a :class:`RunOptions`; default: the papers'
    plain whole-image forward). ``command`` is recorded in the page. Columns are named after the registry
    name, or the weights file (:func:`file_label`: a run's ``best.safetensors`` by the run folder);
    equal names get ``-2``, ``-3``...
    """
    scale = whole_scale(scale)
    if crop_size < 1:
        raise ConfigError(f"crop size must be >= 1 HR pixel, got {crop_size}")
    if crops_per_image < 1:
        raise ConfigError(f"crops per image must be >= 1, got {crops_per_image}")
    if zoom is not None and zoom < 1:
        raise ConfigError(f"zoom must be >= 1, got {zoom}")
    if not datasets:
        raise ConfigError("no datasets given")
    if not models:
        raise ConfigError("no models given")
    zoom = int(zoom) if zoom is not None else max(1, CROP_DISPLAY // int(crop_size))
    out_dir = Path(out_dir)
    _check_out_dir(out_dir, overwrite)
    dev = resolve_device(device)
    root = _find_root(data_root, datasets)
    sets = [BenchmarkSet(root, d, scale, check_border=False) for d in dict.fromkeys(datasets)]
    options = options or RunOptions()
    columns = _load_models(models, weights or {}, scale, dev, load_layout(options))
    images = _score_columns(columns, sets, root, (scale, dev, options), crop_size, crops_per_image, progress)
    protocol = {k: v for k, v in columns[0].results.protocol.items() if k != "date"}
    info = {
        "scale": scale,
        "data_root": str(root),
        "crop_size": crop_size,
        "crops_per_image": crops_per_image,
        "zoom": zoom,
        "selection": SELECTION.format(c=crop_size, shave=scale, zoom=zoom),
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "sisr": __version__,
        "command": command,
        "protocol": protocol,
    }
    return _write(out_dir, columns, sets, images, info, overwrite)


def _score_columns(columns: list[ReportModel], sets: Sequence[BenchmarkSet], root: Path, how: tuple,
                   crop_size: int, count: int, progress: bool) -> list[_Image]:
    """Each column's scores and crops from :func:`evaluate_images` (``how``: scale, device, options), images
    matched by set and name. The first column (bicubic) chooses the crop windows; the crops are cut from the
    outputs that were scored."""
    scale, dev, options = how
    images: dict[tuple[str, str], _Image] = {}
    bar = tqdm(total=sum(len(b) for b in sets) * len(columns), unit="img", disable=None if progress else True)
    try:
        for col in columns:
            bar.set_description(col.label)
            scored = evaluate_images(col.loaded, data_root=root, datasets=[b.name for b in sets], scales=[scale],
                                     check_border=False, device=dev, options=options)
            for result in scored:
                key = (result.dataset, result.name)
                if col is columns[0]:
                    images[key] = _new_image(result, crop_size, count)
                image = images[key]
                image.sr_crops[col.label] = [result.sr[t:t + c, l:l + c].copy() for t, l, c in image.windows]
                bar.update()
            col.results = scored.results()
            col.loaded = None  # scored: release it
    finally:
        bar.close()
    return list(images.values())


# --------------------------------------------------------------------------- inputs


def _check_out_dir(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputExistsError(f"{out_dir}: exists and is not a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise OutputExistsError(f"{out_dir}: folder exists and is not empty (use --overwrite / overwrite=True "
                                f"to write the report into it)")


def _find_root(data_root: str | os.PathLike | None, datasets: Sequence[str]) -> Path:
    if data_root is not None:
        return Path(data_root)
    found = find_root(datasets)
    if found is not None:
        return found
    roots = ", ".join(map(str, default_roots()))
    raise DatasetError(f"sets {', '.join(datasets)} not found together in any of {roots} "
                       f"(give the data root: --data-root DIR)")


def _load_models(models, weights: Mapping[str, str | os.PathLike], scale: int, dev: torch.device,
                 channels_last: bool | None) -> list[ReportModel]:
    """Bicubic first, then the models in order, each resolved (so bad names fail before any work)."""
    names = {str(m).lower() for m in models if not isinstance(m, (torch.nn.Module, LoadedModel))}
    for name in weights:
        if name.lower() not in names:
            raise ConfigError(f"weights given for '{name}', which is not among the models")
    sources: list[Any] = ["bicubic"] + [m for m in models if isinstance(m, (torch.nn.Module, LoadedModel))
                                        or str(m).lower() != "bicubic"]
    out: list[ReportModel] = []
    labels: set[str] = set()
    for src in sources:
        if isinstance(src, (torch.nn.Module, LoadedModel)):
            loaded = resolve(src, scale, device=dev)
            label, given = loaded.name, "module"
        else:
            given = str(src)
            wfile = next((str(v) for k, v in weights.items() if k.lower() == given.lower()), None)
            loaded = resolve(given, scale, weights=wfile, device=dev, channels_last=channels_last)  # as evaluate does
            label = given.lower() if is_model_name(given) else file_label(given)
        base, n = label, 2
        while label in labels:
            label, n = f"{base}-{n}", n + 1
        labels.add(label)
        path = loaded.weights.path
        out.append(ReportModel(label, given, None if path is None else str(path), loaded))
    return out


RUN_FILES = {"best": "", "latest": "-latest", "latest_ema": "-latest_ema"}  # run-folder weights -> label suffix


def file_label(path: str | os.PathLike) -> str:
    """Column name of a weights file: its run folder's name for a training run's ``best``/``latest``
    file (``runs/x4/best.safetensors`` -> ``x4``, ``latest.safetensors`` -> ``x4-latest``), the
    run's name and iteration for a checkpoint (``runs/x4/checkpoints/000001000/ema.safetensors``
    -> ``x4-1000-ema``), else the file's stem. A run folder is one with a ``config.yaml``."""
    path = Path(path).absolute()
    stem, folder = path.stem, path.parent
    if stem in RUN_FILES and (folder / "config.yaml").is_file() and folder.name:
        return folder.name + RUN_FILES[stem]
    run = folder.parent.parent
    if (stem in ("model", "ema") and folder.parent.name == "checkpoints" and (run / "config.yaml").is_file()
            and run.name):
        iteration = str(int(folder.name)) if folder.name.isdigit() else folder.name
        return f"{run.name}-{iteration}" + ("-ema" if stem == "ema" else "")
    return stem


# --------------------------------------------------------------------------- crops


def select_crops(sr: np.ndarray, hr: np.ndarray, size: int, count: int, border: int) -> list[tuple[int, int, int]]:
    """Windows ``(top, left, side)`` of largest summed squared Y error of ``sr`` against ``hr``.

    Windows lie inside ``border`` pixels from each edge; ``side`` is ``size`` or less when the
    image is smaller; later windows overlap none before them (fewer than ``count`` when none fits).
    Ties go to the topmost, then leftmost window.
    """
    h, w = hr.shape[:2]
    border = min(int(border), (h - 1) // 2, (w - 1) // 2)
    inner_h, inner_w = h - 2 * border, w - 2 * border
    side = max(1, min(int(size), inner_h, inner_w))
    err = (rgb_to_y(sr) - rgb_to_y(hr))[border:h - border, border:w - border] ** 2
    integral = np.zeros((inner_h + 1, inner_w + 1))
    integral[1:, 1:] = err.cumsum(0).cumsum(1)
    sums = integral[side:, side:] - integral[:-side, side:] - integral[side:, :-side] + integral[:-side, :-side]
    free = np.ones_like(sums, dtype=bool)
    windows = []
    for _ in range(int(count)):
        if not free.any():
            break
        masked = np.where(free, sums, -np.inf)
        top, left = np.unravel_index(int(np.argmax(masked)), masked.shape)  # first maximum in row-major order
        windows.append((int(top) + border, int(left) + border, side))
        free[max(0, top - side + 1):top + side, max(0, left - side + 1):left + side] = False
    return windows


def _new_image(bicubic: ImageResult, crop_size: int, count: int) -> _Image:
    """An image of the report: its crop windows chosen on the bicubic output, HR crops and overview."""
    hr = bicubic.hr
    windows = select_crops(bicubic.sr, hr, crop_size, count, bicubic.scale)
    return _Image(bicubic.dataset, bicubic.name, (hr.shape[1], hr.shape[0]), windows,
                  [hr[t:t + c, l:l + c].copy() for t, l, c in windows], _overview(hr, windows))


def _overview(hr: np.ndarray, windows: Sequence[tuple[int, int, int]]) -> Image.Image:
    """The HR image reduced to at most OVERVIEW_SIZE pixels, crops outlined and numbered."""
    im = Image.fromarray(hr)
    f = min(1.0, OVERVIEW_SIZE / max(im.size))
    if f < 1.0:
        im = im.resize((max(1, round(im.width * f)), max(1, round(im.height * f))), Image.Resampling.LANCZOS)
    draw = ImageDraw.Draw(im)
    small = font(12)
    for k, (t, l, c) in enumerate(windows):
        color = OUTLINE[k % len(OUTLINE)]
        box = [l * f, t * f, (l + c) * f - 1, (t + c) * f - 1]
        draw.rectangle(box, outline="#000000", width=3)
        draw.rectangle(box, outline=color, width=1)
        draw.text((box[0] + 3, box[1] + 1), str(k + 1), fill=color, font=small, stroke_width=1, stroke_fill="#000000")
    return im


def _zoomed(crop: np.ndarray, zoom: int) -> Image.Image:
    return Image.fromarray(np.repeat(np.repeat(crop, zoom, axis=0), zoom, axis=1))


# --------------------------------------------------------------------------- output


def _write(out_dir: Path, columns: list[ReportModel], sets: Sequence[BenchmarkSet], images: list[_Image],
           info: dict[str, Any], overwrite: bool) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    scale = info["scale"]
    set_names = [b.name for b in sets]
    scores = {c.label: {s.dataset: s for s in c.results.sets} for c in columns}

    charts = [("charts/psnr.png", "Mean PSNR (Y) per set", bar_chart(
        set_names, {c.label: [scores[c.label][d].psnr_y for d in set_names] for c in columns},
        title=f"PSNR (Y, dB) x{scale}, mean per set", ylabel="PSNR (dB)", y_min=None))]
    for d in set_names:
        names = [i.name for i in scores[columns[0].label][d].images]
        charts.append((f"charts/psnr_{slug(d)}.png", f"PSNR (Y) per image, {d}", bar_chart(
            names, {c.label: [i.psnr_y for i in scores[c.label][d].images] for c in columns},
            title=f"{d} x{scale}: PSNR (Y, dB) per image", ylabel="PSNR (dB)", y_min=None, value_format=None)))
    for rel, _, img in charts:
        save_png(img, out_dir / rel, overwrite=overwrite)

    crop_meta = []
    figures = []
    zoom = info["zoom"]
    folders: set[str] = set()
    for image in images:
        folder = base = f"crops/{slug(image.dataset)}/{slug(image.name)}"
        n = 2
        while folder in folders:  # names that differ only in characters the slug replaces
            folder, n = f"{base}-{n}", n + 1
        folders.add(folder)
        save_png(image.overview, out_dir / folder / "overview.png", overwrite=overwrite)
        per_image = {c.label: next(i for i in scores[c.label][image.dataset].images if i.name == image.name)
                     for c in columns}
        rows = []
        crop_scores = []
        for k, (t, l, c) in enumerate(image.windows):
            hr = image.hr_crops[k]
            cells = [("HR", hr, None)] + [(col.label, image.sr_crops[col.label][k], psnr(image.sr_crops[col.label][k], hr))
                                          for col in columns]
            row = []
            for i, (label, crop, value) in enumerate(cells):
                rel = f"{folder}/c{k + 1}_{i}_{slug(label)}.png"
                save_png(_zoomed(crop, zoom), out_dir / rel, overwrite=overwrite)
                row.append((label, rel, value))
            rows.append(((t, l, c), row))
            crop_scores.append({"top": t, "left": l, "size": c,
                                "psnr_y": {label: value for label, _, value in row if value is not None}})
        crop_meta.append({"dataset": image.dataset, "image": image.name, "crops": crop_scores})
        figures.append((image, folder, per_image, rows))

    meta = {
        "format": "sisr-report", "format_version": 1, **{k: v for k, v in info.items() if k != "protocol"},
        "protocol": info["protocol"],
        "models": [{"label": c.label, "source": c.source, "weights": c.weights, "evaluation": c.results.to_dict()}
                   for c in columns],
        "crops": crop_meta,
    }
    atomic_write_text(out_dir / "metrics.json", json.dumps(_json_safe(meta), indent=2) + "\n", overwrite=overwrite)
    page = _html(columns, set_names, scores, charts, figures, info)
    return atomic_write_text(out_dir / "index.html", page, overwrite=overwrite)


CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 24px; color: #222;
       background: #fff; max-width: 1400px; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { margin-top: 1.6em; border-bottom: 1px solid #ddd; }
p.meta, p.note { color: #555; font-size: 0.92em; max-width: 70em; }
table.metrics { border-collapse: collapse; margin: 8px 0; font-variant-numeric: tabular-nums; }
table.metrics th, table.metrics td { border: 1px solid #ccc; padding: 4px 10px; text-align: right; }
table.metrics th:first-child, table.metrics td:first-child { text-align: left; }
table.metrics td.best { font-weight: bold; background: #eef6ee; }
.charts img { max-width: 100%; border: 1px solid #eee; margin: 4px 8px 4px 0; vertical-align: top; }
figure.image { margin: 18px 0; padding: 10px; border: 1px solid #ddd; border-radius: 4px; }
figure.image > figcaption { font-weight: 600; margin-bottom: 6px; }
figure.image > figcaption span.scores { font-weight: normal; color: #555; font-size: 0.9em; }
.layout { display: flex; flex-wrap: wrap; gap: 14px; align-items: flex-start; }
.crop-rows { flex: 1 1 520px; }
.row { display: flex; flex-wrap: wrap; gap: 10px; align-items: flex-start; margin: 6px 0; }
.crop { margin: 0; text-align: center; }
.crop img { image-rendering: pixelated; image-rendering: crisp-edges; display: block; border: 1px solid #999; }
.crop figcaption { font-size: 0.85em; margin-top: 3px; }
.crop .psnr { font-variant-numeric: tabular-nums; color: #333; }
.overview img { display: block; border: 1px solid #999; }
code { background: #f4f4f4; padding: 1px 4px; border-radius: 3px; }
"""


def _html(columns, set_names, scores, charts, figures, info) -> str:
    e = html.escape
    scale = info["scale"]
    out = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
           f"<title>sisr report x{scale}: {e(', '.join(c.label for c in columns))}</title>",
           f"<style>{CSS}</style>", "</head>", "<body>",
           f"<h1>sisr report: x{scale}, {e(', '.join(set_names))}</h1>",
           f'<p class="meta">Models: {e(", ".join(c.label for c in columns))}. Data: <code>{e(info["data_root"])}</code>. '
           f"Made {e(info['date'])} with sisr {e(info['sisr'])}.</p>"]
    if info.get("command"):
        out.append(f'<p class="meta">Command: <code>{e(info["command"])}</code></p>')

    out += ["<h2 id=\"metrics\">Metrics</h2>",
            f'<p class="note">PSNR (dB) / SSIM on Y, mean over each set\'s images, x{scale}, '
            f"{scale} border pixels excluded (shave = scale; the papers' protocol, see Protocol below). "
            "Bold: best PSNR of the set.</p>",
            '<table class="metrics" id="metrics-table">', "<thead><tr><th>model</th>"
            + "".join(f"<th>{e(d)}</th>" for d in set_names) + "</tr></thead>", "<tbody>"]
    best = {d: max(scores[c.label][d].psnr_y for c in columns) for d in set_names}
    for c in columns:
        cells = []
        for d in set_names:
            s = scores[c.label][d]
            cls = ' class="best"' if s.psnr_y == best[d] else ""
            cells.append(f'<td{cls} data-dataset="{e(d)}" data-psnr="{s.psnr_y!r}" data-ssim="{s.ssim_y!r}">'
                         f"{s.psnr_y:.2f} / {s.ssim_y:.4f}</td>")
        out.append(f'<tr data-model="{e(c.label)}"><th scope="row">{e(c.label)}</th>{"".join(cells)}</tr>')
    out += ["</tbody>", "</table>", '<ul class="models">']
    for c in columns:
        per_scale = c.results.model["per_scale"][f"x{scale}"]
        what = f"weights <code>{e(c.weights)}</code>" if c.weights else (
            "no parameters" if per_scale["parameters"] == 0 else f"given as {e(c.source)}")
        digest = f", sha256 <code>{e(per_scale['sha256'][:16])}…</code>" if per_scale.get("sha256") else ""
        out.append(f"<li><b>{e(c.label)}</b>: {e(str(per_scale['model']))}, {per_scale['parameters']:,} parameters, "
                   f"{what}{digest}</li>")
    out.append("</ul>")

    out += ['<h2 id="charts">Charts</h2>', '<div class="charts">']
    out += [f'<img src="{e(rel)}" alt="{e(alt)}">' for rel, alt, _ in charts]
    out.append("</div>")

    out += ['<h2 id="crops">Crops</h2>', f'<p class="note">{e(info["selection"])}</p>']
    current = None
    for image, folder, per_image, rows in figures:
        if image.dataset != current:
            current = image.dataset
            out.append(f'<h3 id="set-{e(slug(current))}">{e(current)}</h3>')
        summary = "; ".join(f"{e(label)} {s.psnr_y:.2f} dB / {s.ssim_y:.4f}" for label, s in per_image.items())
        out.append(f'<figure class="image" id="{e(folder[len("crops/"):].replace("/", "-"))}" '
                   f'data-dataset="{e(image.dataset)}" data-image="{e(image.name)}">')
        out.append(f"<figcaption>{e(image.dataset)} / {e(image.name)} ({image.size[0]}x{image.size[1]}) "
                   f'<span class="scores">whole image, PSNR / SSIM (Y): {summary}</span></figcaption>')
        out.append('<div class="layout">')
        out.append(f'<figure class="crop overview"><img src="{e(folder)}/overview.png" '
                   f'alt="{e(image.name)} with the crops outlined"><figcaption>crop positions</figcaption></figure>')
        out.append('<div class="crop-rows">')
        for k, ((t, l, c), row) in enumerate(rows):
            out.append(f'<div class="row crops" data-crop="{k + 1}" data-top="{t}" data-left="{l}" data-size="{c}">')
            for label, rel, value in row:
                if value is None:
                    under = f"crop {k + 1}: x {l}, y {t}, {c}x{c}"
                    attr = ""
                else:
                    under = f'<span class="psnr">{value:.2f} dB</span>'
                    attr = f' data-psnr="{value!r}"'
                out.append(f'<figure class="crop" data-model="{e(label)}"{attr}><img src="{e(rel)}" '
                           f'alt="{e(label)}, crop {k + 1}" width="{c * info["zoom"]}" height="{c * info["zoom"]}">'
                           f"<figcaption><b>{e(label)}</b><br>{under}</figcaption></figure>")
            out.append("</div>")
        out += ["</div>", "</div>", "</figure>"]

    out += ['<h2 id="protocol">Protocol</h2>', "<ul>"]
    for key, value in info["protocol"].items():
        if isinstance(value, dict):
            value = "; ".join(f"{k}: {v}" for k, v in value.items())
        out.append(f"<li><b>{e(str(key))}</b>: {e(str(value))}</li>")
    if "metrics" not in info["protocol"]:
        out.append(f"<li><b>metrics</b>: {e(CONVENTION)}</li>")
    return "\n".join(out + ["</ul>", "</body>", "</html>", ""])
