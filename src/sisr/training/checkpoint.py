"""Run directories and crash-safe checkpoints.

Layout of a run directory::

    config.yaml                      the resolved config
    checkpoints/<iteration>/         model.safetensors, ema.safetensors (with EMA), state.pt
    checkpoints/latest.json          {"iteration": k, "dir": "<iteration>"}: the commit record
    latest.safetensors               the latest checkpoint's weights (hard link or copy)
    latest_ema.safetensors           the same for the EMA weights
    best.safetensors                 the validated weights (EMA when enabled) with the best PSNR
    log.jsonl, train.csv, val.csv, plots/, tensorboard/

A checkpoint is written file by file into its own folder, each file atomically and durably
(``sisr.utils.fs``: fsync of the file, then of its folder), then the folder's own entry is synced,
and only then is ``latest.json`` replaced: the commit. A process killed (or a host that crashes)
at any moment leaves either the previous checkpoint or the new one, never a mix; the debris of an
interrupted checkpoint (an uncommitted folder, ``.part`` files) is removed when the run goes on
(:func:`clean_run_dir`). Older folders are removed after the commit (``keep`` most recent kept).
A commit record naming anything but a checkpoint folder of the run is refused; without a record,
:meth:`RunPaths.newest_complete_checkpoint` finds the newest folder whose files all read.

``state.pt`` (``torch.save``, read back with ``weights_only=True``) holds what the weights do
not: iteration, optimizer, scheduler, grad scaler, EMA, the RNG states (python, numpy, torch,
CUDA: restored for the GPUs that exist, :func:`restore_cuda_rng`), the data order (seed and samples
consumed; sampling is a pure function of them) and the training set's fingerprint
(:func:`training_set_fingerprint`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pickle
import random
import re
import shutil
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from ..errors import SisrError
from ..utils.fs import atomic_path, atomic_write_text, fsync_dir
from ..weights import load_weights, save_weights

STATE_VERSION = 1


class CheckpointError(SisrError):
    """A run directory or checkpoint is unusable."""


class RunPaths:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.config = self.root / "config.yaml"
        self.checkpoints = self.root / "checkpoints"
        self.pointer = self.checkpoints / "latest.json"
        self.latest = self.root / "latest.safetensors"
        self.latest_ema = self.root / "latest_ema.safetensors"
        self.best = self.root / "best.safetensors"
        self.plots = self.root / "plots"

    def latest_checkpoint(self) -> tuple[int, Path] | None:
        """``(iteration, folder)`` of the committed checkpoint, or None."""
        if not self.pointer.is_file():
            return None
        try:
            record = json.loads(self.pointer.read_text(encoding="utf-8"))
            iteration, name = int(record["iteration"]), str(record["dir"])
        except (ValueError, KeyError, TypeError):
            raise CheckpointError(f"{self.pointer}: damaged checkpoint record") from None
        folder = self.checkpoints / name
        inside = folder.resolve().parent == self.checkpoints.resolve()
        if not name.isdigit() or not inside:  # never follow a record out of the run folder
            raise CheckpointError(f"{self.pointer}: refused: names '{name}', not a checkpoint folder of this run")
        if not (folder / "state.pt").is_file() or not (folder / "model.safetensors").is_file():
            raise CheckpointError(f"{folder}: checkpoint of iteration {iteration} is incomplete")
        return iteration, folder

    def newest_complete_checkpoint(self) -> tuple[int, Path] | None:
        """``(iteration, folder)`` of the newest checkpoint folder whose files are all readable (for a run
        whose commit record is missing), or None."""
        for folder in reversed(_numbered_folders(self)):
            if folder.is_symlink() or folder.resolve().parent != self.checkpoints.resolve():
                continue
            try:
                _, _, state = load_checkpoint(folder)
            except (SisrError, OSError):
                continue
            if int(state.get("iteration", -1)) == int(folder.name):
                return int(folder.name), folder
        return None


def capture_rng() -> dict[str, Any]:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: Mapping[str, Any]) -> None:
    random.setstate(_tuples(state["python"]))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        restore_cuda_rng(state["cuda"])


def restore_cuda_rng(saved: Sequence[torch.Tensor]) -> int:
    """Restore the saved CUDA generator states of the devices that exist (a run may resume on fewer or
    more GPUs than it saved); return how many were restored."""
    count = min(len(saved), torch.cuda.device_count())
    for index in range(count):
        torch.cuda.set_rng_state(saved[index], index)
    return count


def _tuples(value: Any) -> Any:
    """Lists back to tuples (random.setstate wants the nested tuples it produced)."""
    if isinstance(value, (list, tuple)):
        return tuple(_tuples(v) for v in value)
    return value


def save_checkpoint(paths: RunPaths, iteration: int, *, model: torch.nn.Module, ema: torch.nn.Module | None,
                    state: dict[str, Any], weights_meta: dict[str, Any], keep: int = 1) -> Path:
    """Write and commit the checkpoint of ``iteration``; return its folder."""
    folder = paths.checkpoints / f"{iteration:09d}"
    folder.mkdir(parents=True, exist_ok=True)
    save_weights(model, folder / "model.safetensors", overwrite=True, **weights_meta)
    if ema is not None:
        save_weights(ema, folder / "ema.safetensors", overwrite=True,
                     **{**weights_meta, "metadata": {**weights_meta.get("metadata", {}), "ema": True}})
    with atomic_path(folder / "state.pt", overwrite=True) as tmp:
        torch.save({"version": STATE_VERSION, "iteration": iteration, **state}, tmp)
    fsync_dir(paths.checkpoints)  # the folder's entry, before the pointer names it
    fsync_dir(paths.root)
    _commit(paths, iteration, folder)
    publish_latest(paths, folder)
    remove_stale_checkpoints(paths, iteration, keep)
    return folder


def commit(paths: RunPaths, iteration: int, folder: Path) -> None:
    """Make checkpoint ``folder`` the run's latest (``latest.json``, replaced atomically and durably)."""
    _commit(paths, iteration, folder)


