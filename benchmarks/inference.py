"""Whole-model inference: eager fp32 against the optimised path, each part alone and the backends (AOTInductor,
ONNX Runtime), for every registry model; FLOPs, bytes moved, the device's measured peaks and the roofline time floor.
Method: docs/benchmarks.md.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/inference.py            # CPU, all models
    .venv/bin/python benchmarks/inference.py --models edsr-baseline rcan --runs 5
    .venv/bin/python benchmarks/inference.py --device cuda --compile --json benchmarks/results/inference_cuda.json
    .venv/bin/python benchmarks/inference.py --cost-only --out-size 1280x720 --csnln-size 160
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/inference.py --backends --lr-size 96 --csnln-size 48 --runs 5
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import statistics
import sys
import tempfile
import traceback
from pathlib import Path

import common  # benchmarks/common.py (makes sisr importable from a checkout)
import torch
from common import fmt, free, md_table, one_line, rotate, timed, with_peak

import sisr
from sisr.evaluation.roofline import combine_peaks, floor_s, model_cost, peak_rates
from sisr.inference.forward import run
from sisr.models import count_parameters, create_model, get_info, list_models
from sisr.utils.device import resolve_device
from sisr.weights.loading import load_model
from sisr.weights.pretrained import pretrained_path

DEFAULT_VARIANTS = ["eager", "optimised", "cl", "bf16"]
BACKEND_VARIANTS = ["eager", "cl", "optimised", "compile", "onnxruntime"]  # --backends (cl is the CPU default)
CACHES = {"compile": "_sisr_aoti", "onnxruntime": "_sisr_onnx"}  # where run() keeps a loaded package / session
CONTIGUOUS = torch.contiguous_format


def variant_options(name: str, variant: str, precision: str, use_compile: bool, any_precision: bool) -> dict:
    """``run()`` options (RunOptions fields) of a variant; ``figure`` when the model does not declare the precision
    (measured only with ``any_precision``, as a plain autocast: run() refuses it)."""
    declared = get_info(name).capabilities.precisions
    low = precision if precision in declared or any_precision else "fp32"
    opts = {"eager": dict(precision="fp32", channels_last=False, backend="eager"),
            "optimised": dict(precision=low, channels_last=True, backend="compile" if use_compile else "eager"),
            "cl": dict(precision="fp32", channels_last=True, backend="eager"),
            "bf16": dict(precision=precision, channels_last=False, backend="eager"),
            "compile": dict(precision="fp32", channels_last=False, backend="compile"),
            "onnxruntime": dict(precision="fp32", channels_last=False, backend="onnxruntime")}[variant]
    return {**opts, "figure": opts["precision"] not in declared}


def describe(opts: dict) -> str:
    return "+".join([opts["precision"]] + ["channels_last"] * opts["channels_last"] +
                    [opts["backend"]] * (opts["backend"] != "eager"))


def forward(net, x, opts: dict):
    """The variant's call: ``run()``, or for an undeclared precision the same autocast on the module itself."""
    if not opts["figure"]:
        return lambda: run(net, x, **{k: v for k, v in opts.items() if k != "figure"})
    layout = torch.channels_last if opts["channels_last"] else torch.contiguous_format
    net.to(memory_format=layout)
    xs, dtype = x.contiguous(memory_format=layout), {"bf16": torch.bfloat16, "fp16": torch.float16}[opts["precision"]]

    def call():
        with torch.inference_mode(), torch.autocast(x.device.type, dtype=dtype):
            return net(xs).float().clamp(0, 1)
    return call


def warm_up(net, call, opts: dict, warmup: int, device) -> tuple[dict, torch.Tensor, torch.Tensor | None]:
    """The variant's first call(s): its entry, clamped output, and raw (unclamped) output (eager backend only).
    A backend's first call builds (cold); then a fresh module's first call with the package cached (warm)."""
    raw = {}

    def keep_raw(module, inputs, output):
        raw.setdefault("out", output.detach().float().clone())

    hook = net.register_forward_hook(keep_raw) if opts["backend"] == "eager" else None  # exports trace the module
    first, out = timed(call, device)
    if hook is not None:
        hook.remove()
    entry = {"options": opts, "label": describe(opts), "first_s": first}
    if opts["backend"] in CACHES:
        net.__dict__.pop(CACHES[opts["backend"]], None)  # as a new process would
        entry["warm_first_s"] = timed(call, device)[0]
    for _ in range(max(0, warmup - 1)):
        _, out = timed(call, device)
    return entry, out, raw.get("out")


