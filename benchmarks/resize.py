"""MATLAB-exact ``sisr.data.resize.imresize`` against torch's antialiased bicubic, CPU: one synthetic 2040x1356 RGB
uint8 image (DIV2K size) downscaled by 1/4, the methods round-robin after a warm-up round, median and minimum of
``--runs`` rounds. Target: ours within 3x of the torch baseline (median). Method: docs/benchmarks.md, docs/data.md.

    python benchmarks/resize.py                 # table; JSON to benchmarks/results/resize.json
    python benchmarks/resize.py --runs 21 --threads 1 --json /tmp/resize.json --overwrite
"""

from __future__ import annotations

import os
import statistics

import common  # benchmarks/common.py (makes sisr importable from a checkout)
import numpy as np
import torch
import torch.nn.functional as F
from common import md_table, rotate

from sisr.data.resize import imresize

WIDTH, HEIGHT, FACTOR = 2040, 1356, 4
TARGET_RATIO = 3.0
BASELINE = "torch interpolate (uint8->float->uint8)"


def synthetic_image(seed: int = 0) -> np.ndarray:
    """2040x1356 RGB uint8: smooth gradients, edges and noise (content does not change the timing)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    base = 128 + 60 * np.sin(x / 37.0)[..., None] * np.cos(y[..., None] / 23.0 + np.array([0.0, 1.0, 2.0]))
    base += 40 * ((x // 97 + y // 61) % 2)[..., None]
    return np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)


def main(argv=None) -> int:
    p = common.make_parser(__doc__, "resize.json")
    p.add_argument("--runs", type=int, default=11, help="timed rounds (default 11)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    args = p.parse_args(argv)
    common.check_json(args.json, args.overwrite)
    torch.set_num_threads(args.threads)
    img = synthetic_image()
    img64, out_hw = img.astype(np.float64), (-(-HEIGHT // FACTOR), -(-WIDTH // FACTOR))
    t_uint8 = torch.from_numpy(img).permute(2, 0, 1)[None].contiguous()

    def torch_float_roundtrip() -> np.ndarray:
        t = torch.from_numpy(img).permute(2, 0, 1)[None].float()
        out = F.interpolate(t, size=out_hw, mode="bicubic", antialias=True, align_corners=False)
        return out.round_().clamp_(0, 255).to(torch.uint8)[0].permute(1, 2, 0).numpy()

    methods = {"sisr imresize uint8 (MATLAB-exact)": lambda: imresize(img, 1 / FACTOR),
               "sisr imresize float64 (float path)": lambda: imresize(img64, 1 / FACTOR),
               BASELINE: torch_float_roundtrip,
               "torch interpolate (uint8 tensor)": lambda: F.interpolate(t_uint8, size=out_hw, mode="bicubic",
                                                                         antialias=True, align_corners=False)}
    rotate(methods, 1)  # warm-up round
    times = rotate(methods, args.runs)
    same = float((imresize(img, 1 / FACTOR) == torch_float_roundtrip()).mean())
    ref = statistics.median(times[BASELINE])
    rows = [{"method": name, "median_ms": 1000 * statistics.median(ts), "min_ms": 1000 * min(ts),
             "vs_torch": statistics.median(ts) / ref} for name, ts in times.items()]
    ratio = rows[0]["vs_torch"]
    print(f"resize {WIDTH}x{HEIGHT} RGB uint8 by 1/{FACTOR} -> {out_hw[1]}x{out_hw[0]}; torch threads {args.threads}; "
          f"{args.runs} rounds (median / min)")
    print("\n".join(md_table(["method", "median ms", "min ms", "x torch"], [
        [r["method"], f"{r['median_ms']:.1f}", f"{r['min_ms']:.1f}", f"{r['vs_torch']:.2f}"] for r in rows])))
    print(f"ours / torch baseline = {ratio:.2f} ({'meets' if ratio <= TARGET_RATIO else 'misses'} the target <= "
          f"{TARGET_RATIO:g}x); identical pixels ours vs torch: {100 * same:.2f}%")
    common.write_json(args.json, {"benchmark": "resize", "image": {"width": WIDTH, "height": HEIGHT, "channels": 3,
                                                                    "dtype": "uint8", "factor": 1 / FACTOR},
                                  "threads": args.threads, "runs": args.runs, "rows": rows,
                                  "ratio_ours_vs_torch": ratio,
                                  "target_ratio": TARGET_RATIO, "meets_target": ratio <= TARGET_RATIO,
                                  "identical_pixels_vs_torch": same, "load_average": list(os.getloadavg())},
                      args.overwrite)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
