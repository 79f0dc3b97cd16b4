"""Training data: (LR, HR) patch pairs sampled from folders of HR images.

Sources (``find_hr_images``): image files, or folders searched recursively. A folder holding
``DIV2K_train_HR/`` (the DIV2K layout), ``Flickr2K_HR/`` or ``HR/`` (the EDSR layout that
``sisr degrade`` writes) stands for that sub-folder only, so validation images and LR files beside it are
never taken as training HR. Folders of the benchmark test sets (Set5, Set14, B100, Urban100,
Manga109) are refused unless ``allow_test_sets``.

LR images (``prepare_pairs``) are either read from a prepared folder (``lr_dir``: a folder
holding ``X<s>/`` or the images, mirroring the HR sub-folders, named ``<name>x<s>.<ext>`` or
``<name>.<ext>``; ``"auto"``: the EDSR/DIV2K sibling folder ``LR_bicubic|LR_BD|LR_DN/X<s>`` or
``DIV2K_train_LR_bicubic/X<s>``) or made from the HR with :func:`sisr.data.degrade.degrade`
(BI, BD or DN) once per image. DN noise is drawn once per image and then fixed, seeded by the
image's file name (as in a prepared DN folder; a fresh draw per patch would need the noiseless
LR, which the degradation does not expose). The HR is cropped to ``LR * s`` at the bottom/right
(EDSR's crop, MATLAB's ``modcrop``).

Cache: every decoded image is stored once as a raw ``.npy`` file (uint8/uint16) under
``cache_dir``: the HR once per image whatever the scale (keyed by the file's path, size and
modification time), the LR once per scale and LR recipe. Each entry has a ``.json`` record (size,
modification time, SHA-256) written with it; the first use in a process checks size and time, and
an entry changed since (e.g. overwritten in place) is hashed and rebuilt when its content differs.
Training reads patches from the entries memory-mapped, each mapped once per process (DataLoader
worker) on first use, so epochs never decode images again, workers share the pages through the
OS cache, and later runs (and resumed ones, at any scale) skip the preparation. The cost is disk:
3 bytes per HR pixel plus 3/s^2 per scale for the LR (DIV2K: 6.2 GiB of HR, + 1.55 GiB at x2).
Preparation (``cache_images``) checks the cached entries in this process and decodes the rest with a
pool of processes (a fork server, as ``sisr degrade``); ``share=(i, n)`` prepares every n-th image from
the i-th, so the processes of a DDP node prepare side by side before their process group starts.

Bad data (an unreadable file, a missing or mis-sized LR file, an image whose LR is smaller than
a patch) is reported once by name (a :class:`TrainingDataWarning`) and skipped; nothing usable
is a :class:`TrainingDataError`.

Sampling (``PatchDataset``) is a pure function of ``(seed, sample index)``, so any stretch of a
run can be replayed exactly (resume) and sharded across processes. Sample ``i`` takes image
``perm_r[i mod n]`` where ``perm_r`` is a seeded permutation of the ``n`` images for round
``r = i // n`` (every ``n`` consecutive samples visit every image once), a uniformly random LR
patch at ``(y, x)`` with the HR patch at ``(s*y, s*x)``, and, with ``augment``, random horizontal
flip, vertical flip and transposition (each p = 0.5: the 8 rotations/flips, uniformly).
Iteration ``k`` (1-based) of a run with global batch ``B`` uses samples ``(k-1)*B .. k*B-1``;
with ``W`` processes, rank ``r`` takes the ``B/W`` samples starting at ``(k-1)*B + r*B/W``
(``IterationSampler``), so a DDP run sees exactly the batches of a single-process run.
An "epoch" is ``iterations_per_epoch`` iterations (EDSR's: DIV2K's 800 images repeated 20 times
= 1000 batches of 16); ``len(PatchDataset)`` is the samples of one epoch.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm import tqdm

from ..errors import SisrError
from ..utils.fs import atomic_path, atomic_write_text
from .splits import TEST_SETS  # noqa: F401 (public here too)
from .degrade import LR_FOLDERS, degrade, modcrop, to_rgb
from .io import image_to_tensor

CACHE_VERSION = 2  # 2: HR once per image (not per scale), entries with a fingerprint record
_VERIFIED: set[Path] = set()  # cache entries checked by this process


class TrainingDataError(SisrError):
    """No usable training data, or an invalid data source."""


class CacheWriteError(TrainingDataError):
    """The training cache cannot be written (stops the preparation: no image would fare better)."""


class TrainingDataWarning(UserWarning):
    """A training image was skipped."""


@dataclass(frozen=True)
class TrainingPair:
    """One usable training image: cached HR and LR arrays (``.npy``) and the LR size."""

    name: str
    source: Path
    hr_npy: Path
    lr_npy: Path
    lr_size: tuple[int, int]  # (height, width)


def default_cache_dir() -> Path:
    env = os.environ.get("SISR_CACHE")
    if env:
        return Path(env) / "training"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "sisr" / "training"


def find_hr_images(sources: Sequence[str | os.PathLike], root: str | os.PathLike | None = None, *,
                   allow_test_sets: bool = False) -> list[tuple[Path, Path]]:
    """``(image file, its source folder)`` for every HR image, in a stable sorted order."""
    from .io import IMAGE_EXTENSIONS, find_images

    base = Path(root) if root is not None else Path.cwd()
    found: list[tuple[Path, Path]] = []
    for source in sources:
        path = base / Path(source).expanduser()
        if not path.exists():
            raise TrainingDataError(f"{path}: no such training image folder or file")
        if not allow_test_sets:
            hit = next((p for p in path.resolve().parts if p.lower() in TEST_SETS), None)
            if hit:
                raise TrainingDataError(f"{path}: inside the benchmark test set '{hit}'; never train on test "
                                        f"images (data.allow_test_sets=true overrides)")
        if path.is_file():
            found.append((path, path.parent))
            continue
        folder = hr_folder(path)
        files = find_images(folder)
        if not files:
            raise TrainingDataError(f"{folder}: no images ({', '.join(sorted(IMAGE_EXTENSIONS))})")
        found += [(p, folder) for p in files]
    return found


def hr_folder(path: Path) -> Path:
    """The HR sub-folder of a DIV2K, Flickr2K or EDSR-layout folder, else the folder itself."""
    for name in ("DIV2K_train_HR", "Flickr2K_HR", "HR"):
        if (path / name).is_dir():
            return path / name
    return path


def auto_lr_folder(folder: Path, scale: int, degradation: str) -> Path:
    """The prepared LR folder beside an HR folder (EDSR or DIV2K layout)."""
    if folder.name == "DIV2K_train_HR" and degradation == "BI":
        candidate = folder.parent / "DIV2K_train_LR_bicubic" / f"X{scale}"
    else:
        candidate = folder.parent / LR_FOLDERS[degradation] / f"X{scale}"
    if not candidate.is_dir():
        raise TrainingDataError(f"{candidate}: no prepared LR folder for {folder} (data.lr=auto; make it with "
                                f"'sisr degrade' or set data.lr=null to make LR on the fly)")
    return candidate


def find_lr_file(hr_file: Path, source: Path, lr_dir: Path, scale: int) -> Path | None:
    """The LR file of an HR image in a prepared folder, or None."""
    folder = lr_dir / f"X{scale}" if (lr_dir / f"X{scale}").is_dir() else lr_dir
    rel = hr_file.parent.relative_to(source) if hr_file.is_relative_to(source) else Path()
    for stem in (f"{hr_file.stem}x{scale}", hr_file.stem):
        for ext in dict.fromkeys((hr_file.suffix, ".png")):
            candidate = folder / rel / f"{stem}{ext}"
            if candidate.is_file():
                return candidate
    return None


def prepare_pairs(sources: Sequence[str | os.PathLike], scale: int, patch_size: int, *,
                  root: str | os.PathLike | None = None, lr_dir: str | os.PathLike | None = None,
                  degradation: str = "BI", noise_level: float = 30.0,
                  cache_dir: str | os.PathLike | None = None, allow_test_sets: bool = False,
                  report: bool = True, exclude: Sequence[Path] = ()) -> list[TrainingPair]:
    """Find, check, decode and cache the training pairs; skip (and report) unusable images.

    ``exclude``: image files (resolved paths) held out of training, e.g. a validation slice.
    """
    images = find_hr_images(sources, root, allow_test_sets=allow_test_sets)
    if exclude:
        held = set(exclude)
        images = [(f, src) for f, src in images if f.resolve() not in held]
    return prepare_images(images, scale, patch_size, sources=sources, root=root, lr_dir=lr_dir,
                          degradation=degradation, noise_level=noise_level, cache_dir=cache_dir, report=report)


def prepare_images(images: Sequence[tuple[Path, Path]], scale: int, patch_size: int, *,
                   sources: Sequence[str | os.PathLike] = (), root: str | os.PathLike | None = None,
                   lr_dir: str | os.PathLike | None = None, degradation: str = "BI", noise_level: float = 30.0,
                   cache_dir: str | os.PathLike | None = None, report: bool = True,
                   workers: int | None = None) -> list[TrainingPair]:
    """Decode and cache ``(image file, source folder)`` pairs (:func:`find_hr_images`); skip unusable ones.

    ``workers``: processes decoding side by side (:func:`cache_images`)."""
    result = cache_images(images, scale, patch_size, root=root, lr_dir=lr_dir, degradation=degradation,
                          noise_level=noise_level, cache_dir=cache_dir, progress=report, workers=workers)
    return usable_pairs(result, sources, report)


def usable_pairs(result: "CacheResult", sources: Sequence[str | os.PathLike] = (),
                 report: bool = True) -> list[TrainingPair]:
    """The pairs of a preparation; each skipped image warned (``report``); none usable: an error saying why."""
    if report:
        for problem in result.skipped:
            warnings.warn(f"skipped training image: {problem}", TrainingDataWarning, stacklevel=3)
    if not result.pairs:
        where = ", ".join(str(s) for s in sources) or "the given images"
        detail = f" ({len(result.skipped)} skipped: {result.skipped[0]})" if result.skipped else ""
        raise TrainingDataError(f"no usable training images in {where}{detail}")
    return result.pairs


@dataclass
class CacheResult:
    """What :func:`cache_images` did: the usable ``pairs`` (in the images' order), the ``skipped`` images (one
    line each), how many images it decoded or degraded (``made``, with ``workers`` processes) and found cached
    (``cached``), and when a ``share`` was given, the images of other shares left alone (``others``)."""

    pairs: list[TrainingPair]
    skipped: list[str]
    made: int
    cached: int
    others: int = 0
    seconds: float = 0.0
    workers: int = 1

    def bytes(self) -> int:
        """Disk the cache entries of these pairs take (each HR once)."""
        entries = {p.hr_npy for p in self.pairs} | {p.lr_npy for p in self.pairs}
        return sum(e.stat().st_size for e in entries if e.is_file())


@dataclass(frozen=True)
class _Entry:
    """One image to decode and cache (sent to a worker process)."""

    index: int
    hr_file: Path
    name: str
    scale: int
    lr_file: Path | None
    degradation: str
    noise_level: float
    hr_npy: Path
    lr_npy: Path
    hr_cached: bool


def cache_images(images: Sequence[tuple[Path, Path]], scale: int, patch_size: int, *,
                 root: str | os.PathLike | None = None, lr_dir: str | os.PathLike | None = None,
                 degradation: str = "BI", noise_level: float = 30.0, cache_dir: str | os.PathLike | None = None,
                 progress: bool = True, workers: int | None = None,
                 share: tuple[int, int] = (0, 1)) -> CacheResult:
    """Decode and cache the images not cached yet, with ``workers`` processes (None: every core this process
    may use, in this process when the files to decode total under ``PARALLEL_MIN_BYTES``; 1: in this
    process). Idempotent (cached entries are checked, not rebuilt) and resumable (each entry is written
    atomically). ``share=(i, n)``: make only images ``i, i+n, ...`` (one process of ``n`` preparing side by
    side); the others are counted in ``others`` and not returned. Never raises for a bad image."""
    started = time.perf_counter()
    degradation = degradation.upper()
    if degradation not in LR_FOLDERS:
        raise TrainingDataError(f"degradation must be one of {', '.join(LR_FOLDERS)}; got '{degradation}'")
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    index, count = share
    mine = [item for k, item in enumerate(images) if k % count == index]
    pairs: dict[int, TrainingPair] = {}
    skipped: dict[int, str] = {}
    todo = _plan_entries(mine, scale, root, lr_dir, degradation, noise_level, cache, pairs, skipped)
    cached = len(pairs)
    desc = f"preparing x{scale}" + (f" (share {index + 1}/{count})" if count > 1 else "")
    workers = _workers_for(todo, workers) if todo else 0
    with tqdm(total=len(mine), initial=len(mine) - len(todo), desc=desc, unit="img", leave=False,
              disable=None if progress else True) as bar:
        for k, pair, problem in _run_entries(todo, workers):
            if pair is not None:
                pairs[k] = pair
            else:
                skipped[k] = problem
            bar.update()
    usable, small = [], []
    for k in sorted(pairs):
        h, w = pairs[k].lr_size
        if h < patch_size or w < patch_size:
            skipped[k] = f"{pairs[k].source}: LR {w}x{h} is smaller than a {patch_size}x{patch_size} patch"
        else:
            usable.append(pairs[k])
    return CacheResult(usable, [skipped[k] for k in sorted(skipped)], len(todo), cached, len(images) - len(mine),
                       time.perf_counter() - started, workers)


def _plan_entries(images, scale, root, lr_dir, degradation, noise_level, cache: Path,
                  pairs: dict[int, TrainingPair], skipped: dict[int, str]) -> list[_Entry]:
    """Cached images go to ``pairs``, images without an LR file to ``skipped``; the rest are returned."""
    base = Path(root) if root is not None else Path.cwd()
    explicit_lr = None if lr_dir in (None, "auto") else base / Path(lr_dir).expanduser()
    if explicit_lr is not None and not explicit_lr.is_dir():
        raise TrainingDataError(f"{explicit_lr}: no such LR folder")
    lr_folders: dict[Path, Path] = {}
    todo = []
    for k, (hr_file, source) in enumerate(images):
        if lr_dir == "auto" and source not in lr_folders:
            lr_folders[source] = auto_lr_folder(source, scale, degradation)
        lr_source = lr_folders[source] if lr_dir == "auto" else explicit_lr
        try:
            entry, pair = _plan_one(k, hr_file, source, scale, lr_source, degradation, noise_level, cache)
        except (SisrError, OSError) as exc:
            skipped[k] = f"{exc}"
            continue
        if pair is not None:
            pairs[k] = pair
        else:
            todo.append(entry)
    return todo


def _plan_one(k: int, hr_file: Path, source: Path, scale: int, lr_source: Path | None, degradation: str,
              noise_level: float, cache: Path) -> tuple[_Entry | None, TrainingPair | None]:
    """The cached pair of an image, or the entry to make."""
    st = hr_file.stat()
    hr_key = _key("hr", CACHE_VERSION, hr_file.resolve(), st.st_size, st.st_mtime_ns)
    lr_file = None
    if lr_source is not None:
        lr_file = find_lr_file(hr_file, source, lr_source, scale)
        if lr_file is None:
            raise TrainingDataError(f"{hr_file}: no LR file in {lr_source} ({hr_file.stem}x{scale}.png)")
        lst = lr_file.stat()
        lr_key = _key("lr-file", hr_key, scale, lr_file.resolve(), lst.st_size, lst.st_mtime_ns)
    else:
        lr_key = _key("lr", hr_key, scale, degradation, float(noise_level) if degradation == "DN" else None)
    hr_npy, lr_npy = _cache_path(cache, hr_key), _cache_path(cache, lr_key)
    name = str(hr_file.relative_to(source)) if hr_file.is_relative_to(source) else hr_file.name
    hr_shape = _entry_shape(hr_npy)
    lr_shape = _entry_shape(lr_npy) if hr_shape is not None else None
    if lr_shape is not None and tuple(lr_shape[:2]) == (hr_shape[0] // scale, hr_shape[1] // scale):
        return None, TrainingPair(name, hr_file, hr_npy, lr_npy, (lr_shape[0], lr_shape[1]))
    return _Entry(k, hr_file, name, scale, lr_file, degradation, float(noise_level), hr_npy, lr_npy,
                  hr_shape is not None), None


def _make_entry(entry: _Entry) -> tuple[int, TrainingPair | None, str | None]:
    """Decode (or read from the cache) the HR, make or read the LR, cache both: ``(index, pair, problem)``."""
    try:
        hr = _cached_hr(entry.hr_file, entry.hr_npy, entry.hr_cached)
        h, w = hr.shape[0] // entry.scale, hr.shape[1] // entry.scale
        if h == 0 or w == 0:
            raise TrainingDataError(f"{entry.hr_file}: {hr.shape[1]}x{hr.shape[0]} is smaller than the scale "
                                    f"{entry.scale}")
        lr = _make_or_read_lr(entry.hr_file, entry.lr_file, hr, entry.scale, entry.degradation, entry.noise_level)
        _save_entry(entry.lr_npy, np.ascontiguousarray(lr))
    except CacheWriteError:
        raise
    except (SisrError, ValueError, OSError) as exc:
        return entry.index, None, f"{exc}"
    return entry.index, TrainingPair(entry.name, entry.hr_file, entry.hr_npy, entry.lr_npy, (h, w)), None


PARALLEL_MIN_BYTES = 16 * 2**20  # image files to decode below this: in this process (a pool starts in ~1 s)


def _workers_for(todo: Sequence[_Entry], workers: int | None) -> int:
    if workers is not None:
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise TrainingDataError(f"workers must be an integer >= 1, got {workers!r}")
        return min(workers, max(1, len(todo)))
    from .prepare import available_cpus

    size = sum(e.hr_file.stat().st_size for e in todo if not e.hr_cached)
    return 1 if size < PARALLEL_MIN_BYTES else min(available_cpus(), len(todo))


def _run_entries(todo: Sequence[_Entry], workers: int) -> Iterator[tuple[int, TrainingPair | None, str | None]]:
    """The outcome of every entry, in completion order: in this process, or in a pool of ``workers``
    processes (a fork server, as ``sisr degrade``'s pool: a plain fork of a process whose OpenMP threads have
    run can deadlock in its first matrix product)."""
    if workers <= 1:
        yield from map(_make_entry, todo)
        return
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    from .prepare import _context, _worker_init

    pool = ProcessPoolExecutor(workers, mp_context=_context(), initializer=_worker_init)
    try:
        for future in as_completed([pool.submit(_make_entry, e) for e in todo]):
            yield future.result()
    except BrokenProcessPool:
        raise TrainingDataError("a training-data preparation process stopped (killed, out of memory, or it could "
                                "not start); the images cached so far are kept: run again, perhaps with fewer "
                                "workers") from None
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _cached_hr(hr_file: Path, hr_npy: Path, cached: bool) -> np.ndarray:
    """The decoded HR image (the whole image, shared by every scale), from the cache or decoded and cached."""
    from .io import read_image

    if cached:
        return np.load(hr_npy, mmap_mode="r")
    hr = np.ascontiguousarray(to_rgb(read_image(hr_file)))
    _save_entry(hr_npy, hr)
    return hr


def _make_or_read_lr(hr_file: Path, lr_file: Path | None, hr: np.ndarray, scale: int, degradation: str,
                     noise_level: float) -> np.ndarray:
    from .io import read_image

    h, w = hr.shape[0] // scale, hr.shape[1] // scale
    if lr_file is not None:
        lr = to_rgb(read_image(lr_file))
        if lr.shape[:2] != (h, w):
            raise TrainingDataError(f"{lr_file}: LR is {lr.shape[1]}x{lr.shape[0]}, expected {w}x{h} "
                                    f"({hr_file.name} / {scale})")
        if lr.dtype != hr.dtype:
            raise TrainingDataError(f"{lr_file}: {lr.dtype} LR for a {hr.dtype} HR image")
        return lr
    lr = made_lr(np.ascontiguousarray(modcrop(np.asarray(hr), scale)), scale, degradation, noise_level, hr_file.name)
    if lr.shape[:2] != (h, w):
        raise TrainingDataError(f"{hr_file}: degradation gave {lr.shape[1]}x{lr.shape[0]}, expected {w}x{h}")
    return lr


def _key(*parts) -> str:
    return hashlib.sha1("\0".join(map(str, parts)).encode("utf-8")).hexdigest()


def _cache_path(cache: Path, key: str) -> Path:
    return cache / key[:2] / f"{key}.npy"


def _record_path(npy: Path) -> Path:
    return npy.with_suffix(".json")


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _save_entry(path: Path, array: np.ndarray) -> None:
    """Write a cache entry and its record (size, modification time, SHA-256 of the file)."""
    try:
        with atomic_path(path, overwrite=True) as tmp, open(tmp, "wb") as f:
            np.save(f, array)
        st = path.stat()
        record = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": _file_sha256(path)}
        atomic_write_text(_record_path(path), json.dumps(record) + "\n", overwrite=True)
    except OSError as exc:
        raise CacheWriteError(f"{path.parent}: cannot write the training cache ({exc.strerror or exc}); "
                                f"set data.cache_dir") from None
    _VERIFIED.add(path)


def _entry_shape(path: Path) -> tuple[int, ...] | None:
    """The array shape of a usable cache entry; None when it is missing, damaged or changed since written."""
    if not path.is_file():
        return None
    if path not in _VERIFIED:
        intact = _entry_intact(path)
        if not intact:
            if intact is False:
                warnings.warn(f"training cache entry {path} changed since it was written; rebuilding it",
                              TrainingDataWarning, stacklevel=3)
            return None
        _VERIFIED.add(path)
    try:
        return tuple(_npy_header(path)[0])
    except (OSError, ValueError):
        return None


def _entry_intact(path: Path) -> bool | None:
    """Size and time as recorded, or else the same SHA-256 (the record then takes the new time); None: no
    record (an entry whose write was interrupted)."""
    try:
        record = json.loads(_record_path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return False
    try:
        st = path.stat()
        if st.st_size != record["size"]:
            return False
        if st.st_mtime_ns == record["mtime_ns"]:
            return True
        if _file_sha256(path) != record["sha256"]:
            return False
        record["mtime_ns"] = st.st_mtime_ns
        atomic_write_text(_record_path(path), json.dumps(record) + "\n", overwrite=True)
        return True
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype, int]:
    """``(shape, dtype, data offset)`` of a C-ordered ``.npy`` file."""
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read(f)
        if fortran:
            raise ValueError(f"{path}: Fortran-ordered array")
        return shape, dtype, f.tell()


def map_npy(path: Path) -> np.ndarray:
    """A read-only view of a ``.npy`` file, memory-mapped without keeping a file descriptor open."""
    shape, dtype, offset = _npy_header(path)
    size = path.stat().st_size
    flat = torch.from_file(str(path), shared=False, size=size, dtype=torch.uint8).numpy()
    array = flat[offset:offset + int(np.prod(shape)) * dtype.itemsize].view(dtype).reshape(shape)
    array.flags.writeable = False
    return array


class PatchDataset(Dataset):
    """``dataset[i]`` is sample ``i`` of the run: ``(lr, hr)`` float32 CHW tensors in [0, 1].

    ``len()`` is one epoch (``samples_per_epoch``); any index >= 0 is valid. ``integer=True`` returns the
    stored integers instead (CHW uint8, or int32 for 16-bit images): a quarter of the bytes to copy and
    move, made float by :func:`to_unit` on the training device (the trainer's loader does this).
    """

    def __init__(self, pairs: Sequence[TrainingPair], scale: int, patch_size: int, *, seed: int = 0,
                 augment: bool = True, samples_per_epoch: int = 16_000, integer: bool = False):
        if not pairs:
            raise TrainingDataError("no training pairs")
        if seed < 0:
            raise TrainingDataError(f"seed must not be negative, got {seed}")
        self.pairs = list(pairs)
        self.scale, self.patch_size, self.seed = int(scale), int(patch_size), int(seed)
        self.augment, self.samples_per_epoch = augment, int(samples_per_epoch)
        self.integer = integer
        self._perm_round, self._perm = -1, np.arange(0)
        self._maps: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # image -> (LR, HR) views, per process

    def __getstate__(self):  # a worker started by pickling (spawn) maps the files itself
        state = self.__dict__.copy()
        state["_maps"] = {}
        return state

    def arrays(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``(LR, HR)`` of image ``k``, memory-mapped on first use in this process."""
        maps = self._maps.get(k)
        if maps is None:
            pair = self.pairs[k]
            maps = self._maps[k] = (map_npy(pair.lr_npy), map_npy(pair.hr_npy))
        return maps

    def __len__(self) -> int:
        return self.samples_per_epoch

    def sample(self, index: int) -> tuple[int, int, int, tuple[bool, bool, bool]]:
        """``(image index, y, x, (hflip, vflip, transpose))`` of sample ``index`` (LR coordinates)."""
        n = len(self.pairs)
        rnd, pos = divmod(int(index), n)
        if rnd != self._perm_round:
            self._perm = np.random.default_rng([self.seed, 0x5EED, rnd]).permutation(n)
            self._perm_round = rnd
        k = int(self._perm[pos])
        rng = np.random.default_rng([self.seed, int(index)])
        h, w = self.pairs[k].lr_size
        p = self.patch_size
        y, x = int(rng.integers(0, h - p + 1)), int(rng.integers(0, w - p + 1))
        flips = tuple(bool(b) for b in rng.integers(0, 2, size=3)) if self.augment else (False, False, False)
        return k, y, x, flips  # type: ignore[return-value]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if index < 0:
            raise IndexError(f"sample index must not be negative, got {index}")
        k, y, x, flips = self.sample(index)
        p, s = self.patch_size, self.scale
        lr_map, hr_map = self.arrays(k)
        lr = augment(lr_map[y: y + p, x: x + p], flips)
        hr = augment(hr_map[s * y: s * (y + p), s * x: s * (x + p)], flips)
        if self.integer:
            return _integer_tensor(lr), _integer_tensor(hr)
        return image_to_tensor(lr), image_to_tensor(hr)


def _integer_tensor(img: np.ndarray) -> torch.Tensor:
    """``(H, W, C)`` uint8/uint16 -> CHW uint8 / int32 tensor (int32: any torch holds 16-bit values)."""
    arr = np.ascontiguousarray(img.transpose(2, 0, 1))
    return torch.from_numpy(arr.astype(np.int32) if arr.dtype == np.uint16 else arr)


def to_unit(t: torch.Tensor) -> torch.Tensor:
    """A batch of :class:`PatchDataset` ``integer=True`` samples as float32 in [0, 1] (the values of
    ``image_to_tensor``: uint8 / 255, int32 (16-bit) / 65535); float tensors are returned as they are."""
    if t.is_floating_point():
        return t
    return t.to(torch.float32).div_(255.0 if t.dtype == torch.uint8 else 65535.0)


def augment(img: np.ndarray, flips: tuple[bool, bool, bool]) -> np.ndarray:
    """Horizontal flip, vertical flip, then transposition of an ``(H, W, C)`` array."""
    hflip, vflip, transpose = flips
    if hflip:
        img = img[:, ::-1]
    if vflip:
        img = img[::-1]
    if transpose:
        img = img.transpose(1, 0, 2)
    return img


def made_lr(hr: np.ndarray, scale: int, degradation: str, noise_level: float, name: str) -> np.ndarray:
    """LR made from an HR image; DN noise is seeded by the file name, so it is fixed per image."""
    seed = zlib.crc32(name.encode("utf-8")) if degradation == "DN" else None
    return np.asarray(degrade(hr, scale, mode=degradation, noise_level=noise_level, seed=seed))


class IterationSampler(Sampler[int]):
    """Sample indices of iterations ``start+1 .. stop`` for one process of ``world_size``."""

    def __init__(self, start: int, stop: int, batch_size: int, rank: int = 0, world_size: int = 1):
        if batch_size % world_size:
            raise TrainingDataError(f"batch size {batch_size} is not divisible by the {world_size} processes")
        self.start, self.stop, self.batch_size = int(start), int(stop), int(batch_size)
        self.rank, self.per_rank = int(rank), batch_size // world_size

    def __iter__(self) -> Iterator[int]:
        for iteration in range(self.start, self.stop):
            first = iteration * self.batch_size + self.rank * self.per_rank
            yield from range(first, first + self.per_rank)

    def __len__(self) -> int:
        return max(0, self.stop - self.start) * self.per_rank


def make_loader(dataset: PatchDataset, start: int, stop: int, batch_size: int, *, rank: int = 0,
                world_size: int = 1, workers: int = 0, pin_memory: bool = False) -> DataLoader:
    """Batches of iterations ``start+1 .. stop`` for this process (``batch_size`` is global)."""
    sampler = IterationSampler(start, stop, batch_size, rank, world_size)
    workers = min(workers, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    return DataLoader(dataset, batch_size=sampler.per_rank, sampler=sampler, num_workers=workers,
                      pin_memory=pin_memory, drop_last=False, prefetch_factor=4 if workers else None)
