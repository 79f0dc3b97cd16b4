"""CSNLN: the fast (default) attention path against the authors' reference formulation. Method: docs/benchmarks.md.

CPU (always): x2, full model, random weights, --size LR: time, CPU time and peak RSS growth of each path, every run
in a fresh process, the paths alternating; then one untiled --large-size LR image on the default path (vs 8 GiB).
CUDA (``--device cuda``, in addition; ``compare_paths``, also the ``csnln`` section of gpu_suite.py): --gpu-size LR,
fp32 of both paths under one TF32 setting, the fast path under bf16, allocator peaks, fraction of the matmul peak.

    python benchmarks/csnln.py                       # CPU table, JSON to benchmarks/results/csnln.json
    python benchmarks/csnln.py --device cuda [--tf32] [--skip-cpu] --overwrite
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import resource
import statistics
import sys
import time

import common  # benchmarks/common.py (makes sisr importable from a checkout)
import torch
from common import fmt, md_table, timed, with_peak

import sisr
from sisr.evaluation import roofline
from sisr.evaluation.profile import count_model_flops
from sisr.utils.device import resolve_device
from sisr.utils.memory import PeakMemory

SCALE = 2
GIB = 2**30


def model_flops(size: int, hparams: dict | None = None) -> int:
    """FLOPs of one forward (authors' formulation) on a size x size LR input, counted on the meta device."""
    hparams = {**(hparams or {}), "attention": "reference"}
    return count_model_flops("csnln", SCALE, (size, size), hparams=hparams)["flops"]


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def worker(spec: dict) -> dict:
    """One CPU measurement in this (fresh) process: times, CPU times and peak RSS growth of ``spec['path']``."""
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    torch.manual_seed(0)
    model = sisr.create_model("csnln", scale=SCALE, attention=spec["path"]).eval()
    x = torch.rand(1, 3, spec["size"], spec["size"], generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        model(torch.rand(1, 3, 8, 8))  # load kernels and libraries before the baseline
    gc.collect()
    times, cpu_times = [], []
    with PeakMemory("cpu", cpu="current") as mem, torch.no_grad():
        for _ in range(spec["warmup"] + spec["runs"]):
            start, start_cpu = time.perf_counter(), _cpu_seconds()
            model(x)
            times.append(time.perf_counter() - start)
            cpu_times.append(_cpu_seconds() - start_cpu)
    timed_s, cpu_s = times[spec["warmup"]:], cpu_times[spec["warmup"]:]
    return {"path": spec["path"], "size": spec["size"], "times_s": timed_s, "median_s": statistics.median(timed_s),
            "cpu_times_s": cpu_s, "median_cpu_s": statistics.median(cpu_s), "baseline_rss_bytes": mem.baseline_bytes,
            "peak_rss_bytes": mem.peak_bytes, "peak_rss_growth_bytes": mem.bytes, "threads": torch.get_num_threads()}


def run_worker(spec: dict) -> dict:
    return common.run_worker(__file__, "--worker", json.dumps(spec))


def cpu_section(args) -> dict:
    flops = model_flops(args.size)
    measured: dict[str, list[dict]] = {"reference": [], "fast": []}
    for i in range(args.runs):  # one fresh process per run, the paths alternating (order swapped every round)
        for path in ("reference", "fast") if i % 2 == 0 else ("fast", "reference"):
            measured[path].append(run_worker({"path": path, "size": args.size, "runs": 1, "warmup": args.warmup,
                                              "threads": args.threads}))
    rows = {}
    for path, runs in measured.items():
        times, cpu_times = [r["times_s"][0] for r in runs], [r["cpu_times_s"][0] for r in runs]
        growth = [r["peak_rss_growth_bytes"] for r in runs]
        rows[path] = {"times_s": times, "median_s": statistics.median(times), "cpu_times_s": cpu_times,
                      "median_cpu_s": statistics.median(cpu_times), "peak_rss_growth_runs_bytes": growth,
                      "peak_rss_growth_bytes": max(growth), "baseline_rss_bytes": runs[0]["baseline_rss_bytes"],
                      "threads": runs[0]["threads"], "gflops_per_s": flops / statistics.median(times) / 1e9}
    ref, fast = rows["reference"], rows["fast"]
    result = {"size": args.size, "scale": SCALE, "model_flops": flops, "paths": rows,
              "time_ratio_fast_over_reference": fast["median_s"] / ref["median_s"],
              "memory_ratio_fast_over_reference": fast["peak_rss_growth_bytes"] / max(1, ref["peak_rss_growth_bytes"])}
    result["target_time_met"] = result["time_ratio_fast_over_reference"] <= 1.0
    result["target_memory_met"] = result["memory_ratio_fast_over_reference"] <= 0.5
    print(f"\nCPU, x{SCALE}, {args.size}x{args.size} LR, batch 1, n_feats 128, depth 12, random weights, "
          f"{ref['threads']} threads; {flops / 1e9:.0f} GFLOPs per forward (authors' formulation)")
    print("\n".join(md_table(["path", "median s", "runs s", "CPU s", "GFLOP/s", "peak RSS growth MiB"], [
        [p, f"{r['median_s']:.2f}", ", ".join(f"{t:.2f}" for t in r["times_s"]), f"{r['median_cpu_s']:.2f}",
         f"{r['gflops_per_s']:.1f}", f"{r['peak_rss_growth_bytes'] / 2**20:.0f}"] for p, r in rows.items()])))
    print(f"fast / reference: time {result['time_ratio_fast_over_reference']:.3f} (target <= 1: "
          f"{'met' if result['target_time_met'] else 'NOT met'}), peak memory "
          f"{result['memory_ratio_fast_over_reference']:.3f} (target <= 0.5: "
          f"{'met' if result['target_memory_met'] else 'NOT met'})")
    if args.large_size:
        large = result["large"] = run_worker({"path": "fast", "size": args.large_size, "runs": 1, "warmup": 0,
                                              "threads": args.threads})
        large["fits_8_gib"] = large["peak_rss_bytes"] <= 8 * GIB
        print(f"untiled {args.large_size}x{args.large_size} LR, default path: {large['median_s']:.1f} s "
              f"({large['median_cpu_s']:.0f} CPU s), peak RSS {large['peak_rss_bytes'] / GIB:.2f} GiB (process total; "
              f"growth {large['peak_rss_growth_bytes'] / GIB:.2f} GiB), fits in 8 GiB: {large['fits_8_gib']}")
    return result


def compare_paths(device: torch.device, size: int, runs: int, peaks: dict | None, hparams: dict | None = None) -> dict:
    """Reference fp32, fast fp32 and fast bf16 on ``device`` (batch 1, random weights): the first call's allocator peak
    (CUDA), the median of ``runs`` timed calls, output differences, achieved FLOP/s and its fraction of ``peaks``
    (``roofline.peak_rates``: the fp32 one per ``roofline.fp32_peak_key``)."""
    flops = model_flops(size, hparams)
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(1)).to(device)
    rows, outs = {}, {}
    for name, path, dtype in (("reference fp32", "reference", None), ("fast fp32", "fast", None),
                              ("fast bf16", "fast", torch.bfloat16)):
        torch.manual_seed(0)
        model = sisr.create_model("csnln", scale=SCALE, attention=path, **(hparams or {})).eval().to(device)

        def forward(model=model, dtype=dtype):
            with torch.no_grad(), torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext():
                return model(x)

        common.free(device)
        out, peak = with_peak(forward, device)
        outs[name] = out.float()
        times = [timed(forward, device)[0] for _ in range(runs)]
        peak_rate = peaks and peaks["bf16" if dtype else roofline.fp32_peak_key(device)]
        rows[name] = {"times_s": times, "median_s": statistics.median(times), "peak_memory_bytes": peak,
                      "flops_per_s": flops / statistics.median(times),
                      "fraction_of_matmul_peak": flops / statistics.median(times) / peak_rate if peak_rate else None}
        del model, out
    ref, fast, bf16, fp32 = rows["reference fp32"], rows["fast fp32"], outs["fast bf16"], outs["fast fp32"]
    result = {"size": size, "scale": SCALE, "hparams": hparams or "full (n_feats 128, depth 12)", "model_flops": flops,
              "paths": rows, "speedup_fast_vs_reference": ref["median_s"] / fast["median_s"],
              "memory_ratio_fast_over_reference": fast["peak_memory_bytes"] / ref["peak_memory_bytes"]
              if ref["peak_memory_bytes"] else None,
              "max_abs_diff_fast_vs_reference_fp32": (fp32 - outs["reference fp32"]).abs().max().item(),
              "bf16_vs_fp32_max_abs_diff_255": (bf16.clamp(0, 1) - fp32.clamp(0, 1)).abs().max().item() * 255,
              "bf16_vs_fp32_raw_max_abs_diff": (bf16 - fp32).abs().max().item(),
              "peaks_used": {"fp32": roofline.fp32_peak_key(device), "bf16": "bf16"}}
    memory = result["memory_ratio_fast_over_reference"]
    result["targets"] = {"speed-up >= 5x": result["speedup_fast_vs_reference"] >= 5,
                         "peak memory <= 1/4": None if memory is None else memory <= 0.25,
                         "bf16 within 2/255": result["bf16_vs_fp32_max_abs_diff_255"] <= 2}
    return result


def comparison_lines(r: dict) -> list[str]:
    t = r["targets"]
    return md_table(["path", "median s", "peak MiB", "TFLOP/s", "of matmul peak"], [
        [k, fmt(v["median_s"], "{:.4f}"), fmt(v["peak_memory_bytes"], "{:.0f}", 1 / common.MIB),
         fmt(v["flops_per_s"], "{:.2f}", 1e-12), fmt(v["fraction_of_matmul_peak"], "{:.1%}")]
        for k, v in r["paths"].items()]) + [
        "", f"x{r['scale']}, {r['size']}x{r['size']} LR, {r['model_flops'] / 1e12:.3f} TFLOPs per forward (authors' "
        f"formulation). Fast vs reference: **{fmt(r['speedup_fast_vs_reference'])}x** faster (target >= 5: "
        f"{t['speed-up >= 5x']}), peak memory **{fmt(r['memory_ratio_fast_over_reference'], '{:.3f}')}** of the "
        f"reference (target <= 0.25: {t['peak memory <= 1/4']}); max |fast - reference| (fp32) "
        f"{r['max_abs_diff_fast_vs_reference_fp32']:.2e}; bf16 vs fp32 {r['bf16_vs_fp32_max_abs_diff_255']:.3f}/255 "
        f"(clamped; raw {r['bf16_vs_fp32_raw_max_abs_diff']:.2e})."]


def main(argv: list[str] | None = None) -> int:
    p = common.make_parser(__doc__, "csnln.json")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="cuda: the GPU measurements as well")
    p.add_argument("--size", type=int, default=64, help="LR size of the CPU comparison (default 64)")
    p.add_argument("--large-size", type=int, default=256, help="LR size of the untiled CPU run; 0 skips it")
    p.add_argument("--gpu-size", type=int, default=160, help="LR size of the CUDA comparison (default 160)")
    p.add_argument("--runs", type=int, default=3, help="timed runs per path (CPU: each in a fresh process)")
    p.add_argument("--warmup", type=int, default=1, help="CPU: untimed full-size runs before each timed one")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    p.add_argument("--tf32", action="store_true", help="allow TF32 in matmuls and convolutions (both paths)")
    p.add_argument("--skip-cpu", action="store_true", help="with --device cuda: only the GPU measurements")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0
    common.check_json(args.json, args.overwrite)
    result = {}
    if not (args.skip_cpu and args.device == "cuda"):
        result["cpu"] = cpu_section(args)
    if args.device == "cuda":
        device = resolve_device("cuda")
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = args.tf32
        peaks = roofline.peak_rates(device, 8192, reps=10, calls=3, copy_mib=64)
        result["cuda"] = {**compare_paths(device, args.gpu_size, args.runs, peaks), "tf32": args.tf32,
                          "matmul_peak_flops_per_s": peaks, "device": torch.cuda.get_device_name(device)}
        print(f"\nCUDA {result['cuda']['device']}, TF32 {'on' if args.tf32 else 'off'}\n")
        print("\n".join(comparison_lines(result["cuda"])))
    common.write_json(args.json, result, args.overwrite)
    return 0


if __name__ == "__main__":
    sys.exit(main())
