"""CPU backends side by side for one model: eager, channels_last, torch.compile, AOTInductor, ONNX Runtime.

    OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE nice -n 10 .venv/bin/python benchmarks/cpu_backends.py \
        --model defian-s --scale 2 --size 256 --repeats 5

Shipped weights when they exist (else random, seed 0). Each variant is prepared once (one-off cost
reported: compile / export time, cold in a fresh cache folder, then the load of the cached
AOTInductor package), then the variants are called in rotating order for ``--repeats`` rounds and the
median is reported with its ratio to eager. Max differences are of the clamped outputs vs eager fp32,
in 1/255 units. Prints a Markdown table; writes JSON under benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="defian-s")
    p.add_argument("--scale", type=int, default=2)
    p.add_argument("--size", type=int, default=256, help="LR side (square)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    warnings.simplefilter("ignore")
    import sisr
    from sisr.weights.pretrained import pretrained_path

    work = Path(tempfile.mkdtemp(prefix="sisr_cpu_backends_"))
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(work / "inductor")  # cold compile caches
    weights = "shipped" if pretrained_path(args.model, args.scale) else "random"
    if weights == "random":
        torch.manual_seed(0)
    net = sisr.load_model(args.model, args.scale).eval()
    x = torch.rand(1, 3, args.size, args.size, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        ref = net(x).clamp(0, 1)
    variants, oneoff = {}, {}

    variants["eager"] = lambda: net(x)
    import copy

    net_cl = copy.deepcopy(net).to(memory_format=torch.channels_last)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    variants["channels_last"] = lambda: net_cl(x_cl)

    t = time.perf_counter()
    compiled = torch.compile(copy.deepcopy(net), dynamic=False)
    with torch.inference_mode():
        compiled(x)
    oneoff["torch.compile first call (cold)"] = time.perf_counter() - t
    variants["torch.compile"] = lambda: compiled(x)

    import torch._inductor.config as inductor_config

    inductor_config.freezing = True
    pkg = work / "model.pt2"
    t = time.perf_counter()
    dims = ({2: torch.export.Dim("h", min=8, max=4096), 3: torch.export.Dim("w", min=8, max=4096)},)
    with torch.no_grad():
        ep = torch.export.export(net, (x,), dynamic_shapes=dims)
    torch._inductor.aoti_compile_and_package(ep, package_path=str(pkg))
    oneoff["AOTInductor export+compile (cold, dynamic H/W, freezing)"] = time.perf_counter() - t
    t = time.perf_counter()
    aoti = torch._inductor.aoti_load_package(str(pkg))
    oneoff["AOTInductor load of the cached package"] = time.perf_counter() - t
    variants["AOTInductor"] = lambda: aoti(x)

    try:
        import onnxruntime as ort

        from sisr.inference.export import export_onnx

        t = time.perf_counter()
        onnx_path = work / "model.onnx"
        export_onnx(net, onnx_path)
        oneoff["sisr ONNX export (with its check)"] = time.perf_counter() - t
        so = ort.SessionOptions()
        so.intra_op_num_threads = torch.get_num_threads()
        so.inter_op_num_threads = 1
        t = time.perf_counter()
        sess = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
        oneoff["ONNX Runtime session"] = time.perf_counter() - t
        xn = x.numpy()
        variants["onnxruntime"] = lambda: torch.from_numpy(sess.run(None, {"lr": xn})[0])
    except ImportError:
        print("onnxruntime not installed: its column is skipped (pip install 'sisr[onnx]')", file=sys.stderr)

    names = list(variants)
    times = {n: [] for n in names}
    diffs = {}
    with torch.inference_mode():
        for n in names:
            diffs[n] = float((variants[n]().float().clamp(0, 1) - ref).abs().max()) * 255
        for r in range(args.repeats):
            for n in names[r % len(names):] + names[: r % len(names)]:
                t = time.perf_counter()
                variants[n]()
                times[n].append(time.perf_counter() - t)
    med = {n: statistics.median(v) for n, v in times.items()}
    print(f"\n{args.model} x{args.scale}, {weights} weights, LR {args.size}x{args.size}, "
          f"{torch.get_num_threads()} thread(s), median of {args.repeats}\n")
    print("| variant | median ms | speed-up vs eager | max diff /255 vs eager fp32 |\n|---|---|---|---|")
    for n in names:
        print(f"| {n} | {med[n] * 1e3:.0f} | {med['eager'] / med[n]:.2f}x | {diffs[n]:.4f} |")
    print("\n| one-off | s |\n|---|---|")
    for k, v in oneoff.items():
        print(f"| {k} | {v:.1f} |")
    out = Path(args.json or f"benchmarks/results/cpu_backends_{args.model}_x{args.scale}_{args.size}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    from sisr.utils.fs import atomic_write_text

    atomic_write_text(out, json.dumps(dict(model=args.model, scale=args.scale, size=args.size, weights=weights,
                                           threads=torch.get_num_threads(), repeats=args.repeats,
                                           times_s=times, median_s=med, max_diff_255=diffs, oneoff_s=oneoff,
                                           torch=torch.__version__), indent=1))
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
