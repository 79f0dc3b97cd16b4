"""PSNR/SSIM tables on benchmark sets, in the papers' protocol.

``evaluate("rcan", data_root="benchmark", datasets=["Set5"], scales=[2, 4], weights=None)``
runs a model over each (set, scale) of :class:`sisr.data.benchmark.BenchmarkSet`, quantises
the SR output to uint8 (``tensor_to_image``: clamp, x255, round half to even) and scores it
against the HR with :mod:`sisr.metrics` (Y PSNR/SSIM with ``shave`` = scale unless given,
and RGB PSNR). The result records per-image and mean scores plus everything needed to
reproduce them (metric convention, shave, LR source and border rule per set, forward
options, software versions, device, model name, weights file and its SHA-256).

The network runs as a plain ``model(x)`` under ``torch.inference_mode`` unless
self-ensemble, chop, tiling or a reduced precision is asked for; then it goes through
:func:`sisr.inference.forward.run`.
"""

from __future__ import annotations

import csv
import datetime as _dt
import hashlib
import io as _io
import json
import math
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from tqdm import tqdm

from .. import __version__
from ..data.benchmark import BenchmarkSet
from ..data.io import image_to_tensor, tensor_to_image
from ..errors import ConfigError, ModelError
from ..inference.images import rgb_to_gray
from ..inference.options import RunOptions
from ..metrics import CONVENTION, psnr, ssim
from ..models.registry import count_parameters, get_info
from ..utils.device import device_name, resolve_device
from ..utils.distributed import gather_objects, rank_and_world
from ..utils.fs import atomic_write_text, check_outputs, slug
from ..weights.handle import LoadedModel
from ..weights.loading import is_model_name, resolve, whole_scale

QUANTISATION = "SR clamped to [0, 1], x255, rounded half to even to uint8 before scoring (EDSR quantize)"
GRAY_IMAGES = {
    "rgb": "replicated to RGB; scored with the RGB formulas (the EDSR/RCAN code's convention)",
    "gray": "scored as gray: HR gray value, SR reduced to gray by 0.299 R + 0.587 G + 0.114 B before quantisation "
            "(as sisr upscale does), luma = gray value (the MATLAB script's gray branch; the literature's bicubic rows)",
}
RESULT_FILES = ("results.json", "per_image.csv", "table.md", "env.json")


@dataclass
class ImageScore:
    name: str
    psnr_y: float
    ssim_y: float
    psnr_rgb: float
    lr_source: str
    lr_border: str | None
    lr_file: str | None
    seconds: float  # forward pass (with ensemble/tiling) of this image


@dataclass
class SetScore:
    dataset: str
    scale: int
    lr: str  # where the LR came from, with counts and the border rule
    images: list[ImageScore] = field(default_factory=list)

    @property
    def psnr_y(self) -> float:
        return float(np.mean([i.psnr_y for i in self.images]))

    @property
    def ssim_y(self) -> float:
        return float(np.mean([i.ssim_y for i in self.images]))

    @property
    def psnr_rgb(self) -> float:
        return float(np.mean([i.psnr_rgb for i in self.images]))


