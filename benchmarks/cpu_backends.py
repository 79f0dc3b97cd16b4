"""CPU backends side by side: eager, the default (auto = channels_last), bf16, torch.compile, AOTInductor, ONNX Runtime.

    OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/cpu_backends.py \\
        --models defian-s edsr-baseline rcan --size 96 --variants eager auto onnxruntime

Every model at full size (csnln at ``--csnln-size``), shipped weights where they exist, else random
(seed 0); one ``--size`` x ``--size`` LR input. Variants:

* ``eager``: ``run(backend="eager")``, fp32 NCHW (the old default);
* ``auto``: ``run()``, the default (channels_last eager on the CPU);
* ``bf16``: where the CPU has bf16 instructions: ``run(precision="bf16")`` (auto layout) where the
  model declares bf16, else the same autocast on a channels_last copy (a figure, not a supported path);
* ``torch.compile``: ``torch.compile`` of the module, fp32 (first call, cold cache, reported);
* ``compile``: ``run(backend="compile")``, the cached AOTInductor package (build reported, cold; and
  the first call of a fresh module with the package cached, warm);
* ``onnxruntime``: ``run(backend="onnxruntime")``, the checked export (export reported, cold and warm).

Each variant is prepared once, then the variants of a model are called in rotating order for
``--repeats`` rounds; the median and its ratio to eager are reported, with the largest difference of
the outputs to eager fp32 in grey levels (1/255). Prints Markdown tables; writes JSON under
benchmarks/results/. Process-wide: glibc keeps freed memory, as in the CLI (sisr.utils.malloc).
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
from train_throughput import native_cpu_bf16  # benchmarks/ is the script's folder

VARIANTS = ("eager", "auto", "bf16", "torch.compile", "compile", "onnxruntime")
MODELS = ("edsr-baseline", "edsr", "rcan", "defian-s", "defian-l", "cran", "eacrn", "csnln")


def bench_model(name: str, args, work: Path) -> dict:
    import sisr
    from sisr.inference.forward import run
    from sisr.weights.pretrained import pretrained_path

    weights = "shipped" if pretrained_path(name, args.scale) else "random"
    torch.manual_seed(0)
    net = (sisr.load_model(name, args.scale, device="cpu") if weights == "shipped"
           else sisr.create_model(name, scale=args.scale)).eval()
    size = args.csnln_size if name == "csnln" else args.size
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    calls, oneoff, skipped = {}, {}, {}
    for v in args.variants:
        if v == "eager":
            calls[v] = lambda: run(net, x, backend="eager")
        elif v == "auto":
            calls[v] = lambda: run(net, x)
        elif v == "bf16":
            if not native_cpu_bf16():
                skipped[v] = "no bf16 instructions on this CPU"
            elif "bf16" in sisr.get_info(name).precisions:
                calls[v] = lambda: run(net, x, precision="bf16")
            else:  # run() refuses what the model does not declare: the same autocast, for the figure only
                import copy

                cl = copy.deepcopy(net).to(memory_format=torch.channels_last)
                xc = x.contiguous(memory_format=torch.channels_last)

                def call(m=cl):
                    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
                        return m(xc).float().clamp(0, 1)
                calls[v] = call
        elif v == "torch.compile":
            import copy

            compiled = torch.compile(copy.deepcopy(net), dynamic=False)
            t = time.perf_counter()
            with torch.inference_mode():
                compiled(x)
            oneoff["torch.compile first call (cold cache)"] = time.perf_counter() - t

            def call(c=compiled):
                with torch.inference_mode():
                    return c(x).clamp(0, 1)
            calls[v] = call
        else:  # library backends: the first call builds (and caches) the package / export
            t = time.perf_counter()
            try:
                run(net, x, backend=v)
            except Exception as exc:  # noqa: BLE001 - reported in the table
                skipped[v] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
                continue
            oneoff[f"{v}: first call (build + cache, cold)"] = time.perf_counter() - t
            net.__dict__.pop("_sisr_aoti" if v == "compile" else "_sisr_onnx", None)  # as a new process would
            t = time.perf_counter()
            run(net, x, backend=v)
            oneoff[f"{v}: first call (cached: load + call, warm)"] = time.perf_counter() - t
            calls[v] = lambda v=v: run(net, x, backend=v)
    ref = run(net, x, backend="eager")
    diffs = {v: float((f() - ref).abs().max()) * 255 for v, f in calls.items()}
    names = list(calls)
    times: dict[str, list[float]] = {v: [] for v in names}
    for r in range(args.repeats):
        for v in names[r % len(names):] + names[: r % len(names)]:
            t = time.perf_counter()
            calls[v]()
            times[v].append(time.perf_counter() - t)
    med = {v: statistics.median(t) for v, t in times.items()}
    return dict(model=name, weights=weights, size=size, median_s=med, times_s=times, max_diff_255=diffs,
                oneoff_s=oneoff, skipped=skipped)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=list(MODELS))
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    p.add_argument("--scale", type=int, default=2)
    p.add_argument("--size", type=int, default=96, help="LR side (square)")
    p.add_argument("--csnln-size", type=int, default=48, help="LR side for csnln (quadratic attention)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    if "eager" not in args.variants:
        args.variants.insert(0, "eager")
    warnings.simplefilter("ignore")
    from sisr.utils.malloc import keep_freed_memory

    keep_freed_memory()
    work = Path(tempfile.mkdtemp(prefix="sisr_cpu_backends_"))
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(work / "inductor")  # cold compile caches
    os.environ["SISR_CACHE_DIR"] = str(work / "sisr-cache")
    rows = []
    for name in args.models:
        row = bench_model(name, args, work)
        rows.append(row)
        print(f"{name}: " + ", ".join(f"{v} {s * 1e3:.0f} ms" for v, s in row["median_s"].items())
              + "".join(f"; {k} {s:.1f} s" for k, s in row["oneoff_s"].items()), flush=True)
    threads = torch.get_num_threads()
    print(f"\nx{args.scale}, LR {args.size}x{args.size} (csnln {args.csnln_size}), {threads} thread(s), "
          f"median of {args.repeats}; ms (speed-up vs eager) [max diff vs eager fp32, grey levels]\n")
    cols = [v for v in args.variants if any(v in r["median_s"] for r in rows)]
    print("| model | weights | " + " | ".join(cols) + " |\n|---|---|" + "---|" * len(cols))
    for r in rows:
        e = r["median_s"]["eager"]
        cells = []
        for v in cols:
            if v in r["median_s"]:
                s = r["median_s"][v]
                cells.append(f"{s * 1e3:.0f} ({e / s:.2f}x) [{r['max_diff_255'][v]:.3f}]" if v != "eager"
                             else f"{s * 1e3:.0f}")
            else:
                cells.append("n/a" if v not in r["skipped"] else "skipped")
        print(f"| {r['model']} | {r['weights']} | " + " | ".join(cells) + " |")
    notes = [f"{r['model']} {v}: {why}" for r in rows for v, why in r["skipped"].items()]
    if notes:
        print("\nskipped: " + "; ".join(notes))
    print("\n| model | one-off | s |\n|---|---|---|")
    for r in rows:
        for k, s in r["oneoff_s"].items():
            print(f"| {r['model']} | {k} | {s:.1f} |")
    out = Path(args.json or f"benchmarks/results/cpu_backends_x{args.scale}_{args.size}_{threads}t.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    from sisr.utils.fs import atomic_write_text

    atomic_write_text(out, json.dumps(dict(scale=args.scale, size=args.size, csnln_size=args.csnln_size,
                                           threads=threads, repeats=args.repeats, rows=rows,
                                           bf16_instructions=native_cpu_bf16(),
                                           torch=torch.__version__), indent=1), overwrite=True)
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
