"""Make an LR dataset from a folder of HR images, in the EDSR layout (``sisr degrade``).

For every image under ``hr_dir`` (recursively, sub-folders kept)::

    out_dir/HR/<sub>/<name>.png                          the HR image, not mod-cropped
    out_dir/<LR folder>/X<s>/<sub>/<name>x<s>.png         LR_bicubic (BI), LR_BD (BD), LR_DN (DN)

The HR copy is the image that was degraded: gray stacked to RGB and alpha dropped, as the RCAN
script does (see :mod:`sisr.data.degrade`), bit depth kept. Unreadable images are reported and
skipped.

Provenance: ``out_dir/.sisr-degrade.json`` records, for every file written, the SHA-256 of its source
image, the options that shaped it (mode, scale, seed, noise level, blur sigma, border) and its own
SHA-256. An existing output is skipped only when that record matches this run and the file is
unchanged, so an interrupted run resumes where it stopped; any other existing output (other options,
another source, edited, or made by something else) is an error naming it, raised before anything is
written, unless ``overwrite``. With ``seed=None`` (random DN noise) a matching record still counts:
the file is one valid draw of the same degradation. A manifest that is not one sisr wrote (bad JSON,
wrong structure) is an error naming it.

Concurrency: images are degraded by ``workers`` processes (default: every core), each writing its
files to hidden staging names and moving them into place while holding ``out_dir/.sisr-degrade.lock``
(``flock``), where it re-reads the manifest, adds its records and writes it back. Runs into one
folder (x2 and x3 at once) therefore both succeed: a file another run made meanwhile from the same
source with the same options is taken as done. The outputs do not depend on ``workers``.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import secrets
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
from tqdm import tqdm

from ..errors import ConfigError, ImageError, SisrError
from ..utils.fs import atomic_write_text, file_lock, move_into_place, sha256_file
from .degrade import BD_SIGMA, DN_NOISE_LEVEL, LR_FOLDERS, check_degradation, check_mode_and_scale, degrade, to_rgb
from .io import IMAGE_EXTENSIONS, find_images, read_image, write_image

MANIFEST = ".sisr-degrade.json"
LOCK = ".sisr-degrade.lock"
MANIFEST_VERSION = 1


@dataclass
class PrepareResult:
    """What :func:`prepare_dataset` did; paths are relative to ``hr_dir``."""

    out_dir: Path
    written: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)  # outputs already there
    failed: list[tuple[Path, str]] = field(default_factory=list)  # (source, one-line reason)
    replaced: list[Path] = field(default_factory=list)  # existing outputs replaced (overwrite=True)

    def summary(self) -> str:
        return (f"{len(self.written)} written, {len(self.skipped)} already done, {len(self.failed)} failed "
                f"-> {self.out_dir}")


@dataclass(frozen=True)
class _Settings:
    """What every image of a run is degraded and written with (sent to the worker processes)."""

    out_dir: Path
    scale: int
    mode: str
    seed: int | None
    border: str
    noise_level: float
    blur_sigma: float
    overwrite: bool


@dataclass(frozen=True)
class _Job:
    """One image to (re)make: its source, output paths, and the record of each output still to write."""

    index: int
    src: Path
    rel: Path
    hr_path: Path
    lr_path: Path
    todo: dict  # output path -> record (source_sha256, options)


def output_paths(rel: Path, out_dir: Path, scale: int, mode: str) -> tuple[Path, Path]:
    """``(HR path, LR path)`` written for the source image ``rel`` (relative to the HR folder)."""
    hr = out_dir / "HR" / rel.parent / f"{rel.stem}.png"
    lr = out_dir / LR_FOLDERS[mode.upper()] / f"X{scale}" / rel.parent / f"{rel.stem}x{scale}.png"
    return hr, lr


# ----------------------------------------------------------------------------- the manifest

def _json_type(value) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")


def _manifest_problem(data) -> str | None:
    """What makes ``data`` not a manifest sisr degrade wrote, or None."""
    if not isinstance(data, dict):
        return f"{_json_type(data)}, not an object"
    if data.get("version") != MANIFEST_VERSION:
        return f"version {data.get('version')!r}, expected {MANIFEST_VERSION}"
    files = data.get("files")
    if not isinstance(files, dict):
        return f"'files' is {_json_type(files)}, not an object"
    for key, entry in files.items():
        if not isinstance(entry, dict):
            return f"entry {key!r} is {_json_type(entry)}, not an object"
        for name in ("sha256", "source_sha256"):
            if not isinstance(entry.get(name), str):
                return f"entry {key!r} lacks a string '{name}'"
        if not isinstance(entry.get("options", {}), dict):
            return f"entry {key!r}: 'options' is {_json_type(entry['options'])}, not an object"
    return None


def _read_manifest(out_dir: Path) -> dict:
    """The manifest's ``files`` ({} when there is none); ``ConfigError`` naming it when it is not one of ours."""
    path = out_dir / MANIFEST
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the degrade manifest: {exc.strerror or exc}") from None
    except ValueError as exc:
        problem = f"not JSON: {exc}"
    else:
        problem = _manifest_problem(data)
    if problem:
        raise ConfigError(f"{path}: not a valid sisr degrade manifest ({problem}); move it away (existing "
                          f"outputs then need --overwrite) or use another output folder")
    return data["files"]