def measure_model(name: str, scale: int, size: tuple[int, int], variants: list[str], args, device) -> dict:
    """Warm every variant (a copy of one network) up, then time them in rotating rounds; outputs against eager."""
    h, w = size
    torch.manual_seed(0)
    shipped = getattr(args, "shipped", False) and pretrained_path(name, scale) is not None
    base = (load_model(name, scale, device=device) if shipped else create_model(
        name, scale=scale, **(get_info(name).tiny if args.tiny else {}))).eval().to(device, memory_format=CONTIGUOUS)
    x = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(1)).to(device)
    row = {"model": name, "params": count_parameters(base), "lr_size": [h, w], "out_size": [h * scale, w * scale],
           "weights": "shipped" if shipped else "random", "variants": {}}
    calls, ref, ref_raw = {}, None, None
    for variant in variants:
        opts = variant_options(name, variant, args.precision, args.compile, getattr(args, "any_precision", False))
        if opts["figure"] and not getattr(args, "any_precision", False):
            row["variants"][variant] = {"error": f"{opts['precision']} not declared by the model"}
            continue
        print(f"{name} {h}x{w} LR: {variant} ({describe(opts)}) warm-up ...", file=sys.stderr, flush=True)
        net = copy.deepcopy(base)
        try:
            call = forward(net, x, opts)
            entry, out, raw = warm_up(net, call, opts, args.warmup, device)
        except Exception as exc:  # noqa: BLE001 - one failing variant must not stop the table
            row["variants"][variant] = {"error": one_line(exc)}
            traceback.print_exc(limit=2)
            continue
        if variant == "eager":
            ref, ref_raw = out, raw
            if raw is not None:
                row["eager_raw_output"] = {"min": float(raw.min()), "max": float(raw.max()), "std": float(raw.std()),
                                           "clamped_fraction": float(((raw < 0) | (raw > 1)).float().mean())}
        elif ref is not None:
            diff = (out - ref).abs()
            entry.update(max_abs_diff_255=float(diff.max()) * 255, mean_abs_diff_255=float(diff.mean()) * 255)
            if ref_raw is not None and raw is not None:
                span = float(ref_raw.max() - ref_raw.min()) or 1.0
                entry["raw_max_abs_diff_over_range"] = float((raw - ref_raw).abs().max()) / span
        row["variants"][variant] = entry
        calls[variant] = call
    if getattr(args, "outputs", None) and ref is not None:
        torch.save(ref.cpu(), args.outputs / f"{name}_x{scale}_{w}x{h}.pt")  # to compare code versions
    for variant, pairs in rotate(calls, args.runs, lambda call: _timed_peak(call, device)).items():
        entry = row["variants"][variant]
        entry.update(times_s=[s for s, _ in pairs], median_s=statistics.median(s for s, _ in pairs))
        if device.type == "cuda":
            entry["peak_memory_bytes"] = max(p for _, p in pairs)
    eager = row["variants"].get("eager", {}).get("median_s")
    for variant in calls:
        if eager and variant != "eager":
            row["variants"][variant]["speedup_vs_eager"] = eager / row["variants"][variant]["median_s"]
    calls.clear()
    del base, ref, ref_raw
    if args.compile:
        torch._dynamo.reset()
    free(device)
    return row


def _timed_peak(call, device) -> tuple[float, int | None]:
    (seconds, _), peak = with_peak(lambda: timed(call, device), device)
    return seconds, peak