def _commit(paths: RunPaths, iteration: int, folder: Path) -> None:
    atomic_write_text(paths.pointer, json.dumps({"iteration": iteration, "dir": folder.name}) + "\n", overwrite=True)


def _numbered_folders(paths: RunPaths) -> list[Path]:
    if not paths.checkpoints.is_dir():
        return []
    return sorted(p for p in paths.checkpoints.iterdir() if p.is_dir() and p.name.isdigit())


def remove_stale_checkpoints(paths: RunPaths, committed: int | None, keep: int = 1) -> None:
    """Keep the committed checkpoint and the ``keep - 1`` before it; remove the other folders.

    Folders past the committed iteration (or all, when none is committed) are the debris of an
    interrupted checkpoint.
    """
    folders = _numbered_folders(paths)
    done = [p for p in folders if committed is not None and int(p.name) <= committed]
    stale = [p for p in folders if p not in done] + done[: max(0, len(done) - keep)]
    for folder in stale:
        shutil.rmtree(folder, ignore_errors=True)


def clean_run_dir(paths: RunPaths, committed: int | None, keep: int = 1) -> None:
    """Remove what an interrupted write left: uncommitted checkpoint folders and ``.part`` files."""
    remove_stale_checkpoints(paths, committed, keep)
    for folder in [paths.root, paths.checkpoints, *_numbered_folders(paths)]:
        if folder.is_dir():
            for part in folder.glob(".*.part"):
                part.unlink(missing_ok=True)


def publish_latest(paths: RunPaths, folder: Path) -> None:
    """``latest.safetensors`` (and ``latest_ema``) as the weights of checkpoint ``folder``."""
    publish(folder / "model.safetensors", paths.latest)
    if (folder / "ema.safetensors").is_file():
        publish(folder / "ema.safetensors", paths.latest_ema)


def publish(src: Path, dst: Path) -> None:
    """Make ``dst`` a copy of ``src`` (a hard link where possible), replaced atomically and durably."""
    with contextlib.suppress(OSError):
        if dst.exists() and os.path.samefile(src, dst):
            return
    with atomic_path(dst, overwrite=True) as tmp:
        tmp.unlink()
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)


def training_set_fingerprint(pairs: Sequence[Any]) -> dict[str, Any]:
    """What identifies a run's training images: names (relative to their folder), in order, HR file
    sizes and LR sizes; ``pairs`` are :class:`sisr.data.training.TrainingPair` s."""
    files = [[p.name, p.source.stat().st_size, *p.lr_size] for p in pairs]
    digest = hashlib.sha256(json.dumps(files).encode("utf-8")).hexdigest()
    return {"count": len(files), "sha256": digest, "files": files}


def fingerprint_mismatch(saved: Mapping[str, Any], current: Mapping[str, Any]) -> str | None:
    """None when both fingerprints name the same training set, else what differs (a short phrase)."""
    if saved.get("sha256") == current.get("sha256"):
        return None
    old, new = saved.get("files") or [], current.get("files") or []
    for a, b in zip(old, new):
        if list(a) != list(b):
            if a[0] != b[0]:
                return f"image {a[0]} is now {b[0]}"
            return f"{a[0]}: HR file of {a[1]} bytes, LR {a[3]}x{a[2]}, is now {b[1]} bytes, LR {b[3]}x{b[2]}"
    if len(old) != len(new):
        return f"{len(old)} images, now {len(new)}"
    return "the image list differs"


def load_checkpoint(folder: Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor] | None, dict[str, Any]]:
    """``(model state_dict, EMA state_dict or None, training state)`` of a checkpoint folder."""
    model_sd, _ = load_weights(folder / "model.safetensors")
    ema_sd = load_weights(folder / "ema.safetensors")[0] if (folder / "ema.safetensors").is_file() else None
    path = folder / "state.pt"
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:  # never suggest weights_only=False: that would run the pickle
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        what = f" ({found.group(1)})" if found else ""
        raise CheckpointError(f"{path}: refused: the training state holds Python objects other than tensors"
                              f"{what}; sisr never unpickles arbitrary objects") from None
    except Exception as exc:  # truncated or damaged archive: many exception types
        lines = [line for line in str(exc).splitlines() if line.strip() and "weights_only" not in line]
        reason = f"{type(exc).__name__}: {lines[0].strip()}" if lines else type(exc).__name__
        raise CheckpointError(f"{path}: cannot read the training state, damaged or truncated ({reason})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: holds a {type(state).__name__}, not a training state")
    if state.get("version") != STATE_VERSION:
        raise CheckpointError(f"{path}: training state version {state.get('version')}, expected {STATE_VERSION}")
    return model_sd, ema_sd, state