def _write_manifest(out_dir: Path, files: dict) -> None:
    text = json.dumps({"version": MANIFEST_VERSION, "files": files}, indent=1, sort_keys=True) + "\n"
    atomic_write_text(out_dir / MANIFEST, text, overwrite=True)


def _is_recorded(old: dict | None, record: dict, path: Path) -> bool:
    """True when ``path`` was made from the same source with the same options and is unchanged since."""
    return (old is not None and {k: old.get(k) for k in record} == record
            and old.get("sha256") == sha256_file(path))


def _differences(old: dict, new: dict) -> str:
    if old.get("source_sha256") != new["source_sha256"]:
        return "made from another source image"
    keys = [k for k in new.get("options", {}) if old.get("options", {}).get(k) != new["options"][k]]
    if keys:
        return "made with other " + ", ".join(f"{k} ({old.get('options', {}).get(k)!r} then, {new['options'][k]!r} now)"
                                              for k in keys)
    return "changed since it was made"


# ----------------------------------------------------------------------------- planning

def _sources(hr_dir: Path, out_dir: Path) -> list[Path]:
    out_resolved = out_dir.resolve()
    if hr_dir.is_dir() and hr_dir.resolve().is_relative_to(out_resolved):
        raise ConfigError(f"{out_dir}: the output folder is (or contains) the HR folder {hr_dir}; "
                          f"choose an output folder outside it")
    sources = [p for p in find_images(hr_dir) if not p.resolve().is_relative_to(out_resolved)]
    if not sources:
        raise ImageError(f"{hr_dir}: no image files ({', '.join(sorted(IMAGE_EXTENSIONS))})")
    return sources


def _plan(sources: list[Path], hr_dir: Path, s: _Settings, options: dict, result: PrepareResult) -> list[_Job]:
    """Every image with the records of its outputs; what provably exists already is left out of ``todo``.

    ``ConfigError`` (before anything is written) for existing outputs that do not provably match,
    unless ``overwrite``.
    """
    jobs, claimed = [], {}
    for src in sources:
        rel = src.relative_to(hr_dir)
        hr_path, lr_path = output_paths(rel, s.out_dir, s.scale, s.mode)
        if hr_path in claimed:
            result.failed.append((rel, f"{src}: same output name as {claimed[hr_path]}"))
            continue
        claimed[hr_path] = src
        try:
            digest = sha256_file(src)
        except OSError as exc:
            result.failed.append((rel, f"{src}: cannot read: {exc.strerror or exc}"))
            continue
        records = {hr_path: {"source_sha256": digest}, lr_path: {"source_sha256": digest, "options": options}}
        jobs.append(_Job(len(jobs), src, rel, hr_path, lr_path, records))
    manifest, present = {}, set()
    if s.out_dir.is_dir():
        with file_lock(s.out_dir / LOCK):  # a consistent view: files and their records, not one without the other
            manifest = _read_manifest(s.out_dir)
            present = {path for job in jobs for path in job.todo if path.exists()}
    conflicts = []
    for job in jobs:
        for path in [p for p in job.todo if p in present]:
            old = manifest.get(path.relative_to(s.out_dir).as_posix())
            if _is_recorded(old, job.todo[path], path):
                del job.todo[path]
            elif not s.overwrite:
                conflicts.append(f"{path}: exists, " + (_differences(old, job.todo[path]) if old else
                                                        "not recorded as made by sisr degrade from this source"))
    if conflicts:
        more = f" (and {len(conflicts) - 1} more)" if len(conflicts) > 1 else ""
        raise ConfigError(f"{conflicts[0]}{more}; use --overwrite to replace them, or another output folder")
    return jobs


# ----------------------------------------------------------------------------- making one image

def _stage(path: Path, img: np.ndarray) -> tuple[Path, str]:
    """Write ``img`` to a hidden file beside ``path``; ``(staged path, its SHA-256)``."""
    tmp = path.parent / f".{path.stem}.{secrets.token_hex(4)}.staged.png"
    write_image(tmp, np.ascontiguousarray(img))
    return tmp, sha256_file(tmp)


def _commit(staged: dict, job: _Job, s: _Settings) -> list[Path]:
    """Move the staged files into place and record them, under the folder's lock; the paths replaced."""
    replaced, changed = [], False
    with file_lock(s.out_dir / LOCK):
        manifest = _read_manifest(s.out_dir)
        try:
            for path, (tmp, digest) in staged.items():
                key = path.relative_to(s.out_dir).as_posix()
                existed = path.exists()
                if existed and _is_recorded(manifest.get(key), job.todo[path], path):
                    continue  # made meanwhile by another run, from the same source with the same options
                move_into_place(tmp, path, overwrite=s.overwrite)
                manifest[key], changed = {**job.todo[path], "sha256": digest}, True
                if existed:
                    replaced.append(path)
        finally:
            if changed:
                _write_manifest(s.out_dir, manifest)
    return replaced


