"""Training throughput (iterations/s) of every trainable registry model at its recipe's batch and patch, eager fp32
against bf16 + channels_last (and other columns); ``--loss-check``: the loss of two fixed-seed runs of the real
engine, fp32 against a column. Method: docs/benchmarks.md.

    .venv/bin/python benchmarks/train_throughput.py                       # all models, CPU
    .venv/bin/python benchmarks/train_throughput.py --models defian-s edsr-baseline --repeats 5
    .venv/bin/python benchmarks/train_throughput.py --device cuda --json benchmarks/results/train_cuda.json
    .venv/bin/python benchmarks/train_throughput.py --loss-check --models edsr-baseline rcan --repeats 0
    .venv/bin/python benchmarks/train_throughput.py --device cuda --loss-check --loss-full --compile
"""

from __future__ import annotations

import contextlib
import json
import shutil
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

import common  # benchmarks/common.py (makes sisr importable from a checkout)
import torch
from common import fmt, md_table, native_cpu_bf16, one_line, rotate, timed, with_peak

from sisr.models import count_parameters, create_model, get_info, has_parameters, list_models
from sisr.training.config import load_config
from sisr.training.log import read_log
from sisr.training.parts import build_training_parts
from sisr.training.trainer import train
from sisr.utils.device import resolve_device

COLUMNS = {
    "fp32": dict(precision="fp32", channels_last=False, compile=False),
    "optimised": dict(precision="bf16", channels_last=True, compile=False),  # compile with --compile
    "fp32+cl+compile": dict(precision="fp32", channels_last=True, compile=True),
    "bf16+cl": dict(precision="bf16", channels_last=True, compile=False),
    "bf16+cl+compile": dict(precision="bf16", channels_last=True, compile=True),
    "fp32+cl": dict(precision="fp32", channels_last=True, compile=False),
    "fp32+compile": dict(precision="fp32", channels_last=False, compile=True),
    "bf16": dict(precision="bf16", channels_last=False, compile=False),
}
LOSS_TARGET = 0.02  # relative
SMALL_MODEL = 2_000_000  # parameters: below this the CPU run keeps the recipe batch
CPU_BATCH_OVERRIDES = {"csnln": 1}


def label(column: dict) -> str:
    parts = [column["precision"]] + ["channels_last"] * column["channels_last"] + ["compile"] * column["compile"]
    return "+".join(parts)


def column_overrides(column: dict) -> list[str]:
    return [f"train.precision={column['precision']}", f"train.channels_last={str(column['channels_last']).lower()}",
            f"train.compile={str(column['compile']).lower()}"]


def training_step(name: str, scale: int, batch: int, patch: int, column: dict, device, hparams: dict | None = None):
    """One column's step as ``sisr train`` builds it (``build_training_parts``: model, optimizer, loss, precision,
    layout, compile) on fixed random batches; calling it times one iteration."""
    cfg = load_config(name, [f"model.scale={scale}", "train.seed=0", *column_overrides(column)] +
                      ([f"model.hparams={json.dumps(hparams)}"] if hparams else []))
    parts = build_training_parts(cfg, device, data=False)
    parts.model.train()
    step, gen = parts.make_step(), torch.Generator().manual_seed(0)
    lr = torch.rand(batch, 3, patch, patch, generator=gen)
    hr = torch.rand(batch, 3, patch * scale, patch * scale, generator=gen)

    def one() -> float:
        seconds, result = timed(lambda: step(lr, hr), device)
        if not result.stepped:
            raise RuntimeError(f"non-finite loss {result.loss}")
        return seconds
    return one


def measure(name: str, scale: int, batch: int, patch: int, columns: list[str], device, warmup: int, repeats: int,
            skip_bf16: bool = False, hparams: dict | None = None) -> dict[str, dict]:
    """Build every column, warm each up (compiling), then time them in rotating rounds."""
    steps, out = {}, {}
    for col in columns:
        bf16 = COLUMNS[col]["precision"] == "bf16"
        if bf16 and "bf16" not in get_info(name).capabilities.train_precisions:
            out[col] = {"error": "bf16 not supported by the model"}
            continue
        if bf16 and skip_bf16:
            out[col] = {"error": "skipped: bf16 is emulated on this CPU (no avx512_bf16/amx); --cpu-bf16 forces it"}
            continue
        print(f"{name} x{scale} batch {batch} patch {patch}: {col} warm-up ...", file=sys.stderr, flush=True)
        try:
            one = training_step(name, scale, batch, patch, COLUMNS[col], device, hparams)
            first, peak = with_peak(one, device)  # the first iteration includes compilation
            for _ in range(max(0, warmup - 1)):
                one()
        except Exception as exc:  # noqa: BLE001 - one failing column must not stop the table
            out[col] = {"error": one_line(exc)}
            traceback.print_exc(limit=2)
            continue
        steps[col], out[col] = one, {"first_s": first, "peak_memory_bytes": peak}
    for col, times in rotate(steps, repeats, lambda one: one()).items():
        median = statistics.median(times)
        out[col].update(times=times, median_s=median, it_per_s=1.0 / median, samples_per_s=batch / median)
    steps.clear()
    torch._dynamo.reset()
    common.free(device)
    return out


