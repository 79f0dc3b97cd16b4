"""CRAC per-sample modulated convolution: one grouped convolution vs CGC's unfold + matmul, forward (no_grad) and
train (forward + backward with a given upstream gradient): peak memory of one call in a fresh process, median time
with the formulations alternating, output difference. Targets (forward): >= 2x faster, <= 1/4 of the unfold peak
memory, outputs within 1e-5. Method: docs/benchmarks.md.

    .venv/bin/python benchmarks/crac.py                 # 64 channels, 128x128, batch 16
    .venv/bin/python benchmarks/crac.py --threads 2 --json out.json --overwrite
"""

from __future__ import annotations

import argparse
import json
import statistics

import common  # benchmarks/common.py (makes sisr importable from a checkout)
import torch
from common import md_table, rotate

from sisr.models.cran import CRAC, modulated_conv2d, modulated_conv2d_unfold
from sisr.utils.memory import PeakMemory

FORMULATIONS = {"grouped": modulated_conv2d, "unfold": modulated_conv2d_unfold}
MODES = ("forward", "train")  # forward under no_grad; forward + backward


def setup(args, mode: str) -> tuple[CRAC, torch.Tensor, torch.Tensor | None]:
    """Module, input and (train mode) the upstream gradient, as a network would hand them over."""
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    crac = CRAC(args.channels, args.channels, 3, ci_groups=args.ci_groups)
    x = torch.randn(args.batch, args.channels, args.size, args.size, requires_grad=mode == "train")
    return crac, x, torch.randn(x.shape) if mode == "train" else None


def call(crac: CRAC, x: torch.Tensor, grad_out: torch.Tensor | None, conv) -> None:
    if grad_out is None:
        with torch.no_grad():
            conv(x, crac.weight * crac.mask(x), crac.bias)
    else:
        crac.zero_grad(set_to_none=True)
        x.grad = None
        conv(x, crac.weight * crac.mask(x), crac.bias).backward(grad_out)


def worker(args) -> dict:
    """One measurement alone in this process: a formulation's peak memory, a mode's times, or the difference."""
    if args.memory_worker:
        formulation, mode = args.memory_worker
        crac, x, grad_out = setup(args, mode)
        with PeakMemory("cpu", cpu="maxrss") as mem:
            call(crac, x, grad_out, FORMULATIONS[formulation])
        return {"peak_extra_mib": mem.bytes / common.MIB, "maxrss_mib": mem.peak_bytes / common.MIB,
                "baseline_mib": mem.baseline_bytes / common.MIB}
    if args.timing_worker:
        crac, x, grad_out = setup(args, args.timing_worker)
        calls = {name: (lambda conv=conv: call(crac, x, grad_out, conv)) for name, conv in FORMULATIONS.items()}
        rotate(calls, 1)  # one warm-up call each
        return {"times_s": rotate(calls, args.repeats), "threads": torch.get_num_threads()}
    crac, x, _ = setup(args, "forward")
    with torch.no_grad():
        weight = crac.weight * crac.mask(x)
        grouped = modulated_conv2d(x, weight, crac.bias)
        diff = (grouped - modulated_conv2d_unfold(x, weight, crac.bias)).abs().max().item()
    return {"max_abs_diff": diff, "max_abs_output": grouped.abs().max().item()}


def main(argv: list[str] | None = None) -> int:
    p = common.make_parser(__doc__, "crac.json")
    p.add_argument("--channels", type=int, default=64)
    p.add_argument("--size", type=int, default=128, help="height = width of the feature map")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--repeats", type=int, default=5, help="timed calls per formulation and mode (median)")
    p.add_argument("--ci-groups", type=int, default=16)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--memory-worker", nargs=2, metavar=("FORMULATION", "MODE"), help=argparse.SUPPRESS)
    p.add_argument("--timing-worker", choices=MODES, help=argparse.SUPPRESS)
    p.add_argument("--check", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.memory_worker or args.timing_worker or args.check:
        print(json.dumps(worker(args)))
        return 0
    common.check_json(args.json, args.overwrite)
    shape = ["--channels", str(args.channels), "--size", str(args.size), "--batch", str(args.batch), "--repeats",
             str(args.repeats), "--ci-groups", str(args.ci_groups), "--threads", str(args.threads)]
    rows, summary = [], {}
    for mode in MODES:
        timing = common.run_worker(__file__, *shape, "--timing-worker", mode)
        for name in FORMULATIONS:
            times = timing["times_s"][name]
            rows.append({"mode": mode, "formulation": name, "median_s": statistics.median(times), "times_s": times,
                         **common.run_worker(__file__, *shape, "--memory-worker", name, mode)})
        grouped, unfold = rows[-2], rows[-1]
        summary[mode] = {"speedup": unfold["median_s"] / grouped["median_s"],
                         "memory_ratio": grouped["peak_extra_mib"] / unfold["peak_extra_mib"]}
    diff = common.run_worker(__file__, *shape, "--check")
    forward = summary["forward"]  # the targets are for inference; training is reported beside them
    passed = {"speedup>=2": forward["speedup"] >= 2, "memory<=1/4": forward["memory_ratio"] <= 0.25,
              "diff<=1e-5": diff["max_abs_diff"] <= 1e-5}
    print(f"CRAC modulated convolution (N={args.batch}, C={args.channels}, {args.size}x{args.size}, 3x3, "
          f"{timing['threads']} threads, torch {torch.__version__})")
    print("\n".join(md_table(["mode", "formulation", "median s", "peak extra MiB", "max RSS MiB"], [
        [r["mode"], r["formulation"], f"{r['median_s']:.3f}", f"{r['peak_extra_mib']:.0f}", f"{r['maxrss_mib']:.0f}"]
        for r in rows])))
    for mode, s in summary.items():
        print(f"{mode}: grouped is {s['speedup']:.2f}x faster, uses {s['memory_ratio']:.3f} of the unfold peak")
    print(f"max |grouped - unfold| = {diff['max_abs_diff']:.2e} (outputs up to {diff['max_abs_output']:.1f})")
    print("targets (forward): " + ", ".join(f"{k} {'PASS' if v else 'FAIL'}" for k, v in passed.items()))
    common.write_json(args.json, {
        "benchmark": "crac", "shape": {"batch": args.batch, "channels": args.channels, "height": args.size,
                                       "width": args.size, "kernel": 3}, "threads": timing["threads"],
        "time_method": "median per formulation, formulations alternating call by call in one subprocess",
        "memory_method": "growth of ru_maxrss over one call, fresh subprocess per formulation and mode",
        "rows": rows, "summary": summary, "check": diff, "targets_passed": passed}, args.overwrite)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
