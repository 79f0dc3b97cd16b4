"""Validation sets that are not test sets (``val.set`` of a training config).

A spec is one of

* ``NAME:FIRST-LAST``: a slice, the FIRST-th to LAST-th images (1-based, inclusive) in sorted order of the
  source NAME: the training source of ``data.hr`` with that name (``DIV2K``, ``BSD200``, or the path as given),
  else the folder NAME under the dataset roots. A DIV2K folder counts ``DIV2K_train_HR`` and then
  ``DIV2K_valid_HR`` (0001..0900), so ``DIV2K:801-810`` is the papers' validation set (the first ten DIV2K
  validation images). The slice is held out of training wherever it occurs in ``data.hr``.
* ``NAME``: a folder of validation images: ``<root>/NAME/HR`` under the dataset roots (the benchmark layout, with
  its prepared LR files when present), or a path to a folder of images. It must not share an image with the
  training data (an explicit overlap is an error).

Benchmark test sets (Set5, Set14, B100/BSD100, Urban100, Manga109) are refused: weights chosen on a test set
make the scores reported on it optimistic.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from ..errors import SisrError

TEST_SETS = ("set5", "set14", "b100", "bsd100", "urban100", "manga109")
LAYOUT_FOLDERS = ("DIV2K_train_HR", "Flickr2K_HR", "HR")  # a dataset folder stands for its HR sub-folder
_SLICE = re.compile(r"(?P<name>.+):(?P<first>\d+)-(?P<last>\d+)")
EXAMPLES = "val.set=DIV2K:801-810 (DIV2K), val.set=BSD200:190-199 (../shared/datasets)"


class ValSetError(SisrError):
    """A validation set that cannot be used (a test set, a bad slice, missing, overlapping the training data)."""


@dataclass(frozen=True)
class ValSpec:
    text: str
    name: str
    first: int | None = None  # 1-based, inclusive; None for a folder
    last: int | None = None


@dataclass
class ValidationSet:
    """A resolved ``val.set``: either ``files`` (made LR) or a benchmark-layout set ``bench_root/name``."""

    label: str
    files: list[Path] | None = None
    bench_root: Path | None = None
    name: str = ""
    held_out: frozenset[Path] = field(default_factory=frozenset)  # resolved paths removed from training
    source: Path | None = None  # the folder a slice was taken from


def test_set_in(text: str | os.PathLike) -> str | None:
    """The benchmark test set named by a set name or path (any part, any case), or None."""
    return next((part for part in Path(text).parts if part.lower() in TEST_SETS), None)


def refuse_test_set(text: str | os.PathLike, what: str) -> None:
    hit = test_set_in(text)
    if hit:
        raise ValSetError(f"{what} is the benchmark test set '{hit}': weights chosen on a test set make its "
                          f"reported scores optimistic; validate on held-out images, e.g. {EXAMPLES}, or set "
                          f"val.set=null (no validation; also how a run started with a test set resumes)")


def parse_val_set(text: str) -> ValSpec:
    """``"BSD200:190-199"`` -> ``ValSpec(name="BSD200", first=190, last=199)``; test sets refused."""
    if not isinstance(text, str) or not text.strip():
        raise ValSetError(f"expected a folder or NAME:FIRST-LAST, got {text!r}")
    match = _SLICE.fullmatch(text.strip())
    spec = ValSpec(text, text.strip())
    if match:
        first, last = int(match["first"]), int(match["last"])
        if not 1 <= first <= last:
            raise ValSetError(f"'{text}': FIRST-LAST must satisfy 1 <= FIRST <= LAST (1-based, inclusive)")
        spec = ValSpec(text, match["name"], first, last)
    refuse_test_set(spec.name, f"'{text}'")
    return spec


def source_names(source: str) -> set[str]:
    """What a training source may be called in a slice: as given, its folder name, its dataset's name."""
    path = Path(source)
    names = {str(source), path.name}
    if path.name in LAYOUT_FOLDERS and path.parent.name:
        names.add(path.parent.name)
    return names