def analyse(row: dict, cost: dict, peaks: dict, use_compile: bool) -> dict:
    """Roofline floor, measured/floor, and each optimisation's predicted vs measured speed-up."""
    p32, p16, bw, f = peaks["fp32_flops_per_s"], peaks["bf16_flops_per_s"], peaks["bytes_per_s"], cost["flops"]
    floor, bound = floor_s(f, cost["layer_bytes"], p32, bw)
    eager_model = floor_s(f, cost["op_bytes"], p32, bw)[0]  # unfused eager traffic
    out = {"floor_s": floor, "bound": bound, "eager_model_s": eager_model}
    eager = row["variants"].get("eager", {}).get("median_s")
    if eager:
        out.update(measured_s=eager, measured_over_floor=eager / floor, achieved_flops_per_s=f / eager)
    bf16_ops = floor_s(f, cost["op_bytes_bf16"], p16, bw)[0]
    bf16_layers, fp32_layers = floor_s(f, cost["layer_bytes_bf16"], p16, bw)[0], floor_s(f, cost["layer_bytes"], p32,
                                                                                        bw)[0]
    low = row["variants"].get("optimised", {}).get("options", {}).get("precision", "fp32") != "fp32"
    optimised = (bf16_layers if low else fp32_layers) if use_compile else (bf16_ops if low else eager_model)
    out["predicted_speedup"] = {"cl": 1.0, "bf16": eager_model / bf16_ops, "compile": eager_model / fp32_layers,
                                "optimised": eager_model / optimised}
    out["measured_speedup"] = {v: e["speedup_vs_eager"] for v, e in row["variants"].items() if "speedup_vs_eager" in e}
    return out


# ----------------------------------------------------------------------------- main


def parse_size(text: str) -> tuple[int, int]:
    """``WxH`` or ``N`` (square) -> (H, W)."""
    try:
        w, h = (int(v) for v in text.lower().split("x")) if "x" in text.lower() else (int(text),) * 2
    except ValueError:
        raise argparse.ArgumentTypeError(f"size '{text}': expected WxH or N") from None
    if w < 1 or h < 1:
        raise argparse.ArgumentTypeError(f"size '{text}': must be positive")
    return h, w


