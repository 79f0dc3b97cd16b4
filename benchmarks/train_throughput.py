"""Training throughput (iterations/s) of every registry model at its recipe's batch and patch.

Each model is built at full size from its recipe (``src/sisr/training/recipes/<model>.yaml``, LR patch
and batch; ``--scale``, default 2) by the engine's own factory (``sisr.training.parts.build_training_parts``:
model, optimizer, loss, the column's precision / channels_last / compile) and trained on random batches
with its step (``parts.make_step()``: forward, L1, backward, Adam step), so the figures are those of
``sisr train`` without the data pipeline (measured separately, last table). Columns:

* ``fp32``: eager, float32 (the reference);
* ``optimised``: bf16 autocast and channels_last (the training engine's ``train.precision=bf16
  train.channels_last=true``), under ``torch.compile`` as well with ``--compile``;
* on request (``--columns``): ``fp32+cl+compile``, ``bf16+cl``, ``bf16+cl+compile``, ``fp32+cl``,
  ``fp32+compile``, ``bf16`` to attribute the differences.

Compilation happens in the first (warm-up) iteration, whose time is reported apart
(``first_s`` in the JSON); a column that fails (e.g. no compiler) shows the error.

Timing: every column of a model is built and warmed up (``--warmup`` iterations, compiling),
then the columns take turns, one timed iteration each, ``--repeats`` rounds (so changing load
from other processes hits all columns alike); the table gives the median (CUDA synchronised). On CPU the big models run with a reduced batch (``--cpu-batch``, default 2;
CSNLN 1, its attention needs ~1.4 GB per x2 sample) and the small ones (< 2 M parameters) with
the recipe batch; the table says which. On a CPU without bf16 instructions (no avx512_bf16 or
amx_bf16 in /proc/cpuinfo) bf16 is emulated and several times slower than fp32; the bf16 columns
are then timed for the small models only (``--cpu-bf16`` times them all). ``--device cuda`` uses the recipe batches.

    .venv/bin/python benchmarks/train_throughput.py                       # all models, CPU
    .venv/bin/python benchmarks/train_throughput.py --models defian-s edsr-baseline --repeats 5
    .venv/bin/python benchmarks/train_throughput.py --device cuda --json benchmarks/results/train_cuda.json

Loss agreement (``--loss-check``): two fixed-seed runs of the real training engine
(``sisr.training.trainer.train``, same seed, same batches from ``--data``, no validation), eager fp32
and the ``--loss-column`` (default ``optimised``); the loss log (mean of every ``--loss-log-every``
iterations) of one against the other: the largest relative difference of a logged window and that
of the mean over the whole run. Target: within 2 %. The it/s ratio is that of the engine's logged
rates (median over the windows after the first, which holds the compilation), data pipeline
included. The CPU form is scaled down (default 150 iterations of the registry's tiny configuration,
batch 16, LR patch 48); ``--loss-full`` is the issue's GPU form (2,000 iterations, full model,
recipe batch and patch, a record every 100):

    .venv/bin/python benchmarks/train_throughput.py --loss-check --models edsr-baseline rcan --repeats 0
    .venv/bin/python benchmarks/train_throughput.py --device cuda --loss-check --loss-full --compile
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import shutil
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

from sisr.training.config import load_config
from sisr.training.parts import build_training_parts
from sisr.training.trainer import resolve_device, train
from sisr.training.log import read_log
from sisr.models import count_parameters, create_model, get_info, has_parameters, list_models
from sisr.utils.device import synchronize
from sisr.utils.fs import atomic_write_text

COLUMNS = {
    "fp32": dict(precision="fp32", channels_last=False, compile=False),
    "optimised": dict(precision="bf16", channels_last=True, compile=False),  # compile with --compile
    "fp32+cl+compile": dict(precision="fp32", channels_last=True, compile=True),
    "bf16+cl": dict(precision="bf16", channels_last=True, compile=False),
    "bf16+cl+compile": dict(precision="bf16", channels_last=True, compile=True),
    # not timed by default; to see which part of the optimised path helps or hurts
    "fp32+cl": dict(precision="fp32", channels_last=True, compile=False),
    "fp32+compile": dict(precision="fp32", channels_last=False, compile=True),
    "bf16": dict(precision="bf16", channels_last=False, compile=False),
}
DEFAULT_COLUMNS = ["fp32", "optimised"]
LOSS_TARGET = 0.02  # relative
SMALL_MODEL = 2_000_000  # parameters: below this the CPU run keeps the recipe batch
CPU_BATCH_OVERRIDES = {"csnln": 1}
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "T91"


def trainable_models() -> list[str]:
    return [n for n in list_models() if has_parameters(n)]


class Variant:
    """One column's network, optimizer and step on fixed random batches."""

    def __init__(self, name: str, scale: int, batch: int, patch: int, column: dict, device: torch.device):
        cfg = load_config(name, [f"model.scale={scale}", "train.seed=0", f"train.precision={column['precision']}",
                                 f"train.channels_last={str(column['channels_last']).lower()}",
                                 f"train.compile={str(column['compile']).lower()}"])
        parts = build_training_parts(cfg, device, data=False)  # the engine's model, optimizer and loss
        parts.model.train()
        self.step = parts.make_step()
        self.device = device
        gen = torch.Generator().manual_seed(0)
        self.lr = torch.rand(batch, 3, patch, patch, generator=gen)
        self.hr = torch.rand(batch, 3, patch * scale, patch * scale, generator=gen)

    def timed(self) -> float:
        """Seconds of one training iteration."""
        synchronize(self.device)
        start = time.perf_counter()
        result = self.step(self.lr, self.hr)
        synchronize(self.device)
        if not result.stepped:
            raise RuntimeError(f"non-finite loss {result.loss}")
        return time.perf_counter() - start