def throughput_rows(args, models: list[str], device) -> list[dict]:
    rows = []
    for name in models if args.repeats > 0 else []:
        cfg = load_config(name, [f"model.scale={args.scale}"])
        params = count_parameters(create_model(name, scale=args.scale))
        recipe_batch, patch = cfg.train.batch_size, cfg.data.patch_size
        batch = args.batch or (CPU_BATCH_OVERRIDES.get(name, args.cpu_batch)
                               if device.type == "cpu" and params >= SMALL_MODEL else recipe_batch)
        skip = (device.type == "cpu" and params >= SMALL_MODEL and not args.cpu_bf16 and native_cpu_bf16() is False)
        rows.append({"model": name, "scale": args.scale, "params": params, "patch": patch, "batch": batch,
                     "recipe_batch": recipe_batch, "columns": measure(name, args.scale, batch, patch, args.columns,
                                                                      device, args.warmup, args.repeats, skip)})
        print("\n".join(table_lines(rows, args.columns)), file=sys.stderr)
    return rows


# ----------------------------------------------------------------------------- loss agreement


def loss_run(name: str, scale: int, column: dict, *, iterations: int, log_every: int, hparams: dict,
             batch: int | None, patch: int | None, data: Path, device: str, cache_dir: Path, seed: int,
             workdir: Path) -> dict:
    """One fixed-seed training run through the engine; its logged losses and rate."""
    overrides = [f"model.scale={scale}", f"data.hr=[{data.resolve()}]", "data.workers=0", f"data.cache_dir={cache_dir}",
                 "val.set=null", "val.every=0", "val.at_start=false", "train.test_sets=[]", f"log.every={log_every}",
                 "log.plots=false", "log.tensorboard=false", f"train.iterations={iterations}",
                 f"train.checkpoint_every={iterations}", f"train.seed={seed}", f"train.device={device}",
                 *column_overrides(column), *[f"model.hparams.{k}={v}" for k, v in hparams.items()]]
    overrides += [f"train.batch_size={batch}"] * bool(batch) + [f"data.patch_size={patch}"] * bool(patch)
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


def loss_check(name: str, args, device) -> dict:
    """fp32 eager against ``args.loss_column`` over the same fixed-seed run: relative loss differences."""
    hparams = {} if args.loss_full else dict(get_info(name).tiny)
    iterations = args.loss_iterations or (2000 if args.loss_full else 150)
    log_every = args.loss_log_every or (100 if args.loss_full else 10)
    batch, patch = (None, None) if args.loss_full else (args.loss_batch, args.loss_patch)
    from sisr.data.training import prepare_pairs

    prepare_pairs([args.data], args.scale, patch or load_config(name).data.patch_size, cache_dir=args.cache_dir,
                  report=False)  # the data cache exists before either run starts
    workroot, runs = Path(tempfile.mkdtemp(prefix=f"sisr-loss-{name}-")), {}
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
              "column": args.loss_column, "iterations": iterations, "log_every": log_every, "batch": ref["batch"],
              "patch": ref["patch"], "seed": args.loss_seed, "runs": runs, "max_window_rel_diff": max(rel),
              "mean_rel_diff": abs(mean_opt - mean_ref) / mean_ref, "it_per_s_ratio": opt["it_per_s"] / ref["it_per_s"]}
    result["within_target"] = result["max_window_rel_diff"] <= LOSS_TARGET
    print(f"  {name}: max window rel. diff {result['max_window_rel_diff']:.2%}, mean over the run "
          f"{result['mean_rel_diff']:.2%}", file=sys.stderr, flush=True)
    return result


# ----------------------------------------------------------------------------- main


