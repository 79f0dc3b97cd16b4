"""MATLAB-exact ``sisr.data.resize.imresize`` against torch's antialiased bicubic, CPU.

One synthetic 2040x1356 RGB uint8 image (DIV2K size) is downscaled by 1/4 (to 510x339) with:

* ``sisr imresize uint8``: our MATLAB-exact resize, uint8 in and out (weights, float64 conversion,
  two banded products with rounding after each pass, conversion back: the whole call);
* ``sisr imresize float64``: the same on a float64 image (float path, no rounding; input conversion
  not timed);
* ``torch interpolate (uint8->float->uint8)``: ``F.interpolate(mode='bicubic', antialias=True)`` with
  the conversions that make it comparable: HWC uint8 numpy -> NCHW float32 tensor, resize,
  round + clamp -> HWC uint8 numpy (the target baseline);
* ``torch interpolate (uint8 tensor)``: the same on a uint8 NCHW tensor directly (torch's uint8 fast
  path; conversions not timed), for reference.

The methods are run round-robin (so a burst of load on a shared machine hits all of them), with one
warm-up round; the table gives the median and minimum of ``--runs`` rounds, with ``--threads`` torch
threads (our products run in torch). Target: ours within 3x of the torch baseline (median).

    python benchmarks/resize.py                 # table; JSON to benchmarks/results/resize.json
    python benchmarks/resize.py --runs 21 --threads 1 --json /tmp/resize.json --overwrite
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from sisr.data.resize import imresize
from sisr.utils.fs import atomic_write_text

WIDTH, HEIGHT, FACTOR = 2040, 1356, 4
TARGET_RATIO = 3.0


def synthetic_image(seed: int = 0) -> np.ndarray:
    """2040x1356 RGB uint8: smooth gradients, edges and noise (content does not change the timing)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    base = 128 + 60 * np.sin(x / 37.0)[..., None] * np.cos(y[..., None] / 23.0 + np.array([0.0, 1.0, 2.0]))
    base += 40 * ((x // 97 + y // 61) % 2)[..., None]
    return np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=11, help="timed rounds (default 11)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "resize.json")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing JSON file")
    args = parser.parse_args()
    if args.json.exists() and not args.overwrite:
        parser.error(f"{args.json} exists; add --overwrite")
    torch.set_num_threads(args.threads)

    img = synthetic_image()
    img64 = img.astype(np.float64)
    out_h, out_w = -(-HEIGHT // FACTOR), -(-WIDTH // FACTOR)
    t_uint8 = torch.from_numpy(img).permute(2, 0, 1)[None].contiguous()

    def torch_float_roundtrip() -> np.ndarray:
        t = torch.from_numpy(img).permute(2, 0, 1)[None].float()
        out = F.interpolate(t, size=(out_h, out_w), mode="bicubic", antialias=True, align_corners=False)
        return out.round_().clamp_(0, 255).to(torch.uint8)[0].permute(1, 2, 0).numpy()

    methods = {
        "sisr imresize uint8 (MATLAB-exact)": lambda: imresize(img, 1 / FACTOR),
        "sisr imresize float64 (float path)": lambda: imresize(img64, 1 / FACTOR),
        "torch interpolate (uint8->float->uint8)": torch_float_roundtrip,
        "torch interpolate (uint8 tensor)": lambda: F.interpolate(t_uint8, size=(out_h, out_w), mode="bicubic",
                                                                  antialias=True, align_corners=False),
    }
    baseline = "torch interpolate (uint8->float->uint8)"
    times: dict[str, list[float]] = {name: [] for name in methods}
    for round_ in range(args.runs + 1):
        for name, fn in methods.items():
            start = time.perf_counter()
            fn()
            if round_:  # round 0 warms up
                times[name].append(time.perf_counter() - start)

    ours = imresize(img, 1 / FACTOR)
    theirs = torch_float_roundtrip()
    same = float((ours == theirs).mean())
    ref = statistics.median(times[baseline])
    rows = []
    for name, ts in times.items():
        med = statistics.median(ts)
        rows.append({"method": name, "median_ms": 1000 * med, "min_ms": 1000 * min(ts), "vs_torch": med / ref})
    ratio = rows[0]["vs_torch"]

    print(f"resize {WIDTH}x{HEIGHT} RGB uint8 by 1/{FACTOR} -> {out_w}x{out_h}; torch threads {args.threads}; "
          f"{args.runs} rounds (median / min)")
    width = max(len(r["method"]) for r in rows)
    print(f"{'method':<{width}}  {'median ms':>9}  {'min ms':>7}  {'x torch':>7}")
    for r in rows:
        print(f"{r['method']:<{width}}  {r['median_ms']:9.1f}  {r['min_ms']:7.1f}  {r['vs_torch']:7.2f}")
    verdict = "meets" if ratio <= TARGET_RATIO else "misses"
    print(f"ours / torch baseline = {ratio:.2f} ({verdict} the target <= {TARGET_RATIO:g}x); "
          f"identical pixels ours vs torch: {100 * same:.2f}%")

    report = {
        "benchmark": "resize",
        "image": {"width": WIDTH, "height": HEIGHT, "channels": 3, "dtype": "uint8", "factor": 1 / FACTOR},
        "threads": args.threads,
        "runs": args.runs,
        "rows": rows,
        "ratio_ours_vs_torch": ratio,
        "target_ratio": TARGET_RATIO,
        "meets_target": ratio <= TARGET_RATIO,
        "identical_pixels_vs_torch": same,
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "torch": torch.__version__,
                    "numpy": np.__version__, "load_average": list(os.getloadavg())},
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.json, json.dumps(report, indent=2) + "\n", overwrite=args.overwrite)
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
