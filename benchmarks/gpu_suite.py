"""Every GPU figure of the performance work in one command that fits a short device lease.

Sections, each in its own try/except (a failing one is recorded with its one-line error and the
rest go on), results written after every section (a command cut short keeps what was measured):

* ``peak``: the device's dense matmul rate (``torch.mm`` of n x n matrices, best of 3 timed calls of
  ``reps`` products): fp32 with TF32 off, fp32 with TF32 on (CUDA), bf16; and the copy bandwidth.
* ``csnln``: CSNLN x2, 160x160 LR, batch 1, full model, random weights: the fast (default)
  attention path against the authors' reference formulation, both fp32 under the same TF32 setting
  (``--tf32``), then the fast path under bf16 autocast: median time, the CUDA allocator's peak memory
  of the first call, output differences (fp32: fast vs reference; bf16 vs fp32, clamped, in /255),
  achieved FLOP/s (model FLOPs of the authors' formulation / time) as a fraction of ``peak``.
  Targets: fast >= 5x faster, <= 1/4 of the reference's peak memory.
* ``profile``: every trainable model at CRAN Table 7's conditions (3x160x160 LR, x2) with
  ``sisr.evaluation.profile``'s ``count_model_flops`` and ``measure`` (parameters, FLOPs/MACs on meta,
  allocator peak memory of the first forward, median time), beside Table 7's figures (another GPU:
  context, not a target).
* ``inference``: ``benchmarks/inference.py``'s ``measure_model`` for every model at a 1280x720 output
  (CSNLN 160x160 LR): eager fp32 against the optimised path (bf16 autocast + channels_last), and
  channels_last / bf16 alone; then ``optimised + torch.compile`` for ``--compile-models`` (compiling
  every model would not fit), the faster of the two counting as the optimised path. Target: >= 2x
  eager with outputs within 2/255 (with random weights only meaningful where the raw output stays
  near [0, 1]; the raw range is recorded).
* ``train``: training iterations/s of the engine's own step (``TrainStep``: forward, L1, backward,
  Adam) at each recipe's batch and LR patch, eager fp32 against bf16 + channels_last, on fixed random
  batches; then ``benchmarks/train_throughput.py``'s fixed-seed loss comparison (the real engine, the
  same batches from ``--data``) for ``--loss-models``. Targets: >= 1.5x, loss within 2 %.

* ``loader``: is a training step loader-bound? Per model, the fastest correct setting of ``train`` (fp32, or
  bf16 + channels_last when its loss check agrees within 2 %) and the samples/s it consumes, against the
  samples/s the trainer's loader (``make_loader``, integer patches, pinned memory) delivers per worker and with
  1-16 worker processes on synthetic DIV2K-sized images: the ``data.workers`` needed and whether any worker
  count tried keeps up. The training columns are built by ``build_training_parts`` (as ``sisr train``).

``--budget-s`` (default 400) scales the repeats and is shared out between the sections
(``SHARES``); a section past its share skips its remaining models (recorded). ``--dry-run`` is the
same code on the CPU with tiny models and sizes (a test runs it).

    PYTHONPATH=src python benchmarks/gpu_suite.py --out $OUT/gpu --data .gpu-data --budget-s 400
    python benchmarks/gpu_suite.py --dry-run --out /tmp/gpu-suite                   # CPU, under a minute
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import platform
import statistics
import sys
import time
import traceback
from argparse import Namespace
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
try:
    import sisr  # noqa: F401
except ImportError:  # run from the source tree without PYTHONPATH=src
    sys.path.insert(0, str(HERE.parent / "src"))

import torch  # noqa: E402

import inference as inference_bench  # noqa: E402  (benchmarks/inference.py)
import train_throughput  # noqa: E402
from sisr.data.prepare import available_cpus  # noqa: E402
from sisr.errors import ConfigError, SisrError  # noqa: E402
from sisr.evaluation.profile import count_model_flops, measure  # noqa: E402
from sisr.models import create_model, get_info, has_parameters, list_models  # noqa: E402
from sisr.training.config import load_config  # noqa: E402
from sisr.training.parts import build_training_parts  # noqa: E402
from sisr.utils.device import resolve_device, synchronize  # noqa: E402
from sisr.utils.fs import atomic_write_text, check_outputs  # noqa: E402
from sisr.utils.memory import PeakMemory  # noqa: E402

SECTIONS = ("peak", "csnln", "profile", "inference", "train", "loader")
SHARES = {"peak": 0.03, "csnln": 0.12, "profile": 0.2, "inference": 0.3, "train": 0.3, "loader": 0.05}
BUDGET_S = 400.0  # the budget the base repeats are set for
SCALE = 2
GPU = dict(peak_n=8192, peak_reps=10, copy_mib=512, csnln_size=160, profile_hw=(160, 160), out_hw=(720, 1280),
           infer_csnln=160, tiny=False, train_batch=None, train_patch=None, loss_iterations=300, loss_log_every=50,
           loader_images=8, loader_size=(2040, 1356), loader_batches=40, loader_workers=(1, 2, 4, 8, 16))
DRY = dict(peak_n=128, peak_reps=2, copy_mib=4, csnln_size=12, profile_hw=(16, 16), out_hw=(32, 32),
           infer_csnln=8, tiny=True, train_batch=2, train_patch=12, loss_iterations=4, loss_log_every=2,
           loader_images=2, loader_size=(96, 64), loader_batches=4, loader_workers=(1,))
ORDER = ["defian-s", "edsr-baseline", "edsr", "rcan", "cran", "eacrn", "defian-l", "csnln", "bicubic"]
# CRAN paper Table 7 (x2, 3x160x160 input; "FLOPs" are multiply-accumulates by our count, see docs/benchmarks.md)
TABLE7 = {"edsr": (40.73, 1042.74, 1089, 0.37), "rcan": (15.44, 391.86, 661, 0.85),
          "csnln": (3.06, 2245.98, 8099, 7.14), "cran": (14.94, 372.99, 669, 0.96)}
MIB = 2**20


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300] if text else ''}"


def timed(fn, device: torch.device):
    synchronize(device)
    start = time.perf_counter()
    out = fn()
    synchronize(device)
    return time.perf_counter() - start, out


def with_peak(fn, device: torch.device):
    """``fn()`` and the CUDA allocator's peak above what was allocated before (None off CUDA)."""
    if device.type != "cuda":
        return fn(), None
    with PeakMemory(device) as mem:
        out = fn()
    return out, mem.bytes