def measure(name: str, scale: int, batch: int, patch: int, columns: list[str], device: torch.device,
            warmup: int, repeats: int, small: bool = True, skip_emulated_bf16: bool = False) -> dict[str, dict]:
    """Build every column, warm each up (compiling), then time them in turns (load hits all alike)."""
    variants, out = {}, {}
    for col in columns:
        if COLUMNS[col]["precision"] == "bf16" and "bf16" not in get_info(name).train_precisions:
            out[col] = {"error": "bf16 not supported by the model"}
            continue
        if COLUMNS[col]["precision"] == "bf16" and device.type == "cpu" and skip_emulated_bf16 and not small:
            out[col] = {"error": "skipped: bf16 is emulated on this CPU (no avx512_bf16/amx); --cpu-bf16 forces it"}
            continue
        print(f"{name} x{scale} batch {batch} patch {patch}: {col} warm-up ...", file=sys.stderr, flush=True)
        try:
            variant = Variant(name, scale, batch, patch, COLUMNS[col], device)
            first = variant.timed()  # includes compilation
            for _ in range(max(0, warmup - 1)):
                variant.timed()
        except Exception as exc:  # report and go on: one failing column must not stop the table
            out[col] = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"}
            traceback.print_exc(limit=2)
            continue
        variants[col], out[col] = variant, {"first_s": first, "times": []}
    for _ in range(repeats):
        for col, variant in variants.items():
            out[col]["times"].append(variant.timed())
    for col in variants:
        median = statistics.median(out[col]["times"])
        out[col].update(it_per_s=1.0 / median, samples_per_s=batch / median, median_s=median)
        print(f"  {col}: {1.0 / median:.4f} it/s (first iteration {out[col]['first_s']:.1f} s)",
              file=sys.stderr, flush=True)
    variants.clear()
    torch._dynamo.reset()
    return out