def parse_args(argv):
    p = common.make_parser(__doc__, "")
    p.add_argument("--models", nargs="+", choices=list_models(), help="registry names (default: all)")
    p.add_argument("--scale", type=int, default=2)
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N (default cpu)")
    p.add_argument("--out-size", type=parse_size, help="output WxH (default: 1280x720 on CUDA)")
    p.add_argument("--lr-size", type=parse_size, help="LR input WxH or N (default on CPU: 64)")
    p.add_argument("--csnln-size", type=parse_size, help="CSNLN's LR input (default: 160 on CUDA, 32 on CPU)")
    p.add_argument("--precision", choices=["bf16", "fp16"], default="bf16", help="optimised variant's autocast")
    p.add_argument("--compile", action="store_true", help="torch.compile in the optimised variant (+ a compile column)")
    p.add_argument("--variants", nargs="+", choices=["eager", "optimised", "cl", "bf16", "compile", "onnxruntime"],
                   help=f"default: {' '.join(DEFAULT_VARIANTS)} (+ compile with --compile)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--runs", type=int, default=3, help="timed rounds (median)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    p.add_argument("--tf32", choices=["default", "on", "off"], default="default",
                   help="CUDA: TF32 in matmuls and cuDNN convolutions for every fp32 variant (default: torch's)")
    p.add_argument("--backends", action="store_true", help="the CPU backends comparison: variants "
                   f"{' '.join(BACKEND_VARIANTS)}, --shipped, --any-precision, no analysis, glibc keeps freed memory")
    p.add_argument("--shipped", action="store_true", help="shipped weights where they exist (default: random)")
    p.add_argument("--any-precision", action="store_true", help="time undeclared precisions too (plain autocast)")
    p.add_argument("--outputs", type=Path, help="folder for each model's eager output (to compare code versions)")
    p.add_argument("--cost-only", action="store_true", help="print FLOPs and bytes (meta device) and stop")
    p.add_argument("--no-analysis", action="store_true", help="skip FLOPs, bytes, peaks and floors")
    p.add_argument("--tiny", action="store_true", help="tiny model configurations (a smoke test of this script)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        if args.tf32 != "default":
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = args.tf32 == "on"
    if args.backends:
        args.shipped = args.any_precision = args.no_analysis = True
        sisr.tune_process(openmp=False)  # glibc keeps freed memory, as in the CLI (unless SISR_MALLOC=default)
    variants = args.variants or (BACKEND_VARIANTS if args.backends else
                                 DEFAULT_VARIANTS + (["compile"] if args.compile else []))
    variants = variants if "eager" in variants else ["eager"] + variants
    if set(variants) & set(CACHES):  # cold compile caches: the first call's build is timed
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="sisr-bench-inductor-")
        os.environ["SISR_CACHE_DIR"] = tempfile.mkdtemp(prefix="sisr-bench-cache-")
    if args.outputs:
        args.outputs.mkdir(parents=True, exist_ok=True)
    models = args.models or list_models()

    def size_for(name: str) -> tuple[int, int]:
        if name == "csnln":
            return args.csnln_size or ((160, 160) if device.type == "cuda" else (32, 32))
        if args.lr_size:
            return args.lr_size
        if args.out_size or device.type == "cuda":
            oh, ow = args.out_size or (720, 1280)
            return math.ceil(oh / args.scale), math.ceil(ow / args.scale)
        return 64, 64

    if args.cost_only:
        print("\n".join(cost_lines(models, args.scale, size_for, args.tiny)))
        return 0
    path = common.check_json(args.json or common.RESULTS / f"inference_{device.type}.json", args.overwrite)
    cpu = device.type == "cpu"
    measure_peaks = lambda: peak_rates(device, 2048 if cpu else 8192, conv=cpu)  # noqa: E731
    samples, rows = [] if args.no_analysis else [measure_peaks()], []
    for name in models:
        rows.append(measure_model(name, args.scale, size_for(name), variants, args, device))
        if not args.no_analysis:
            try:
                rows[-1]["cost"] = model_cost(name, args.scale, size_for(name), args.tiny)
            except Exception as exc:  # noqa: BLE001 - reported in the table
                rows[-1]["cost"] = {"error": one_line(exc)}
            samples.append(measure_peaks())  # after every model: the peaks of the whole run
        print("\n".join(table_lines(rows, variants)), file=sys.stderr)
    peaks = None if args.no_analysis else combine_peaks(samples, device)
    for row in rows if peaks else []:
        if "flops" in row.get("cost", {}):
            row["limit"] = analyse(row, row["cost"], peaks, args.compile)
    print("\n" + "\n".join(table_lines(rows, variants) + (["", *limit_lines(rows, peaks)] if peaks else [])))
    print("\n" + "\n".join(md_table(["model", "variant", "first call s (cold: compiling)", "cached: load + call s"], [
        [r["model"], v, f"{e['first_s']:.2f}", fmt(e.get("warm_first_s"))] for r in rows
        for v, e in r["variants"].items() if "first_s" in e and v != "eager"])))
    print(f"\n{device}, {torch.get_num_threads()} threads, x{args.scale}, batch 1, median of {args.runs} after "
          f"{args.warmup} warm-up")
    common.write_json(path, {"benchmark": "inference", "device": str(device), "scale": args.scale,
                             "warmup": args.warmup, "runs": args.runs, "tiny": args.tiny, "precision": args.precision,
                             "compile": args.compile, "tf32": {"matmul": torch.backends.cuda.matmul.allow_tf32,
                                                               "cudnn": torch.backends.cudnn.allow_tf32},
                             "peaks": peaks, "peak_samples": samples, "rows": rows}, args.overwrite)
    return 0


def cost_lines(models: list[str], scale: int, size_for, tiny: bool) -> list[str]:
    """FLOPs, bytes and arithmetic intensity of one forward per model (no device time needed)."""
    rows = []
    for name in models:
        (h, w), c = size_for(name), model_cost(name, scale, size_for(name), tiny)
        rows.append([name, f"{w}x{h}", f"{w * scale}x{h * scale}", f"{c['flops'] / 1e9:.1f}",
                     f"{c['weight_bytes'] / 1e6:.1f}", f"{c['layer_bytes'] / 1e6:.0f}", f"{c['op_bytes'] / 1e6:.0f}",
                     f"{c['flops'] / c['layer_bytes']:.0f}"])
    return md_table(["model", "LR", "output", "GFLOPs", "weights MB", "layer MB", "eager-op MB", "FLOP/byte (layer)"],
                    rows)