def free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


class Context:
    def __init__(self, args, device: torch.device, results: dict):
        self.args, self.device, self.results = args, device, results
        self.p = DRY if args.dry_run else GPU
        self.deadline = math.inf

    def runs(self, base: int) -> int:
        return max(1, round(base * self.args.budget_s / BUDGET_S))

    def over(self) -> bool:
        return time.monotonic() > self.deadline

    def models(self, trainable: bool) -> list[str]:
        names = self.args.models or [m for m in ORDER if m in list_models()] + \
            [m for m in list_models() if m not in ORDER]
        return [m for m in names if not trainable or has_parameters(m)]

    def peak(self, precision: str) -> float | None:
        """The measured matmul peak for ``precision``: for fp32 the TF32 one whenever either TF32 switch
        (matmul, cuDNN) is on, so that a fraction of it is never flattered."""
        sec = self.results["sections"].get("peak", {})
        if sec.get("status") != "ok":
            return None
        return sec["result"][self.peak_label(precision)]

    def peak_label(self, precision: str) -> str:
        if precision == "bf16":
            return "bf16"
        tf32 = torch.backends.cuda.matmul.allow_tf32 or torch.backends.cudnn.allow_tf32
        return "fp32_tf32" if self.device.type == "cuda" and tf32 else "fp32"


# ----------------------------------------------------------------------------- sections


def matmul_rate(device: torch.device, dtype: torch.dtype, n: int, reps: int) -> float:
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    c = torch.empty(n, n, device=device, dtype=dtype)

    def products() -> None:
        for _ in range(reps):
            torch.mm(a, b, out=c)

    products()
    return 2.0 * n**3 * reps / min(timed(products, device)[0] for _ in range(3))


def section_peak(ctx: Context) -> dict:
    dev, n, reps = ctx.device, ctx.p["peak_n"], ctx.p["peak_reps"]
    out = {"n": n, "reps": reps}
    tf32 = torch.backends.cuda.matmul.allow_tf32
    try:
        for label, dtype, allow in (("fp32", torch.float32, False), ("fp32_tf32", torch.float32, True),
                                    ("bf16", torch.bfloat16, tf32)):
            if label == "fp32_tf32" and dev.type != "cuda":
                continue
            torch.backends.cuda.matmul.allow_tf32 = allow
            out[label] = matmul_rate(dev, dtype, n, reps)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32
    elems = ctx.p["copy_mib"] * MIB // 4
    src = torch.rand(elems, device=dev)
    dst = torch.empty_like(src)
    dst.copy_(src)
    out["copy_bytes_per_s"] = 2.0 * elems * 4 / min(timed(lambda: dst.copy_(src), dev)[0] for _ in range(5))
    return out


