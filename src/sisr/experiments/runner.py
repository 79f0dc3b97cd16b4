"""Run an experiment: every variant (x seeds) an ordinary ``sisr train`` run folder, then scored.

Layout of an output folder ``DIR``::

    DIR/experiment.json              the definition and the options of this folder (checked on rerun)
    DIR/runs/<variant>-s<seed>/      a sisr train run folder (resumable) + result.json once scored
    DIR/eval/result.json             evaluation tables: the scores of every row and scale
    DIR/complexity/<row>-x<s>.json   complexity tables: one row at one scale, counted and measured

Resumable: killed anywhere and run again with the same options, finished variants (``result.json``
present) are skipped, an interrupted one resumes from its last checkpoint, and a trained but unscored
one is only scored. Test sets are scored once, after training, on the run's selected weights; they
never choose anything (the run's own validation set does).
"""

from __future__ import annotations

import csv
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from ..errors import ConfigError
from ..data.benchmark import list_sets
from ..evaluation.profile import count_model_flops, measure, measure_isolated
from ..evaluation.protocol import evaluate
from ..models import count_parameters, create_model, get_info
from ..training.config import load_config
from ..training.trainer import train
from ..utils.device import device_name, resolve_device
from ..utils.fs import atomic_write_text, slug
from .definitions import EvalRow, Experiment, Variant, get_experiment

TINY_INPUT = (16, 16)  # complexity tables with --tiny: tiny networks on a 16x16 LR input
TINY_TRAIN = {"train.batch_size": 2, "data.patch_size": 16, "train.compile": False, "train.channels_last": False,
              "data.workers": 0, "log.every": 1, "log.plots": False}


@dataclass(frozen=True)
class ExperimentOptions:
    """How to run an experiment (everything that changes its results is part of the folder's identity)."""

    iterations: int | None = None  # None: the paper's schedule; N: the schedule scaled to N updates
    seeds: int = 1
    tiny: bool = False
    device: str = "auto"
    data_root: str | None = None  # where training sets and the test sets live
    train_sets: tuple[str, ...] = ()  # data.hr (names under data_root, or folders); () = the recipe's
    val_set: str | None = None  # val.set (a folder or a slice such as BSD200:190-199); None = the recipe's
    overrides: tuple[str, ...] = ()  # extra sisr train overrides for every variant
    hparams: Mapping[str, Any] = field(default_factory=dict)  # merged over every variant (a reduced size)
    weights: Mapping[str, str] = field(default_factory=dict)  # evaluation tables: "model:scale" -> file
    counts_only: bool = False  # complexity tables: parameters and FLOPs only (a later run measures the rest)

    def identity(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k not in ("device", "counts_only")}


def run_experiment(name: str | Experiment, out: str | os.PathLike, options: ExperimentOptions = ExperimentOptions(),
                   *, progress: Callable[[str], None] = print) -> Path:
    """Train and score every variant of ``name`` into ``out`` (resumable); return ``out``."""
    exp = name if isinstance(name, Experiment) else get_experiment(name)
    out = Path(out)
    check_options(exp, options)
    _claim_folder(out, exp, options)
    if exp.kind in RUNNERS:
        RUNNERS[exp.kind](exp, out, options, progress)
        return out
    jobs = [(v, seed) for v in exp.variants for seed in range(1, options.seeds + 1)]
    for n, (variant, seed) in enumerate(jobs, 1):
        run = out / "runs" / run_name(exp, variant, seed)
        if (run / "result.json").is_file():
            progress(f"[{n}/{len(jobs)}] {variant.label} seed {seed}: done")
            continue
        progress(f"[{n}/{len(jobs)}] {variant.label} seed {seed}: training ({run})")
        start = time.perf_counter()
        train(variant.recipe or exp.recipe, train_overrides(exp, variant, seed, options), run_dir=run)
        _score_run(exp, variant, seed, run, options, time.perf_counter() - start)
        progress(f"[{n}/{len(jobs)}] {variant.label} seed {seed}: scored")
    return out


