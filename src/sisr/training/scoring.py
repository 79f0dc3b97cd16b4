"""The test-set scores of a finished run: the selected weights scored once, after training, on the benchmark
test sets (``train.test_sets``), into the run folder's ``results.json`` and ``results.md``.

The weights are chosen before and without these scores: ``best.safetensors`` (the best PSNR on ``val.set``,
held-out images, never a test set), else the final EMA or final weights. The scores go to the results
table only; nothing reads them back. The sets are looked for in the data roots: ``val.root``,
``data.root``, ``$SISR_DATASETS``, and the folder holding each ``data.hr`` source (and its ``benchmark/``
sub-folder, EDSR's layout), each as ``<root>/<set>/HR`` with its LR files when present.

Scoring is :func:`sisr.evaluation.protocol.evaluate`, the protocol of ``sisr eval``; this module is the one
place ``sisr.training`` imports ``sisr.evaluation`` (deferred, in :func:`score_run`; evaluation never
imports training).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError
from ..utils.fs import atomic_write_text
from .config import Config

TEST_SETS = ("Set5", "Set14", "B100", "Urban100", "Manga109")  # the papers' order
ALIASES = {"B100": ("B100", "BSD100")}
RESULTS = ("results.json", "results.md")


def data_roots(cfg: Config) -> list[Path]:
    """Where test sets are looked for (module docstring), in order, without repeats."""
    base = Path(cfg.data.root).expanduser() if cfg.data.root else Path.cwd()
    roots = [Path(p).expanduser() for p in (cfg.val.root, cfg.data.root, os.environ.get("SISR_DATASETS")) if p]
    for source in cfg.data.hr:
        parent = (base / Path(source).expanduser()).parent
        roots += [parent, parent / "benchmark"]
    return list(dict.fromkeys(roots))


def find_test_sets(cfg: Config) -> list[tuple[str, Path]]:
    """``(set folder name, root)`` of each test set to score: ``train.test_sets``, or (null) those of
    :data:`TEST_SETS` found; a named set that is not found is a ``ConfigError``."""
    roots = data_roots(cfg)
    wanted = cfg.train.test_sets
    found = []
    for name in TEST_SETS if wanted is None else dict.fromkeys(wanted):
        hit = next(((alias, root) for alias in ALIASES.get(name, (name,)) for root in roots
                    if (root / alias / "HR").is_dir()), None)
        if hit is not None:
            found.append(hit)
        elif wanted is not None:
            raise ConfigError(f"train.test_sets: no {name}/HR in the data roots ({', '.join(map(str, roots))}); "
                              f"name sets that exist, or train.test_sets=[] to score none")
    return found


def selected_weights(run_dir: Path, metrics: dict[str, Any] | None, ema: bool) -> tuple[Path, str]:
    """The weights the run selected and why: ``best.safetensors`` (validation), else the final (EMA) weights."""
    best = run_dir / "best.safetensors"
    if best.is_file():
        how = (f"best PSNR on the validation set {metrics['set']} (iteration {metrics['iteration']})"
               if metrics else "best PSNR on the validation set")
        return best, how
    final = run_dir / ("latest_ema.safetensors" if ema else "latest.safetensors")
    return final, "the final weights" + (" (EMA)" if ema else "") + " (no validation set)"


def scored_at(run_dir: Path) -> int | None:
    """The iteration whose weights the run folder's results are of (None: no complete results)."""
    try:
        record = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
        return int(record["iteration"]) if (run_dir / "results.md").is_file() else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def score_run(cfg: Config, run_dir: Path, sets: list[tuple[str, Path]], device: torch.device, *, iteration: int,
              best: dict[str, Any] | None = None) -> dict[str, Any]:
    """Score the run's selected weights on ``sets`` at its scale; write ``results.json`` and ``results.md``
    (replacing the results of an earlier end of the run, before it was extended)."""
    from ..evaluation.protocol import evaluate  # training -> evaluation: here only

    weights, how = selected_weights(run_dir, best, cfg.train.ema is not None)
    options = {"tile": cfg.val.tile} if cfg.val.tile else {}
    rows = []
    for root in dict.fromkeys(root for _, root in sets):
        names = [name for name, r in sets if r == root]
        result = evaluate(str(weights), data_root=root, datasets=names, scales=[cfg.model.scale], device=device,
                          degradation=cfg.data.degradation, progress=False, **options)
        rows += [{"dataset": s.dataset, "scale": s.scale, "psnr_y": s.psnr_y, "ssim_y": s.ssim_y,
                  "images": len(s.images), "lr": s.lr, "root": str(root)} for s in result.sets]
    record = {"weights": weights.name, "selected_by": how, "iteration": iteration, "model": cfg.model.name,
              "scale": cfg.model.scale, "degradation": cfg.data.degradation,
              "protocol": "sisr.evaluation.protocol.evaluate (sisr eval): Y PSNR/SSIM, shave = scale; scored once "
                          "after training, not used to choose the weights", "scores": rows}
    atomic_write_text(run_dir / "results.json", json.dumps(record, indent=2) + "\n", overwrite=True)
    atomic_write_text(run_dir / "results.md", markdown(record), overwrite=True)
    return record


def markdown(record: dict[str, Any]) -> str:
    lines = [f"# {record['model']} x{record['scale']}: test sets", "",
             f"`{record['weights']}`, selected by {record['selected_by']}; scored once after training "
             f"({record['degradation']}), never used for selection.", "",
             "| set | scale | PSNR (Y) | SSIM (Y) | images |", "|---|---|---|---|---|"]
    lines += [f"| {r['dataset']} | x{r['scale']} | {r['psnr_y']:.2f} | {r['ssim_y']:.4f} | {r['images']} |"
              for r in record["scores"]]
    return "\n".join(lines) + "\n"
