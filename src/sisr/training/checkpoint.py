"""Run directories and crash-safe checkpoints.

Layout of a run directory::

    config.yaml                      the resolved config
    checkpoints/<iteration>/         model.safetensors, ema.safetensors (with EMA), state.pt
    checkpoints/latest.json          {"iteration": k, "dir": "<iteration>"}: the commit record
    latest.safetensors               the latest checkpoint's weights (hard link or copy)
    latest_ema.safetensors           the same for the EMA weights
    best.safetensors                 the validated weights (EMA when enabled) with the best PSNR
    log.jsonl, train.csv, val.csv, plots/, tensorboard/

A checkpoint is written file by file (each atomically) into its own folder and becomes the one
to resume from only when ``latest.json`` is replaced, last; a process killed at any moment leaves
either the previous checkpoint or the new one, never a mix. Older folders are removed after the
commit (``keep`` most recent are kept).

``state.pt`` (``torch.save``, read back with ``weights_only=True``) holds what the weights do
not: iteration, optimizer, scheduler, grad scaler, EMA, the RNG states (python, numpy, torch,
CUDA) and the data order (seed and samples consumed; sampling is a pure function of them).
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from ..errors import SisrError
from ..utils.fs import atomic_path, atomic_write_text
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
            iteration, folder = int(record["iteration"]), self.checkpoints / str(record["dir"])
        except (ValueError, KeyError, TypeError):
            raise CheckpointError(f"{self.pointer}: damaged checkpoint record") from None
        if not (folder / "state.pt").is_file() or not (folder / "model.safetensors").is_file():
            raise CheckpointError(f"{folder}: checkpoint of iteration {iteration} is incomplete")
        return iteration, folder


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
        torch.cuda.set_rng_state_all(state["cuda"])


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
    atomic_write_text(paths.pointer, json.dumps({"iteration": iteration, "dir": folder.name}) + "\n", overwrite=True)
    publish(folder / "model.safetensors", paths.latest)
    if ema is not None:
        publish(folder / "ema.safetensors", paths.latest_ema)
    old = sorted(p for p in paths.checkpoints.iterdir() if p.is_dir() and p.name.isdigit() and p != folder)
    for stale in old[: max(0, len(old) - (keep - 1))]:
        shutil.rmtree(stale, ignore_errors=True)
    return folder


def publish(src: Path, dst: Path) -> None:
    """Make ``dst`` a copy of ``src`` (a hard link where possible), replacing it atomically."""
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.part")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def load_checkpoint(folder: Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor] | None, dict[str, Any]]:
    """``(model state_dict, EMA state_dict or None, training state)`` of a checkpoint folder."""
    model_sd, _ = load_weights(folder / "model.safetensors")
    ema_sd = load_weights(folder / "ema.safetensors")[0] if (folder / "ema.safetensors").is_file() else None
    try:
        state = torch.load(folder / "state.pt", map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors come in many types
        raise CheckpointError(f"{folder / 'state.pt'}: cannot read the training state ({exc})") from None
    if state.get("version") != STATE_VERSION:
        raise CheckpointError(f"{folder / 'state.pt'}: training state version {state.get('version')}, "
                              f"expected {STATE_VERSION}")
    return model_sd, ema_sd, state