# the options each kind of table uses (device and tiny: all); the command-line spelling of each
OPTIONS_USED = {"ablation": {"iterations", "seeds", "data_root", "train_sets", "val_set", "overrides", "hparams"},
                "evaluation": {"data_root", "weights"}, "complexity": {"hparams", "counts_only"}}
FLAGS = {"iterations": "--iterations", "seeds": "--seeds", "data_root": "--data-root", "train_sets": "--train-sets",
         "val_set": "--val-set", "overrides": "--set", "hparams": "--hparams", "weights": "--weights",
         "counts_only": "--counts-only"}


def check_options(exp: Experiment, options: ExperimentOptions) -> None:
    """A one-line ``ConfigError`` for options the experiment's kind does not use (they would be ignored)."""
    default = ExperimentOptions()
    unused = [FLAGS[f] for f in FLAGS if f not in OPTIONS_USED[exp.kind] and getattr(options, f) != getattr(default, f)]
    if unused:
        raise ConfigError(f"{exp.name} is {'an' if exp.kind[0] in 'ae' else 'a'} {exp.kind} table: "
                          f"{', '.join(unused)} {'does' if len(unused) == 1 else 'do'} not apply to it")


def run_name(exp: Experiment, variant: Variant, seed: int) -> str:
    """``<position>-<label>-s<seed>``: the position keeps labels that differ only in symbols apart."""
    return f"{exp.variants.index(variant) + 1:02d}-{slug(variant.label)}-s{seed}"


def _claim_folder(out: Path, exp: Experiment, options: ExperimentOptions) -> None:
    """Write DIR/experiment.json, or check that the folder holds this experiment with these options (a folder
    holding nothing else, e.g. after a run that failed on a bad option, is claimed again)."""
    record = {"experiment": exp.name, "options": options.identity()}
    path = out / "experiment.json"
    if path.is_file():
        if any(p.is_file() and p != path for p in out.rglob("*")):  # results: the options must be the same
            old = json.loads(path.read_text())
            if {k: old.get(k) for k in record} != json.loads(json.dumps(record)):
                raise ConfigError(f"{out}: holds experiment '{old.get('experiment')}' run with other options "
                                  f"({old.get('options')}); choose another output folder")
            return
    elif out.exists() and any(out.iterdir()):
        raise ConfigError(f"{out}: exists and is not an experiment folder (no experiment.json)")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps({**record, "definition": exp.summary()}, indent=2) + "\n", overwrite=True)


def variant_hparams(exp: Experiment, variant: Variant, options: ExperimentOptions) -> dict[str, Any]:
    """The variant's constructor arguments: tiny or as defined, then the options' reduced size over them."""
    base = exp.hparams if variant.model == exp.model else {}
    own = variant.tiny_hparams(base) if options.tiny else dict(variant.hparams)
    return {**own, **options.hparams}


def train_overrides(exp: Experiment, variant: Variant, seed: int, options: ExperimentOptions) -> list[str]:
    """The ``sisr train`` overrides of one variant: protocol, model, data, seed, budget."""
    items: dict[str, Any] = {**exp.train, "model.name": variant.model, "model.scale": exp.scale,
                             "model.hparams": variant_hparams(exp, variant, options), "train.seed": seed,
                             "train.device": options.device, "train.test_sets": []}  # scored by the experiment
    if options.data_root:
        items["data.root"] = items["val.root"] = str(options.data_root)
    if options.train_sets:
        items["data.hr"] = list(options.train_sets)
    if options.val_set:
        items["val.set"] = options.val_set
    if options.tiny:
        items.update(TINY_TRAIN)
    overrides = [_override(k, v) for k, v in items.items()]
    iterations = options.iterations or (5 if options.tiny else None)
    if iterations:
        overrides += scaled_schedule(variant.recipe or exp.recipe, overrides, iterations)
    return overrides + list(options.overrides)  # the user's last: they win


def _override(key: str, value: Any) -> str:
    return f"{key}={json.dumps(value)}"  # JSON is YAML: lists, mappings, null, numbers, strings


