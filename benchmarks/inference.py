"""Whole-model inference: eager fp32 against the optimised path, for every registry model.

Every model is built at full size with random weights (seed 0), batch 1, and run through
``sisr.inference.forward.run`` (the path ``sisr upscale`` takes) in these variants:

* ``eager``: fp32, contiguous (NCHW) tensors, no compilation (the reference);
* ``optimised``: channels_last and bf16 autocast (where the model lists bf16 in
  ``ModelInfo.precisions``; ``--precision fp16`` for fp16), plus ``torch.compile`` with ``--compile``;
* attribution (``--variants``, default on): ``cl`` (fp32 + channels_last) and ``bf16`` (the
  ``--precision`` autocast alone, NCHW), and ``compile`` (fp32 + compile) when ``--compile`` is given.

Each variant is a copy of the same network. All are warmed up (``--warmup`` calls, the first one
compiling where asked; its time is kept apart), then they take turns, one timed call each,
``--runs`` rounds with the order rotated every round (so load from other processes hits all
alike); the table gives the median. CUDA: timed with CUDA events after a synchronisation, plus
the allocator's peak memory of one call. The output difference is ``max |variant - eager|`` of the
clamped outputs, in 1/255 units; with random weights many networks' raw outputs leave [0, 1] by far,
so the table also gives the eager raw output's range (and the share clamped) and the optimised raw
output's largest difference relative to that range.

The limit (``--no-analysis`` skips it): per model at the same size, FLOPs (``FlopCounterMode``,
on the meta device: matrix products, convolutions, attention) and a lower-bound estimate of the
bytes moved (see ``Traffic``), the device's peaks measured in the same run (fp32 and bf16 dense
products: ``torch.mm`` of 2048^2 (CPU) or 8192^2 (CUDA) matrices and, on CPU, a 1x1 convolution
(oneDNN, 1024 channels, 64x64), the faster of the two; a 512 MiB copy for the memory bandwidth;
each the best of 5 calls, sampled before the first model and after each one; the floors use the
median of the samples, ``--peak best`` the best),
the roofline time floor ``max(FLOPs / peak, bytes / bandwidth)``, the measured eager time and
their ratio, and the predicted speed-up of each optimisation next to the measured one.

Sizes: CUDA defaults to a 1280x720 output (LR 640x360 at x2) and CSNLN to a 160x160 LR input
(``--csnln-size``: its attention is quadratic in the pixels). CPU defaults to a 64x64 LR input
and CSNLN 32x32, so that the whole run takes minutes on two cores.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/inference.py            # CPU, all models
    .venv/bin/python benchmarks/inference.py --models edsr-baseline rcan --runs 5
    .venv/bin/python benchmarks/inference.py --device cuda --compile --json benchmarks/results/inference_cuda.json
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import math
import platform
import statistics
import sys
import time
import traceback
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import FlopCounterMode, flop_registry

from sisr.inference.forward import run
from sisr.models import count_parameters, create_model, get_info, list_models
from sisr.utils.device import resolve_device
from sisr.utils.fs import atomic_write_text
from sisr.utils.memory import PeakMemory

MIB = 2**20
DEFAULT_VARIANTS = ["eager", "optimised", "cl", "bf16"]


# ----------------------------------------------------------------------------- variants


def variant_options(name: str, variant: str, precision: str, use_compile: bool) -> dict | None:
    """``run()`` options of a variant for model ``name``; None when the model does not support it."""
    low = precision if precision in get_info(name).precisions else "fp32"
    table = {
        "eager": dict(precision="fp32", channels_last=False, backend="eager"),
        "optimised": dict(precision=low, channels_last=True, backend="compile" if use_compile else "eager"),
        "cl": dict(precision="fp32", channels_last=True, backend="eager"),
        "bf16": dict(precision=precision, channels_last=False, backend="eager"),
        "compile": dict(precision="fp32", channels_last=False, backend="compile"),
    }  # run() options (RunOptions fields); the networks are made contiguous by create_model
    opts = table[variant]
    if opts["precision"] not in get_info(name).precisions:
        return None
    return opts


def describe(opts: dict) -> str:
    parts = [opts["precision"]] + (["channels_last"] if opts["channels_last"] else []) + \
        (["compile"] if opts["backend"] == "compile" else [])
    return "+".join(parts)


class Timer:
    """Wall time of a call: perf_counter on CPU, CUDA events after a synchronisation on GPUs."""

    def __init__(self, device: torch.device):
        self.device = device

    def __call__(self, fn) -> tuple[float, object, int | None]:
        if self.device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            with PeakMemory(self.device) as mem:  # synchronises before and after
                start.record()
                out = fn()
                end.record()
            return start.elapsed_time(end) / 1e3, out, mem.bytes
        start = time.perf_counter()
        out = fn()
        return time.perf_counter() - start, out, None


def measure_model(name: str, scale: int, size: tuple[int, int], variants: list[str], args,
                  device: torch.device) -> dict:
    """Warm every variant up, then time them in turns; outputs compared with eager fp32."""
    h, w = size
    torch.manual_seed(0)
    base = create_model(name, scale=scale, **(get_info(name).tiny if args.tiny else {})).eval().to(device)
    x = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(1)).to(device)
    timer = Timer(device)
    row = {"model": name, "params": count_parameters(base), "lr_size": [h, w], "out_size": [h * scale, w * scale],
           "variants": {}}
    nets, reference, reference_raw = {}, None, None
    for variant in variants:
        opts = variant_options(name, variant, args.precision, args.compile)
        if opts is None:
            row["variants"][variant] = {"error": f"{args.precision} not declared by the model"}
            continue
        print(f"{name} {h}x{w} LR: {variant} ({describe(opts)}) warm-up ...", file=sys.stderr, flush=True)
        net = copy.deepcopy(base)
        raw = {}  # the network's own (unclamped) output of the first call; not under compile

        def keep_raw(module, inputs, output, raw=raw):
            raw.setdefault("out", output.detach().float().clone())  # returns None: the output is not replaced

        hook = None if opts["backend"] == "compile" else net.register_forward_hook(keep_raw)
        try:
            first, out, _ = timer(lambda: run(net, x, **opts))
            if hook is not None:
                hook.remove()
            for _ in range(max(0, args.warmup - 1)):
                _, out, _ = timer(lambda: run(net, x, **opts))
        except Exception as exc:  # one failing variant must not stop the table
            first_line = str(exc).splitlines()[0][:200] if str(exc) else ""
            row["variants"][variant] = {"error": f"{type(exc).__name__}: {first_line}"}
            traceback.print_exc(limit=2)
            continue
        entry = {"options": opts, "label": describe(opts), "first_s": first, "times_s": []}
        if variant == "eager":
            reference, reference_raw = out, raw.get("out")
            if reference_raw is not None:
                row["eager_raw_output"] = {"min": float(reference_raw.min()), "max": float(reference_raw.max()),
                                           "std": float(reference_raw.std()),
                                           "clamped_fraction": float(((reference_raw < 0) | (reference_raw > 1))
                                                                     .float().mean())}
        elif reference is not None:
            diff = (out - reference).abs()
            entry.update(max_abs_diff_255=float(diff.max()) * 255, mean_abs_diff_255=float(diff.mean()) * 255)
            if reference_raw is not None and "out" in raw:
                span = float(reference_raw.max() - reference_raw.min()) or 1.0
                entry["raw_max_abs_diff_over_range"] = float((raw["out"] - reference_raw).abs().max()) / span
        if device.type == "cuda":
            entry["peak_memory_bytes"] = 0
        row["variants"][variant], nets[variant] = entry, (net, opts)
        del out
    order = list(nets)
    for r in range(args.runs):
        k = r % max(1, len(order))
        for variant in order[k:] + order[:k]:
            net, opts = nets[variant]
            seconds, out, peak = timer(lambda: run(net, x, **opts))
            del out
            entry = row["variants"][variant]
            entry["times_s"].append(seconds)
            if peak is not None:
                entry["peak_memory_bytes"] = max(entry["peak_memory_bytes"], peak)
    eager = row["variants"].get("eager", {})
    for variant in nets:
        entry = row["variants"][variant]
        entry["median_s"] = statistics.median(entry["times_s"])
        if "median_s" in eager and variant != "eager":
            entry["speedup_vs_eager"] = eager["median_s"] / entry["median_s"]
        print(f"  {variant}: {entry['median_s'] * 1e3:.1f} ms" +
              (f", {entry['speedup_vs_eager']:.2f}x eager, max diff {entry['max_abs_diff_255']:.3f}/255"
               if "speedup_vs_eager" in entry else ""), file=sys.stderr, flush=True)
    nets.clear()
    del base, reference, reference_raw
    gc.collect()
    if args.compile:
        torch._dynamo.reset()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return row


# ----------------------------------------------------------------------------- the limit

LAYER_OPS = {str(k) for k in flop_registry}  # operators with a FLOP formula: convolutions, products, attention


class Traffic(TorchDispatchMode):
    """Bytes the forward must move, two estimates (run on the meta device).

    ``layer_bytes`` (the lower bound used for the floor): the weights read once, plus for every
    operator with a FLOP formula (convolution, matrix product, attention) its activation inputs
    read once and its output written once; element-wise operators (activations, additions, mean
    shifts, pooling, normalisation) are assumed fused into the neighbouring layer and move nothing.
    ``op_bytes`` (eager, unfused): every operator reads all its tensor inputs and writes its new
    outputs once (views move nothing). Weights are the tensors that require grad.
    """

    def __init__(self):
        super().__init__()
        self.layer_act_bytes = 0
        self.op_bytes = 0
        self.weight_ids: set[int] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        ins = [a for a in tree_leaves((args, kwargs)) if isinstance(a, torch.Tensor)]
        in_ids = {id(a) for a in ins}
        outs = [t for t in tree_leaves(out) if isinstance(t, torch.Tensor)]
        if outs and all(t._is_view() and id(t) not in in_ids for t in outs):
            return out  # view, permute, slice, ...: no data moves
        nbytes = lambda t: t.numel() * t.element_size()  # noqa: E731
        written = sum(nbytes(t) for t in outs if id(t) in in_ids or not t._is_view())  # new or updated in place
        read = sum(nbytes(a) for a in ins)
        self.op_bytes += read + written
        if str(func._overloadpacket) in LAYER_OPS:
            acts = sum(nbytes(a) for a in ins if not a.requires_grad)
            self.layer_act_bytes += acts + written
            for a in ins:
                if a.requires_grad:
                    self.weight_ids.add(id(a))
        return out


def model_cost(name: str, scale: int, size: tuple[int, int], tiny: bool = False) -> dict:
    """FLOPs and byte estimates of one forward on a (1, 3, *size) input, on the meta device."""
    with torch.device("meta"):  # no weights initialised: shapes are all that is needed
        model = create_model(name, scale=scale, **(get_info(name).tiny if tiny else {})).eval().to("meta")
    x = torch.empty(1, 3, *size, device="meta")
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    flops = counter.get_total_flops()
    tracer = Traffic()
    with torch.no_grad(), tracer:
        y = model(x)
    weights = [t for t in list(model.parameters()) + list(model.buffers())]
    weight_elems = sum(t.numel() for t in weights)
    weight_bytes = sum(t.numel() * t.element_size() for t in weights)
    io_bytes = x.numel() * 4 + y.numel() * 4
    layer_bytes = weight_bytes + tracer.layer_act_bytes
    return {
        "flops": flops, "weight_elements": weight_elems, "weight_bytes": weight_bytes, "io_bytes": io_bytes,
        "layer_activation_bytes": tracer.layer_act_bytes, "layer_bytes": layer_bytes, "op_bytes": tracer.op_bytes,
        # bf16 autocast: fp32 weights read, a bf16 copy written and read; activations at 2 bytes
        "layer_bytes_bf16": weight_bytes + 4 * weight_elems + tracer.layer_act_bytes // 2,
        "op_bytes_bf16": weight_bytes + 4 * weight_elems + (tracer.op_bytes - weight_bytes) // 2,
    }


def _best_rate(fn, work: float, reps: int, timer: Timer) -> float:
    fn()
    best = math.inf
    for _ in range(reps):
        seconds, _, _ = timer(fn)
        best = min(best, seconds)
    return work / best


def measure_peaks(device: torch.device, reps: int = 5) -> dict:
    """Dense-product FLOP/s (fp32, bf16) and copy bandwidth (bytes read + written per second)."""
    timer = Timer(device)
    peaks = {}
    n = 2048 if device.type == "cpu" else 8192
    for label, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        c = torch.empty(n, n, device=device, dtype=dtype)
        tf32 = torch.backends.cuda.matmul.allow_tf32
        if device.type == "cuda":  # fp32 products at the precision the convolutions use (cuDNN's TF32 switch)
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 or tf32
        try:
            peaks[f"mm_{label}"] = _best_rate(lambda: torch.mm(a, b, out=c), 2.0 * n**3, reps, timer)
        finally:
            torch.backends.cuda.matmul.allow_tf32 = tf32
        del a, b, c
        if device.type == "cpu":  # oneDNN's GEMM (what convolutions use) is faster than torch.mm here
            ch, side = 1024, 64
            xin = torch.randn(1, ch, side, side, dtype=dtype).contiguous(memory_format=torch.channels_last)
            wt = torch.randn(ch, ch, 1, 1, dtype=dtype).contiguous(memory_format=torch.channels_last)
            peaks[f"conv1x1_{label}"] = _best_rate(lambda: F.conv2d(xin, wt), 2.0 * ch * ch * side * side, reps, timer)
            del xin, wt
    elems = (512 * MIB) // 4
    src = torch.rand(elems, device=device)
    dst = torch.empty_like(src)
    peaks["copy_bytes_per_s"] = _best_rate(lambda: dst.copy_(src), 2.0 * elems * 4, reps, timer)
    del src, dst
    return peaks


def combine_peaks(samples: list[dict], rule: str = "median") -> dict:
    """The peaks the floors use: per kind, the faster product of each sample, then the median
    (``rule="median"``: what the cores delivered during the run, robust to one lucky sample on a
    shared machine) or the best of the samples (``"best"``)."""
    per_sample = [{"fp32": max(v for k, v in s.items() if k.endswith("_fp32")),
                   "bf16": max(v for k, v in s.items() if k.endswith("_bf16")),
                   "bytes": s["copy_bytes_per_s"]} for s in samples]
    pick = statistics.median if rule == "median" else max
    chosen = {k: pick([s[k] for s in per_sample]) for k in ("fp32", "bf16", "bytes")}
    return {"rule": rule, "samples": len(samples), "fp32_flops_per_s": chosen["fp32"],
            "bf16_flops_per_s": chosen["bf16"], "bytes_per_s": chosen["bytes"],
            "best": {k: max(s[k] for s in per_sample) for k in ("fp32", "bf16", "bytes")},
            "median": {k: statistics.median([s[k] for s in per_sample]) for k in ("fp32", "bf16", "bytes")}}


def floor_s(flops: float, nbytes: float, peak_flops: float, bandwidth: float) -> tuple[float, str]:
    compute, memory = flops / peak_flops, nbytes / bandwidth
    return max(compute, memory), ("compute" if compute >= memory else "memory")


def analyse(row: dict, cost: dict, peaks: dict, use_compile: bool) -> dict:
    """Roofline floor, measured/floor, and each optimisation's predicted vs measured speed-up."""
    p32, p16, bw = peaks["fp32_flops_per_s"], peaks["bf16_flops_per_s"], peaks["bytes_per_s"]
    f = cost["flops"]
    floor, bound = floor_s(f, cost["layer_bytes"], p32, bw)
    eager_model, _ = floor_s(f, cost["op_bytes"], p32, bw)  # unfused eager traffic
    out = {"floor_s": floor, "bound": bound, "eager_model_s": eager_model}
    eager = row["variants"].get("eager", {}).get("median_s")
    if eager:
        out["measured_s"] = eager
        out["measured_over_floor"] = eager / floor
        out["achieved_flops_per_s"] = f / eager
    bf16_ops, _ = floor_s(f, cost["op_bytes_bf16"], p16, bw)
    bf16_layers, _ = floor_s(f, cost["layer_bytes_bf16"], p16, bw)
    fp32_layers, _ = floor_s(f, cost["layer_bytes"], p32, bw)
    predicted = {"cl": 1.0, "bf16": eager_model / bf16_ops, "compile": eager_model / fp32_layers}
    opt = row["variants"].get("optimised", {}).get("options", {})
    low = opt.get("precision", "fp32") != "fp32"
    predicted["optimised"] = eager_model / ((bf16_layers if low else fp32_layers) if use_compile
                                            else (bf16_ops if low else eager_model))
    out["predicted_speedup"] = predicted
    out["measured_speedup"] = {v: e["speedup_vs_eager"] for v, e in row["variants"].items() if "speedup_vs_eager" in e}
    return out


