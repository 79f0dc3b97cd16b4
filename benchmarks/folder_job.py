"""The folder job of issue 15: `sisr upscale` of 8 RGB 256x256 images vs the same job through ONNX Runtime.

    .venv/bin/python benchmarks/folder_job.py --rounds 3 [--threads 1]

Whole-command wall time, start-up and PNG I/O included, each command a fresh process:

* ``sisr upscale IN -o OUT`` with the default backend (``auto``) and with ``--backend eager``;
* ``--backend compile`` cold (empty cache: the AOTInductor build is part of the job) and warm;
* ``--backend onnxruntime`` warm (the cached, checked export);
* ``onnxruntime job``: a minimal script (onnxruntime + numpy + Pillow only) that reads the PNGs, runs
  the graph written beforehand by ``sisr export`` (not timed) and writes PNGs, as a user of ONNX
  Runtime would.

sisr's modules are byte-compiled first (``compileall``), as ``pip install`` does for an installed
package and had done for torch, onnxruntime, numpy and Pillow: a checkout run with
PYTHONDONTWRITEBYTECODE=1 (as on the development machines) would otherwise compile them in every
command (about 0.07 s).

Inputs: 256x256 crops of Set14/B100 HR images (../shared/datasets), model: the shipped defian-s x2.
Commands are run in rotating order for ``--rounds`` rounds (cold compile once, first); the table gives
medians and the ratio to the ONNX Runtime job, and the largest pixel difference of every output to the
eager one. JSON under benchmarks/results/.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ROOT.parent / "shared" / "datasets"
SISR = [sys.executable, "-m", "sisr"]

ORT_JOB = r"""
import sys, pathlib
import numpy as np, onnxruntime as ort
from PIL import Image
model, src, dst, threads = sys.argv[1], pathlib.Path(sys.argv[2]), pathlib.Path(sys.argv[3]), int(sys.argv[4])
so = ort.SessionOptions()
if threads:
    so.intra_op_num_threads = threads
sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
name = sess.get_inputs()[0].name
dst.mkdir(exist_ok=True)
for f in sorted(src.glob("*.png")):
    x = np.asarray(Image.open(f).convert("RGB"), dtype=np.float32).transpose(2, 0, 1)[None] / 255
    y = sess.run(None, {name: x})[0][0]
    Image.fromarray((np.clip(y, 0, 1) * 255 + 0.5).astype(np.uint8).transpose(1, 2, 0)).save(dst / f.name)
"""


def make_inputs(folder: Path, n: int, size: int) -> str:
    folder.mkdir(parents=True)
    files = sorted((DATASETS / "Set14" / "HR").glob("*.png")) + sorted((DATASETS / "B100" / "HR").glob("*.png"))
    files = [f for f in files if min(Image.open(f).size) >= size][:n]
    if len(files) < n:
        rng = np.random.default_rng(0)
        for i in range(n):
            Image.fromarray((rng.random((size, size, 3)) * 255).astype(np.uint8)).save(folder / f"{i:02d}.png")
        return "random"
    for i, f in enumerate(files):
        im = Image.open(f).convert("RGB")
        x, y = (im.width - size) // 2, (im.height - size) // 2
        im.crop((x, y, x + size, y + size)).save(folder / f"{i:02d}.png")
    return "central crops of Set14/B100 HR images"


def timed(cmd: list[str], env: dict, out: Path) -> float:
    shutil.rmtree(out, ignore_errors=True)  # sisr would skip outputs it made before
    t = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - t
    if proc.returncode:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    return elapsed


def max_diff(a: Path, b: Path) -> int:
    return max(int(np.abs(np.asarray(Image.open(f), dtype=np.int16) - np.asarray(Image.open(b / f.name), dtype=np.int16)).max())
               for f in sorted(a.glob("*.png")))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=8)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="OMP_NUM_THREADS and ONNX Runtime threads (0: defaults)")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    import sisr

    compileall.compile_dir(Path(sisr.__file__).parent, quiet=1)
    work = Path(tempfile.mkdtemp(prefix="sisr_folder_job_"))
    try:
        source = make_inputs(work / "in", args.images, args.size)
        env = dict(os.environ)  # sisr's own OpenMP defaults unless the caller set some
        env.pop("SISR_CACHE_DIR", None)
        if args.threads:
            env["OMP_NUM_THREADS"] = str(args.threads)
        onnx = work / "defian-s_x2.onnx"
        subprocess.run([*SISR, "export", "--model", "defian-s", "--scale", "2", "-o", str(onnx)], env=env, check=True,
                       capture_output=True)

        def upscale(name: str, *extra: str, cache: str = "warm") -> tuple[list[str], dict, Path]:
            out = work / "out" / name
            return ([*SISR, "upscale", str(work / "in"), "-o", str(out), "--scale", "2", *extra],
                    dict(env, SISR_CACHE_DIR=str(work / f"cache-{cache}")), out)

        jobs = {
            "sisr upscale (default: auto)": upscale("auto"),
            "sisr upscale --backend eager": upscale("eager", "--backend", "eager"),
            "sisr upscale --backend compile (warm cache)": upscale("compile", "--backend", "compile"),
            "sisr upscale --backend onnxruntime (warm cache)": upscale("ortb", "--backend", "onnxruntime"),
            "onnxruntime job (graph of sisr export)": (
                [sys.executable, "-c", ORT_JOB, str(onnx), str(work / "in"), str(work / "out" / "ort"),
                 str(args.threads)], env, work / "out" / "ort"),
        }
        times: dict[str, list[float]] = {k: [] for k in jobs}
        cold = upscale("compile-cold", "--backend", "compile", cache="cold")
        times["sisr upscale --backend compile (cold cache, build included)"] = [timed(*cold)]
        for key in ("sisr upscale --backend compile (warm cache)", "sisr upscale --backend onnxruntime (warm cache)"):
            timed(*jobs[key])  # fills the warm cache (not timed)
        names = list(jobs)
        for r in range(args.rounds):
            for key in names[r % len(names):] + names[:r % len(names)]:
                times[key].append(timed(*jobs[key]))
        med = {k: statistics.median(v) for k, v in times.items()}
        ref = med["onnxruntime job (graph of sisr export)"]
        outs = {"sisr upscale (default: auto)": "auto", "sisr upscale --backend compile (warm cache)": "compile",
                "sisr upscale --backend onnxruntime (warm cache)": "ortb",
                "onnxruntime job (graph of sisr export)": "ort",
                "sisr upscale --backend compile (cold cache, build included)": "compile-cold"}
        diffs = {k: max_diff(work / "out" / v, work / "out" / "eager") for k, v in outs.items()}
        threads = args.threads or "default"
        print(f"\n{args.images} RGB {args.size}x{args.size} images ({source}), defian-s x2 shipped weights, "
              f"threads {threads}, median of {args.rounds} (cold compile: one run)\n")
        print("| command | wall s | ratio to the ONNX Runtime job | max pixel diff vs eager |\n|---|---:|---:|---:|")
        for k in times:
            print(f"| {k} | {med[k]:.2f} | {med[k] / ref:.2f} | {diffs.get(k, 0)} |")
        out = args.json or ROOT / "benchmarks" / "results" / f"folder_job_threads-{threads}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(dict(images=args.images, size=args.size, source=source, threads=threads,
                                       rounds=args.rounds, times_s=times, median_s=med, ratio_to_ort={
                                           k: v / ref for k, v in med.items()}, max_pixel_diff_vs_eager=diffs,
                                       python=platform.python_version(), machine=platform.machine()), indent=1))
        print(f"\nwrote {out}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
