"""Every GPU figure of the performance work in one command that fits a short device lease.

Sections (docs/benchmarks.md), each in its own try/except (a failing one is recorded with its one-line error),
results rewritten after every section: ``peak`` (roofline.peak_rates), ``csnln`` (csnln.compare_paths), ``table7``
(the cran-table7 experiment: CRAN's Table 7), ``inference`` (inference.measure_model), ``train``
(train_throughput.measure and loss_check) and ``loader`` (data_loader.loader_rates against what each model's fastest
correct setting consumes).
``--budget-s`` scales the repeats and is shared out between the sections; ``--dry-run`` is the same code on the CPU
with tiny models and sizes (a test runs it).

    PYTHONPATH=src python benchmarks/gpu_suite.py --out $OUT/gpu --data .gpu-data --budget-s 400
    python benchmarks/gpu_suite.py --dry-run --out /tmp/gpu-suite                   # CPU, under a minute
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import tempfile
import time
import traceback
from argparse import Namespace
from pathlib import Path

import common  # benchmarks/common.py (makes sisr importable from a checkout)
import csnln
import data_loader
import inference
import torch
import train_throughput
from common import fmt, free, md_table, one_line

from sisr.evaluation import roofline
from sisr.data.prepare import available_cpus
from sisr.data.training import IterationSampler, PatchDataset
from sisr.errors import ConfigError, SisrError
from sisr.experiments import ExperimentOptions, run_experiment
from sisr.experiments.table import collect, render
from sisr.models import count_parameters, create_model, get_info, has_parameters, list_models
from sisr.training.config import load_config
from sisr.utils.device import device_name, resolve_device
from sisr.utils.environment import environment
from sisr.utils.fs import atomic_write_text, check_outputs

SECTIONS = ("peak", "csnln", "table7", "inference", "train", "loader")
SHARES = {"peak": 0.03, "csnln": 0.12, "table7": 0.2, "inference": 0.3, "train": 0.3, "loader": 0.05}
BUDGET_S = 400.0  # the budget the base repeats are set for
SCALE = 2
GPU = dict(peak_n=8192, peak_reps=10, copy_mib=512, csnln_size=160, out_hw=(720, 1280),
           infer_csnln=160, tiny=False, train_batch=None, train_patch=None, loss_iterations=300, loss_log_every=50,
           loader_images=8, loader_size=(2040, 1356), loader_batches=40, loader_workers=(1, 2, 4, 8, 16))
DRY = dict(peak_n=128, peak_reps=2, copy_mib=4, csnln_size=12, out_hw=(32, 32),
           infer_csnln=8, tiny=True, train_batch=2, train_patch=12, loss_iterations=4, loss_log_every=2,
           loader_images=2, loader_size=(96, 64), loader_batches=4, loader_workers=(1,))


class Context:
    def __init__(self, args, device: torch.device, results: dict):
        self.args, self.device, self.results = args, device, results
        self.p = DRY if args.dry_run else GPU
        self.deadline = math.inf
        with torch.device("meta"):
            self.params = {m: count_parameters(create_model(m, SCALE)) for m in list_models()}

    def runs(self, base: int) -> int:
        return max(1, round(base * self.args.budget_s / BUDGET_S))

    def over(self) -> bool:
        return time.monotonic() > self.deadline

    def models(self, trainable: bool) -> list[str]:
        """``--models``, else the registry's, smallest first (within a budget the small ones are measured first)."""
        names = self.args.models or sorted(self.params, key=self.params.get)
        return [m for m in names if not trainable or has_parameters(m)]

    def hparams(self, name: str) -> dict:
        return dict(get_info(name).tiny) if self.p["tiny"] else {}

    def peaks(self) -> dict | None:
        sec = self.results["sections"].get("peak", {})
        return sec["result"] if sec.get("status") == "ok" else None


def section_peak(ctx: Context) -> dict:
    return {"n": ctx.p["peak_n"], "reps": ctx.p["peak_reps"], **roofline.peak_rates(
        ctx.device, ctx.p["peak_n"], reps=ctx.p["peak_reps"], calls=3, copy_mib=ctx.p["copy_mib"])}


def section_csnln(ctx: Context) -> dict:
    return csnln.compare_paths(ctx.device, ctx.p["csnln_size"], ctx.runs(3), ctx.peaks(), ctx.hparams("csnln"))


