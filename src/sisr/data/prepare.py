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
the file is one valid draw of the same degradation.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..errors import ConfigError, ImageError, SisrError
from ..utils.fs import atomic_write_text, sha256_file
from .degrade import BD_SIGMA, DN_NOISE_LEVEL, LR_FOLDERS, check_mode_and_scale, degrade, to_rgb
from .io import IMAGE_EXTENSIONS, find_images, read_image, write_image


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


def output_paths(rel: Path, out_dir: Path, scale: int, mode: str) -> tuple[Path, Path]:
    """``(HR path, LR path)`` written for the source image ``rel`` (relative to the HR folder)."""
    hr = out_dir / "HR" / rel.parent / f"{rel.stem}.png"
    lr = out_dir / LR_FOLDERS[mode.upper()] / f"X{scale}" / rel.parent / f"{rel.stem}x{scale}.png"
    return hr, lr


MANIFEST = ".sisr-degrade.json"


def _read_manifest(out_dir: Path) -> dict:
    path = out_dir / MANIFEST
    if not path.is_file():
        return {}
    try:
        files = json.loads(path.read_text())["files"]
        return files if isinstance(files, dict) else {}
    except (OSError, ValueError, KeyError, TypeError):
        return {}  # unreadable: nothing counts as provably made here


def _differences(old: dict, new: dict) -> str:
    if old.get("source_sha256") != new["source_sha256"]:
        return "made from another source image"
    keys = [k for k in new.get("options", {}) if old.get("options", {}).get(k) != new["options"][k]]
    if keys:
        return "made with other " + ", ".join(f"{k} ({old.get('options', {}).get(k)!r} then, {new['options'][k]!r} now)"
                                              for k in keys)
    return "changed since it was made"


def prepare_dataset(hr_dir: str | os.PathLike, out_dir: str | os.PathLike, scale: int, mode: str = "BI", *,
                    seed: int | None = None, border: str = "symmetric", noise_level: float = DN_NOISE_LEVEL,
                    blur_sigma: float = BD_SIGMA, overwrite: bool = False, progress: bool = True) -> PrepareResult:
    """Degrade every image under ``hr_dir`` into ``out_dir`` (EDSR layout); see the module docstring.

    ``seed`` fixes the DN noise; like the RCAN script (``randn('seed', 0)`` before each image) every
    image starts from the same seed, which also makes a resumed run reproduce the same files.
    """
    mode, scale = check_mode_and_scale(mode, scale)
    hr_dir, out_dir = Path(hr_dir), Path(out_dir)
    out_resolved = out_dir.resolve()
    if hr_dir.is_dir() and hr_dir.resolve().is_relative_to(out_resolved):
        raise ConfigError(f"{out_dir}: the output folder is (or contains) the HR folder {hr_dir}; "
                          f"choose an output folder outside it")
    sources = [p for p in find_images(hr_dir) if not p.resolve().is_relative_to(out_resolved)]
    if not sources:
        raise ImageError(f"{hr_dir}: no image files ({', '.join(sorted(IMAGE_EXTENSIONS))})")
    options = {"mode": mode, "scale": scale, "seed": seed, "border": border}
    if mode == "DN":
        options["noise_level"] = float(noise_level)
    if mode == "BD":
        options["blur_sigma"] = float(blur_sigma)
    manifest = _read_manifest(out_dir)
    result = PrepareResult(out_dir)

    # plan: what is provably done, what must be (re)made, what would be replaced
    plan, claimed, conflicts = [], {}, []
    for src in sources:
        rel = src.relative_to(hr_dir)
        hr_path, lr_path = output_paths(rel, out_dir, scale, mode)
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
        todo = {}
        for path, record in records.items():
            key = path.relative_to(out_dir).as_posix()
            if not path.exists():
                todo[path] = record
                continue
            old = manifest.get(key)
            if old is not None and {k: old.get(k) for k in record} == record and old.get("sha256") == sha256_file(path):
                continue
            if not overwrite:
                conflicts.append(f"{path}: exists, " + (_differences(old, record) if old else
                                                        "not recorded as made by sisr degrade from this source"))
            todo[path] = record
        plan.append((src, rel, hr_path, lr_path, todo))
    if conflicts:
        more = f" (and {len(conflicts) - 1} more)" if len(conflicts) > 1 else ""
        raise ConfigError(f"{conflicts[0]}{more}; use --overwrite to replace them, or another output folder")

    def record(path: Path, entry: dict) -> None:
        manifest[path.relative_to(out_dir).as_posix()] = {**entry, "sha256": sha256_file(path)}
        atomic_write_text(out_dir / MANIFEST, json.dumps({"version": 1, "files": manifest}, indent=1, sort_keys=True)
                          + "\n", overwrite=True)

    for src, rel, hr_path, lr_path, todo in tqdm(plan, desc=f"degrade {mode} x{scale}", unit="img",
                                                 disable=None if progress else True):
        if not todo:
            result.skipped.append(rel)
            continue
        try:
            hr = to_rgb(read_image(src))
            if lr_path in todo:
                lr = degrade(hr, scale, mode, noise_level=noise_level, seed=seed, border=border,
                             blur_sigma=blur_sigma)
            for path, img in ((hr_path, hr), (lr_path, lr if lr_path in todo else None)):
                if path in todo:
                    existed = path.exists()
                    write_image(path, np.ascontiguousarray(img), overwrite=overwrite)
                    record(path, todo[path])
                    if existed:
                        result.replaced.append(path)
        except SisrError as exc:
            result.failed.append((rel, str(exc) if str(exc).startswith(str(src)) else f"{src}: {exc}"))
            continue
        result.written.append(rel)
    return result
