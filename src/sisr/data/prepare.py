"""Make an LR dataset from a folder of HR images, in the EDSR layout (``sisr degrade``).

For every image under ``hr_dir`` (recursively, sub-folders kept)::

    out_dir/HR/<sub>/<name>.png                          the HR image, not mod-cropped
    out_dir/<LR folder>/X<s>/<sub>/<name>x<s>.png         LR_bicubic (BI), LR_BD (BD), LR_DN (DN)

The HR copy is the image that was degraded: gray stacked to RGB and alpha dropped, as the RCAN
script does (see :mod:`sisr.data.degrade`), bit depth kept. Files that already exist are kept and
not recomputed, so an interrupted run resumes where it stopped (outputs are written atomically, so
an existing file is complete). Unreadable images are reported and skipped.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..errors import ImageError, SisrError
from .degrade import BD_SIGMA, DN_NOISE_LEVEL, LR_FOLDERS, check_mode_and_scale, degrade, to_rgb
from .io import IMAGE_EXTENSIONS, find_images, read_image, write_image


@dataclass
class PrepareResult:
    """What :func:`prepare_dataset` did; paths are relative to ``hr_dir``."""

    out_dir: Path
    written: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)  # outputs already there
    failed: list[tuple[Path, str]] = field(default_factory=list)  # (source, one-line reason)

    def summary(self) -> str:
        return (f"{len(self.written)} written, {len(self.skipped)} already done, {len(self.failed)} failed "
                f"-> {self.out_dir}")


def output_paths(rel: Path, out_dir: Path, scale: int, mode: str) -> tuple[Path, Path]:
    """``(HR path, LR path)`` written for the source image ``rel`` (relative to the HR folder)."""
    hr = out_dir / "HR" / rel.parent / f"{rel.stem}.png"
    lr = out_dir / LR_FOLDERS[mode.upper()] / f"X{scale}" / rel.parent / f"{rel.stem}x{scale}.png"
    return hr, lr


def prepare_dataset(hr_dir: str | os.PathLike, out_dir: str | os.PathLike, scale: int, mode: str = "BI", *,
                    seed: int | None = None, border: str = "symmetric", noise_level: float = DN_NOISE_LEVEL,
                    blur_sigma: float = BD_SIGMA, progress: bool = True) -> PrepareResult:
    """Degrade every image under ``hr_dir`` into ``out_dir`` (EDSR layout); see the module docstring.

    ``seed`` fixes the DN noise; like the RCAN script (``randn('seed', 0)`` before each image) every
    image starts from the same seed, which also makes a resumed run reproduce the same files.
    """
    mode, scale = check_mode_and_scale(mode, scale)
    hr_dir, out_dir = Path(hr_dir), Path(out_dir)
    out_resolved = out_dir.resolve()
    sources = [p for p in find_images(hr_dir) if not p.resolve().is_relative_to(out_resolved)]
    if not sources:
        raise ImageError(f"{hr_dir}: no image files ({', '.join(sorted(IMAGE_EXTENSIONS))})")
    result = PrepareResult(out_dir)
    claimed: dict[Path, Path] = {}
    for src in tqdm(sources, desc=f"degrade {mode} x{scale}", unit="img", disable=None if progress else True):
        rel = src.relative_to(hr_dir)
        hr_path, lr_path = output_paths(rel, out_dir, scale, mode)
        if hr_path in claimed:
            result.failed.append((rel, f"{src}: same output name as {claimed[hr_path]}"))
            continue
        claimed[hr_path] = src
        missing = [p for p in (hr_path, lr_path) if not p.exists()]
        if not missing:
            result.skipped.append(rel)
            continue
        try:
            hr = to_rgb(read_image(src))
            if lr_path in missing:
                lr = degrade(hr, scale, mode, noise_level=noise_level, seed=seed, border=border,
                             blur_sigma=blur_sigma)
            if hr_path in missing:
                write_image(hr_path, np.ascontiguousarray(hr))
            if lr_path in missing:
                write_image(lr_path, lr)
        except SisrError as exc:
            result.failed.append((rel, str(exc) if str(exc).startswith(str(src)) else f"{src}: {exc}"))
            continue
        result.written.append(rel)
    return result