def section_table7(ctx: Context) -> dict:
    """CRAN's Table 7 (parameters, FLOPs, memory, time at x2 on 3x160x160) as ``sisr experiment run cran-table7``;
    the experiment's folder is kept under --out (resumable: a rerun measures only the rows not yet written)."""
    out = ctx.args.out / "cran-table7"
    run_experiment("cran-table7", out, ExperimentOptions(device=str(ctx.device), tiny=ctx.p["tiny"]),
                   progress=lambda line: print(line, file=sys.stderr, flush=True))
    return collect(out)


def section_inference(ctx: Context) -> dict:
    """inference.py's eager / optimised / cl / bf16 per model; then optimised + compile for --compile-models."""
    oh, ow = ctx.p["out_hw"]
    size = lambda name: (ctx.p["infer_csnln"],) * 2 if name == "csnln" else (math.ceil(oh / SCALE),  # noqa: E731
                                                                              math.ceil(ow / SCALE))
    ns = Namespace(tiny=ctx.p["tiny"], precision="bf16", compile=False, warmup=1, runs=ctx.runs(5))
    rows, skipped, key = {}, [], roofline.fp32_peak_key(ctx.device)
    for name in ctx.models(trainable=False):
        if ctx.over():
            skipped.append(name)
            continue
        row = rows[name] = inference.measure_model(name, SCALE, size(name), inference.DEFAULT_VARIANTS, ns, ctx.device)
        try:
            row["flops"] = inference.model_cost(name, SCALE, size(name), ctx.p["tiny"])["flops"]
            eager = row["variants"].get("eager", {}).get("median_s")
            if eager and ctx.peaks():
                row.update(eager_fraction_of_fp32_peak=row["flops"] / eager / ctx.peaks()[key], peak_used=key)
        except Exception as exc:  # noqa: BLE001 - a cost that cannot be counted leaves the times
            row["flops_error"] = one_line(exc)
    for name in ctx.args.compile_models:
        if name not in rows or ctx.over():
            skipped.append(f"{name} (compile)")
            continue
        rows[name]["compiled"] = inference.measure_model(name, SCALE, size(name), ["eager", "optimised"],
                                                         Namespace(**{**vars(ns), "compile": True}),
                                                         ctx.device)["variants"]
    for row in rows.values():
        row["chosen"] = best = pick_optimised(row)
        if best:
            diff = best.get("max_abs_diff_255")
            row["target_met"] = best["speedup"] >= 2 and diff is not None and diff <= 2
    return {"out_hw": [oh, ow], "csnln_lr": ctx.p["infer_csnln"], "runs": ns.runs, "rows": list(rows.values()),
            "skipped_budget": skipped, "compile_models": ctx.args.compile_models}


def pick_optimised(row: dict) -> dict | None:
    """The faster of optimised and optimised + compile (each against the eager of its own run)."""
    options = [{"label": label, "speedup": opt["speedup_vs_eager"], "median_s": opt["median_s"],
                "max_abs_diff_255": opt.get("max_abs_diff_255")}
               for label, opt in (("bf16+channels_last", row["variants"].get("optimised", {})),
                                  ("bf16+channels_last+compile", row.get("compiled", {}).get("optimised", {})))
               if "speedup_vs_eager" in opt]
    return max(options, key=lambda o: o["speedup"]) if options else None


def section_train(ctx: Context) -> dict:
    """train_throughput.py's fp32 and optimised steps at each recipe's batch and patch, then its loss check."""
    p, hr = ctx.p, ctx.args.data / "T91" / "HR"
    if ctx.args.loss_models and not hr.is_dir():
        raise ConfigError(f"--data {ctx.args.data}: no T91/HR for the loss comparison")
    rows, skipped, losses = [], [], []
    for name in ctx.models(trainable=True):
        if ctx.over():
            skipped.append(name)
            continue
        cfg = load_config(name, [f"model.scale={SCALE}"])
        batch, patch = p["train_batch"] or cfg.train.batch_size, p["train_patch"] or cfg.data.patch_size
        cols = train_throughput.measure(name, SCALE, batch, patch, ["fp32", "optimised"], ctx.device, warmup=2,
                                        repeats=ctx.runs(5), hparams=ctx.hparams(name))
        row = {"model": name, "params": ctx.params[name], "batch": batch, "patch": patch,
               "recipe_batch": cfg.train.batch_size, "columns": cols}
        if "it_per_s" in cols["fp32"] and "it_per_s" in cols["optimised"]:
            row["speedup"] = cols["optimised"]["it_per_s"] / cols["fp32"]["it_per_s"]
            row["target_met"] = row["speedup"] >= 1.5
        rows.append(row)
    iterations = max(p["loss_log_every"] * 2, ctx.runs(p["loss_iterations"]))
    ns = Namespace(loss_full=not p["tiny"], loss_iterations=iterations,
                   loss_log_every=p["loss_log_every"], loss_batch=p["train_batch"] or 16,
                   loss_patch=p["train_patch"] or 48, data=hr, scale=SCALE, cache_dir=ctx.args.cache_dir,
                   loss_column="optimised", loss_seed=1)
    for name in ctx.args.loss_models:
        if ctx.over():
            skipped.append(f"{name} (loss check)")
            continue
        try:
            losses.append(train_throughput.loss_check(name, ns, ctx.device))
        except Exception as exc:  # noqa: BLE001 - recorded, the other models go on
            traceback.print_exc(limit=3)
            losses.append({"model": name, "error": one_line(exc)})
    return {"rows": rows, "loss_check": losses, "skipped_budget": skipped}