def scaled_schedule(recipe: str, overrides: Sequence[str], iterations: int) -> list[str]:
    """The recipe's schedule scaled from its own length to ``iterations`` updates (milestones included)."""
    cfg = load_config(recipe, list(overrides))
    ratio = iterations / cfg.train.iterations
    out = {"train.iterations": iterations, "val.every": max(1, iterations // 10),
           "train.checkpoint_every": max(1, iterations // 20)}
    if cfg.schedule.step:
        out["schedule.step"] = max(1, round(cfg.schedule.step * ratio))
    if cfg.schedule.milestones:
        out["schedule.milestones"] = [max(1, round(m * ratio)) for m in cfg.schedule.milestones]
    return [_override(k, v) for k, v in out.items()]


def _score_run(exp: Experiment, variant: Variant, seed: int, run: Path, options: ExperimentOptions,
               seconds: float) -> None:
    weights = run / "best.safetensors"
    if not weights.is_file():
        weights = run / "latest.safetensors"
    hparams = variant_hparams(exp, variant, options)
    params = count_parameters(create_model(variant.model, scale=exp.scale, **hparams))
    datasets = exp.datasets[:1] if options.tiny else exp.datasets
    cfg = load_config(run / "config.yaml")
    val_name = exp.train.get("val.set")  # a table reporting its validation set: the best validation score
    scores = {d: best_validation(run) for d in datasets if d == val_name}
    present = set(list_sets(_data_root(options)))
    tests = [d for d in datasets if d != val_name and d in present]
    missing = {d: "not found under the data root" for d in datasets if d != val_name and d not in present}
    if tests:
        res = evaluate(weights, data_root=_data_root(options), datasets=tests, scales=[exp.scale],
                       device=options.device, progress=False)
        scores.update({s.dataset: {"psnr": s.psnr_y, "ssim": s.ssim_y} for s in res.sets})
    result = {"experiment": exp.name, "label": variant.label, "seed": seed, "model": variant.model,
              "scale": exp.scale, "hparams": hparams, "params": params, "iterations": cfg.train.iterations,
              "weights": weights.name, "scores": scores, "seconds": round(seconds, 1), "tiny": options.tiny,
              "val_set": cfg.val.set, "paper": dict(variant.paper), "unscored": missing}
    atomic_write_text(run / "result.json", json.dumps(result, indent=2) + "\n", overwrite=True)


def best_validation(run: Path) -> dict[str, Any]:
    """The best validation PSNR of a run (and its SSIM, iteration and set), from its val.csv."""
    with open(run / "val.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ConfigError(f"{run}: no validation recorded (val.every=0?): the table reports its validation set")
    best = max(rows, key=lambda r: float(r["psnr"]))
    return {"psnr": float(best["psnr"]), "ssim": float(best["ssim"]), "iteration": int(best["iteration"]),
            "set": best["set"], "validation": True}


def _data_root(options: ExperimentOptions) -> str:
    if options.data_root:
        return str(options.data_root)
    from ..data.benchmark import find_root

    root = find_root(["Set5"])
    if root is None:
        raise ConfigError("no test sets found: give --data-root (a folder with Set5/Set14/B100)")
    return str(root)


def _run_evaluation(exp: Experiment, out: Path, options: ExperimentOptions, progress: Callable[[str], None]) -> None:
    """Score every row x scale of a main results table with the given (or shipped) weights."""
    root = _data_root(options)
    present = [d for d in exp.datasets if d in set(list_sets(root))]
    rows = []
    for row in exp.rows:
        for scale in exp.scales:
            source = _row_weights(row.model, scale, options)
            entry = {"label": row.label, "model": row.model, "scale": scale, "self_ensemble": row.self_ensemble,
                     "paper": {d: list(v) for d, v in row.paper.get(scale, {}).items()}, "scores": {}}
            if source is None:
                entry["missing"] = f"no weights for {row.model} x{scale} (give --weights {row.model}:{scale}=FILE)"
            elif present:
                progress(f"{row.label} x{scale}: scoring {', '.join(present)}")
                entry["scores"], entry["unscored"] = _score_row(exp, row, scale, source, root, present, options)
                entry["weights"] = str(source[1] or "shipped")
            rows.append(entry)
    result = {"experiment": exp.name, "datasets": list(exp.datasets), "present": present, "rows": rows}
    atomic_write_text(out / "eval" / "result.json", json.dumps(result, indent=2) + "\n", overwrite=True)


def _score_row(exp: Experiment, row, scale: int, source: tuple[str, str | None], root: str, datasets: list[str],
               options: ExperimentOptions) -> tuple[dict, dict]:
    """Scores per dataset; a dataset without this degradation's LR files is listed with the reason, not scored."""
    from ..data.benchmark import DatasetError

    scores, unscored = {}, {}
    for dataset in datasets:
        try:
            res = evaluate(source[0], weights=source[1], data_root=root, datasets=[dataset], scales=[scale],
                           self_ensemble=row.self_ensemble, degradation=exp.degradation, device=options.device,
                           progress=False)
        except DatasetError as exc:
            unscored[dataset] = str(exc)
            continue
        scores[dataset] = {"psnr": res.sets[0].psnr_y, "ssim": res.sets[0].ssim_y}
    return scores, unscored


def complexity_path(out: Path, exp: Experiment, row: EvalRow, scale: int) -> Path:
    return out / "complexity" / f"{exp.rows.index(row) + 1:02d}-{slug(row.label)}-x{scale}.json"


def _run_complexity(exp: Experiment, out: Path, options: ExperimentOptions, progress: Callable[[str], None]) -> None:
    """Count every row x scale on the meta device; measure memory and time (in a fresh process per row, on the
    options' device) when the table has those columns and ``counts_only`` is off. A row already written is kept
    (resumable; one written with counts only is measured by a later run without it); tiny: the tiny networks on
    a 16x16 input."""
    timed = bool({"memory_mb", "time_s"} & set(exp.columns)) and not options.counts_only
    for row in exp.rows:
        hparams = {**(dict(get_info(row.model).tiny) if options.tiny else {}), **row.hparams, **options.hparams}
        for scale in exp.scales:
            path, hw = complexity_path(out, exp, row, scale), TINY_INPUT if options.tiny else exp.lr_hw(scale)
            written = json.loads(path.read_text()) if path.is_file() else None
            if written is not None and not (timed and "device" not in written):
                progress(f"{row.label} x{scale}: done")
                continue
            action = "measuring" if written else "counting and measuring" if timed else "counting"
            progress(f"{row.label} x{scale}: {action} ({hw[0]}x{hw[1]} LR)")
            result = written or {"label": row.label, "model": row.model, "scale": scale, "hparams": hparams,
                                 "lr_hw": list(hw), **count_model_flops(row.model, scale, hw, hparams=hparams)}
            if timed:  # tiny: in this process (seconds, for tests; its memory figure is not one to report)
                spec = {"model": row.model, "scale": scale, "hparams": hparams, "input_hw": list(hw), "seed": 0,
                        "device": options.device, "warmup": 1, "runs": 1 if options.tiny else 5, "threads": None}
                result.update((measure if options.tiny else measure_isolated)(spec),
                              device=device_name(resolve_device(options.device)))
            atomic_write_text(path, json.dumps(result, indent=2) + "\n", overwrite=True)


RUNNERS = {"evaluation": _run_evaluation, "complexity": _run_complexity}


def _row_weights(model: str, scale: int, options: ExperimentOptions) -> tuple[str, str | None] | None:
    """(model, weights file or None for shipped/parameter-free), or None when there are no weights."""
    from ..models import has_parameters
    from ..weights.pretrained import pretrained_path

    if not has_parameters(model):
        return model, None
    given = options.weights.get(f"{model}:{scale}") or options.weights.get(str(scale))
    if given:
        return model, given
    return (model, None) if pretrained_path(model, scale) is not None else None
