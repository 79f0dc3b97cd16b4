"""Upscale image files and folders: jobs, skip-if-done, parallel workers, progress, and a result.

>>> result = upscale_files(["photos/", "scan.tif"], "big/", "defian-s", 2, options=RunOptions(tile="auto"))
>>> result.done, result.skipped, result.failed     # jobs written, jobs already done, (path, one-line reason)

* **Jobs** (:func:`plan_jobs`): files and folders (searched recursively, sub-folders kept under the
  output, an output folder inside an input folder left out) become ``(source, output)`` pairs. One
  input file and an output named ``.png|.jpg|.jpeg|.webp|.tif|.tiff`` writes that file.
* **Checked before any work**: the options, the output location, the model and weights, and that
  the precision and backend can run. Each image's output size is checked against its format's limit
  (WebP 16383 pixels a side, JPEG 65500) before the network runs on it.
* **Skip-if-done**: each output records its provenance (model, scale, weights file and its sha256,
  the input's sha256, the options that change pixels) and, under ``"output"``, its size and the
  sha256 of its decoded pixels. An existing output is skipped only when its record equals this
  job's, it decodes completely, its size is the input's times the scale and its pixels hash to the
  recorded value; otherwise it is a failure naming why (``overwrite=True`` replaces it). Two jobs
  racing for one output: the one that finds it written meanwhile checks it the same way and counts
  it as skipped when it matches.
* **Workers**: on a multi-core CPU whole images run side by side, one torch thread each (faster than
  splitting each convolution, docs/performance.md), while reading and writing overlap the network.
  ``torch.set_num_threads(1)`` holds for the job and is restored after (a process-wide setting).
* **Failures** (unreadable or oversized files, out of memory, an output that cannot be written) are
  reported per image (``SisrError``) and the rest go on.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, NamedTuple

import numpy as np
import torch

from ..errors import ConfigError, ImageError, SisrError
from ..utils.fs import check_output_dir, check_output_file  # re-exported: part of the batch API
from ..utils.fs import OutputExistsError, sha256_file
from ..weights.handle import LoadedModel
from ..weights.loading import resolve
from .images import upscale_array
from .network import Runner, check_run
from .options import RunOptions

__all__ = ["Job", "OutputOptions", "BatchEvent", "BatchResult", "plan_jobs", "upscale_files", "pixel_digest",
           "EXTENSIONS", "COLOR_MODES", "check_output_dir", "check_output_file", "check_suffix"]

EXTENSIONS = {"png": ".png", "jpg": ".jpg", "webp": ".webp", "tiff": ".tif", "same": None}
COLOR_MODES = ("keep", "srgb")
LOSSY = (".jpg", ".jpeg", ".webp")


class Job(NamedTuple):
    source: Path
    output: Path


@dataclass(frozen=True)
class OutputOptions:
    """How outputs are named and written, checked when made: ``ext`` (``png``, ``jpg``, ``webp``, ``tiff``,
    ``same``: the input's), ``suffix`` (added to each name), ``quality`` (JPEG/WebP, 1-100), ``lossless``
    (WebP), ``color`` (``keep`` the ICC profile, or convert to ``srgb``), ``overwrite`` existing outputs."""

    ext: str = "png"
    suffix: str = ""
    quality: int = 95
    lossless: bool = False
    color: str = "keep"
    overwrite: bool = False

    def __post_init__(self) -> None:
        if self.ext not in EXTENSIONS:
            raise ConfigError(f"--ext '{self.ext}': choose one of {', '.join(EXTENSIONS)}")
        check_suffix(self.suffix)
        if isinstance(self.quality, bool) or not isinstance(self.quality, int) or not 1 <= self.quality <= 100:
            raise ConfigError(f"--quality must be 1..100, got {self.quality!r}")
        if self.color not in COLOR_MODES:
            raise ConfigError(f"--color must be one of {', '.join(COLOR_MODES)}, got '{self.color}'")


@dataclass(frozen=True)
class BatchEvent:
    """What ``progress`` receives: ``kind`` ``"start"`` (``total`` images to upscale after skipping;
    ``message`` names the model and device), ``"done"``, ``"skipped"`` or ``"failed"`` (``message``: the
    one-line reason). ``position`` counts finished images of the work in completion order (1..``total``);
    it is 0 for outputs skipped or refused before the work."""

    kind: str
    job: Job | None = None
    message: str | None = None
    position: int = 0
    total: int = 0


@dataclass
class BatchResult:
    """``done`` and ``skipped`` jobs, ``failed`` as ``(path, one-line reason)``; ``ok`` when nothing failed."""

    done: list[Job] = field(default_factory=list)
    skipped: list[Job] = field(default_factory=list)
    failed: list[tuple[Path | None, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed


def upscale_files(inputs: Iterable[str | os.PathLike], output: str | os.PathLike, model=None,
                  scale: int | None = None, *, weights: str | os.PathLike | None = None,
                  device: str | torch.device = "auto", options: RunOptions | None = None,
                  output_options: OutputOptions | None = None, workers: int | None = None,
                  progress: Callable[[BatchEvent], None] | None = None,
                  notify: Callable[[str], None] | None = None, shard: tuple[int, int] | None = None) -> BatchResult:
    """Upscale image files and folders into ``output`` (see the module docstring); returns what happened.

    ``model``/``scale``/``weights``/``device``: as :func:`sisr.weights.resolve` (a module or a
    ``LoadedModel`` too); ``options``: :class:`RunOptions`; ``output_options``: :class:`OutputOptions`.
    ``workers``: images run side by side (default: the torch thread count on the CPU when neither
    tiling nor chop is asked and the backend is eager, else 1). ``progress(event)`` receives a
    :class:`BatchEvent` per image; ``notify(message)`` the notes (default model, multi-frame files,
    a backend being built). Errors that concern the whole job (options, output location, model,
    weights, device) raise before anything is written or skipped; errors of one image are collected.
    ``shard=(i, n)``: only every n-th image from the i-th (1-based) in the sorted order of the outputs, so n
    processes or array jobs split a folder deterministically (default: by RANK/WORLD_SIZE under torchrun).
    """
    from ..utils.device import resolve_device

    job = _BatchJob(options or RunOptions(), output_options or OutputOptions(), progress, notify)
    inputs = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    resolve_device(device)  # an unavailable device is reported before anything else
    links: list[Path] = []
    jobs, errors = plan_jobs(inputs, Path(output), job.files.suffix, ext=job.files.ext, has_suffix_option=True,
                             links=links)
    for message in errors:
        job.fail(None, message)
    for link in links:
        job.note(f"{link}: a symbolic link to a folder, not followed (name the folder itself to include it)")
    jobs = shard_jobs(jobs, shard if shard is not None else launcher_shard())
    if not jobs:
        return job.result
    loaded = resolve(model, scale, weights=weights, device=device, notify=job.notify,
                     channels_last=job.options.load_channels_last)
    job.start(loaded)
    todo = job.check_existing(jobs)
    if todo:
        job.run(todo, workers)
    return job.result


def check_shard(shard: tuple[int, int]) -> tuple[int, int]:
    i, n = shard
    if not (isinstance(i, int) and isinstance(n, int) and 1 <= i <= n):
        raise ConfigError(f"shard {i}/{n}: expected I/N with 1 <= I <= N")
    return i, n


def launcher_shard() -> tuple[int, int]:
    """(RANK + 1, WORLD_SIZE) of a torchrun launch; (1, 1) otherwise."""
    return int(os.environ.get("RANK", "0")) + 1, max(1, int(os.environ.get("WORLD_SIZE", "1")))


def shard_jobs(jobs: list[Job], shard: tuple[int, int]) -> list[Job]:
    """The jobs of shard ``(i, n)``: every n-th from the i-th, in the sorted order of the outputs."""
    i, n = check_shard(shard)
    return sorted(jobs, key=lambda j: str(j.output))[i - 1::n] if n > 1 else jobs


class _BatchJob:
    """The state of one ``upscale_files`` call: options, the network, its record, counters and callbacks."""

    def __init__(self, options: RunOptions, files: OutputOptions, progress, notify):
        self.options, self.files = options, files
        self.progress = progress or (lambda event: None)
        self.notify = notify
        self.result = BatchResult()
        self.loaded: LoadedModel | None = None
        self.record: dict = {}

    def fail(self, job: Job | None, message: str, position: int = 0, total: int = 0) -> None:
        self.result.failed.append((job.source if job else None, message))
        self.progress(BatchEvent("failed", job, message, position, total))

    def note(self, message: str) -> None:
        if self.notify is not None:
            self.notify(message)

    def start(self, loaded: LoadedModel) -> None:
        """The checks of the network against the options, and the record every output carries."""
        if loaded.scale is None:
            raise ConfigError(f"{loaded.name}: upscaling files needs a network of known scale (a registry model, "
                              f"a weights file, or a module made by sisr.create_model)")
        check_run(loaded.module, self.options, loaded.device)
        self.loaded = loaded
        self.record = {"model": loaded.name, "scale": loaded.scale, "weights": loaded.weights.record(),
                       "options": {**self.options.pixel_options(), "color": self.files.color}}

    def expected(self, job: Job, input_sha256: str) -> dict:
        """The provenance an output of ``job`` carries (without its ``"output"`` part)."""
        options = dict(self.record["options"])
        if job.output.suffix.lower() in LOSSY:
            options.update(quality=self.files.quality, lossless=self.files.lossless)
        return {**self.record, "options": options, "input_sha256": input_sha256}

    def check_existing(self, jobs: list[Job]) -> list[tuple[Job, str]]:
        """Jobs still to do, each with its input's sha256; existing outputs skipped or refused (in parallel)."""
        def check(job: Job) -> tuple[str, str | None]:
            sha = sha256_file(job.source)
            if self.files.overwrite or not job.output.exists():
                return sha, "to do"
            return sha, existing_output_problem(job, self.expected(job, sha), self.loaded.scale)

        todo = []
        with ThreadPoolExecutor(max_workers=min(len(jobs), (os.cpu_count() or 1) + 1)) as pool:
            futures = [(job, pool.submit(_caught, check, job)) for job in jobs]
            for job, future in futures:
                outcome, error = future.result()
                if error is not None:
                    self.fail(job, error)
                elif outcome[1] == "to do":
                    todo.append((job, outcome[0]))
                elif outcome[1] is None:
                    self.result.skipped.append(job)
                    self.progress(BatchEvent("skipped", job))
                else:
                    self.fail(job, f"{job.output}: {outcome[1]} (use --overwrite / overwrite=True to replace it)")
        return todo

    def run(self, todo: list[tuple[Job, str]], workers: int | None) -> None:
        """Upscale ``todo``: a pool of ``workers`` network slots, one more thread for reading and writing."""
        workers = self._workers(len(todo)) if workers is None else max(1, min(int(workers), len(todo)))
        options = self.options if workers == 1 else self.options.replace(progress=False)
        device = self.loaded.device
        self.progress(BatchEvent("start", message=f"{self.loaded.describe()} on {device}, {len(todo)} image(s)",
                                 total=len(todo)))
        self._prepare_backend()
        slots, threads = threading.Semaphore(workers), torch.get_num_threads()
        pool = ThreadPoolExecutor(max_workers=workers + 1, thread_name_prefix="sisr-upscale")
        if workers > 1:
            torch.set_num_threads(1)
        try:
            futures = {pool.submit(_caught, self._one, job, sha, options, slots): job for job, sha in todo}
            for position, future in enumerate(as_completed(futures), 1):
                outcome, error = future.result()
                if error is not None:
                    self.fail(futures[future], error, position, len(todo))
                    continue
                getattr(self.result, outcome).append(futures[future])
                self.progress(BatchEvent(outcome, futures[future], position=position, total=len(todo)))
        finally:
            pool.shutdown(wait=True, cancel_futures=True)  # started images finish (atomic writes)
            torch.set_num_threads(threads)

    def _workers(self, n: int) -> int:
        threads = torch.get_num_threads()
        side_by_side = (self.loaded.device.type == "cpu" and threads > 1 and self.options.tile is None
                        and not self.options.chop and self.options.backend in ("auto", "eager"))
        return min(threads, n) if side_by_side else 1

    def _prepare_backend(self) -> None:
        """A compiled or exported backend is built (or loaded) once here: a failure is one error, not one per image."""
        from .backends import cached_file

        loaded, backend = self.loaded, self.options.backend
        cached = cached_file(loaded.module, backend, loaded.device)
        if cached and not cached[1]:
            self.note(f"building the {backend} backend's graph for {loaded.describe()} once "
                      f"(30 s or more; cached as {cached[0]})")
        if cached:
            Runner(loaded.module, loaded.device, self.options)  # the module's layout as that backend needs it

    def _one(self, job: Job, input_sha256: str, options: RunOptions, slots: threading.Semaphore) -> str:
        """Read, check the output size, upscale, fingerprint, write: ``"done"``, or ``"skipped"`` when an
        identical job wrote the same output meanwhile."""
        from ..data.io import check_output_size, read_image, read_image_info, to_srgb

        info, img = read_image_info(job.source), read_image(job.source)
        if info.frames > 1:
            self.note(f"{job.source}: {info.frames} frames; only the first is upscaled")
        if self.files.color == "srgb":
            img = to_srgb(img, info.icc_profile, str(job.source))
            info = dataclasses.replace(info, icc_profile=None)  # the pixels are sRGB now
        scale = self.loaded.scale
        check_output_size(job.output, img.shape[0] * scale, img.shape[1] * scale)  # format limits before the work
        if img.shape[2] in (2, 4) and job.output.suffix.lower() in (".jpg", ".jpeg"):
            raise ImageError(f"{job.output}: JPEG cannot hold transparency (use .png, .webp or .tif)")
        with slots:
            out = upscale_array(img, self.loaded, options)
        return self._write(job, out, info, self.expected(job, input_sha256))

    def _write(self, job: Job, out: np.ndarray, info, expected: dict) -> str:
        from ..data.io import write_image

        files = self.files
        record = {**expected, "output": {"size": [int(out.shape[1]), int(out.shape[0])],
                                         "pixels_sha256": written_digest(out, job.output, info, files)}}
        try:
            write_image(job.output, out, overwrite=files.overwrite, info=info, quality=files.quality,
                        lossless=files.lossless, provenance=json.dumps(record, sort_keys=True))
        except OutputExistsError:  # written meanwhile (another process on the same job?)
            problem = existing_output_problem(job, expected, self.loaded.scale)
            if problem is not None:
                raise OutputExistsError(f"{job.output}: {problem} (use --overwrite / overwrite=True to replace it)"
                                        ) from None
            return "skipped"
        return "done"


def _caught(fn, job: Job, *args):
    """``(fn(job, ...), None)``, or ``(None, one-line reason)`` for an error of this image."""
    try:
        return fn(job, *args), None
    except (SisrError, OSError) as exc:
        message = str(exc) if isinstance(exc, SisrError) else f"{exc.strerror or exc}"
        if isinstance(exc, OSError) and exc.filename:
            message = f"{exc.filename}: {message}"
        if not message.startswith((str(job.source), str(job.output))):
            message = f"{job.source}: {message}"
        return None, message


# --------------------------------------------------------------------------- pixels and provenance


def pixel_digest(img: np.ndarray) -> str:
    """sha256 of a decoded image: its shape, dtype and pixel bytes (the fingerprint outputs record)."""
    arr = np.ascontiguousarray(img)
    return hashlib.sha256(f"{arr.shape}|{arr.dtype.str}|".encode() + arr.tobytes()).hexdigest()


def written_digest(out: np.ndarray, path: Path, info, files: OutputOptions) -> str:
    """:func:`pixel_digest` of what ``read_image`` will return for ``out`` written to ``path``: of the array
    itself for PNG (lossless, stored as given), else of a copy written and read back in a temporary folder
    (JPEG and WebP change pixels; WebP stores gray as RGB)."""
    from ..data.arrays import as_hwc
    from ..data.io import output_format, read_image, write_image

    if output_format(path) == "PNG":
        return pixel_digest(as_hwc(out, str(path)))
    with tempfile.TemporaryDirectory(prefix="sisr-digest-") as tmp:
        probe = Path(tmp) / f"probe{path.suffix}"
        try:
            write_image(probe, out, info=info, quality=files.quality, lossless=files.lossless)
        except SisrError as exc:  # the message names the output, not the probe
            raise type(exc)(str(exc).replace(str(probe), str(path))) from None
        return pixel_digest(read_image(probe))


def existing_output_problem(job: Job, expected: dict, scale: int) -> str | None:
    """None when ``job.output`` is this job's finished output (see the module docstring), else why not."""
    from ..data.io import read_image, read_image_info

    try:
        recorded = json.loads(read_image_info(job.output).provenance or "null")
    except (SisrError, OSError, ValueError):
        recorded = None
    if not isinstance(recorded, dict):
        return f"exists and was not made from {job.source} with this model, weights and options"
    made = recorded.pop("output", None)
    if recorded != expected:
        return f"exists and was not made from {job.source} with this model, weights and options"
    if not isinstance(made, dict) or "pixels_sha256" not in made:
        return "exists without a fingerprint of its pixels (written by an older sisr?)"
    try:
        pixels = read_image(job.output)
    except SisrError as exc:
        return f"exists but does not decode completely ({str(exc).split(': ', 1)[-1]})"
    height, width = (n * scale for n in read_image(job.source).shape[:2])
    if pixels.shape[:2] != (height, width):
        return f"exists but is {pixels.shape[1]}x{pixels.shape[0]}, not {width}x{height}"
    if pixel_digest(pixels) != made["pixels_sha256"]:
        return "exists but its pixels are not those recorded when it was written (edited or damaged?)"
    return None


# --------------------------------------------------------------------------- planning


def check_suffix(suffix: str) -> str:
    """``--suffix``: a plain part of a file name (no folder separators, no ``..``)."""
    if "/" in suffix or "\\" in suffix or os.sep in suffix or ".." in suffix or "\0" in suffix:
        raise ConfigError(f"--suffix '{suffix}': must be a plain name part (no '/', '\\' or '..')")
    return suffix


def plan_jobs(inputs: Iterable[str | os.PathLike], output: Path, suffix: str = "", *, ext: str = "png",
              has_suffix_option: bool = False, links: list[Path] | None = None) -> tuple[list[Job], list[str]]:
    """``Job(source, output)`` pairs for the inputs, and one-line errors for inputs that cannot be used.

    One input file and an output with an image extension (``OUTPUT_FORMATS``) that is not an existing
    folder: that file. Otherwise OUTPUT is a folder (checked first: one ``ConfigError`` naming it);
    names there take ``ext`` (``same``: the input's, PNG for formats that cannot be written). An output
    named like an image file is never turned into a folder. Files under the output folder are not
    inputs (an output folder inside an input folder). ``has_suffix_option``: hints may suggest ``--suffix``
    and ``--ext`` (sisr upscale's).
    ``links``: the symbolic links to folders met in the input folders are appended to it (never followed).
    """
    from ..data.io import scan_folder

    links = [] if links is None else links
    inputs = [Path(i) for i in inputs]
    output = Path(output)
    single_file = _check_output(inputs, output, suffix, ext)
    jobs: list[Job] = []
    errors: list[str] = []
    out_folder = None if single_file else output.resolve()
    for item in inputs:
        if item.is_dir() and out_folder is not None and (out_folder == item.resolve()
                                                          or out_folder in item.resolve().parents):
            where = "the output folder" if out_folder == item.resolve() else f"inside the output folder {output}"
            errors.append(f"{item}: is {where}, whose files are never read as inputs; choose another -o")
        elif item.is_dir():
            images, linked = scan_folder(item)
            found = [p for p in images if out_folder not in p.resolve().parents]
            links += linked
            if not found:
                errors.append(f"{item}: no image files in this folder")
            for src in found:
                rel = src.relative_to(item)
                jobs.append(Job(src, output / rel.parent / _output_name(src, rel.stem, suffix, ext)))
        elif item.is_file():
            jobs.append(Job(item, output if single_file else output / _output_name(item, item.stem, suffix, ext)))
        else:
            errors.append(f"{item}: no such file or folder")
    return _unique(jobs, errors, ext, has_suffix_option), errors


def _check_output(inputs: list[Path], output: Path, suffix: str, ext: str) -> bool:
    """Check the output location and names; True when it is one file for one input file."""
    from ..data.io import IMAGE_EXTENSIONS, OUTPUT_FORMATS

    check_suffix(suffix)
    if ext not in EXTENSIONS:
        raise ConfigError(f"--ext '{ext}': choose one of {', '.join(EXTENSIONS)}")
    if output.suffix.lower() in IMAGE_EXTENSIONS - set(OUTPUT_FORMATS) and not output.is_dir():
        raise ConfigError(f"{output}: cannot write {output.suffix} files (use {', '.join(sorted(OUTPUT_FORMATS))})")
    names_file = output.suffix.lower() in OUTPUT_FORMATS and not output.is_dir()
    single_file = len(inputs) == 1 and inputs[0].is_file() and names_file
    if single_file:
        check_output_file(output)
    elif names_file and len(inputs) == 1 and not inputs[0].exists():
        raise ConfigError(f"{inputs[0]}: no such file or folder")
    elif names_file:
        raise ConfigError(f"{output}: names a {output.suffix} file, but "
                          f"{'a folder needs' if len(inputs) == 1 else f'{len(inputs)} inputs need'} an output folder")
    else:
        check_output_dir(output)
    return single_file


def _output_name(src: Path, stem: str, suffix: str, ext: str) -> str:
    from ..data.io import OUTPUT_FORMATS

    out_ext = EXTENSIONS[ext] or (src.suffix.lower() if src.suffix.lower() in OUTPUT_FORMATS else ".png")
    return f"{stem}{suffix}{out_ext}"


def _unique(jobs: list[Job], errors: list[str], ext: str, has_suffix_option: bool) -> list[Job]:
    """Jobs without those whose output is their input or another job's output (errors for those)."""
    seen: dict[Path, Path] = {}
    unique = []
    for src, dst in jobs:
        key = dst.resolve()
        if key == src.resolve():
            hint = "choose another -o or a --suffix" if has_suffix_option else "choose another -o"
            errors.append(f"{src}: the output would replace the input ({hint})")
        elif key in seen and seen[key].resolve() == src.resolve():
            continue  # the same file named twice (a glob and its name): one job
        elif key in seen:
            other = seen[key]
            hint = ("use --ext same, separate runs or another -o for one of them"  # sisr upscale's options
                    if has_suffix_option and ext != "same" and other.suffix.lower() != src.suffix.lower() else
                    "use separate runs or another -o for one of them")
            errors.append(f"{src}: output {dst} is also the output of {other} ({hint})")
        else:
            seen[key] = src
            unique.append(Job(src, dst))
    return unique