def section_csnln(ctx: Context) -> dict:
    dev, size = ctx.device, ctx.p["csnln_size"]
    hp = dict(get_info("csnln").tiny) if ctx.p["tiny"] else {}
    flops = count_model_flops("csnln", SCALE, (size, size), hparams={**hp, "attention": "reference"})["flops"]
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(1)).to(dev)
    rows, outs = {}, {}
    for name, path, dtype in (("reference fp32", "reference", None), ("fast fp32", "fast", None),
                              ("fast bf16", "fast", torch.bfloat16)):
        torch.manual_seed(0)
        model = create_model("csnln", scale=SCALE, attention=path, **hp).eval().to(dev)

        def forward(model=model, dtype=dtype):
            precision = torch.autocast(dev.type, dtype=dtype) if dtype else contextlib.nullcontext()
            with torch.no_grad(), precision:
                return model(x)

        free(dev)
        out, peak = with_peak(forward, dev)
        outs[name] = out.float()
        times = [timed(forward, dev)[0] for _ in range(ctx.runs(3))]
        median = statistics.median(times)
        ref_peak = ctx.peak("bf16" if dtype else "fp32")
        rows[name] = {"times_s": times, "median_s": median, "peak_memory_bytes": peak, "flops_per_s": flops / median,
                      "fraction_of_matmul_peak": flops / median / ref_peak if ref_peak else None}
        del model, out
    ref, fast = rows["reference fp32"], rows["fast fp32"]
    bf16 = (outs["fast bf16"].clamp(0, 1) - outs["fast fp32"].clamp(0, 1)).abs().max().item() * 255
    result = {"size": size, "scale": SCALE, "hparams": hp or "full (n_feats 128, depth 12)", "model_flops": flops,
              "paths": rows, "speedup_fast_vs_reference": ref["median_s"] / fast["median_s"],
              "memory_ratio_fast_over_reference": fast["peak_memory_bytes"] / ref["peak_memory_bytes"]
              if ref["peak_memory_bytes"] else None,
              "max_abs_diff_fast_vs_reference_fp32": (outs["fast fp32"] - outs["reference fp32"]).abs().max().item(),
              "bf16_vs_fp32_max_abs_diff_255": bf16,
              "bf16_vs_fp32_raw_max_abs_diff": (outs["fast bf16"] - outs["fast fp32"]).abs().max().item(),
              "peaks_used": {"fp32": ctx.peak_label("fp32"), "bf16": "bf16"}}
    result["targets"] = {"speed-up >= 5x": result["speedup_fast_vs_reference"] >= 5,
                         "peak memory <= 1/4": None if result["memory_ratio_fast_over_reference"] is None
                         else result["memory_ratio_fast_over_reference"] <= 0.25,
                         "bf16 within 2/255": bf16 <= 2}
    return result


def section_profile(ctx: Context) -> dict:
    """``sisr.evaluation.profile``'s count and measurement per model (``profile()`` itself would also
    count the 1280x720 Mult-Adds, half a minute for CSNLN on meta, not needed here)."""
    rows, skipped = [], []
    hw = ctx.p["profile_hw"]
    for name in ctx.models(trainable=True):
        if ctx.over():
            skipped.append(name)
            continue
        hp = dict(get_info(name).tiny) if ctx.p["tiny"] else {}
        counted = count_model_flops(name, SCALE, hw, hparams=hp)
        measured = measure({"model": name, "scale": SCALE, "hparams": hp, "input_hw": list(hw),
                            "device": str(ctx.device), "warmup": 2, "runs": ctx.runs(10), "seed": 0, "threads": None})
        rows.append({"model": name, "hparams": hp, **{k: counted[k] for k in ("parameters", "flops", "macs")},
                     **measured})
        free(ctx.device)
    return {"input_hw": list(hw), "scale": SCALE, "rows": rows, "skipped_budget": skipped,
            "table7": {k: dict(zip(("params_m", "flops_g", "memory_mb", "time_s"), v)) for k, v in TABLE7.items()}}


