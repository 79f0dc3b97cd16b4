"""Training data loader: samples per second per CPU-second, today's path against the old one, in one run.

The sampling path of ``sisr.data.training.PatchDataset`` (a patch pair cut from the cached ``.npy``
entries, flipped/transposed, converted to float tensors, collated into batches) at x2, x3 and x4, LR
patch 48, batch 16, on synthetic DIV2K-sized images (``--size``, default 2040x1356; the cache
entries are written directly: decoding and degradation are not part of the figure):

* ``new``: what the trainer's loader does: each cache file memory-mapped once per process
  (``PatchDataset.arrays``), integer patches (``integer=True``: uint8, made float on the training device);
* ``new-float``: the same maps, float32 patches (``PatchDataset``'s default, the conversion on the CPU);
* ``old``: the earlier ``__getitem__``, two ``np.load(mmap_mode="r")`` per sample and float32 patches (kept here).

The figure is samples / CPU seconds of this process (``time.process_time``, one torch thread, no
workers): what one DataLoader worker spends per sample. Old and new take turns batch by batch for
``--rounds`` rounds (load from other processes hits both alike); the table gives the median over
rounds, the speed-up, and the DataLoader workers needed to feed ``--rate`` samples per second
(rounded up; a worker is assumed to have a core to itself).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/data_loader.py --overwrite

``--preparation N``: instead, the disk and CPU time of preparing the training cache
(``sisr.data.training.cache_images``, one process) for N synthetic images of ``--size`` (smooth patterns with
noise, written as PNG) at x2, x3 and x4, and their extrapolation to DIV2K (800 images) and Flickr2K (2,650)
assuming every image has that size (JSON: ``results/data_prepare.json``):

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/data_loader.py --preparation 4 --overwrite
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from sisr.data.io import image_to_tensor
from sisr.data.training import IterationSampler, PatchDataset, TrainingPair, _save_entry, augment
from sisr.utils.device import cpu_name
from sisr.utils.fs import atomic_write_text

SCALES = (2, 3, 4)


class OldPatchDataset(PatchDataset):
    """The sampling path before maps were kept open: two ``np.load(mmap_mode="r")`` per sample."""

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        k, y, x, flips = self.sample(index)
        pair, p, s = self.pairs[k], self.patch_size, self.scale
        lr = np.load(pair.lr_npy, mmap_mode="r")[y: y + p, x: x + p]
        hr = np.load(pair.hr_npy, mmap_mode="r")[s * y: s * (y + p), s * x: s * (x + p)]
        return image_to_tensor(augment(lr, flips)), image_to_tensor(augment(hr, flips))


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


def measure_scale(cache: Path, scale: int, args) -> dict:
    pairs = synthetic_pairs(cache, args.images, args.width, args.height, scale)
    datasets = {"old": OldPatchDataset(pairs, scale, args.patch, seed=1),
                "new-float": PatchDataset(pairs, scale, args.patch, seed=1),
                "new": PatchDataset(pairs, scale, args.patch, seed=1, integer=True)}
    sampler = list(IterationSampler(0, args.rounds * args.batches + 1, args.batch))
    batches = [sampler[i: i + args.batch] for i in range(0, len(sampler), args.batch)]
    for dataset in datasets.values():  # warm: page cache, maps of the new path, numpy/torch code paths
        cpu_seconds_of_batch(dataset, batches[0])
    rates: dict[str, list[float]] = {name: [] for name in datasets}
    for r in range(args.rounds):
        spent = {name: 0.0 for name in datasets}
        for b in batches[1 + r * args.batches: 1 + (r + 1) * args.batches]:
            for name, dataset in datasets.items():  # in turns: the same load for both
                spent[name] += cpu_seconds_of_batch(dataset, b)
        for name in datasets:
            rates[name].append(args.batches * args.batch / spent[name])
    row = {"scale": scale, "lr_patch": args.patch, "hr_patch": args.patch * scale, "batch": args.batch}
    for name in datasets:
        median = statistics.median(rates[name])
        row[name] = {"samples_per_cpu_s": median, "us_per_sample": 1e6 / median, "rounds": rates[name],
                     "workers_for_rate": math.ceil(args.rate / median)}
    row["speedup"] = row["new"]["samples_per_cpu_s"] / row["old"]["samples_per_cpu_s"]
    row["speedup_float"] = row["new-float"]["samples_per_cpu_s"] / row["old"]["samples_per_cpu_s"]
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


def print_table(rows: list[dict], args) -> None:
    print(f"| scale | LR (HR) patch | old samples/CPU-s | new-float | new (trainer) | new / old | new-float / old | "
          f"workers for {args.rate:g}/s (old -> new) |")
    print("|---|---|---:|---:|---:|---:|---:|---|")
    for r in rows:
        print(f"| x{r['scale']} | {r['lr_patch']} ({r['hr_patch']}) | {r['old']['samples_per_cpu_s']:.0f} | "
              f"{r['new-float']['samples_per_cpu_s']:.0f} | {r['new']['samples_per_cpu_s']:.0f} | "
              f"{r['speedup']:.2f}x | {r['speedup_float']:.2f}x | "
              f"{r['old']['workers_for_rate']} -> {r['new']['workers_for_rate']} |")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=8, help="synthetic images (default 8)")
    p.add_argument("--size", default="2040x1356", help="WxH of the synthetic HR images (default DIV2K's 2040x1356)")
    p.add_argument("--patch", type=int, default=48, help="LR patch side (default 48)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--batches", type=int, default=40, help="batches per round and path (default 40)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--rate", type=float, default=2000.0, help="samples/s to feed, for the workers column")
    p.add_argument("--cache-dir", type=Path, help="where the synthetic cache goes (default: a temporary folder)")
    p.add_argument("--preparation", type=int, metavar="N", help="measure the cache preparation of N images instead")
    p.add_argument("--json", type=Path, help="results file (default results/data_loader.json, or data_prepare.json)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing JSON file")
    args = p.parse_args()
    results = Path(__file__).parent / "results"
    args.json = args.json or results / ("data_prepare.json" if args.preparation else "data_loader.json")
    if args.json.exists() and not args.overwrite:
        p.error(f"{args.json} exists (use --overwrite or --json)")
    args.width, args.height = (int(v) for v in args.size.lower().split("x"))
    torch.set_num_threads(1)
    cache = args.cache_dir or Path(tempfile.mkdtemp(prefix="sisr-loader-"))
    cache.mkdir(parents=True, exist_ok=True)
    if args.preparation:
        try:
            result = {"benchmark": "data_prepare", "command": " ".join(sys.argv), "cpu": cpu_name(),
                      **measure_preparation(cache, args)}
        finally:
            if args.cache_dir is None:
                shutil.rmtree(cache, ignore_errors=True)
        print(json.dumps(result, indent=1))
        args.json.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.json, json.dumps(result, indent=2) + "\n", overwrite=args.overwrite)
        return 0
    try:
        rows = []
        for scale in SCALES:
            rows.append(measure_scale(cache, scale, args))
            print(f"x{scale}: old {rows[-1]['old']['us_per_sample']:.0f} us, new {rows[-1]['new']['us_per_sample']:.0f} "
                  f"us per sample ({rows[-1]['new-float']['us_per_sample']:.0f} with float patches)", file=sys.stderr,
                  flush=True)
    finally:
        if args.cache_dir is None:
            shutil.rmtree(cache, ignore_errors=True)
    print_table(rows, args)
    result = {"benchmark": "data_loader", "command": " ".join(sys.argv), "cpu": cpu_name(),
              "python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
              "images": args.images, "size": [args.width, args.height], "rounds": args.rounds,
              "batches_per_round": args.batches, "rate": args.rate, "rows": rows,
              "min_speedup": min(r["speedup"] for r in rows)}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.json, json.dumps(result, indent=2) + "\n", overwrite=args.overwrite)
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
