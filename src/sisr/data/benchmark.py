"""Benchmark test sets (Set5, Set14, B100, ...) in the EDSR layout.

Layout (the EDSR ``benchmark`` package, and what ``sisr degrade`` writes)::

    <root>/<Set>/HR/<name>.png
    <root>/<Set>/LR_bicubic/X<s>/<name>x<s>.png     # BI  (degradation="BI")
    <root>/<Set>/LR_BD/X<s>/<name>x<s>.png          # BD
    <root>/<Set>/LR_DN/X<s>/<name>x<s>.png          # DN

Each item is one (LR, HR) pair of uint8 RGB arrays, made as the papers do:

* LR from the pre-made file when present (``lr_source="auto"`` or ``"files"``), otherwise,
  for BI only, ``imresize(modcrop(HR, s), 1/s)`` with the MATLAB-exact resize and the
  chosen border rule (``lr_source="resize"`` always does this). BD/DN LR must be files.
* The LR file must be ``floor(HR / s)`` in size (anything else is an error naming the file);
  the HR is cropped to ``LR * s`` at the bottom/right (``hr[:h*s, :w*s]``, EDSR's crop, equal
  to MATLAB's ``modcrop``).
* Gray images (Set14 ``bridge``) are replicated to 3 channels, as the RCAN data script does
  (``cat(3, im, im, im)``) and EDSR's loader does, and flagged (``item.gray``) so that an
  evaluation can also score them as gray images; an alpha channel is dropped (MATLAB
  ``imread`` returns it separately); 16-bit images are an error (the protocol is 8-bit).
* Every item records where its LR came from: ``lr_source`` is ``"file"`` or
  ``"matlab-resize, <border>"``; for BI files ``lr_border`` says which MATLAB border rule the
  file reproduces byte for byte (``"symmetric"`` or ``"replicate"``, the ``border`` option's rule
  tried first, or ``"neither"``), checked by resizing the HR (``check_border=False`` skips it).

Border rules of the files in ../shared/datasets (see its README): Set5 and Set14 X2/X3/X4
follow modern MATLAB (symmetric); B100 X2/X3/X4 and the Set5/Set14 X8 files follow the
replicate rule of an older MATLAB. The published B100 numbers were computed from the EDSR
package's LR (symmetric), so ``lr_source="resize"`` (symmetric) reproduces them more
faithfully than these B100 files; the difference is confined to 2 LR pixels at each border.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from ..errors import SisrError
from .degrade import LR_FOLDERS, modcrop, to_rgb
from .io import is_image_file, read_image
from .resize import BORDERS, imresize

LR_SOURCES = ("auto", "files", "resize")


class DatasetError(SisrError):
    """A benchmark set is missing, incomplete or holds an unusable file."""


@dataclass(frozen=True)
class BenchmarkItem:
    """One test pair: uint8 RGB arrays, ``hr.shape == (h*s, w*s, 3)`` for ``lr.shape == (h, w, 3)``."""

    name: str
    lr: np.ndarray
    hr: np.ndarray
    hr_path: Path
    lr_path: Path | None  # None when the LR was made by resizing
    lr_source: str  # "file" or "matlab-resize, <border>"
    lr_border: str | None  # border rule a BI file reproduces (None when not checked or not BI)
    gray: bool = False  # the HR file is a gray image (replicated to RGB here)


class BenchmarkSet:
    """The (LR, HR) pairs of one set at one scale; items are read when asked for.

    ``BenchmarkSet("/data/benchmark", "Set5", 4)``; iterate, index or ``len()`` it.
    ``lr_source``: ``"auto"`` (file if present, else resize), ``"files"`` (a missing LR file is
    an error), ``"resize"`` (always MATLAB-exact bicubic of the HR, BI only). ``border`` is the
    resize's border rule. ``check_border`` compares BI files with both MATLAB border rules.
    """

    def __init__(self, root: str | os.PathLike, name: str, scale: int, *, lr_source: str = "auto",
                 degradation: str = "BI", border: str = "symmetric", check_border: bool = True):
        if lr_source not in LR_SOURCES:
            raise DatasetError(f"lr_source must be one of {', '.join(LR_SOURCES)}; got '{lr_source}'")
        degradation = degradation.upper()
        if degradation not in LR_FOLDERS:
            raise DatasetError(f"degradation must be one of {', '.join(LR_FOLDERS)}; got '{degradation}'")
        if border not in BORDERS:
            raise DatasetError(f"border must be one of {', '.join(BORDERS)}; got '{border}'")
        if degradation != "BI" and lr_source == "resize":
            raise DatasetError(f"lr_source 'resize' makes BI (bicubic) LR only; {degradation} LR must be files "
                               f"(make them with 'sisr degrade --mode {degradation}')")
        self.root, self.name, self.scale = Path(root), name, int(scale)
        self.lr_source, self.degradation, self.border = lr_source, degradation, border
        self.check_border = check_border and degradation == "BI"
        if self.scale < 1:
            raise DatasetError(f"scale must be a positive integer, got {scale}")
        set_dir = self.root / name
        if not set_dir.is_dir():
            found = list_sets(self.root)
            where = f"found: {', '.join(found)}" if found else "no <Set>/HR folders there"
            raise DatasetError(f"{set_dir}: no such benchmark set ({where})")
        self.hr_dir = set_dir / "HR"
        if not self.hr_dir.is_dir():
            raise DatasetError(f"{self.hr_dir}: missing HR folder (expected <root>/{name}/HR/<image>.png)")
        self.hr_paths = sorted(p for p in self.hr_dir.iterdir() if p.is_file() and is_image_file(p))
        if not self.hr_paths:
            raise DatasetError(f"{self.hr_dir}: no images")
        self.lr_dir = set_dir / LR_FOLDERS[degradation] / f"X{self.scale}"
        if lr_source == "files" or degradation != "BI":
            for hr_path in self.hr_paths:
                if self.lr_path(hr_path) is None:
                    hint = "" if degradation != "BI" else " (lr_source='auto' or 'resize' makes it from the HR)"
                    raise DatasetError(f"{self._expected_lr(hr_path)}: missing LR file{hint}")

    @property
    def names(self) -> list[str]:
        return [p.stem for p in self.hr_paths]

    def __len__(self) -> int:
        return len(self.hr_paths)

    def __iter__(self) -> Iterator[BenchmarkItem]:
        for i in range(len(self)):
            yield self[i]

    def __getitem__(self, index: int) -> BenchmarkItem:
        hr_path = self.hr_paths[index]
        raw = read_image(hr_path)
        hr = _as_rgb8(raw, hr_path)
        gray = raw.shape[2] <= 2
        s = self.scale
        h, w = hr.shape[0] // s, hr.shape[1] // s
        if h == 0 or w == 0:
            raise DatasetError(f"{hr_path}: {hr.shape[1]}x{hr.shape[0]} is smaller than the scale {s}")
        hr = modcrop(hr, s)  # = hr[:h*s, :w*s]
        lr_path = None if self.lr_source == "resize" else self.lr_path(hr_path)
        if lr_path is None:
            lr = imresize(hr, 1 / s, border=self.border)
            return BenchmarkItem(hr_path.stem, lr, hr, hr_path, None, f"matlab-resize, {self.border}", self.border, gray)
        lr = _as_rgb8(read_image(lr_path), lr_path)
        if lr.shape[:2] != (h, w):
            raise DatasetError(f"{lr_path}: LR is {lr.shape[1]}x{lr.shape[0]}, expected {w}x{h} "
                               f"(HR {hr_path.name} / {s})")
        border = self._file_border(hr, lr) if self.check_border else None
        return BenchmarkItem(hr_path.stem, lr, hr, hr_path, lr_path, "file", border, gray)

    def lr_path(self, hr_path: Path) -> Path | None:
        """The LR file of an HR image (same extension as the HR, else .png), None when absent."""
        for ext in dict.fromkeys((hr_path.suffix, ".png")):
            path = self.lr_dir / f"{hr_path.stem}x{self.scale}{ext}"
            if path.is_file():
                return path
        return None

    def _expected_lr(self, hr_path: Path) -> Path:
        return self.lr_dir / f"{hr_path.stem}x{self.scale}{hr_path.suffix}"

    def _file_border(self, hr: np.ndarray, lr: np.ndarray) -> str:
        """The first border rule (``self.border`` tried first) whose resize of ``hr`` equals ``lr``."""
        for rule in sorted(BORDERS, key=lambda b: b != self.border):
            if np.array_equal(imresize(hr, 1 / self.scale, border=rule), lr):
                return rule
        return "neither"

    def describe_lr(self, items: Sequence[BenchmarkItem]) -> str:
        """One line saying where the LR of ``items`` came from: counts of each source and border rule.

        ``items``: anything with ``lr_source`` and ``lr_border`` (``BenchmarkItem``s, or the
        evaluation's per-image scores).
        """
        parts = []
        files = [it for it in items if it.lr_source == "file"]
        if files:
            part = f"file {LR_FOLDERS[self.degradation]}/X{self.scale} ({len(files)}/{len(items)})"
            borders = sorted({it.lr_border for it in files if it.lr_border})
            if borders:
                counts = ", ".join(f"{b} {sum(it.lr_border == b for it in files)}" for b in borders)
                part += f", MATLAB bicubic border rule reproduced byte for byte: {counts}"
            parts.append(part)
        resized = len(items) - len(files)
        if resized:
            parts.append(f"matlab-resize, {self.border} ({resized}/{len(items)})")
        return "; ".join(parts)


def _as_rgb8(img: np.ndarray, path: Path) -> np.ndarray:
    """uint8 RGB: gray replicated to 3 channels, alpha dropped; other bit depths are an error."""
    if img.dtype != np.uint8:
        raise DatasetError(f"{path}: {img.dtype} image; benchmark images must be 8-bit")
    return np.ascontiguousarray(to_rgb(img))


def default_roots() -> list[Path]:
    """Where benchmark sets are looked for when no root is given: ``$SISR_DATASETS``, ``./datasets``,
    ``../shared/datasets`` beside the checkout."""
    roots = [Path(os.environ["SISR_DATASETS"])] if os.environ.get("SISR_DATASETS") else []
    checkout = Path(__file__).resolve().parents[3]
    return roots + [Path("datasets"), checkout.parent / "shared" / "datasets"]


def find_root(datasets: Sequence[str], roots: Sequence[Path] | None = None) -> Path | None:
    """The first of ``roots`` (default :func:`default_roots`) holding ``<set>/HR`` for every set, or None."""
    return next((r for r in (roots or default_roots()) if all((r / d / "HR").is_dir() for d in datasets)), None)


def list_sets(root: str | os.PathLike) -> list[str]:
    """Names of the folders under ``root`` that have an ``HR`` sub-folder."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: no such data folder")
    return sorted(p.name for p in root.iterdir() if (p / "HR").is_dir())