def loader_rates(patch: int, batch: int, ctx: Context, cache: Path) -> dict:
    """Samples/s of the trainer's loader (integer patches, pinned memory on CUDA) on synthetic DIV2K-sized images:
    per worker (CPU seconds of one process) and in wall-clock time with the worker counts tried."""
    p = ctx.p
    pairs = data_loader.synthetic_pairs(cache, p["loader_images"], *p["loader_size"], SCALE)
    dataset = PatchDataset(pairs, SCALE, patch, seed=1, integer=True)
    order = list(IterationSampler(0, p["loader_batches"] + 1, batch))
    data_loader.cpu_seconds_of_batch(dataset, order[:batch])  # maps opened, pages cached
    spent = sum(data_loader.cpu_seconds_of_batch(dataset, order[i: i + batch]) for i in range(batch, len(order), batch))
    workers = [w for w in p["loader_workers"] if w <= available_cpus()]
    return {"scale": SCALE, "patch": patch, "batch": batch, "per_worker_samples_per_s": (len(order) - batch) / spent,
            "workers": data_loader.loader_rates(dataset, batch, p["loader_batches"], workers,
                                                ctx.device.type == "cuda", ctx.deadline)}


def fastest_correct(row: dict, checks: dict) -> dict | None:
    """The fastest training setting of a model whose loss is known to agree with fp32: fp32 itself, or bf16 +
    channels_last when its fixed-seed loss check is within 2 %; a faster setting not checked is named apart."""
    cols, check = row["columns"], checks.get(row["model"])
    verified = check is not None and check.get("within_target") is True
    options = [("fp32", cols.get("fp32", {}), "reference"),
               ("bf16+channels_last", cols.get("optimised", {}), "loss within 2 % of fp32" if verified else None)]
    rated = [(label, col["samples_per_s"], why) for label, col, why in options if "samples_per_s" in col]
    correct = [o for o in rated if o[2]]
    if not correct:
        return None
    best = max(correct, key=lambda o: o[1])
    faster = [o[0] for o in rated if not o[2] and o[1] > best[1]]
    return {"setting": best[0], "samples_per_s": best[1], "why": best[2],
            "faster_unchecked": faster[0] if faster else None}


def section_loader(ctx: Context) -> dict:
    """Is a training step loader-bound? Per model, the samples/s its fastest correct setting consumes (``train``)
    against what the loader delivers per worker and with the worker counts tried."""
    train = ctx.results["sections"].get("train", {})
    if train.get("status") != "ok":
        raise RuntimeError("needs the train section's results (run it first)")
    checks = {c["model"]: c for c in train["result"]["loss_check"]}
    cache, rates, models = Path(tempfile.mkdtemp(prefix="sisr-suite-loader-")), {}, []
    try:
        for row in train["result"]["rows"]:
            key = (row["patch"], row["batch"])
            if key not in rates and (not rates or not ctx.over()):  # past the share: only the first
                rates[key] = loader_rates(*key, ctx, cache)
            choice = fastest_correct(row, checks)
            if key not in rates or choice is None:
                models.append({"model": row["model"], "skipped": "budget" if key not in rates else "no rate"})
                continue
            r, rate = rates[key], choice["samples_per_s"]
            enough = [w for w, delivered in sorted(r["workers"].items()) if delivered >= rate]
            models.append({"model": row["model"], **choice, "batch": row["batch"], "patch": row["patch"],
                           "workers_needed": enough[0] if enough else None,  # the fewest tried that keep up
                           "workers_estimate": math.ceil(rate / r["per_worker_samples_per_s"]),  # from CPU time
                           "loader_samples_per_s": r["workers"], "loader_bound": not enough})
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    return {"loader": [{**r, "workers": {str(k): v for k, v in r["workers"].items()}} for r in rates.values()],
            "models": models, "cpus": available_cpus()}