@dataclass
class EvalResults:
    """Scores of one evaluation run; ``table()``, ``markdown()``, ``csv()``, ``to_dict()`` render it."""

    model: dict[str, Any]
    protocol: dict[str, Any]
    sets: list[SetScore]

    def get(self, dataset: str, scale: int) -> SetScore:
        for s in self.sets:
            if s.dataset == dataset and s.scale == scale:
                return s
        raise KeyError(f"{dataset} x{scale} was not evaluated")

    def _grid(self) -> tuple[list[str], list[int]]:
        datasets = list(dict.fromkeys(s.dataset for s in self.sets))
        scales = sorted({s.scale for s in self.sets})
        return datasets, scales

    def _cell(self, dataset: str, scale: int, rgb: bool = False) -> str:
        try:
            s = self.get(dataset, scale)
        except KeyError:
            return "-"
        return f"{s.psnr_rgb:.2f}" if rgb else f"{s.psnr_y:.2f}/{s.ssim_y:.4f}"

    def table(self) -> str:
        """Paper-style text table: rows = sets, columns = scales, cells ``PSNR/SSIM`` (Y)."""
        datasets, scales = self._grid()
        rows = [["PSNR/SSIM (Y)"] + [f"x{s}" for s in scales]]
        rows += [[d] + [self._cell(d, s) for s in scales] for d in datasets]
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)

    def markdown(self) -> str:
        datasets, scales = self._grid()
        head = "| " + " | ".join(["dataset"] + [f"x{s}" for s in scales]) + " |"
        rule = "|---" * (len(scales) + 1) + "|"
        lines = [f"# sisr eval: {self.model['label']}", "", "PSNR (dB) / SSIM on Y, mean over images:", "",
                 head, rule]
        lines += ["| " + " | ".join([d] + [self._cell(d, s) for s in scales]) + " |" for d in datasets]
        lines += ["", "PSNR (dB) on RGB:", "", head, rule]
        lines += ["| " + " | ".join([d] + [self._cell(d, s, rgb=True) for s in scales]) + " |" for d in datasets]
        lines += ["", "## Protocol", ""]
        for key, value in self.protocol.items():
            if isinstance(value, dict):
                lines += [f"* **{key}**:"] + [f"  * {k}: {_flat(v)}" for k, v in value.items()]
            else:
                lines.append(f"* **{key}**: {value}")
        lines += ["", "## Model", ""]
        for scale, m in self.model["per_scale"].items():
            weights = f"weights `{m['weights']}`" if m["weights"] else "no weights file"
            digest = f", sha256 `{m['sha256']}`" if m["sha256"] else ""
            lines.append(f"* **{scale}**: {m['model']}, hparams `{json.dumps(m['hparams'], sort_keys=True)}`, "
                         f"{m['parameters']:,} parameters, {weights}{digest}")
        return "\n".join(lines) + "\n"

    def csv(self) -> str:
        """Per-image scores; the protocol as ``# key: value`` lines first."""
        out = _io.StringIO()
        for k, v in {**self.protocol, "model": self.model}.items():
            out.write(f"# {k}: {_flat(v)}\n")
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["dataset", "scale", "image", "psnr_y", "ssim_y", "psnr_rgb", "lr_source", "lr_border",
                         "lr_file", "seconds"])
        for s in self.sets:
            for i in s.images:
                writer.writerow([s.dataset, s.scale, i.name, f"{i.psnr_y:.6f}", f"{i.ssim_y:.6f}", f"{i.psnr_rgb:.6f}",
                                 i.lr_source, i.lr_border or "", i.lr_file or "", f"{i.seconds:.4f}"])
        return out.getvalue()

    def to_dict(self) -> dict[str, Any]:
        sets = [{"dataset": s.dataset, "scale": s.scale, "lr": s.lr, "psnr_y": s.psnr_y, "ssim_y": s.ssim_y,
                 "psnr_rgb": s.psnr_rgb, "images": [asdict(i) for i in s.images]} for s in self.sets]
        return _json_safe({"format": "sisr-eval", "format_version": 1, "model": self.model,
                           "protocol": self.protocol, "results": sets})


@dataclass
class ImageResult:
    """One scored image of :func:`evaluate_images`: the LR the network saw, its output as scored (``sr``,
    quantised to uint8; one channel for a gray image under ``gray_images="gray"``), the HR it was scored
    against, and the scores."""

    dataset: str
    scale: int
    name: str
    lr: np.ndarray
    sr: np.ndarray
    hr: np.ndarray
    score: ImageScore