def native_cpu_bf16() -> bool | None:
    """Whether the CPU has bf16 instructions (Linux /proc/cpuinfo); None when unknown."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    return "avx512_bf16" in flags or "amx_bf16" in flags


def data_throughput(folder: Path, scale: int, patch: int, batch: int, workers: int, batches: int,
                    cache_dir: Path) -> dict:
    from sisr.data.training import PatchDataset, make_loader, prepare_pairs

    start = time.perf_counter()
    pairs = prepare_pairs([folder], scale, patch, cache_dir=cache_dir, report=False)
    prepare = time.perf_counter() - start
    dataset = PatchDataset(pairs, scale, patch, seed=1)
    loader = iter(make_loader(dataset, 0, batches + 2, batch, workers=workers))
    next(loader), next(loader)  # workers started
    start = time.perf_counter()
    for _ in range(batches):
        next(loader)
    seconds = time.perf_counter() - start
    return {"images": len(pairs), "prepare_s": prepare, "batches_per_s": batches / seconds,
            "workers": workers, "batch": batch, "patch": patch}


# ----------------------------------------------------------------------------- loss agreement


def loss_run(name: str, scale: int, column: dict, *, iterations: int, log_every: int, hparams: dict,
             batch: int | None, patch: int | None, data: Path, device: str, cache_dir: Path, seed: int,
             workdir: Path) -> dict:
    """One fixed-seed training run through the engine; its logged losses and wall time."""
    overrides = [f"model.scale={scale}", f"data.hr=[{data.resolve()}]", "data.workers=0",
                 f"data.cache_dir={cache_dir}", "val.set=null", "val.every=0", "val.at_start=false",
                 "train.test_sets=[]",
                 f"log.every={log_every}",
                 "log.plots=false", "log.tensorboard=false", f"train.iterations={iterations}",
                 f"train.checkpoint_every={iterations}", f"train.seed={seed}", f"train.device={device}",
                 f"train.precision={column['precision']}",
                 f"train.channels_last={str(column['channels_last']).lower()}",
                 f"train.compile={str(column['compile']).lower()}"]
    overrides += [f"model.hparams.{k}={v}" for k, v in hparams.items()]
    if batch:
        overrides.append(f"train.batch_size={batch}")
    if patch:
        overrides.append(f"data.patch_size={patch}")
    start = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):  # the engine's log lines
        run_dir = train(name, overrides, run_dir=workdir)
    seconds = time.perf_counter() - start
    records = [r for r in read_log(run_dir) if r.get("type") == "train"]
    cfg = load_config(run_dir / "config.yaml")
    torch._dynamo.reset()
    rates = [r["it_per_s"] for r in records[1:]] or [r["it_per_s"] for r in records]  # first window: compiling
    return {"iterations": [r["iteration"] for r in records], "loss": [r["loss"] for r in records],
            "skipped": sum(r.get("skipped", 0) for r in records), "wall_s": seconds,
            "it_per_s": statistics.median(rates), "batch": cfg.train.batch_size, "patch": cfg.data.patch_size}


def loss_check(name: str, args, device: torch.device) -> dict:
    """fp32 eager against ``args.loss_column`` over the same fixed-seed run: relative loss differences."""
    info = get_info(name)
    hparams = {} if args.loss_full else dict(info.tiny)
    iterations = args.loss_iterations or (2000 if args.loss_full else 150)
    log_every = args.loss_log_every or (100 if args.loss_full else 10)
    batch = None if args.loss_full else args.loss_batch
    patch = None if args.loss_full else args.loss_patch
    from sisr.data.training import prepare_pairs

    prepare_pairs([args.data], args.scale, patch or load_config(name).data.patch_size, cache_dir=args.cache_dir,
                  report=False)  # the data cache exists before either run starts
    workroot = Path(tempfile.mkdtemp(prefix=f"sisr-loss-{name}-"))
    runs = {}
    try:
        for col in ("fp32", args.loss_column):
            print(f"{name}: loss check, {col}, {iterations} iterations ...", file=sys.stderr, flush=True)
            runs[col] = loss_run(name, args.scale, COLUMNS[col], iterations=iterations, log_every=log_every,
                                 hparams=hparams, batch=batch, patch=patch, data=args.data, device=str(device),
                                 cache_dir=args.cache_dir, seed=args.loss_seed, workdir=workroot / col)
    finally:
        shutil.rmtree(workroot, ignore_errors=True)
    ref, opt = runs["fp32"], runs[args.loss_column]
    rel = [abs(b - a) / abs(a) for a, b in zip(ref["loss"], opt["loss"])]
    mean_ref, mean_opt = statistics.fmean(ref["loss"]), statistics.fmean(opt["loss"])
    result = {"model": name, "config": "full" if args.loss_full else "tiny", "hparams": hparams,
              "column": args.loss_column, "iterations": iterations, "log_every": log_every,
              "batch": ref["batch"], "patch": ref["patch"], "seed": args.loss_seed, "runs": runs,
              "max_window_rel_diff": max(rel), "mean_rel_diff": abs(mean_opt - mean_ref) / mean_ref,
              "it_per_s_ratio": opt["it_per_s"] / ref["it_per_s"]}
    result["within_target"] = result["max_window_rel_diff"] <= LOSS_TARGET
    print(f"  {name}: max window rel. diff {result['max_window_rel_diff']:.2%}, mean over the run "
          f"{result['mean_rel_diff']:.2%}, loss {ref['loss'][0]:.4f} -> {ref['loss'][-1]:.4f} (fp32)",
          file=sys.stderr, flush=True)
    return result


def _print_loss_table(rows: list[dict]) -> None:
    print("| model | config | batch | LR patch | iterations (window) | fp32 loss first -> last window | "
          "max window rel. diff | mean rel. diff | it/s ratio | within 2 % |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        ref = r["runs"]["fp32"]["loss"]
        print(f"| {r['model']} | {r['config']} | {r['batch']} | {r['patch']} | {r['iterations']} ({r['log_every']}) "
              f"| {ref[0]:.4f} -> {ref[-1]:.4f} | {r['max_window_rel_diff']:.2%} | {r['mean_rel_diff']:.2%} "
              f"| {r['it_per_s_ratio']:.2f}x | {'yes' if r['within_target'] else 'NO'} |")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", help="registry names (default: every trainable model)")
    parser.add_argument("--scale", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N (default cpu)")
    parser.add_argument("--columns", nargs="+", choices=list(COLUMNS), default=DEFAULT_COLUMNS)
    parser.add_argument("--batch", type=int, help="batch for every model (default: see above)")
    parser.add_argument("--cpu-batch", type=int, default=2, help="CPU batch of the big models (default 2)")
    parser.add_argument("--cpu-bf16", action="store_true",
                        help="time bf16 on CPU for the big models too, even where bf16 is emulated (slow)")
    parser.add_argument("--compile", action="store_true", help="the optimised column under torch.compile too")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds; 0 skips the throughput table")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="HR folder for the data-pipeline row")
    parser.add_argument("--data-workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--cache-dir", type=Path, default=Path("/tmp/sisr-bench-cache"))
    parser.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "train_throughput.json")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing JSON file")
    loss = parser.add_argument_group("loss agreement")
    loss.add_argument("--loss-check", action="store_true", help="compare fixed-seed training losses (see above)")
    loss.add_argument("--loss-column", choices=list(COLUMNS), default="optimised")
    loss.add_argument("--loss-full", action="store_true",
                      help="the GPU form: 2,000 iterations, full model, recipe batch and patch")
    loss.add_argument("--loss-iterations", type=int, help="default 150 (2,000 with --loss-full)")
    loss.add_argument("--loss-log-every", type=int, help="window of the logged mean loss (default 10; 100 full)")
    loss.add_argument("--loss-batch", type=int, default=16)
    loss.add_argument("--loss-patch", type=int, default=48)
    loss.add_argument("--loss-seed", type=int, default=1)
    args = parser.parse_args()
    if args.json.exists() and not args.overwrite:
        parser.error(f"{args.json} exists (use --overwrite or --json)")
    if args.loss_check and not (args.data and args.data.is_dir()):
        parser.error(f"--loss-check needs training images: {args.data} is not a folder (--data)")
    return args


def throughput_rows(args, models: list[str], device: torch.device) -> list[dict]:
    rows = []
    for name in models if args.repeats > 0 else []:
        cfg = load_config(name, [f"model.scale={args.scale}"])
        params = count_parameters(create_model(name, scale=args.scale))
        recipe_batch, patch = cfg.train.batch_size, cfg.data.patch_size
        if args.batch:
            batch = args.batch
        elif device.type == "cpu" and params >= SMALL_MODEL:
            batch = CPU_BATCH_OVERRIDES.get(name, args.cpu_batch)
        else:
            batch = recipe_batch
        row = {"model": name, "scale": args.scale, "params": params, "patch": patch, "batch": batch,
               "recipe_batch": recipe_batch, "columns": {}}
        row["columns"] = measure(name, args.scale, batch, patch, args.columns, device, args.warmup, args.repeats,
                                 small=params < SMALL_MODEL,
                                 skip_emulated_bf16=not args.cpu_bf16 and native_cpu_bf16() is False)
        rows.append(row)
        _print_table(rows, args.columns)
    return rows


def main() -> int:
    args = parse_args()
    if args.compile:
        COLUMNS["optimised"] = dict(COLUMNS["optimised"], compile=True)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    models = args.models or trainable_models()
    rows = throughput_rows(args, models, device)
    loss_rows = [loss_check(name, args, device) for name in models] if args.loss_check else []
    data_rows = []
    if args.data and args.data.is_dir() and args.repeats > 0:
        for workers in args.data_workers:
            data_rows.append(data_throughput(args.data, args.scale, 48 if args.scale <= 2 else 32, 16, workers, 30,
                                             args.cache_dir))
    result = {
        "benchmark": "train_throughput", "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or
        platform.machine(),
        "torch": torch.__version__, "threads": torch.get_num_threads(),
        "cpu_native_bf16": native_cpu_bf16() if device.type == "cpu" else None,
        "python": platform.python_version(), "command": " ".join(sys.argv), "warmup": args.warmup,
        "repeats": args.repeats, "columns": {c: COLUMNS[c] for c in args.columns}, "rows": rows,
        "loss_check": loss_rows, "data_pipeline": data_rows,
    }
    report(args, result)
    return 0


def report(args, result: dict) -> None:
    print()
    if result["rows"]:
        _print_table(result["rows"], args.columns, final=True)
    if result["loss_check"]:
        print()
        _print_loss_table(result["loss_check"])
    for d in result["data_pipeline"]:
        print(f"data pipeline ({args.data.name}, x{args.scale}, batch {d['batch']}, patch {d['patch']}, "
              f"{d['workers']} workers): {d['batches_per_s']:.1f} batches/s "
              f"(first preparation {d['prepare_s']:.1f} s for {d['images']} images)")
    print(f"device {result['device']} ({result['device_name']}), torch {result['torch']}, "
          f"{result['threads']} threads")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.json, json.dumps(result, indent=2) + "\n", overwrite=args.overwrite)
    print(f"wrote {args.json}")


def _print_table(rows: list[dict], columns: list[str], final: bool = False) -> None:
    out = sys.stdout if final else sys.stderr
    head = ["model", "params", "batch", "patch"] + [f"{c} it/s" for c in columns]
    if "fp32" in columns and len(columns) > 1:
        head += [f"{c} / fp32" for c in columns if c != "fp32"]
    lines = [head]
    for r in rows:
        cells = [r["model"], f"{r['params'] / 1e6:.2f}M",
                 f"{r['batch']}" + ("" if r["batch"] == r["recipe_batch"] else f" (recipe {r['recipe_batch']})"),
                 str(r["patch"])]
        for c in columns:
            v = r["columns"].get(c, {})
            cells.append(f"{v['it_per_s']:.3f}" if "it_per_s" in v else "n/a")
        if "fp32" in columns and len(columns) > 1:
            base = r["columns"].get("fp32", {}).get("it_per_s")
            for c in columns:
                if c == "fp32":
                    continue
                v = r["columns"].get(c, {}).get("it_per_s")
                cells.append(f"{v / base:.2f}x" if v and base else "n/a")
        lines.append(cells)
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    for line in lines:
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip(), file=out)
    if final:
        print("columns: " + "; ".join(f"{c} = {_label(COLUMNS[c])}" for c in columns), file=out)
    errors = [(r["model"], c, v["error"]) for r in rows for c, v in r["columns"].items() if "error" in v]
    for model, col, err in errors if final else []:
        print(f"  {model} {col}: {err}", file=out)


def _label(column: dict) -> str:
    return "+".join([column["precision"]] + (["channels_last"] if column["channels_last"] else []) +
                    (["compile"] if column["compile"] else []))


if __name__ == "__main__":
    raise SystemExit(main())