def section_inference(ctx: Context) -> dict:
    dev, p = ctx.device, ctx.p
    oh, ow = p["out_hw"]

    def size_for(name: str) -> tuple[int, int]:
        return (p["infer_csnln"],) * 2 if name == "csnln" else (math.ceil(oh / SCALE), math.ceil(ow / SCALE))

    ns = Namespace(tiny=p["tiny"], precision="bf16", compile=False, warmup=1, runs=ctx.runs(5))
    rows, skipped = {}, []
    for name in ctx.models(trainable=False):
        if ctx.over():
            skipped.append(name)
            continue
        row = inference_bench.measure_model(name, SCALE, size_for(name), ["eager", "optimised", "cl", "bf16"], ns, dev)
        try:
            cost = inference_bench.model_cost(name, SCALE, size_for(name), p["tiny"])
            row["flops"] = cost["flops"]
            eager = row["variants"].get("eager", {}).get("median_s")
            if eager and ctx.peak("fp32"):
                row["eager_fraction_of_fp32_peak"] = cost["flops"] / eager / ctx.peak("fp32")
                row["peak_used"] = ctx.peak_label("fp32")
        except Exception as exc:  # noqa: BLE001 - a cost that cannot be counted leaves the times
            row["flops_error"] = one_line(exc)
        rows[name] = row
        free(dev)
    for name in ctx.args.compile_models:
        if name not in rows or ctx.over():
            skipped.append(f"{name} (compile)")
            continue
        compiled = inference_bench.measure_model(name, SCALE, size_for(name), ["eager", "optimised"],
                                                 Namespace(**{**vars(ns), "compile": True}), dev)
        rows[name]["compiled"] = compiled["variants"]
        free(dev)
    for name, row in rows.items():
        best = pick_optimised(row)
        row["chosen"] = best
        if best:
            row["target_met"] = best["speedup"] >= 2 and best.get("max_abs_diff_255", math.inf) <= 2
    return {"out_hw": [oh, ow], "csnln_lr": p["infer_csnln"], "runs": ns.runs, "rows": list(rows.values()),
            "skipped_budget": skipped, "compile_models": ctx.args.compile_models}


def pick_optimised(row: dict) -> dict | None:
    """The faster of optimised and optimised + compile (each against the eager of its own run)."""
    options = []
    for label, variants in (("bf16+channels_last", row["variants"]),
                            ("bf16+channels_last+compile", row.get("compiled", {}))):
        opt = variants.get("optimised", {})
        if "speedup_vs_eager" in opt:
            options.append({"label": label, "speedup": opt["speedup_vs_eager"], "median_s": opt["median_s"],
                            "max_abs_diff_255": opt.get("max_abs_diff_255")})
    return max(options, key=lambda o: o["speedup"]) if options else None


def train_rates(name: str, hparams: dict, batch: int, patch: int, device: torch.device, warmup: int,
                repeats: int) -> dict:
    """it/s of the engine's step, fp32 eager and bf16 + channels_last, timed in turns on fixed batches; model,
    optimizer, loss and step as ``sisr train`` builds them (``build_training_parts``, ``parts.make_step``)."""
    columns = {"fp32": ("fp32", False), "optimised": ("bf16", True)}
    steps, out = {}, {}
    for col, (precision, cl) in columns.items():
        if precision not in get_info(name).train_precisions:  # mixed-precision training, not inference
            out[col] = {"error": f"{precision} not supported by the model"}
            continue
        try:
            cfg = load_config(name, [f"model.scale={SCALE}", "train.seed=0", f"train.precision={precision}",
                                     f"train.channels_last={str(cl).lower()}", "train.compile=false",
                                     f"model.hparams={json.dumps(hparams)}"])
            parts = build_training_parts(cfg, device, data=False)
            parts.model.train()
            step = parts.make_step()
            gen = torch.Generator().manual_seed(0)
            lr = torch.rand(batch, 3, patch, patch, generator=gen)
            hr = torch.rand(batch, 3, patch * SCALE, patch * SCALE, generator=gen)

            def one(step=step, lr=lr, hr=hr) -> float:
                seconds, result = timed(lambda: step(lr, hr), device)
                if not result.stepped:
                    raise RuntimeError(f"non-finite loss {result.loss}")
                return seconds

            (first, peak) = with_peak(one, device)
            for _ in range(warmup - 1):
                one()
            steps[col], out[col] = one, {"first_s": first, "peak_memory_bytes": peak, "times_s": []}
        except Exception as exc:  # noqa: BLE001 - one failing column must not stop the table
            out[col] = {"error": one_line(exc)}
    for _ in range(repeats):
        for col, one in steps.items():
            out[col]["times_s"].append(one())
    for col in steps:
        median = statistics.median(out[col]["times_s"])
        out[col].update(median_s=median, it_per_s=1 / median, samples_per_s=batch / median)
    steps.clear()
    free(device)
    return out