def parse_args(argv=None):
    p = common.make_parser(__doc__, "train_throughput.json")
    p.add_argument("--models", nargs="+", help="registry names (default: every trainable model)")
    p.add_argument("--scale", type=int, default=2)
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N (default cpu)")
    p.add_argument("--columns", nargs="+", choices=list(COLUMNS), default=["fp32", "optimised"])
    p.add_argument("--batch", type=int, help="batch for every model (default: the recipe's; on CPU see --cpu-batch)")
    p.add_argument("--cpu-batch", type=int, default=2, help="CPU batch of the models >= 2 M parameters (default 2)")
    p.add_argument("--cpu-bf16", action="store_true", help="time bf16 of the big models where bf16 is emulated")
    p.add_argument("--compile", action="store_true", help="the optimised column under torch.compile too")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3, help="timed rounds; 0 skips the throughput table")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    p.add_argument("--data", type=Path, default=common.DATASETS / "T91", help="HR folder of the loss check")
    p.add_argument("--cache-dir", type=Path, default=Path("/tmp/sisr-bench-cache"))
    loss = p.add_argument_group("loss agreement")
    loss.add_argument("--loss-check", action="store_true", help="compare fixed-seed training losses")
    loss.add_argument("--loss-column", choices=list(COLUMNS), default="optimised")
    loss.add_argument("--loss-full", action="store_true", help="GPU form: 2,000 iterations, full model, recipe batch")
    loss.add_argument("--loss-iterations", type=int, help="default 150 (2,000 with --loss-full)")
    loss.add_argument("--loss-log-every", type=int, help="window of the logged mean loss (default 10; 100 full)")
    loss.add_argument("--loss-batch", type=int, default=16)
    loss.add_argument("--loss-patch", type=int, default=48)
    loss.add_argument("--loss-seed", type=int, default=1)
    args = p.parse_args(argv)
    common.check_json(args.json, args.overwrite)
    if args.loss_check and not args.data.is_dir():
        p.error(f"--loss-check needs training images: {args.data} is not a folder (--data)")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.compile:
        COLUMNS["optimised"] = dict(COLUMNS["optimised"], compile=True)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    models = args.models or [n for n in list_models() if has_parameters(n)]
    rows = throughput_rows(args, models, device)
    losses = [loss_check(name, args, device) for name in models] if args.loss_check else []
    print("\n".join(table_lines(rows, args.columns) if rows else []))
    print("columns: " + "; ".join(f"{c} = {label(COLUMNS[c])}" for c in args.columns))
    print("\n".join([""] + loss_lines(losses)) if losses else "")
    common.write_json(args.json, {"benchmark": "train_throughput", "device": str(device),
                                  "cpu_native_bf16": native_cpu_bf16() if device.type == "cpu" else None,
                                  "warmup": args.warmup, "repeats": args.repeats,
                                  "columns": {c: COLUMNS[c] for c in args.columns}, "rows": rows,
                                  "loss_check": losses}, args.overwrite)
    return 0


def loss_lines(losses: list[dict]) -> list[str]:
    return md_table(["model", "config", "batch", "LR patch", "iterations (window)", "fp32 loss first -> last window",
                     "max window rel. diff", "mean rel. diff", "it/s ratio", "within 2 %"],
                    [[r["model"], "error: " + r["error"]] + [""] * 8 if "error" in r else
                     [r["model"], r["config"], str(r["batch"]), str(r["patch"]),
                      f"{r['iterations']} ({r['log_every']})",
                      f"{r['runs']['fp32']['loss'][0]:.4f} -> {r['runs']['fp32']['loss'][-1]:.4f}",
                      f"{r['max_window_rel_diff']:.2%}", f"{r['mean_rel_diff']:.2%}", f"{r['it_per_s_ratio']:.2f}x",
                      "yes" if r["within_target"] else "NO"] for r in losses])


def table_lines(rows: list[dict], columns: list[str]) -> list[str]:
    others = [c for c in columns if c != "fp32"] if "fp32" in columns else []
    lines = []
    for r in rows:
        its = {c: r["columns"].get(c, {}).get("it_per_s") for c in columns}
        lines.append([r["model"], f"{r['params'] / 1e6:.2f}M", f"{r['batch']}" + (
            "" if r["batch"] == r["recipe_batch"] else f" (recipe {r['recipe_batch']})"), str(r["patch"])] +
            [fmt(its[c], "{:.3f}") for c in columns] +
            [fmt(its[c] / its["fp32"] if its[c] and its["fp32"] else None, "{:.2f}x") for c in others])
    errors = [f"  {r['model']} {c}: {v['error']}" for r in rows for c, v in r["columns"].items() if "error" in v]
    return md_table(["model", "params", "batch", "patch"] + [f"{c} it/s" for c in columns] +
                    [f"{c} / fp32" for c in others], lines) + errors


if __name__ == "__main__":
    raise SystemExit(main())
