"""CSNLN: the fast (default) attention path against the authors' reference formulation.

CPU (always): x2, batch 1, full model (n_feats 128, depth 12) with random weights on a
--size x --size LR input: median wall and process-CPU time of --runs runs of each path and their
peak RSS growth, every run in a fresh subprocess (``resource.getrusage`` maxrss minus the RSS before
the run, ``sisr.utils.memory.PeakMemory(cpu="current")``; the largest growth is reported), the two
paths alternating; then one untiled --large-size LR image on the default path (time, peak RSS of
the whole process, vs 8 GiB).
Targets: default no slower than reference, at most half its peak memory; the large image in 8 GiB.

CUDA (``--device cuda``, in addition): x2 on a --gpu-size LR input: fp32 time of both paths
(one TF32 setting for both, ``--tf32``), peak memory from the CUDA allocator, the default path
under bf16 autocast (time, memory, output difference from fp32), and the achieved FLOP rate
(model FLOPs from FlopCounterMode / time) as a fraction of the device's matmul peak measured here.

    python benchmarks/csnln.py                       # CPU table, JSON to benchmarks/results/csnln.json
    python benchmarks/csnln.py --device cuda --overwrite
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

import sisr
from sisr.evaluation.profile import count_model_flops
from sisr.errors import SisrError
from sisr.utils.fs import atomic_write_text
from sisr.utils.memory import PeakMemory

SCALE = 2
GIB = 2**30
RSS_LIMIT = 8 * GIB


def build(path: str, device: str = "cpu") -> torch.nn.Module:
    torch.manual_seed(0)
    return sisr.create_model("csnln", scale=SCALE, attention=path).eval().to(device)


def model_flops(size: int) -> int:
    """FLOPs of one forward (authors' formulation) on a size x size LR input, counted on the meta device."""
    return count_model_flops("csnln", SCALE, (size, size), hparams={"attention": "reference"})["flops"]


def _cpu_seconds() -> float:
    """User + system CPU time of this process (all threads)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def worker(spec: dict) -> dict:
    """One CPU measurement in this (fresh) process: times and peak RSS growth of ``spec['path']``."""
    from tqdm import tqdm

    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    model = build(spec["path"])
    x = torch.rand(1, 3, spec["size"], spec["size"], generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        model(torch.rand(1, 3, 8, 8))  # load kernels and libraries before the baseline
    gc.collect()
    with PeakMemory("cpu", cpu="current") as mem:
        n = spec["warmup"] + spec["runs"]
        bar = tqdm(total=n * model.depth, desc=f"{spec['path']} {spec['size']}x{spec['size']}", disable=None,
                   file=sys.stderr)
        model.SEM.register_forward_hook(lambda *_: bar.update())
        times, cpu_times = [], []
        with torch.no_grad():
            for _ in range(n):
                start, start_cpu = time.perf_counter(), _cpu_seconds()
                model(x)
                times.append(time.perf_counter() - start)
                cpu_times.append(_cpu_seconds() - start_cpu)
        bar.close()
    timed, cpu_timed = times[spec["warmup"]:], cpu_times[spec["warmup"]:]
    return {"path": spec["path"], "size": spec["size"], "times_s": timed, "median_s": statistics.median(timed),
            "cpu_times_s": cpu_timed, "median_cpu_s": statistics.median(cpu_timed),
            "baseline_rss_bytes": mem.baseline_bytes, "peak_rss_bytes": mem.peak_bytes,
            "peak_rss_growth_bytes": mem.bytes,
            "threads": torch.get_num_threads()}


def run_worker(spec: dict) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)], stdout=subprocess.PIPE,
                          text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"benchmark worker {spec} failed with exit status {proc.returncode}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def cpu_section(args) -> dict:
    flops = model_flops(args.size)
    # one fresh process per run, the two paths alternating (and their order swapped every round)
    # so that a drifting machine load affects both alike
    measured: dict[str, list[dict]] = {"reference": [], "fast": []}
    for i in range(args.runs):
        for path in ("reference", "fast") if i % 2 == 0 else ("fast", "reference"):
            measured[path].append(run_worker({"path": path, "size": args.size, "runs": 1, "warmup": args.warmup,
                                              "threads": args.threads}))
    rows = {}
    for path, runs in measured.items():
        times = [r["times_s"][0] for r in runs]
        cpu_times = [r["cpu_times_s"][0] for r in runs]
        growth = [r["peak_rss_growth_bytes"] for r in runs]
        rows[path] = {"times_s": times, "median_s": statistics.median(times), "cpu_times_s": cpu_times,
                      "median_cpu_s": statistics.median(cpu_times), "peak_rss_growth_runs_bytes": growth,
                      "peak_rss_growth_bytes": max(growth), "baseline_rss_bytes": runs[0]["baseline_rss_bytes"],
                      "threads": runs[0]["threads"], "gflops_per_s": flops / statistics.median(times) / 1e9}
    ref, fast = rows["reference"], rows["fast"]
    result = {
        "size": args.size, "scale": SCALE, "model_flops": flops, "paths": rows,
        "time_ratio_fast_over_reference": fast["median_s"] / ref["median_s"],
        "memory_ratio_fast_over_reference": fast["peak_rss_growth_bytes"] / max(1, ref["peak_rss_growth_bytes"]),
    }
    result["target_time_met"] = result["time_ratio_fast_over_reference"] <= 1.0
    result["target_memory_met"] = result["memory_ratio_fast_over_reference"] <= 0.5
    print(f"\nCPU, x{SCALE}, {args.size}x{args.size} LR, batch 1, n_feats 128, depth 12, random weights, "
          f"{ref['threads']} threads; {flops / 1e9:.0f} GFLOPs per forward (authors' formulation)")
    print(f"{'path':<10} {'median s':>9} {'runs s':>32} {'CPU s':>8} {'GFLOP/s':>8} {'peak RSS growth MiB':>20}")
    for path, r in rows.items():
        runs = ", ".join(f"{t:.2f}" for t in r["times_s"])
        print(f"{path:<10} {r['median_s']:>9.2f} {runs:>32} {r['median_cpu_s']:>8.2f} {r['gflops_per_s']:>8.1f} "
              f"{r['peak_rss_growth_bytes'] / 2**20:>20.0f}")
    print(f"fast / reference: time {result['time_ratio_fast_over_reference']:.3f} (target <= 1: "
          f"{'met' if result['target_time_met'] else 'NOT met'}), peak memory "
          f"{result['memory_ratio_fast_over_reference']:.3f} (target <= 0.5: "
          f"{'met' if result['target_memory_met'] else 'NOT met'})")
    if args.large_size:
        large = run_worker({"path": "fast", "size": args.large_size, "runs": 1, "warmup": 0,
                            "threads": args.threads})
        large["fits_8_gib"] = large["peak_rss_bytes"] <= RSS_LIMIT
        result["large"] = large
        print(f"untiled {args.large_size}x{args.large_size} LR, default path: {large['median_s']:.1f} s "
              f"({large['median_cpu_s']:.0f} CPU s), "
              f"peak RSS {large['peak_rss_bytes'] / GIB:.2f} GiB (process total; growth "
              f"{large['peak_rss_growth_bytes'] / GIB:.2f} GiB), fits in 8 GiB: {large['fits_8_gib']}")
    return result


def _cuda_time(fn, runs: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return times


def matmul_peak(dtype: torch.dtype, n: int = 8192, reps: int = 10) -> float:
    """Measured dense matmul FLOP/s of the current device for ``dtype`` (current TF32 setting)."""
    a = torch.randn(n, n, device="cuda", dtype=dtype)
    b = torch.randn(n, n, device="cuda", dtype=dtype)
    c = torch.empty(n, n, device="cuda", dtype=dtype)

    def products() -> None:
        for _ in range(reps):
            torch.mm(a, b, out=c)

    best = min(_cuda_time(products, runs=3, warmup=1))
    return 2 * n**3 * reps / best


def cuda_section(args) -> dict:
    if not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available")
    torch.backends.cuda.matmul.allow_tf32 = args.tf32
    torch.backends.cudnn.allow_tf32 = args.tf32
    flops = model_flops(args.gpu_size)
    peaks = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
    x = torch.rand(1, 3, args.gpu_size, args.gpu_size, generator=torch.Generator().manual_seed(1)).cuda()
    rows, outputs = {}, {}
    for name, path, dtype in (("reference fp32", "reference", None), ("fast fp32", "fast", None),
                              ("fast bf16", "fast", torch.bfloat16)):
        model = build(path, "cuda")

        def forward():
            precision = torch.autocast("cuda", dtype=dtype) if dtype else contextlib.nullcontext()
            with torch.no_grad(), precision:
                return model(x)

        gc.collect()
        torch.cuda.empty_cache()
        with PeakMemory("cuda") as mem:
            outputs[name] = forward().float()
            times = _cuda_time(forward, args.runs, max(1, args.warmup))
        median = statistics.median(times)
        rate = flops / median
        rows[name] = {"times_s": times, "median_s": median,
                      "peak_memory_bytes": mem.bytes,
                      "flops_per_s": rate, "fraction_of_matmul_peak": rate / peaks["bf16" if dtype else "fp32"]}
        del model
    ref, fast = rows["reference fp32"], rows["fast fp32"]
    bf16_diff = (outputs["fast bf16"] - outputs["fast fp32"]).abs().max().item()
    result = {
        "device": torch.cuda.get_device_name(), "size": args.gpu_size, "scale": SCALE, "tf32": args.tf32,
        "model_flops": flops, "matmul_peak_flops_per_s": peaks, "paths": rows,
        "time_ratio_fast_over_reference": fast["median_s"] / ref["median_s"],
        "memory_ratio_fast_over_reference": fast["peak_memory_bytes"] / ref["peak_memory_bytes"],
        "fast_vs_reference_fp32_max_abs_diff": (outputs["fast fp32"] - outputs["reference fp32"]).abs().max().item(),
        "bf16_vs_fp32_max_abs_diff": bf16_diff,
    }
    print(f"\nCUDA {result['device']}, x{SCALE}, {args.gpu_size}x{args.gpu_size} LR, batch 1, TF32 "
          f"{'on' if args.tf32 else 'off'}; {flops / 1e12:.2f} TFLOPs per forward; matmul peak "
          f"fp32 {peaks['fp32'] / 1e12:.1f}, bf16 {peaks['bf16'] / 1e12:.1f} TFLOP/s")
    print(f"{'path':<16} {'median s':>9} {'peak MiB':>10} {'TFLOP/s':>8} {'of peak':>8}")
    for name, r in rows.items():
        print(f"{name:<16} {r['median_s']:>9.3f} {r['peak_memory_bytes'] / 2**20:>10.0f} "
              f"{r['flops_per_s'] / 1e12:>8.2f} {r['fraction_of_matmul_peak']:>8.1%}")
    print(f"fast / reference fp32: time {result['time_ratio_fast_over_reference']:.3f}, peak memory "
          f"{result['memory_ratio_fast_over_reference']:.3f}; max |fast - reference| "
          f"{result['fast_vs_reference_fp32_max_abs_diff']:.2e}; max |bf16 - fp32| {bf16_diff:.2e} "
          f"({bf16_diff * 255:.2f}/255)")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="cuda: the GPU measurements in addition to the CPU ones")
    parser.add_argument("--size", type=int, default=64, help="LR size of the CPU comparison (default 64)")
    parser.add_argument("--large-size", type=int, default=256,
                        help="LR size of the untiled CPU run on the default path; 0 skips it (default 256)")
    parser.add_argument("--gpu-size", type=int, default=160, help="LR size of the CUDA comparison (default 160)")
    parser.add_argument("--runs", type=int, default=3,
                        help="timed runs per path, each in a fresh process on CPU (median reported)")
    parser.add_argument("--warmup", type=int, default=1,
                        help="untimed full-size runs before each timed one (CPU; CUDA always does one)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    parser.add_argument("--tf32", action="store_true", help="allow TF32 in matmuls and convolutions (both paths)")
    parser.add_argument("--skip-cpu", action="store_true", help="with --device cuda: only the GPU measurements")
    parser.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "csnln.json")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0
    if args.json.exists() and not args.overwrite:
        print(f"{args.json}: already exists (use --overwrite to replace it)", file=sys.stderr)
        return 2
    result = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "torch": torch.__version__,
              "machine": platform.platform(), "processor": platform.processor(), "cpu_count": os.cpu_count()}
    if not (args.skip_cpu and args.device == "cuda"):
        result["cpu"] = cpu_section(args)
    if args.device == "cuda":
        result["cuda"] = cuda_section(args)
    try:
        atomic_write_text(args.json, json.dumps(result, indent=1) + "\n", overwrite=args.overwrite)
    except SisrError as exc:
        print(exc, file=sys.stderr)
        return 2
    print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
