"""CSNLN on a GPU: the fast (default) attention path against the authors' reference formulation (``compare_paths``,
also the ``csnln`` section of gpu_suite.py): --size LR, x2, fp32 of both paths under one TF32 setting, the fast path
under bf16, allocator peaks, fraction of the matmul peak. Method: docs/benchmarks.md. On the CPU the same comparison
is ``sisr profile`` (docs/models/csnln.md):

    python benchmarks/csnln.py [--tf32] --overwrite          # JSON to benchmarks/results/csnln.json
    sisr profile --models csnln:reference,csnln --scale 2 --input 64x64 --runs 3 --device cpu
"""

from __future__ import annotations

import contextlib
import statistics
import sys

import common  # benchmarks/common.py (makes sisr importable from a checkout)
import torch
from common import fmt, md_table, timed, with_peak

import sisr
from sisr.evaluation import roofline
from sisr.evaluation.profile import count_model_flops
from sisr.utils.device import device_name, resolve_device

SCALE = 2


def model_flops(size: int, hparams: dict | None = None) -> int:
    """FLOPs of one forward (authors' formulation) on a size x size LR input, counted on the meta device."""
    hparams = {**(hparams or {}), "attention": "reference"}
    return count_model_flops("csnln", SCALE, (size, size), hparams=hparams)["flops"]


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
    p.add_argument("--device", default="cuda")
    p.add_argument("--size", type=int, default=160, help="LR size (default 160)")
    p.add_argument("--runs", type=int, default=3, help="timed runs per path")
    p.add_argument("--tf32", action="store_true", help="allow TF32 in matmuls and convolutions (both paths)")
    args = p.parse_args(argv)
    common.check_json(args.json, args.overwrite)
    device = resolve_device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = args.tf32
    peaks = roofline.peak_rates(device, 8192 if device.type == "cuda" else 1024, reps=10, calls=3, copy_mib=64)
    result = {**compare_paths(device, args.size, args.runs, peaks), "tf32": args.tf32,
              "matmul_peak_flops_per_s": peaks, "device": device_name(device)}
    print(f"\n{result['device']}, TF32 {'on' if args.tf32 else 'off'}\n")
    print("\n".join(comparison_lines(result)))
    common.write_json(args.json, {"cuda" if device.type == "cuda" else device.type: result}, args.overwrite)
    return 0


if __name__ == "__main__":
    sys.exit(main())