def table_lines(rows: list[dict], variants: list[str]) -> list[str]:
    others = [v for v in variants if v != "eager"]
    cuda = any("peak_memory_bytes" in e for r in rows for e in r["variants"].values())
    head = ["model", "params", "LR", "output", "eager ms"] + [f"{v} ms" for v in others] + \
        [f"{v} speed-up" for v in others] + [f"{v} max diff /255" for v in others] + \
        ["eager raw output [min, max] (clamped %)", "optimised raw diff / range"] + \
        [f"{v} peak MiB" for v in ["eager"] + others] * cuda
    lines = []
    for r in rows:
        v = {k: r["variants"].get(k, {}) for k in ["eager"] + others}
        raw = r.get("eager_raw_output")
        lines.append([r["model"], f"{r['params'] / 1e6:.2f}M", "x".join(map(str, r["lr_size"][::-1])),
                      "x".join(map(str, r["out_size"][::-1]))] +
                     [fmt(v[k].get("median_s"), "{:.1f}", 1e3) for k in ["eager"] + others] +
                     [fmt(v[k].get("speedup_vs_eager"), "{:.2f}x") for k in others] +
                     [fmt(v[k].get("max_abs_diff_255"), "{:.3f}") for k in others] +
                     [f"[{raw['min']:.3g}, {raw['max']:.3g}] ({raw['clamped_fraction']:.1%})" if raw else "n/a",
                      fmt(v.get("optimised", {}).get("raw_max_abs_diff_over_range"), "{:.2e}")] +
                     [fmt(v[k].get("peak_memory_bytes"), "{:.0f}", 1 / common.MIB) for k in ["eager"] + others] * cuda)
    labels = {k: e["label"] for r in rows for k, e in r["variants"].items() if "label" in e}
    errors = [f"  {r['model']} {k}: " + (e["error"] if "error" in e else "precision not declared by the model: a "
                                          "plain autocast (a figure)") for r in rows for k, e in r["variants"].items()
              if "error" in e or e["options"]["figure"]]
    return md_table(head, lines) + ["variants: " + "; ".join(f"{k} = {labels[k]}" for k in labels)] + errors


def limit_lines(rows: list[dict], peaks: dict) -> list[str]:
    b = peaks["best"]
    out = [f"peaks (median of {peaks['samples']} samples): fp32 {peaks['fp32_flops_per_s'] / 1e9:.1f} GFLOP/s, bf16 "
           f"{peaks['bf16_flops_per_s'] / 1e9:.1f} GFLOP/s, copy {peaks['bytes_per_s'] / 1e9:.1f} GB/s (read + "
           f"written); best sample: {b['fp32'] / 1e9:.1f}, {b['bf16'] / 1e9:.1f} GFLOP/s, {b['bytes'] / 1e9:.1f} GB/s"]
    limits, speedups = [], []
    for r in rows:
        c, lim, lr = r.get("cost", {}), r.get("limit"), "x".join(map(str, r["lr_size"][::-1]))
        if lim is None:
            limits.append([r["model"], lr] + ["n/a"] * 9)
            continue
        limits.append([r["model"], lr, f"{c['flops'] / 1e9:.2f}", f"{c['weight_bytes'] / 1e6:.1f}",
                       f"{c['layer_bytes'] / 1e6:.1f}", f"{c['op_bytes'] / 1e6:.1f}", f"{lim['floor_s'] * 1e3:.2f}",
                       lim["bound"], fmt(lim.get("measured_s"), "{:.1f}", 1e3), fmt(lim.get("measured_over_floor")),
                       fmt(lim.get("achieved_flops_per_s"), "{:.1f}", 1e-9)])
        measured = lim["measured_speedup"]
        speedups.append([r["model"]] + [f"{lim['predicted_speedup'][k]:.2f}x / {measured[k]:.2f}x" if k in measured
                                        else "-" for k in ("cl", "bf16", "compile", "optimised")])
    return out + md_table(["model", "LR", "GFLOPs", "weights MB", "layer MB", "eager-op MB", "floor ms", "bound",
                           "eager ms", "eager / floor", "GFLOP/s"], limits) + [""] + md_table(
        ["model"] + [f"{k} predicted / measured" for k in ("cl", "bf16", "compile", "optimised")], speedups)


if __name__ == "__main__":
    raise SystemExit(main())