# ----------------------------------------------------------------------------- Markdown


def md_peak(r: dict) -> list[str]:
    return md_table(["matmul", "TFLOP/s"], [[k, fmt(r.get(k), "{:.1f}", 1e-12)] for k in ("fp32", "fp32_tf32", "bf16")
                                            if k in r]) + [
        "", f"{r['n']}x{r['n']} products, {r['reps']} per call, best of 3; copy "
        f"{fmt(r['copy_bytes_per_s'], '{:.0f}', 1e-9)} GB/s (read + written)."]


def md_inference(r: dict) -> list[str]:
    chosen = [f"* {x['model']}: {c['label']} {fmt(c['speedup'])}x eager, max diff "
              f"{fmt(c['max_abs_diff_255'], '{:.3f}')}/255 (>= 2x within 2/255: {x.get('target_met')}); eager at "
              f"{fmt(x.get('eager_fraction_of_fp32_peak'), '{:.1%}')} of the fp32 peak"
              for x in r["rows"] if (c := x["chosen"])]
    return inference.table_lines(r["rows"], inference.DEFAULT_VARIANTS) + [
        "", f"Output {r['out_hw'][1]}x{r['out_hw'][0]} (CSNLN {r['csnln_lr']}x{r['csnln_lr']} LR), median of "
        f"{r['runs']}; the fastest optimised path (with torch.compile where measured) per model, against eager fp32 "
        "of its own run (the fp32 peak is the TF32 one where a TF32 switch is on):", ""] + chosen + skipped_line(r)


def md_train(r: dict) -> list[str]:
    return train_throughput.table_lines(r["rows"], ["fp32", "optimised"]) + [""] + train_throughput.loss_lines(
        r["loss_check"]) + skipped_line(r)


def md_loader(r: dict) -> list[str]:
    rows = []
    for m in r["models"]:
        if "skipped" in m:
            rows.append([m["model"], f"not measured ({m['skipped']})"] + [""] * 5)
            continue
        unchecked = f" ({m['faster_unchecked']} faster, loss unchecked)" if m["faster_unchecked"] else ""
        needed = str(m["workers_needed"]) if m["workers_needed"] else \
            f"> {max(m['loader_samples_per_s'], default=0)} (CPU-time estimate {m['workers_estimate']})"
        rows.append([m["model"], m["setting"] + unchecked, f"{m['samples_per_s']:.1f}", f"{m['batch']} x {m['patch']}",
                     needed, ", ".join(f"{w}: {v:.0f}" for w, v in m["loader_samples_per_s"].items()),
                     "**yes**" if m["loader_bound"] else "no"])
    per = "; ".join(f"x{x['scale']} LR {x['patch']} batch {x['batch']}: {x['per_worker_samples_per_s']:.0f}"
                    for x in r["loader"])
    return md_table(["model", "fastest correct setting", "samples/s (model)", "batch x LR patch", "data.workers needed",
                     "loader samples/s (workers: rate)", "loader-bound"], rows) + [
        "", f"Loader samples/s per worker (CPU time of one process, the trainer's integer patches): {per}; "
        f"{r['cpus']} CPUs. 'data.workers needed': the fewest worker processes tried whose loader (wall clock, pinned "
        "batches) delivers what the model consumes; loader-bound: none of them does (then the CPU-time estimate says "
        "how many cores it would take)."]


def skipped_line(r: dict) -> list[str]:
    return ["", f"Not reached within the budget: {', '.join(r['skipped_budget'])}."] if r["skipped_budget"] else []


RUNNERS = {"peak": section_peak, "csnln": section_csnln, "table7": section_table7, "inference": section_inference,
           "train": section_train, "loader": section_loader}
MARKDOWN = {"peak": md_peak, "csnln": csnln.comparison_lines, "table7": lambda r: [render(r)],
            "inference": md_inference, "train": md_train, "loader": md_loader}