def _make(job: _Job, s: _Settings) -> tuple[int, str | None, list[Path]]:
    """Degrade and write one image: ``(job index, one-line error or None, outputs replaced)``."""
    staged = {}
    try:
        hr = to_rgb(read_image(job.src))
        images = {job.hr_path: hr}
        if job.lr_path in job.todo:
            images[job.lr_path] = degrade(hr, s.scale, s.mode, noise_level=s.noise_level, seed=s.seed,
                                          border=s.border, blur_sigma=s.blur_sigma)
        for path in job.todo:
            staged[path] = _stage(path, images[path])
        return job.index, None, _commit(staged, job, s)
    except SisrError as exc:
        return job.index, str(exc) if str(exc).startswith(str(job.src)) else f"{job.src}: {exc}", []
    finally:
        for tmp, _ in staged.values():
            tmp.unlink(missing_ok=True)


# ----------------------------------------------------------------------------- running the jobs

def available_cpus() -> int:
    """Cores this process may run on (its CPU affinity where the OS tells it, else ``os.cpu_count()``)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _worker_init() -> None:
    import signal

    import torch

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the parent, which cancels what has not started
    torch.set_num_threads(1)  # one image per process: the processes share the cores, not each image


def _context() -> multiprocessing.context.BaseContext:
    """Fork server with this module preloaded where there is one, else spawn.

    Not plain fork: a child forked from a process whose OpenMP/MKL threads have run deadlocks in its
    first matrix product (seen in tests); the fork server never runs one, and forks workers cheaply.
    """
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    return context


def _run(jobs: list[_Job], s: _Settings, workers: int) -> Iterator[tuple[int, str | None, list[Path]]]:
    """The outcome of every job, in completion order; in this process when one worker is enough."""
    if workers <= 1 or len(jobs) <= 1:
        yield from (_make(job, s) for job in jobs)
        return
    pool = ProcessPoolExecutor(min(workers, len(jobs)), mp_context=_context(), initializer=_worker_init)
    try:
        for future in as_completed([pool.submit(_make, job, s) for job in jobs]):
            yield future.result()
    except BrokenProcessPool:
        raise SisrError(f"{s.out_dir}: a degrade worker process stopped (killed, out of memory, or it could not "
                        f"start); finished images are kept: rerun, perhaps with fewer --workers") from None
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def prepare_dataset(hr_dir: str | os.PathLike, out_dir: str | os.PathLike, scale: int, mode: str = "BI", *,
                    seed: int | None = None, border: str = "symmetric", noise_level: float = DN_NOISE_LEVEL,
                    blur_sigma: float = BD_SIGMA, overwrite: bool = False, progress: bool = True,
                    workers: int | None = None) -> PrepareResult:
    """Degrade every image under ``hr_dir`` into ``out_dir`` (EDSR layout); see the module docstring.

    ``seed`` fixes the DN noise; like the RCAN script (``randn('seed', 0)`` before each image) every
    image starts from the same seed, which also makes a resumed run reproduce the same files.
    ``workers``: processes degrading images side by side (default: :func:`available_cpus`).
    """
    mode, scale = check_mode_and_scale(mode, scale)
    check_degradation(mode, float(noise_level), float(blur_sigma))
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise ConfigError(f"--workers must be an integer >= 1, got {workers}")
    hr_dir, out_dir = Path(hr_dir), Path(out_dir)
    sources = _sources(hr_dir, out_dir)
    options = {"mode": mode, "scale": scale, "seed": seed if mode == "DN" else None,  # what the mode ignores is
               "border": border if mode != "BD" else "symmetric"}  # recorded as its default: reruns match
    if mode == "DN":
        options["noise_level"] = float(noise_level)
    if mode == "BD":
        options["blur_sigma"] = float(blur_sigma)
    settings = _Settings(out_dir, scale, mode, seed, border, float(noise_level), float(blur_sigma), overwrite)
    result = PrepareResult(out_dir)
    jobs = _plan(sources, hr_dir, settings, options, result)
    todo = [job for job in jobs if job.todo]
    outcomes = {}
    with tqdm(total=len(jobs), desc=f"degrade {mode} x{scale}", unit="img", disable=None if progress else True) as bar:
        bar.update(len(jobs) - len(todo))
        for index, error, replaced in _run(todo, settings, workers or available_cpus()):
            outcomes[index] = (error, replaced)
            bar.update()
    for job in jobs:
        error, replaced = outcomes.get(job.index, (None, []))
        if not job.todo:
            result.skipped.append(job.rel)
        elif error:
            result.failed.append((job.rel, error))
        else:
            result.written.append(job.rel)
            result.replaced.extend(replaced)
    return result