def section_train(ctx: Context) -> dict:
    p, dev = ctx.p, ctx.device
    hp_of = (lambda n: dict(get_info(n).tiny)) if p["tiny"] else (lambda n: {})
    hr = ctx.args.data / "T91" / "HR"
    if ctx.args.loss_models and not hr.is_dir():
        raise ConfigError(f"--data {ctx.args.data}: no T91/HR for the loss comparison")
    rows, skipped = [], []
    for name in ctx.models(trainable=True):
        if ctx.over():
            skipped.append(name)
            continue
        cfg = load_config(name, [f"model.scale={SCALE}"])
        batch, patch = p["train_batch"] or cfg.train.batch_size, p["train_patch"] or cfg.data.patch_size
        cols = train_rates(name, hp_of(name), batch, patch, dev, warmup=2, repeats=ctx.runs(5))
        row = {"model": name, "batch": batch, "patch": patch, "recipe_batch": cfg.train.batch_size, "columns": cols}
        if "it_per_s" in cols.get("fp32", {}) and "it_per_s" in cols.get("optimised", {}):
            row["speedup"] = cols["optimised"]["it_per_s"] / cols["fp32"]["it_per_s"]
            row["target_met"] = row["speedup"] >= 1.5
        rows.append(row)
    losses = []
    for name in ctx.args.loss_models:
        if ctx.over():
            skipped.append(f"{name} (loss check)")
            continue
        ns = Namespace(loss_full=not p["tiny"], loss_iterations=max(p["loss_log_every"] * 2,
                                                                    ctx.runs(p["loss_iterations"])),
                       loss_log_every=p["loss_log_every"], loss_batch=p["train_batch"] or 16,
                       loss_patch=p["train_patch"] or 48, data=hr, scale=SCALE, cache_dir=ctx.args.cache_dir,
                       loss_column="optimised", loss_seed=1)
        try:
            losses.append(train_throughput.loss_check(name, ns, dev))
        except Exception as exc:  # noqa: BLE001 - recorded, the other models go on
            traceback.print_exc(limit=3)
            losses.append({"model": name, "error": one_line(exc)})
    return {"rows": rows, "loss_check": losses, "skipped_budget": skipped}


def loader_rates(scale: int, patch: int, batch: int, ctx: Context, cache: Path) -> dict:
    """Samples/s the trainer's loader delivers at ``scale``/``patch``: per worker (CPU seconds of one process cutting
    the trainer's integer patches, as ``benchmarks/data_loader.py``) and in wall-clock time through
    ``make_loader`` with W worker processes (pinned memory on CUDA), on synthetic DIV2K-sized images."""
    import data_loader  # benchmarks/data_loader.py

    from sisr.data.training import IterationSampler, PatchDataset, make_loader

    p = ctx.p
    pairs = data_loader.synthetic_pairs(cache, p["loader_images"], *p["loader_size"], scale)
    dataset = PatchDataset(pairs, scale, patch, seed=1, integer=True)
    order = list(IterationSampler(0, p["loader_batches"] + 1, batch))
    data_loader.cpu_seconds_of_batch(dataset, order[:batch])  # maps opened, pages cached
    spent = sum(data_loader.cpu_seconds_of_batch(dataset, order[i: i + batch])
                for i in range(batch, len(order), batch))
    out = {"scale": scale, "patch": patch, "batch": batch, "per_worker_samples_per_s": (len(order) - batch) / spent,
           "workers": {}}
    for workers in [w for w in p["loader_workers"] if w <= available_cpus()]:
        if ctx.over() and out["workers"]:  # past the share: the first worker count is always measured
            break
        loader = iter(make_loader(dataset, 0, p["loader_batches"] + 2, batch, workers=workers,
                                  pin_memory=ctx.device.type == "cuda"))
        next(loader), next(loader)  # workers started
        start = time.perf_counter()
        count = sum(1 for _ in loader)
        out["workers"][workers] = count * batch / (time.perf_counter() - start)
    return out


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
    """Is a training step loader-bound? The samples/s each model's fastest correct setting consumes (``train``
    section) against what the loader delivers per worker and with the worker counts tried."""
    import tempfile

    train = ctx.results["sections"].get("train", {})
    if train.get("status") != "ok":
        raise RuntimeError("needs the train section's results (run it first)")
    rows, checks = train["result"]["rows"], {c["model"]: c for c in train["result"]["loss_check"]}
    cache = Path(tempfile.mkdtemp(prefix="sisr-suite-loader-"))
    rates: dict[tuple[int, int, int], dict] = {}
    models = []
    try:
        for row in rows:
            key = (SCALE, row["patch"], row["batch"])
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
        import shutil

        shutil.rmtree(cache, ignore_errors=True)
    return {"loader": [{**r, "workers": {str(k): v for k, v in r["workers"].items()}} for r in rates.values()],
            "models": models, "cpus": available_cpus()}