def markdown(results: dict) -> str:
    env, settings = results["environment"], results["settings"]
    lines = [f"# GPU suite: {results['device_name']}", "",
             f"{env['date_utc']}, torch {env['torch']} (CUDA {env['cuda']}), TF32 matmul {results['tf32']['matmul']} / "
             f"cuDNN {results['tf32']['cudnn']}, budget {settings['budget_s']} s"
             + (", **dry run (CPU, tiny models: not a measurement)**" if settings["dry_run"] else "")
             + f". Command: `{env['command']}`"]
    for name, sec in results["sections"].items():
        lines += ["", f"## {name} ({sec['status']}, {sec.get('seconds', 0):.0f} s)", ""]
        try:
            lines += MARKDOWN[name](sec["result"]) if sec["status"] == "ok" else [f"failed: {sec['error']}"]
        except Exception as exc:  # noqa: BLE001 - the JSON keeps the figures
            lines.append(f"(table not rendered: {one_line(exc)})")
    return "\n".join(lines) + "\n"


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="folder for results.json and results.md")
    p.add_argument("--budget-s", type=float, help=f"seconds for the whole run (default {BUDGET_S:.0f}; dry run 60)")
    p.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    p.add_argument("--models", nargs="+", choices=list_models(), help="models of inference/train (default all)")
    p.add_argument("--compile-models", nargs="*", help="inference also under torch.compile "
                   "(default: defian-s edsr-baseline; dry run: edsr-baseline)")
    p.add_argument("--loss-models", nargs="*", help="fixed-seed loss comparison (default defian-s edsr-baseline)")
    p.add_argument("--data", type=Path, default=common.DATASETS, help="datasets folder holding T91/HR")
    p.add_argument("--cache-dir", type=Path, default=Path("/tmp/sisr-bench-cache"))
    p.add_argument("--tf32", choices=["default", "on", "off"], default="default",
                   help="TF32 in fp32 matmuls and cuDNN convolutions (default: torch's)")
    p.add_argument("--device", default="cuda")
    p.add_argument("--dry-run", action="store_true", help="the same code on the CPU, tiny models and sizes")
    p.add_argument("--overwrite", action="store_true", help="replace results already in --out")
    args = p.parse_args(argv)
    args.device = "cpu" if args.dry_run else args.device
    args.budget_s = args.budget_s or (60.0 if args.dry_run else BUDGET_S)
    if args.compile_models is None:
        args.compile_models = ["edsr-baseline"] if args.dry_run else ["defian-s", "edsr-baseline"]
    args.loss_models = ["defian-s", "edsr-baseline"] if args.loss_models is None else args.loss_models
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        check_outputs(args.out, ["results.json", "results.md"], args.overwrite)
        device = resolve_device(args.device)
    except SisrError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        if args.tf32 != "default":
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = args.tf32 == "on"
    results = {"suite": "gpu_suite", "environment": environment(), "device_name": device_name(device),
               "tf32": {"matmul": torch.backends.cuda.matmul.allow_tf32, "cudnn": torch.backends.cudnn.allow_tf32},
               "settings": {"budget_s": args.budget_s, "dry_run": args.dry_run, "sections": args.sections,
                            "models": args.models, "compile_models": args.compile_models,
                            "loss_models": args.loss_models, "sizes": DRY if args.dry_run else GPU, "shares": SHARES},
               "sections": {}}
    ctx, start = Context(args, device, results), time.monotonic()
    for i, name in enumerate(args.sections):
        left = sum(SHARES[s] for s in args.sections[i:])
        ctx.deadline = time.monotonic() + max(0.0, args.budget_s - (time.monotonic() - start)) * SHARES[name] / left
        print(f"== {name} (share {ctx.deadline - time.monotonic():.0f} s)", file=sys.stderr, flush=True)
        began = time.monotonic()
        try:
            sec = {"status": "ok", "result": RUNNERS[name](ctx)}
        except Exception as exc:  # noqa: BLE001 - a failing section must not stop the others
            traceback.print_exc(limit=4)
            sec = {"status": "failed", "error": one_line(exc)}
        results["sections"][name] = {**sec, "seconds": round(time.monotonic() - began, 1)}
        free(device)
        write(args.out, results)
    results["elapsed_s"] = round(time.monotonic() - start, 1)
    write(args.out, results)
    print(markdown(results))
    print(f"wrote {args.out / 'results.json'} and results.md ({results['elapsed_s']} s)")
    return 0 if all(s["status"] == "ok" for s in results["sections"].values()) else 1


def write(out: Path, results: dict) -> None:
    """results.json and results.md, replaced after every section (this run's own files)."""
    atomic_write_text(out / "results.json", json.dumps(results, indent=1, default=str) + "\n", overwrite=True)
    atomic_write_text(out / "results.md", markdown(results), overwrite=True)


if __name__ == "__main__":
    raise SystemExit(main())
