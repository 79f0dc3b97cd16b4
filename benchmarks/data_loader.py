"""Training data loader: samples per CPU-second of the trainer's sampling path (integer patches, converted on the
training device) against float patches, in one run;
``--preparation N``: disk and CPU time of preparing the training cache, extrapolated to DIV2K and Flickr2K.
Method: docs/benchmarks.md. The loader's wall-clock rate per worker count (``loader_rates``) serves
benchmarks/train_throughput.py and gpu_suite.py.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/data_loader.py --overwrite
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/data_loader.py --preparation 4 --overwrite
"""

from __future__ import annotations

import math
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import common  # benchmarks/common.py (makes sisr importable from a checkout)
import numpy as np
import torch
from common import md_table

from sisr.data.training import IterationSampler, PatchDataset, TrainingPair, _save_entry, make_loader

SCALES = (2, 3, 4)


def synthetic_pairs(cache: Path, images: int, width: int, height: int, scale: int) -> list[TrainingPair]:
    """Cache entries of ``images`` noise images (HR shared by the scales) and their LR (every s-th pixel)."""
    rng = np.random.default_rng(0)
    pairs = []
    for i in range(images):
        hr_npy, lr_npy = cache / f"hr{i}.npy", cache / f"lr{i}x{scale}.npy"
        if not hr_npy.is_file():
            _save_entry(hr_npy, rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
        hr = np.load(hr_npy, mmap_mode="r")
        lr = np.ascontiguousarray(hr[: hr.shape[0] // scale * scale: scale, : hr.shape[1] // scale * scale: scale])
        _save_entry(lr_npy, lr)
        pairs.append(TrainingPair(f"{i}.png", hr_npy, hr_npy, lr_npy, lr.shape[:2]))
    return pairs


def cpu_seconds_of_batch(dataset: PatchDataset, indices: list[int]) -> float:
    start = time.process_time()
    samples = [dataset[i] for i in indices]
    torch.stack([lr for lr, _ in samples]), torch.stack([hr for _, hr in samples])
    return time.process_time() - start


def loader_rates(dataset: PatchDataset, batch: int, batches: int, workers, pin_memory: bool = False,
                 deadline: float = math.inf) -> dict[int, float]:
    """Samples/s (wall clock) through the trainer's ``make_loader`` with each worker count, after two batches
    (workers started); past ``deadline`` (monotonic) only the first count is measured."""
    out = {}
    for count in workers:
        if out and time.monotonic() > deadline:
            break
        loader = iter(make_loader(dataset, 0, batches + 2, batch, workers=count, pin_memory=pin_memory))
        next(loader), next(loader)
        start = time.perf_counter()
        out[count] = sum(1 for _ in loader) * batch / (time.perf_counter() - start)
    return out


def measure_scale(cache: Path, scale: int, args) -> dict:
    pairs = synthetic_pairs(cache, args.images, args.width, args.height, scale)
    datasets = {"float": PatchDataset(pairs, scale, args.patch, seed=1),
                "integer": PatchDataset(pairs, scale, args.patch, seed=1, integer=True)}
    sampler = list(IterationSampler(0, args.rounds * args.batches + 1, args.batch))
    batches = [sampler[i: i + args.batch] for i in range(0, len(sampler), args.batch)]
    for dataset in datasets.values():  # warm: page cache, maps, numpy/torch code paths
        cpu_seconds_of_batch(dataset, batches[0])
    rates: dict[str, list[float]] = {name: [] for name in datasets}
    for r in range(args.rounds):
        spent = {name: 0.0 for name in datasets}
        for b in batches[1 + r * args.batches: 1 + (r + 1) * args.batches]:
            for name, dataset in datasets.items():  # batch by batch, in turns: the same load for all
                spent[name] += cpu_seconds_of_batch(dataset, b)
        for name in datasets:
            rates[name].append(args.batches * args.batch / spent[name])
    row = {"scale": scale, "lr_patch": args.patch, "hr_patch": args.patch * scale, "batch": args.batch}
    for name in datasets:
        median = statistics.median(rates[name])
        row[name] = {"samples_per_cpu_s": median, "us_per_sample": 1e6 / median, "rounds": rates[name],
                     "workers_for_rate": math.ceil(args.rate / median)}
    row["speedup"] = row["integer"]["samples_per_cpu_s"] / row["float"]["samples_per_cpu_s"]
    return row


def synthetic_images(folder: Path, count: int, width: int, height: int) -> list[Path]:
    """PNGs of smooth gradients and waves with noise (they compress more like photographs than pure noise)."""
    from sisr.data.io import write_image

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:height, 0:width]
    for i in range(count):
        base = np.stack([(xx * (i + 1) / 16) % 256, (yy / 6 + 40 * np.sin(xx / 97.0 + i)) % 256,
                         ((xx + yy) / 13) % 256], axis=-1)
        write_image(folder / f"{i:04d}.png", np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8))
    return sorted(folder.glob("*.png"))


def measure_preparation(work: Path, args) -> dict:
    """Bytes per image of each cache entry and CPU seconds per image of each scale's preparation, extrapolated."""
    from sisr.data.training import cache_images

    files = synthetic_images(work / "images", args.preparation, args.width, args.height)
    images, n = [(f, f.parent) for f in files], len(files)
    out = {"images": n, "size": [args.width, args.height],
           "png_bytes_per_image": sum(f.stat().st_size for f in files) / n}
    for scale in SCALES:
        cpu, wall = time.process_time(), time.perf_counter()
        result = cache_images(images, scale, args.patch, cache_dir=work / "cache", workers=1, progress=False)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        out[f"x{scale}"] = {"cpu_s_per_image": cpu / n, "wall_s_per_image": wall / n, "made": result.made,
                            "hr_bytes_per_image": sum(p.hr_npy.stat().st_size for p in result.pairs) / n,
                            "lr_bytes_per_image": sum(p.lr_npy.stat().st_size for p in result.pairs) / n}
    start = time.process_time()
    assert cache_images(images, 2, args.patch, cache_dir=work / "cache", workers=1, progress=False).made == 0
    out["check_cpu_s_per_image"] = (time.process_time() - start) / n
    per_image = sum(p.stat().st_size for p in (work / "cache").rglob("*") if p.is_file()) / n
    cpu = sum(out[f"x{s}"]["cpu_s_per_image"] for s in SCALES)
    out["extrapolated"] = {name: {"images": count, "cache_gib_three_scales": count * per_image / 2**30,
                                  "cpu_minutes_three_scales": count * cpu / 60}
                           for name, count in (("DIV2K", 800), ("Flickr2K", 2650), ("DIV2K+Flickr2K", 3450))}
    return out


def main(argv=None) -> int:
    p = common.make_parser(__doc__, "")
    p.add_argument("--images", type=int, default=8, help="synthetic images (default 8)")
    p.add_argument("--size", default="2040x1356", help="WxH of the synthetic HR images (default DIV2K's 2040x1356)")
    p.add_argument("--patch", type=int, default=48, help="LR patch side (default 48)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--batches", type=int, default=40, help="batches per round and path (default 40)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--rate", type=float, default=2000.0, help="samples/s to feed, for the workers column")
    p.add_argument("--cache-dir", type=Path, help="where the synthetic cache goes (default: a temporary folder)")
    p.add_argument("--preparation", type=int, metavar="N", help="measure the cache preparation of N images instead")
    args = p.parse_args(argv)
    path = common.check_json(args.json or common.RESULTS / f"data_{'prepare' if args.preparation else 'loader'}.json",
                             args.overwrite)
    args.width, args.height = (int(v) for v in args.size.lower().split("x"))
    torch.set_num_threads(1)
    cache = args.cache_dir or Path(tempfile.mkdtemp(prefix="sisr-loader-"))
    cache.mkdir(parents=True, exist_ok=True)
    try:
        if args.preparation:
            result = {"benchmark": "data_prepare", **measure_preparation(cache, args)}
            print(result)
        else:
            rows = [measure_scale(cache, scale, args) for scale in SCALES]
            result = {"benchmark": "data_loader", "images": args.images, "size": [args.width, args.height],
                      "rounds": args.rounds, "batches_per_round": args.batches, "rate": args.rate, "rows": rows,
                      "min_speedup": min(r["speedup"] for r in rows), "numpy": np.__version__}
            print("\n".join(md_table(
                ["scale", "LR (HR) patch", "float samples/CPU-s", "integer (trainer)", "integer / float",
                 f"workers for {args.rate:g}/s (float -> integer)"],
                [[f"x{r['scale']}", f"{r['lr_patch']} ({r['hr_patch']})"] +
                 [f"{r[k]['samples_per_cpu_s']:.0f}" for k in ("float", "integer")] + [f"{r['speedup']:.2f}x",
                  f"{r['float']['workers_for_rate']} -> {r['integer']['workers_for_rate']}"] for r in rows])))
    finally:
        if args.cache_dir is None:
            shutil.rmtree(cache, ignore_errors=True)
    common.write_json(path, result, args.overwrite)
    return 0


if __name__ == "__main__":
    sys.exit(main())