RUNNERS = {"peak": section_peak, "csnln": section_csnln, "profile": section_profile, "inference": section_inference,
           "train": section_train, "loader": section_loader}


# ----------------------------------------------------------------------------- Markdown


def _f(value, fmt: str = "{:.2f}", scale: float = 1.0) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return fmt.format(value * scale)


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + ["| " + " | ".join(r) + " |" for r in rows]


def md_peak(r: dict) -> list[str]:
    rows = [[k, _f(r.get(k), "{:.1f}", 1e-12)] for k in ("fp32", "fp32_tf32", "bf16") if k in r]
    return _table(["matmul", "TFLOP/s"], rows) + [
        "", f"{r['n']}x{r['n']} products, {r['reps']} per call, best of 3; copy "
        f"{_f(r['copy_bytes_per_s'], '{:.0f}', 1e-9)} GB/s (read + written)."]


def md_csnln(r: dict) -> list[str]:
    rows = [[k, _f(v["median_s"], "{:.4f}"), _f(v["peak_memory_bytes"], "{:.0f}", 1 / MIB),
             _f(v["flops_per_s"], "{:.2f}", 1e-12), _f(v["fraction_of_matmul_peak"], "{:.1%}")]
            for k, v in r["paths"].items()]
    t = r["targets"]
    return _table(["path", "median s", "peak MiB", "TFLOP/s", "of matmul peak"], rows) + [
        "", f"x{r['scale']}, {r['size']}x{r['size']} LR, {r['model_flops'] / 1e12:.3f} TFLOPs per forward (authors' "
        f"formulation). Fast vs reference: **{_f(r['speedup_fast_vs_reference'])}x** faster (target >= 5: "
        f"{t['speed-up >= 5x']}), peak memory **{_f(r['memory_ratio_fast_over_reference'], '{:.3f}')}** of the "
        f"reference (target <= 0.25: {t['peak memory <= 1/4']}); max |fast - reference| (fp32) "
        f"{r['max_abs_diff_fast_vs_reference_fp32']:.2e}; bf16 vs fp32 {r['bf16_vs_fp32_max_abs_diff_255']:.3f}/255 "
        f"(clamped; raw {r['bf16_vs_fp32_raw_max_abs_diff']:.2e})."]


def md_profile(r: dict) -> list[str]:
    rows = []
    for row in r["rows"]:
        paper = TABLE7.get(row["model"])
        rows.append([row["model"], _f(row["parameters"], "{:.2f}", 1e-6), _f(row["macs"], "{:.2f}", 1e-9),
                     _f(row["peak_memory_bytes"], "{:.0f}", 1 / MIB), _f(row["runtime_s"], "{:.4f}"),
                     " / ".join(f"{v:,}" for v in paper) if paper else "n/a"])
    lines = _table(["model", "params (M)", "MACs (G)", "peak MiB", "time s", "Table 7: params M / FLOPs G / MB / s"],
                   rows)
    if r["skipped_budget"]:
        lines += ["", f"Not reached within the budget: {', '.join(r['skipped_budget'])}."]
    return lines


def md_inference(r: dict) -> list[str]:
    rows = []
    for row in r["rows"]:
        v, best = row["variants"], row.get("chosen") or {}
        comp = row.get("compiled", {}).get("optimised", {})
        rows.append([row["model"], _f(v.get("eager", {}).get("median_s"), "{:.2f}", 1e3),
                     _f(v.get("optimised", {}).get("median_s"), "{:.2f}", 1e3),
                     _f(v.get("optimised", {}).get("speedup_vs_eager")),
                     _f(comp.get("speedup_vs_eager")) if comp else "not run",
                     _f(v.get("cl", {}).get("speedup_vs_eager")), _f(v.get("bf16", {}).get("speedup_vs_eager")),
                     _f(best.get("max_abs_diff_255"), "{:.3f}"), _f(row.get("eager_fraction_of_fp32_peak"), "{:.1%}"),
                     str(row.get("target_met", "n/a"))])
    lines = _table(["model", "eager ms", "optimised ms", "optimised x", "+compile x", "cl x", "bf16 x",
                    "max diff /255 (chosen)", "eager of fp32 peak", ">= 2x within 2/255"], rows)
    errors = [f"{row['model']} {k}: {e['error']}" for row in r["rows"]
              for k, e in list(row["variants"].items()) + list(row.get("compiled", {}).items()) if "error" in e]
    lines += ["", f"Output {r['out_hw'][1]}x{r['out_hw'][0]} (CSNLN {r['csnln_lr']}x{r['csnln_lr']} LR), median of "
              f"{r['runs']}; speed-ups against eager fp32 of the same run; the fp32 peak is the TF32 one where a TF32 "
              "switch is on."]
    return lines + [f"* {e}" for e in errors] + (
        [f"Not reached within the budget: {', '.join(r['skipped_budget'])}."] if r["skipped_budget"] else [])