def slice_images(folder: Path) -> list[Path]:
    """The images a slice of ``folder`` counts, in order (DIV2K: train then valid HR, by file name)."""
    from .io import find_images

    if folder.name == "DIV2K_train_HR":
        folder = folder.parent
    if (folder / "DIV2K_train_HR").is_dir():
        parts = [folder / "DIV2K_valid_HR", folder / "DIV2K_train_HR"]  # train wins a name found in both
        by_name = {p.relative_to(d).as_posix(): p for d in parts if d.is_dir() for p in find_images(d)}
        return [by_name[k] for k in sorted(by_name)]
    for name in LAYOUT_FOLDERS[1:]:
        if (folder / name).is_dir():
            return find_images(folder / name)
    return find_images(folder)


def resolve_val_set(text: str, *, sources: Sequence[str] = (), data_root: str | os.PathLike | None = None,
                    val_root: str | os.PathLike | None = None) -> ValidationSet:
    """The validation images of ``text`` (see the module docstring); nothing is decoded."""
    spec = parse_val_set(text)
    base = Path(data_root) if data_root is not None else Path.cwd()
    roots = [Path(val_root)] if val_root else _default_roots()
    if spec.first is None:
        return _folder_set(spec, roots)
    folder = next((base / Path(s).expanduser() for s in sources if spec.name in source_names(s)), None)
    if folder is None:
        folder = next((r / spec.name for r in [*roots, Path.cwd()] if (r / spec.name).is_dir()), None)
    if folder is None or not folder.is_dir():
        raise ValSetError(f"'{text}': no training source or folder '{spec.name}' (data.hr: "
                          f"{', '.join(sources) or 'none'}; looked in {', '.join(map(str, roots))})")
    refuse_test_set(folder.resolve(), f"'{text}' ({folder})")
    images = slice_images(folder)
    if spec.last > len(images):
        div2k = (folder / "DIV2K_train_HR").is_dir() or folder.name == "DIV2K_train_HR"
        hint = "; put DIV2K_valid_HR (0801-0900) beside DIV2K_train_HR, or set val.set" if div2k else ""
        raise ValSetError(f"'{text}': {folder} has {len(images)} images (1-{len(images)}){hint}")
    files = images[spec.first - 1: spec.last]
    return ValidationSet(text, files=files, held_out=frozenset(p.resolve() for p in files), source=folder)


def _folder_set(spec: ValSpec, roots: Sequence[Path]) -> ValidationSet:
    from .benchmark import find_root

    found = find_root([spec.name], roots)
    if found is not None:
        refuse_test_set((found / spec.name).resolve(), f"'{spec.text}' ({found / spec.name})")
        return ValidationSet(spec.text, bench_root=found, name=spec.name)
    path = Path(spec.name).expanduser()
    candidates = [path] if path.is_absolute() else [*(r / path for r in roots), path]
    folder = next((c for c in candidates if c.is_dir()), None)
    if folder is None:
        raise ValSetError(f"{spec.name} not found in {', '.join(map(str, roots))} (set val.root=FOLDER, "
                          f"or val.every=0 to train without validation)")
    refuse_test_set(folder.resolve(), f"'{spec.text}' ({folder})")
    files = slice_images(folder)
    if not files:
        raise ValSetError(f"'{spec.text}': {folder} holds no images")
    return ValidationSet(spec.text, files=files, source=folder)


def _default_roots() -> list[Path]:
    from .benchmark import default_roots

    return default_roots()


def check_overlap(validation: ValidationSet, training: Sequence[Path]) -> None:
    """Refuse a validation folder sharing images with the training data (slices are held out instead)."""
    if not validation.files or validation.held_out:
        return
    train = {p.resolve() for p in training}
    shared = [p for p in validation.files if p.resolve() in train]
    if shared:
        raise ValSetError(f"'{validation.label}': {len(shared)} validation image(s) are also training images "
                          f"({shared[0]}); hold them out with a slice (NAME:FIRST-LAST) or remove them from data.hr")