class ImageEvaluation:
    """What :func:`evaluate_images` returns: iterate it for each :class:`ImageResult` (set by set, scale by
    scale, images in file order; with ``distributed`` only this rank's share); :meth:`results` then gives the
    :class:`EvalResults` (running the images not iterated yet; with ``distributed``, every rank's)."""

    def __init__(self, networks: dict[int, LoadedModel], sets: list[BenchmarkSet], options: RunOptions,
                 settings: dict[str, Any], describe: Any, distributed: bool = False):
        self.networks, self.sets, self.options = networks, sets, options
        self.settings = settings  # shave, gray_images, degradation, data_root, device
        self._describe = describe
        self._scores: list[SetScore] = []
        self._gray: dict[str, list[str]] = {}
        self._done: list[tuple[int, int, ImageScore, bool]] = []  # (set, index, score, gray) of this process
        self._iterator: Iterator[ImageResult] | None = None
        self.rank, self.world = rank_and_world() if distributed else (0, 1)
        self._per_rank: list[int] = []

    def __len__(self) -> int:
        """The images this process scores (all of them, or its share under a process group)."""
        return len(range(self.rank, sum(len(b) for b in self.sets), self.world))

    def __iter__(self) -> Iterator[ImageResult]:
        if self._iterator is None:
            self._iterator = self._images()
        return self._iterator

    def _images(self) -> Iterator[ImageResult]:
        shave, gray_images = self.settings["shave"], self.settings["gray_images"]
        run_options = None if is_plain(self.options) else self.options
        position = 0  # of the image in the whole run: with a process group, rank r scores every world-th from r
        for k, bench in enumerate(self.sets):
            loaded = self.networks[bench.scale]
            crop = bench.scale if shave is None else int(shave)
            scores = SetScore(bench.name, bench.scale, "")
            self._scores.append(scores)
            for index in range(len(bench)):
                position += 1
                if (position - 1) % self.world != self.rank:
                    continue
                item = bench[index]
                _check_scorable(f"{bench.name}/{item.name}", item.hr.shape, crop)  # before the forward, naming it
                start = time.perf_counter()
                y = _forward(loaded, item.lr, run_options)
                seconds = time.perf_counter() - start
                if tuple(y.shape[-2:]) != item.hr.shape[:2]:
                    raise ModelError(f"{bench.name}/{item.name}: model output is {y.shape[-1]}x{y.shape[-2]}, "
                                     f"expected {item.hr.shape[1]}x{item.hr.shape[0]} (x{bench.scale})")
                hr = item.hr
                if item.gray:
                    self._gray.setdefault(bench.name, []).append(item.name)
                    if gray_images == "gray":
                        y, hr = rgb_to_gray(y), hr[:, :, :1]
                sr = tensor_to_image(y, np.uint8)
                score = ImageScore(item.name, psnr(sr, hr, crop), ssim(sr, hr, crop), psnr(sr, hr, crop, y_only=False),
                                   item.lr_source, item.lr_border, str(item.lr_path) if item.lr_path else None, seconds)
                scores.images.append(score)
                self._done.append((k, index, score, item.gray))
                yield ImageResult(bench.name, bench.scale, item.name, item.lr, sr, hr, score)
            scores.lr = bench.describe_lr(scores.images)

    def results(self) -> EvalResults:
        """The scores of every image (running those not iterated yet) with the protocol and the model."""
        for _ in self:
            pass
        if self.world > 1:
            self._merge_shares()
        return EvalResults(self._describe(self.networks), self._protocol(), self._scores)

    def _merge_shares(self) -> None:
        """Every rank's scored images, in file order, into the set scores (on every rank)."""
        parts = gather_objects(self._done)
        self._per_rank = [len(part) for part in parts]
        done = sorted((d for part in parts for d in part), key=lambda d: d[:2])
        self._gray = {}
        for k, (bench, scores) in enumerate(zip(self.sets, self._scores)):
            scores.images = [score for s, _, score, _ in done if s == k]
            scores.lr = bench.describe_lr(scores.images)
            for score in (score for s, _, score, gray in done if s == k and gray):
                self._gray.setdefault(bench.name, []).append(score.name)
        self._done = []

    def _protocol(self) -> dict[str, Any]:
        shave, gray_images = self.settings["shave"], self.settings["gray_images"]
        gray = self._gray
        forward = "model(x) under torch.inference_mode, whole image" if is_plain(self.options) else {
            **{k: v for k, v in self.options.pixel_options().items() if k != "alpha"}, "backend": self.options.backend}
        return {
            "metrics": CONVENTION,
            "channels": "psnr_y, ssim_y: Y (BT.601, 16-235); psnr_rgb: R, G, B",
            "shave": "scale" if shave is None else int(shave),
            "quantisation": QUANTISATION,
            "hr": "modcrop(HR, scale) = HR cropped at bottom/right to LR size x scale",
            "gray_images": GRAY_IMAGES[gray_images] + (
                f" ({'; '.join(f'{k}: ' + ', '.join(dict.fromkeys(v)) for k, v in gray.items())})" if gray else ""),
            "degradation": self.settings["degradation"].upper(),
            "lr": {f"{s.dataset} x{s.scale}": s.lr for s in self._scores},
            "data_root": str(self.settings["data_root"]),
            "forward": forward,
            "software": {"sisr": __version__, "torch": torch.__version__, "numpy": np.__version__,
                         "python": platform.python_version()},
            "device": device_name(self.settings["device"]),
            "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        } | ({"processes": {"world_size": self.world, "images_per_rank": self._per_rank}} if self.world > 1 else {})


def evaluate_images(
    model: str | os.PathLike | torch.nn.Module | LoadedModel,
    *,
    data_root: str | os.PathLike,
    datasets: Sequence[str] = ("Set5", "Set14", "B100"),
    scales: Sequence[int] | None = None,
    weights: str | os.PathLike | None = None,
    options: RunOptions | None = None,
    lr_source: str = "auto",
    degradation: str = "BI",
    border: str = "symmetric",
    check_border: bool = True,
    gray_images: str = "rgb",
    shave: int | None = None,
    device: str | torch.device = "cpu",
    distributed: bool = False,
    **run_options: Any,
) -> ImageEvaluation:
    """The per-image results of :func:`evaluate` as an iterable :class:`ImageEvaluation` (same arguments,
    without ``progress``): ``for image in evaluate_images(...)`` yields each :class:`ImageResult` as it is
    scored; ``.results()`` gives the :class:`EvalResults`. Models, weights and sets are checked now."""
    if gray_images not in GRAY_IMAGES:
        raise ConfigError(f"gray_images must be one of {', '.join(GRAY_IMAGES)}; got '{gray_images}'")
    options = RunOptions.build(options, **run_options)
    dev = resolve_device(device)
    networks = _load_networks(model, scales, weights, dev, load_layout(options))
    sets = [BenchmarkSet(data_root, d, s, lr_source=lr_source, degradation=degradation, border=border,
                         check_border=check_border) for d in dict.fromkeys(datasets) for s in networks]
    settings = {"shave": shave, "gray_images": gray_images, "degradation": degradation, "data_root": data_root,
                "device": dev}
    return ImageEvaluation(networks, sets, options, settings, lambda nets: _describe_model(model, nets), distributed)


def evaluate(
    model: str | os.PathLike | torch.nn.Module | LoadedModel,
    *,
    data_root: str | os.PathLike,
    datasets: Sequence[str] = ("Set5", "Set14", "B100"),
    scales: Sequence[int] | None = None,
    weights: str | os.PathLike | None = None,
    options: RunOptions | None = None,
    lr_source: str = "auto",
    degradation: str = "BI",
    border: str = "symmetric",
    check_border: bool = True,
    gray_images: str = "rgb",
    shave: int | None = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
    distributed: bool = False,
    **run_options: Any,
) -> EvalResults:
    """Score ``model`` on each of ``datasets`` x ``scales`` (see the module docstring).

    ``model``: a registry name (shipped weights, or ``weights``), a weights file, or an
    ``nn.Module``/``LoadedModel`` for a single scale (see :func:`sisr.weights.resolve`). ``scales``
    defaults to 2, 3, 4 (those the model supports) for a name, the file's scale for a file, and the
    module's scale for a module. ``options``: a :class:`RunOptions` (or its keywords: ``self_ensemble``,
    ``chop``, ``tile``, ``tile_overlap``, ``precision``, ...); with the defaults the network runs as a plain
    ``model(x)`` on whole images. ``lr_source``/``degradation``/``border``/``check_border`` select and
    check the LR (see ``BenchmarkSet``); ``shave`` defaults to the scale. ``gray_images``: ``"rgb"``
    scores gray test images (Set14 bridge) as their RGB replication, ``"gray"`` as gray images (see
    ``GRAY_IMAGES``). ``distributed``: under a process group (a ``torchrun`` launch, see
    :func:`sisr.utils.distributed.init_from_env`) each rank scores every world-th image and every rank
    returns the scores of all (identical to one process's). Per-image outputs: :func:`evaluate_images`.
    """
    images = evaluate_images(model, data_root=data_root, datasets=datasets, scales=scales, weights=weights,
                             options=options, lr_source=lr_source, degradation=degradation, border=border,
                             check_border=check_border, gray_images=gray_images, shave=shave, device=device,
                             distributed=distributed, **run_options)
    bar = tqdm(total=len(images), unit="img", disable=None if progress else True)
    lines = progress and not sys.stderr.isatty()  # logs get a line per finished set instead of a bar
    current, count, n = None, 0, 0  # the set being scored, its images so far, all images so far

    def finished() -> None:
        if lines and current is not None:
            print(f"sisr eval: {current}: {count} image(s) scored ({n}/{len(images)} images)", file=sys.stderr,
                  flush=True)

    try:
        for image in images:
            key = f"{image.dataset} x{image.scale}"
            bar.set_description(key)
            bar.update()
            if key != current:
                finished()
                current, count = key, 0
            count, n = count + 1, n + 1
        finished()
    finally:
        bar.close()
    return images.results()


def _check_scorable(where: str, shape: tuple[int, ...], shave: int) -> None:
    """A ``MetricError`` naming the image when SSIM's window does not fit it after shaving."""
    from ..metrics import MetricError, ssim_size_problem

    h, w = shape[:2]
    if problem := ssim_size_problem(h, w, shave):
        raise MetricError(f"{where}: {w}x{h} is too small to score with a {shave}-pixel shave ({problem})")


def save_results(results: EvalResults, out_dir: str | os.PathLike | None = None, *, overwrite: bool = False) -> Path:
    """Write ``results.json``, ``per_image.csv``, ``table.md`` and ``env.json`` into ``out_dir``; return the folder.

    Without ``out_dir``: a new ``results/eval-<model>-<timestamp>[-n]`` folder. Existing files are
    never replaced unless ``overwrite``.
    """
    if out_dir is None:
        out_dir = _new_run_dir(Path("results"), f"eval-{slug(results.model['label'], 'model')}")
    out_dir = Path(out_dir)
    check_outputs(out_dir, RESULT_FILES, overwrite)
    from ..utils.environment import environment

    texts = dict(zip(RESULT_FILES, (json.dumps(results.to_dict(), indent=2) + "\n", results.csv(),
                                    results.markdown(), json.dumps(environment(), indent=2) + "\n")))
    for name, text in texts.items():
        atomic_write_text(out_dir / name, text, overwrite=overwrite)
    return out_dir


def weights_metrics(model: str | os.PathLike | torch.nn.Module | LoadedModel, *, data_root: str | os.PathLike,
                    datasets: Sequence[str] = ("Set5", "Set14", "B100"), scale: int | None = None,
                    self_ensemble: Sequence[bool] = (False, True), device: str | torch.device = "cpu",
                    out_dir: str | os.PathLike | None = None, overwrite: bool = False) -> dict[str, dict[str, float]]:
    """``model`` (a weights file, usually) scored on ``datasets`` at one scale, plain and with the self-ensemble, in
    the form a packaged weights file records (``package_pretrained(metadata={"metrics": ...})``):
    ``{"Set5": {"psnr_y", "ssim_y"}, ..., "Set5+": {...}}``, "+" for the self-ensemble. ``scale`` defaults to the
    file's or module's. With ``out_dir`` each evaluation's files go to ``out_dir/eval-x<s>[-plus]``."""
    metrics: dict[str, dict[str, float]] = {}
    for ensemble in self_ensemble:
        res = evaluate(model, data_root=data_root, datasets=datasets, scales=None if scale is None else [scale],
                       self_ensemble=ensemble, device=device, progress=False)
        if out_dir is not None:
            save_results(res, Path(out_dir) / f"eval-x{res.sets[0].scale}{'-plus' if ensemble else ''}",
                         overwrite=overwrite)
        for s in res.sets:
            metrics[s.dataset + ("+" if ensemble else "")] = {"psnr_y": s.psnr_y, "ssim_y": s.ssim_y}
    return metrics


# --------------------------------------------------------------------------- helpers


def is_plain(options: RunOptions) -> bool:
    """Whether the options ask for nothing but a plain forward (the papers' whole-image protocol)."""
    return options == RunOptions(progress=options.progress, alpha=options.alpha)


def load_layout(options: RunOptions) -> bool | None:
    """``resolve(channels_last=...)`` for an evaluation: contiguous for the plain forward (the layout the
    recorded scores were made in), else what the options ask for (channels_last on the CPU under ``auto``)."""
    return False if is_plain(options) else options.load_channels_last


def _load_networks(model, scales: Sequence[int] | None, weights, dev: torch.device,
                   channels_last: bool | None) -> dict[int, LoadedModel]:
    """scale -> network in eval mode on ``dev`` (loaded in the layout ``channels_last`` asks for)."""
    if isinstance(model, (torch.nn.Module, LoadedModel)):
        loaded = resolve(model, weights=weights, device=dev)
        if scales is None:
            if loaded.scale is None:
                raise ConfigError("an nn.Module without sisr_spec needs scales=[s] (one scale)")
            scales = [loaded.scale]
        if len(scales) != 1:
            raise ConfigError(f"an nn.Module works at one scale; got scales {list(scales)}")
        scale = whole_scale(scales[0])
        return {scale: resolve(loaded, scale)}
    if scales is None and (weights is not None or not is_model_name(str(model))):  # the file's scale
        loaded = resolve(model, weights=weights, device=dev, channels_last=channels_last)
        return {loaded.scale: loaded}
    if scales is None:
        scales = [s for s in (2, 3, 4) if s in get_info(str(model)).scales]
    return {s: resolve(model, s, weights=weights, device=dev, channels_last=channels_last)
            for s in dict.fromkeys(whole_scale(s) for s in scales)}


def _forward(loaded: LoadedModel, lr: np.ndarray, run_options: RunOptions | None) -> torch.Tensor:
    """The network's output ``(3, sH, sW)``, float32 on the CPU: ``model(x)`` under inference mode, or
    :func:`sisr.inference.forward.run` when options ask for more."""
    x = image_to_tensor(lr)[None].to(loaded.device)
    if run_options is None:
        with torch.inference_mode():
            y = loaded.module(x)
    else:
        from ..inference.forward import run

        y = run(loaded.module, x, run_options)
    return y[0].float().cpu()  # waits for the device


def _describe_model(model, networks: dict[int, LoadedModel]) -> dict[str, Any]:
    per_scale = {}
    for scale, loaded in networks.items():
        spec, net = loaded.spec, loaded.module
        n_params = count_parameters(net)
        path = loaded.weights.path
        per_scale[f"x{scale}"] = {
            "model": loaded.name,
            "hparams": dict(spec.hparams) if spec else None,
            "parameters": n_params,
            "weights": None if path is None else str(path),
            "sha256": loaded.weights.sha256 if path else (_state_sha256(net) if n_params else None),
        }
    if isinstance(model, (torch.nn.Module, LoadedModel)):
        label = per_scale[next(iter(per_scale))]["model"]
    elif is_model_name(model):
        label = str(model).lower()
    else:
        label = Path(model).stem
    return {"label": label, "per_scale": per_scale}


def _state_sha256(net: torch.nn.Module) -> str:
    """Hash of a module's state (names, shapes, dtypes, values) when it has no weights file."""
    h = hashlib.sha256()
    for name, t in net.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _new_run_dir(parent: Path, stem: str) -> Path:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = parent / f"{stem}-{stamp}"
    n = 2
    while path.exists():
        path = parent / f"{stem}-{stamp}-{n}"
        n += 1
    return path


def _flat(value: Any) -> str:
    if isinstance(value, dict):
        return "; ".join(f"{k}: {_flat(v)}" for k, v in value.items())
    return str(value)


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # "inf" (identical images); JSON has no infinity
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value