def md_train(r: dict) -> list[str]:
    rows = [[row["model"], str(row["batch"]), str(row["patch"]),
             _f(row["columns"].get("fp32", {}).get("it_per_s")),
             _f(row["columns"].get("optimised", {}).get("it_per_s")),
             _f(row.get("speedup")), str(row.get("target_met", "n/a"))] for row in r["rows"]]
    lines = _table(["model", "batch", "LR patch", "fp32 it/s", "optimised it/s", "ratio", ">= 1.5x"], rows)
    loss = [[x["model"], "error: " + x["error"], "", "", ""] if "error" in x else
            [x["model"], f"{x['iterations']} ({x['log_every']})", f"{x['max_window_rel_diff']:.2%}",
             f"{x['mean_rel_diff']:.2%}", str(x["within_target"])] for x in r["loss_check"]]
    if loss:
        lines += ["", *_table(["model (loss check)", "iterations (window)", "max window rel. diff", "mean rel. diff",
                               "within 2 %"], loss)]
    if r["skipped_budget"]:
        lines += ["", f"Not reached within the budget: {', '.join(r['skipped_budget'])}."]
    return lines


def md_loader(r: dict) -> list[str]:
    rows = []
    for m in r["models"]:
        if "skipped" in m:
            rows.append([m["model"], f"not measured ({m['skipped']})"] + [""] * 5)
            continue
        walls = ", ".join(f"{w}: {v:.0f}" for w, v in m["loader_samples_per_s"].items())
        setting = m["setting"] + (f" ({m['faster_unchecked']} faster, loss unchecked)" if m["faster_unchecked"] else "")
        needed = (str(m["workers_needed"]) if m["workers_needed"] else
                  f"> {max(m['loader_samples_per_s'], default=0)} (CPU-time estimate {m['workers_estimate']})")
        rows.append([m["model"], setting, f"{m['samples_per_s']:.1f}", f"{m['batch']} x {m['patch']}", needed,
                     walls, "**yes**" if m["loader_bound"] else "no"])
    per = "; ".join(f"x{x['scale']} LR {x['patch']} batch {x['batch']}: {x['per_worker_samples_per_s']:.0f}"
                    for x in r["loader"])
    return _table(["model", "fastest correct setting", "samples/s (model)", "batch x LR patch",
                   "data.workers needed", "loader samples/s (workers: rate)", "loader-bound"], rows) + [
        "", f"Loader samples/s per worker (CPU time of one process, the trainer's integer patches): {per}; "
        f"{r['cpus']} CPUs. 'data.workers needed': the fewest worker processes tried whose loader (wall clock, "
        "pinned batches) delivers what the model consumes; loader-bound: none of them does (then the CPU-time "
        "estimate says how many cores it would take)."]


MARKDOWN = {"peak": md_peak, "csnln": md_csnln, "profile": md_profile, "inference": md_inference, "train": md_train,
            "loader": md_loader}