# ----------------------------------------------------------------------------- main


def parse_size(text: str) -> tuple[int, int]:
    """``WxH`` or ``N`` (square) -> (H, W)."""
    try:
        if "x" in text.lower():
            w, h = (int(v) for v in text.lower().split("x"))
        else:
            w = h = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"size '{text}': expected WxH or N") from None
    if w < 1 or h < 1:
        raise argparse.ArgumentTypeError(f"size '{text}': must be positive")
    return h, w


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", choices=list_models(), help="registry names (default: all)")
    parser.add_argument("--scale", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N (default cpu)")
    parser.add_argument("--out-size", type=parse_size, help="output WxH (default: 1280x720 on CUDA)")
    parser.add_argument("--lr-size", type=parse_size, help="LR input WxH or N (default on CPU: 64)")
    parser.add_argument("--csnln-size", type=parse_size, help="CSNLN's LR input (default: 160 on CUDA, 32 on CPU)")
    parser.add_argument("--precision", choices=["bf16", "fp16"], default="bf16", help="optimised variant's autocast")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile in the optimised variant (+ a compile column)")
    parser.add_argument("--variants", nargs="+", choices=["eager", "optimised", "cl", "bf16", "compile"],
                        help=f"default: {' '.join(DEFAULT_VARIANTS)} (+ compile with --compile)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--runs", type=int, default=3, help="timed rounds (median)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--tf32", choices=["default", "on", "off"], default="default",
                        help="CUDA: TF32 in matmuls and cuDNN convolutions for every fp32 variant (default: torch's)")
    parser.add_argument("--peak", choices=["median", "best"], default="median",
                        help="which of the peak samples the floors use (default: their median)")
    parser.add_argument("--cost-only", action="store_true",
                        help="print FLOPs and byte estimates at the chosen sizes (meta device) and stop")
    parser.add_argument("--no-analysis", action="store_true", help="skip FLOPs, bytes, peaks and floors")
    parser.add_argument("--tiny", action="store_true", help="tiny model configurations (a smoke test of this script)")
    parser.add_argument("--json", type=Path, help="default benchmarks/results/inference_<device type>.json")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing JSON file")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        if args.tf32 != "default":
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = args.tf32 == "on"
    variants = args.variants or DEFAULT_VARIANTS + (["compile"] if args.compile else [])
    if "eager" not in variants:
        variants = ["eager"] + variants
    models = args.models or list_models()
    json_path = args.json or Path(__file__).parent / "results" / f"inference_{device.type}.json"
    if json_path.exists() and not args.overwrite and not args.cost_only:
        parser.error(f"{json_path} exists (use --overwrite or --json)")

    def size_for(name: str) -> tuple[int, int]:
        if name == "csnln" and args.csnln_size:
            return args.csnln_size
        if name == "csnln":
            return (160, 160) if device.type == "cuda" else (32, 32)
        if args.lr_size:
            return args.lr_size
        if args.out_size or device.type == "cuda":
            oh, ow = args.out_size or (720, 1280)
            return math.ceil(oh / args.scale), math.ceil(ow / args.scale)
        return 64, 64

    if args.cost_only:
        return print_costs(models, args.scale, size_for, args.tiny)
    peak_samples = [] if args.no_analysis else [measure_peaks(device)]
    rows = []
    for name in models:
        size = size_for(name)
        row = measure_model(name, args.scale, size, variants, args, device)
        if not args.no_analysis:
            try:
                row["cost"] = model_cost(name, args.scale, size, args.tiny)
            except Exception as exc:  # noqa: BLE001 - reported in the table
                row["cost"] = {"error": f"{type(exc).__name__}: {exc}"}
        rows.append(row)
        print_table(rows, variants, sys.stderr)
        if not args.no_analysis:
            peak_samples.append(measure_peaks(device))  # after every model: the best of the run is the peak
    if not args.no_analysis:
        peaks = combine_peaks(peak_samples, args.peak)
        for row in rows:
            if "flops" in row.get("cost", {}):
                row["limit"] = analyse(row, row["cost"], peaks, args.compile)
    else:
        peaks = None

    result = {
        "benchmark": "inference", "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else
        (platform.processor() or platform.machine()),
        "torch": torch.__version__, "threads": torch.get_num_threads(), "python": platform.python_version(),
        "command": " ".join(sys.argv), "scale": args.scale, "warmup": args.warmup, "runs": args.runs,
        "tiny": args.tiny, "precision": args.precision, "compile": args.compile,
        "tf32": {"matmul": torch.backends.cuda.matmul.allow_tf32, "cudnn": torch.backends.cudnn.allow_tf32}
        if device.type == "cuda" else None,
        "peaks": peaks, "peak_samples": peak_samples, "rows": rows,
    }
    print()
    print_table(rows, variants, sys.stdout)
    if peaks:
        print()
        print_limit(rows, peaks, sys.stdout)
    print(f"\ndevice {result['device']} ({result['device_name']}), torch {result['torch']}, "
          f"{result['threads']} threads, x{args.scale}, batch 1, median of {args.runs} after {args.warmup} warm-up")
    json_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(json_path, json.dumps(result, indent=2) + "\n", overwrite=args.overwrite)
    print(f"wrote {json_path}")
    return 0


def print_costs(models: list[str], scale: int, size_for, tiny: bool) -> int:
    """FLOPs, bytes and arithmetic intensity of one forward per model (no device time needed)."""
    lines = [["model", "LR", "output", "GFLOPs", "weights MB", "layer MB", "eager-op MB", "FLOP/byte (layer)"]]
    for name in models:
        h, w = size_for(name)
        c = model_cost(name, scale, (h, w), tiny)
        lines.append([name, f"{w}x{h}", f"{w * scale}x{h * scale}", f"{c['flops'] / 1e9:.1f}",
                      f"{c['weight_bytes'] / 1e6:.1f}", f"{c['layer_bytes'] / 1e6:.0f}", f"{c['op_bytes'] / 1e6:.0f}",
                      f"{c['flops'] / c['layer_bytes']:.0f}"])
    _md(lines, sys.stdout)
    return 0


def _md(lines: list[list[str]], out) -> None:
    print("| " + " | ".join(lines[0]) + " |", file=out)
    print("|" + "|".join("---" for _ in lines[0]) + "|", file=out)
    for line in lines[1:]:
        print("| " + " | ".join(line) + " |", file=out)


def print_table(rows: list[dict], variants: list[str], out) -> None:
    others = [v for v in variants if v != "eager"]
    cuda = any("peak_memory_bytes" in e for r in rows for e in r["variants"].values())
    head = ["model", "params", "LR", "output", "eager ms"] + [f"{v} ms" for v in others] + \
        [f"{v} speed-up" for v in others] + [f"{v} max diff /255" for v in others] + \
        ["eager raw output [min, max] (clamped %)", "optimised raw diff / range"]
    if cuda:
        head += [f"{v} peak MiB" for v in ["eager"] + others]
    lines = [head]
    for r in rows:
        v = r["variants"]
        cells = [r["model"], f"{r['params'] / 1e6:.2f}M", "x".join(map(str, r["lr_size"][::-1])),
                 "x".join(map(str, r["out_size"][::-1]))]
        for name in ["eager"] + others:
            cells.append(f"{v[name]['median_s'] * 1e3:.1f}" if "median_s" in v.get(name, {}) else "n/a")
        for name in others:
            cells.append(f"{v[name]['speedup_vs_eager']:.2f}x" if "speedup_vs_eager" in v.get(name, {}) else "n/a")
        for name in others:
            cells.append(f"{v[name]['max_abs_diff_255']:.3f}" if "max_abs_diff_255" in v.get(name, {}) else "n/a")
        rawo = r.get("eager_raw_output")
        cells.append(f"[{rawo['min']:.3g}, {rawo['max']:.3g}] ({rawo['clamped_fraction']:.1%})" if rawo else "n/a")
        rel = v.get("optimised", {}).get("raw_max_abs_diff_over_range")
        cells.append(f"{rel:.2e}" if rel is not None else "n/a")
        if cuda:
            for name in ["eager"] + others:
                e = v.get(name, {})
                cells.append(f"{e['peak_memory_bytes'] / MIB:.0f}" if "peak_memory_bytes" in e else "n/a")
        lines.append(cells)
    _md(lines, out)
    labels = {name: e["label"] for r in rows for name, e in r["variants"].items() if "label" in e}
    print("variants: " + "; ".join(f"{k} = {labels[k]}" for k in ["eager"] + others if k in labels), file=out)
    for r in rows:
        for name, e in r["variants"].items():
            if "error" in e:
                print(f"  {r['model']} {name}: {e['error']}", file=out)


def print_limit(rows: list[dict], peaks: dict, out) -> None:
    b = peaks["best"]
    print(f"peaks ({peaks['rule']} of {peaks['samples']} samples): fp32 {peaks['fp32_flops_per_s'] / 1e9:.1f} "
          f"GFLOP/s, bf16 {peaks['bf16_flops_per_s'] / 1e9:.1f} GFLOP/s, copy {peaks['bytes_per_s'] / 1e9:.1f} GB/s "
          f"(read + written); best sample: {b['fp32'] / 1e9:.1f}, {b['bf16'] / 1e9:.1f} GFLOP/s, "
          f"{b['bytes'] / 1e9:.1f} GB/s", file=out)
    lines = [["model", "LR", "GFLOPs", "weights MB", "layer MB", "eager-op MB", "floor ms", "bound", "eager ms",
              "eager / floor", "GFLOP/s"]]
    for r in rows:
        c, lim = r.get("cost", {}), r.get("limit")
        if lim is None:
            lines.append([r["model"], "x".join(map(str, r["lr_size"][::-1]))] + ["n/a"] * 9)
            continue
        lines.append([r["model"], "x".join(map(str, r["lr_size"][::-1])), f"{c['flops'] / 1e9:.2f}",
                      f"{c['weight_bytes'] / 1e6:.1f}", f"{c['layer_bytes'] / 1e6:.1f}", f"{c['op_bytes'] / 1e6:.1f}",
                      f"{lim['floor_s'] * 1e3:.2f}", lim["bound"],
                      f"{lim['measured_s'] * 1e3:.1f}" if "measured_s" in lim else "n/a",
                      f"{lim['measured_over_floor']:.2f}" if "measured_over_floor" in lim else "n/a",
                      f"{lim['achieved_flops_per_s'] / 1e9:.1f}" if "achieved_flops_per_s" in lim else "n/a"])
    _md(lines, out)
    print(file=out)
    keys = ["cl", "bf16", "compile", "optimised"]
    lines = [["model"] + [f"{k} predicted / measured" for k in keys]]
    for r in rows:
        lim = r.get("limit")
        if lim is None:
            continue
        cells = [r["model"]]
        for k in keys:
            m = lim["measured_speedup"].get(k)
            cells.append(f"{lim['predicted_speedup'][k]:.2f}x / {m:.2f}x" if m else "-")
        lines.append(cells)
    _md(lines, out)


if __name__ == "__main__":
    raise SystemExit(main())
