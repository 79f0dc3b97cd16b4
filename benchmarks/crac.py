"""CRAC per-sample modulated convolution: one grouped convolution vs CGC's unfold + matmul.

Both formulations run the same CRAC (mask computation included) on the same input,
in two modes: ``forward`` (no_grad) and ``train`` (forward, then backward with a
given upstream gradient, as inside a network).

* Peak memory: each (formulation, mode) runs one call in a fresh subprocess; peak =
  growth of the process's maximum resident set size (``getrusage`` ru_maxrss, by
  ``sisr.utils.memory.PeakMemory(cpu="maxrss")``)
  over that call, from a baseline taken once the module, input and gradient exist.
* Time: median of ``--repeats`` calls per formulation, after one warm-up call each;
  the formulations alternate call by call in one subprocess per mode, so load from
  other processes hits both alike.

    .venv/bin/python benchmarks/crac.py                 # 64 channels, 128x128, batch 16
    .venv/bin/python benchmarks/crac.py --threads 2 --json out.json --overwrite

Targets (forward): grouped at least 2x faster and at most 1/4 of the unfold peak
memory, outputs within 1e-5. Training figures are printed beside them.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from sisr.models.cran import CRAC, modulated_conv2d, modulated_conv2d_unfold
from sisr.utils.fs import atomic_write_text
from sisr.utils.memory import PeakMemory

FORMULATIONS = {"grouped": modulated_conv2d, "unfold": modulated_conv2d_unfold}
MODES = ("forward", "train")  # forward under no_grad; forward + backward
DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "crac.json"
MIB = 2**20


def _setup(args: argparse.Namespace, mode: str) -> tuple[CRAC, torch.Tensor, torch.Tensor | None]:
    """Module, input and (train mode) the upstream gradient, as a network would hand them over."""
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    crac = CRAC(args.channels, args.channels, 3, ci_groups=args.ci_groups)
    x = torch.randn(args.batch, args.channels, args.size, args.size, requires_grad=mode == "train")
    grad_out = torch.randn(x.shape) if mode == "train" else None
    return crac, x, grad_out


def _call(crac: CRAC, x: torch.Tensor, grad_out: torch.Tensor | None, conv) -> None:
    if grad_out is None:
        with torch.no_grad():
            conv(x, crac.weight * crac.mask(x), crac.bias)
    else:
        crac.zero_grad(set_to_none=True)
        x.grad = None
        conv(x, crac.weight * crac.mask(x), crac.bias).backward(grad_out)


def memory_worker(args: argparse.Namespace, formulation: str, mode: str) -> dict:
    """Peak memory of one call of one formulation, alone in this process."""
    crac, x, grad_out = _setup(args, mode)
    with PeakMemory("cpu", cpu="maxrss") as mem:
        _call(crac, x, grad_out, FORMULATIONS[formulation])
    return {"peak_extra_mib": mem.bytes / MIB, "maxrss_mib": mem.peak_bytes / MIB,
            "baseline_mib": mem.baseline_bytes / MIB}


def timing_worker(args: argparse.Namespace, mode: str) -> dict:
    """Per formulation: median time of ``repeats`` calls, the formulations alternating call by call
    (so that load from other processes hits both alike), after one warm-up call each."""
    crac, x, grad_out = _setup(args, mode)
    times: dict[str, list[float]] = {name: [] for name in FORMULATIONS}
    for rnd in range(args.repeats + 1):
        for name, conv in FORMULATIONS.items():
            start = time.perf_counter()
            _call(crac, x, grad_out, conv)
            if rnd:
                times[name].append(time.perf_counter() - start)
    return {"times_s": times, "threads": torch.get_num_threads()}


def check(args: argparse.Namespace) -> dict:
    """Largest output difference between the two formulations (forward)."""
    crac, x, _ = _setup(args, "forward")
    with torch.no_grad():
        weight = crac.weight * crac.mask(x)
        grouped = modulated_conv2d(x, weight, crac.bias)
        unfold = modulated_conv2d_unfold(x, weight, crac.bias)
    return {"max_abs_diff": (grouped - unfold).abs().max().item(), "max_abs_output": grouped.abs().max().item()}


def _subprocess(args: argparse.Namespace, extra: list[str]) -> dict:
    cmd = [sys.executable, __file__, "--channels", str(args.channels), "--size", str(args.size),
           "--batch", str(args.batch), "--repeats", str(args.repeats), "--ci-groups", str(args.ci_groups),
           "--threads", str(args.threads or 0), *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"benchmark worker failed ({' '.join(extra)}):\n{proc.stderr.strip()}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--size", type=int, default=128, help="height = width of the feature map")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per formulation and mode (median)")
    parser.add_argument("--ci-groups", type=int, default=16)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"results file (default {DEFAULT_JSON})")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing results file")
    parser.add_argument("--memory-worker", nargs=2, metavar=("FORMULATION", "MODE"), help=argparse.SUPPRESS)
    parser.add_argument("--timing-worker", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--check", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.memory_worker:
        print(json.dumps(memory_worker(args, *args.memory_worker)))
        return 0
    if args.timing_worker:
        print(json.dumps(timing_worker(args, args.timing_worker)))
        return 0
    if args.check:
        print(json.dumps(check(args)))
        return 0
    if args.json.exists() and not args.overwrite:
        print(f"{args.json}: already exists (use --overwrite to replace it)", file=sys.stderr)
        return 1

    rows, summary = [], {}
    for mode in tqdm(MODES, desc="crac benchmark", disable=None):
        timing = _subprocess(args, ["--timing-worker", mode])
        for name in FORMULATIONS:
            times = timing["times_s"][name]
            rows.append({"mode": mode, "formulation": name, "median_s": statistics.median(times), "times_s": times,
                         **_subprocess(args, ["--memory-worker", name, mode])})
        grouped, unfold = rows[-2], rows[-1]
        summary[mode] = {"speedup": unfold["median_s"] / grouped["median_s"],
                         "memory_ratio": grouped["peak_extra_mib"] / unfold["peak_extra_mib"]}
    diff = _subprocess(args, ["--check"])
    # the targets are for inference (forward); training is reported beside them
    passed = {"speedup>=2": summary["forward"]["speedup"] >= 2,
              "memory<=1/4": summary["forward"]["memory_ratio"] <= 0.25,
              "diff<=1e-5": diff["max_abs_diff"] <= 1e-5}

    shape = f"N={args.batch}, C={args.channels}, {args.size}x{args.size}, 3x3"
    print(f"CRAC modulated convolution ({shape}, {timing['threads']} threads, torch {torch.__version__})")
    header = f"{'mode':<8} {'formulation':<11} {'median s':>9} {'peak extra MiB':>15} {'max RSS MiB':>12}"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['mode']:<8} {r['formulation']:<11} {r['median_s']:>9.3f} {r['peak_extra_mib']:>15.0f} "
              f"{r['maxrss_mib']:>12.0f}")
    for mode, s in summary.items():
        print(f"{mode}: grouped is {s['speedup']:.2f}x faster, uses {s['memory_ratio']:.3f} of the unfold peak")
    print(f"max |grouped - unfold| = {diff['max_abs_diff']:.2e} (outputs up to {diff['max_abs_output']:.1f})")
    print("targets (forward): " + ", ".join(f"{k} {'PASS' if v else 'FAIL'}" for k, v in passed.items()))

    result = {"benchmark": "crac", "shape": {"batch": args.batch, "channels": args.channels, "height": args.size,
                                             "width": args.size, "kernel": 3},
              "threads": timing["threads"],
              "time_method": "median per formulation, formulations alternating call by call in one subprocess",
              "memory_method": "growth of ru_maxrss over one call, fresh subprocess per formulation and mode",
              "rows": rows, "summary": summary, "check": diff, "targets_passed": passed,
              "torch": torch.__version__, "python": platform.python_version(), "machine": platform.machine(),
              "command": " ".join([Path(sys.executable).name, *sys.argv])}
    atomic_write_text(args.json, json.dumps(result, indent=2) + "\n", overwrite=args.overwrite)
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