def markdown(results: dict) -> str:
    env = results["environment"]
    lines = [f"# GPU suite: {env['device_name']}", "",
             f"{env['date_utc']} UTC, torch {env['torch']} (CUDA {env.get('cuda')}), TF32 matmul "
             f"{env['tf32']['matmul']} / cuDNN {env['tf32']['cudnn']}, budget {results['settings']['budget_s']} s"
             + (", **dry run (CPU, tiny models: not a measurement)**" if results["settings"]["dry_run"] else "")
             + f". Command: `{results['command']}`"]
    for name, sec in results["sections"].items():
        lines += ["", f"## {name} ({sec['status']}, {sec.get('seconds', 0):.0f} s)", ""]
        if sec["status"] == "ok":
            try:
                lines += MARKDOWN[name](sec["result"])
            except Exception as exc:  # noqa: BLE001 - the JSON keeps the figures
                lines.append(f"(table not rendered: {one_line(exc)})")
        elif "error" in sec:
            lines.append(f"failed: {sec['error']}")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="folder for results.json and results.md")
    p.add_argument("--budget-s", type=float, help=f"seconds for the whole run (default {BUDGET_S:.0f}; dry run 60)")
    p.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    p.add_argument("--models", nargs="+", choices=list_models(), help="models of profile/inference/train (default all)")
    p.add_argument("--compile-models", nargs="*", help="inference also under torch.compile "
                   "(default: defian-s edsr-baseline; dry run: edsr-baseline)")
    p.add_argument("--loss-models", nargs="*", help="fixed-seed loss comparison (default defian-s edsr-baseline)")
    p.add_argument("--data", type=Path, default=HERE.parent.parent / "shared" / "datasets",
                   help="datasets folder holding T91/HR (default ../shared/datasets)")
    p.add_argument("--cache-dir", type=Path, default=Path("/tmp/sisr-bench-cache"))
    p.add_argument("--tf32", choices=["default", "on", "off"], default="default",
                   help="TF32 in fp32 matmuls and cuDNN convolutions (default: torch's)")
    p.add_argument("--device", default="cuda")
    p.add_argument("--dry-run", action="store_true", help="the same code on the CPU, tiny models and sizes")
    p.add_argument("--overwrite", action="store_true", help="replace results already in --out")
    args = p.parse_args(argv)
    if args.dry_run:
        args.device = "cpu"
    args.budget_s = args.budget_s or (60.0 if args.dry_run else BUDGET_S)
    if args.compile_models is None:
        args.compile_models = ["edsr-baseline"] if args.dry_run else ["defian-s", "edsr-baseline"]
    if args.loss_models is None:
        args.loss_models = ["defian-s", "edsr-baseline"]
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
    results = {"suite": "gpu_suite", "command": " ".join([Path(sys.executable).name, *sys.argv]),
               "environment": environment(device), "settings": {
                   "budget_s": args.budget_s, "dry_run": args.dry_run, "sections": args.sections,
                   "models": args.models, "compile_models": args.compile_models, "loss_models": args.loss_models,
                   "sizes": DRY if args.dry_run else GPU, "shares": SHARES}, "sections": {}}
    ctx = Context(args, device, results)
    start = time.monotonic()
    for i, name in enumerate(args.sections):
        left = sum(SHARES[s] for s in args.sections[i:])
        remaining = args.budget_s - (time.monotonic() - start)
        ctx.deadline = time.monotonic() + max(0.0, remaining) * SHARES[name] / left
        print(f"== {name} (share {ctx.deadline - time.monotonic():.0f} s)", file=sys.stderr, flush=True)
        began = time.monotonic()
        try:
            sec = {"status": "ok", "result": RUNNERS[name](ctx)}
        except Exception as exc:  # noqa: BLE001 - a failing section must not stop the others
            traceback.print_exc(limit=4)
            sec = {"status": "failed", "error": one_line(exc)}
        sec["seconds"] = round(time.monotonic() - began, 1)
        results["sections"][name] = sec
        free(device)
        write(args.out, results)
    results["elapsed_s"] = round(time.monotonic() - start, 1)
    write(args.out, results)
    print(markdown(results))
    print(f"wrote {args.out / 'results.json'} and results.md ({results['elapsed_s']} s)")
    return 0 if all(s["status"] == "ok" for s in results["sections"].values()) else 1


def environment(device: torch.device) -> dict:
    cuda = device.type == "cuda"
    return {"device": str(device), "device_name": torch.cuda.get_device_name(device) if cuda else
            f"cpu {platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)",
            "torch": torch.__version__, "cuda": torch.version.cuda if cuda else None,
            "cudnn": torch.backends.cudnn.version() if cuda else None, "python": platform.python_version(),
            "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
            "tf32": {"matmul": torch.backends.cuda.matmul.allow_tf32, "cudnn": torch.backends.cudnn.allow_tf32}}


def write(out: Path, results: dict) -> None:
    """results.json and results.md, replaced after every section (this run's own files)."""
    atomic_write_text(out / "results.json", json.dumps(results, indent=1, default=str) + "\n", overwrite=True)
    atomic_write_text(out / "results.md", markdown(results), overwrite=True)


if __name__ == "__main__":
    raise SystemExit(main())
