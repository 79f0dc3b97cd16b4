"""sisr upscale: super-resolve image files and folders.

``sisr upscale photo.jpg scans/ -o out/ --model rcan --weights RCAN_BIX2.pt --tile auto``

Folders are searched recursively and their sub-folder structure is kept under
OUT; files in them that are not images are ignored, while a file named
explicitly must be an image. One input file and ``-o NAME.png|.jpg|.webp|.tif``
writes that file; otherwise OUT is a folder and ``--ext`` picks the format.
The ICC profile, EXIF (orientation reset: it is applied), XMP and DPI of each
input are carried to its output where the format can hold them.

The model, weights and every option are checked before any output is written
or skipped. Each output records how it was made (model, scale, weights file and
its sha256, the input's sha256 and the options that change pixels); an existing
output is skipped only when its record equals this job's, and is an error
otherwise (``--overwrite`` replaces it). Outputs are written atomically. A bad
file is reported by name and skipped; the exit status is 1 if any failed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from ..errors import ConfigError, SisrError
from ..utils.fs import sha256_file
from .arguments import EXTENSIONS, plan_outputs, tile

ALPHA_MODES = ("bicubic", "model")
COLOR_MODES = ("keep", "srgb")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files and/or folders (searched recursively)")
    parser.add_argument("-o", "--output", required=True, metavar="OUT",
                        help="output folder, or a .png/.jpg/.webp/.tif file name when the input is one image file")
    parser.add_argument("--model", metavar="NAME",
                        help="registry model (default: defian-s with shipped weights, else bicubic)")
    parser.add_argument("--scale", type=int, metavar="S", help="upscaling factor (default: the weights' scale, else 2)")
    parser.add_argument("--weights", metavar="FILE",
                        help="sisr .safetensors or an official .pt/.pth checkpoint (architecture recognised)")
    parser.add_argument("--ext", default="png", choices=tuple(EXTENSIONS),
                        help="format of the files written into a folder (default png; same: the input's)")
    parser.add_argument("--quality", type=int, default=95, metavar="Q", help="JPEG/WebP quality 1-100 (default 95)")
    parser.add_argument("--lossless", action="store_true", help="lossless WebP")
    parser.add_argument("--color", default="keep", choices=COLOR_MODES,
                        help="keep: carry the input's ICC profile (default); srgb: convert the pixels to sRGB")
    parser.add_argument("--alpha", default="bicubic", choices=ALPHA_MODES,
                        help="transparency: MATLAB bicubic (default) or through the network as gray")
    parser.add_argument("--tile", type=tile, metavar="N|auto",
                        help="process in overlapping N x N LR tiles, or 'auto' to fit the free memory")
    parser.add_argument("--tile-overlap", type=int, metavar="P", help="tile overlap in LR pixels (default 32)")
    parser.add_argument("--chop", action="store_true", help="the authors' forward_chop (reproduces their protocol)")
    parser.add_argument("--chop-shave", type=int, default=10, metavar="P", help="chop overlap in LR pixels (default 10)")
    parser.add_argument("--chop-min-size", type=int, default=160_000, metavar="A",
                        help="chop until quadrants are smaller than A LR pixels (default 160000)")
    parser.add_argument("--chop-round-to-scale", action="store_true",
                        help="round chop quadrants up as CSNLN's code does (size += s - size %% s)")
    parser.add_argument("--self-ensemble", action="store_true", help="average the 8 flips/transposes (x8 slower)")
    parser.add_argument("--device", default="auto", help="auto (cuda > mps > cpu), cpu, cuda, cuda:N or mps")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"),
                        help="compute precision (autocast; fp16 needs a GPU)")
    parser.add_argument("--backend", default="auto", choices=("auto", "eager", "compile", "onnxruntime"),
                        help="auto: eager, channels-last on the CPU; compile: an AOTInductor package built once "
                             "(30 s or more) and cached, faster after; onnxruntime: the exported graph, cached "
                             "(needs sisr[onnx]); see docs/performance.md")
    parser.add_argument("--channels-last", action="store_true", help="channels-last memory format (faster on GPUs)")
    parser.add_argument("--compile", action="store_true", help="same as --backend compile")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    parser.add_argument("--suffix", default="", help="added to each output name before the extension (e.g. _x4)")


def check_options(args: argparse.Namespace) -> None:
    """Every option error as one ``ConfigError``, before any model is loaded."""
    from ..inference.tiling import DEFAULT_TILE_OVERLAP

    if args.chop and args.tile is not None:
        raise ConfigError("choose --tile or --chop, not both")
    if args.tile_overlap is not None and args.tile_overlap < 0:
        raise ConfigError(f"--tile-overlap must be >= 0, got {args.tile_overlap}")
    overlap = DEFAULT_TILE_OVERLAP if args.tile_overlap is None else args.tile_overlap
    if isinstance(args.tile, int) and args.tile < 2 * overlap:
        raise ConfigError(f"--tile {args.tile} must be at least twice the tile overlap ({overlap}; see --tile-overlap)")
    if args.chop_shave < 0:
        raise ConfigError(f"--chop-shave must be >= 0, got {args.chop_shave}")
    if args.chop_min_size < 1:
        raise ConfigError(f"--chop-min-size must be >= 1, got {args.chop_min_size}")
    if not 1 <= args.quality <= 100:
        raise ConfigError(f"--quality must be 1..100, got {args.quality}")
    if args.scale is not None and args.scale < 1:
        raise ConfigError(f"--scale must be >= 1, got {args.scale}")


def job_record(net, args: argparse.Namespace, output: Path) -> dict:
    """What decides the pixels of an output, apart from its input (recorded in each output)."""
    spec = net.sisr_spec
    weights = (getattr(net, "sisr_weights", None) or {}).get("path")
    pixel_options = {key: getattr(args, key) for key in (
        "tile", "tile_overlap", "chop", "chop_shave", "chop_min_size", "chop_round_to_scale", "self_ensemble",
        "precision", "alpha", "color")}
    if output.suffix.lower() in (".jpg", ".jpeg", ".webp") or args.ext in ("jpg", "webp", "same"):
        pixel_options.update(quality=args.quality, lossless=args.lossless)
    return {"model": spec.name, "scale": int(spec.scale),
            "weights": None if weights is None else {"name": Path(weights).name, "sha256": sha256_file(weights)},
            "options": pixel_options}


def run(args: argparse.Namespace) -> int:
    import threading
    from concurrent.futures import ThreadPoolExecutor, as_completed

    import torch

    from tqdm.auto import tqdm

    from ..data.io import read_image, read_image_info, to_srgb, write_image
    from ..inference.images import resolve_model, upscale_array
    from ..inference.backends import cached_file
    from ..inference.backends import check as check_backend
    from ..inference.backends import prepare as prepare_backend
    from ..inference.network import check_precision, model_device
    from ..utils.device import resolve_device

    check_options(args)
    resolve_device(args.device)  # an unavailable device is reported before anything else
    output = Path(args.output)
    jobs, errors = plan_outputs(args.inputs, output, args.suffix, ext=args.ext, has_suffix_option=True)
    for message in errors:
        print(f"sisr upscale: {message}", file=sys.stderr)
    failed = len(errors)
    if not jobs:
        if not failed:
            print("sisr upscale: nothing to do (no input images)", file=sys.stderr)
        return 1
    # the model, weights and options are checked before any output is skipped or written
    net = resolve_model(args.model, args.scale, weights=args.weights, device=args.device,
                        notify=lambda m: print(f"sisr upscale: note: {m}", file=sys.stderr))
    dtype = check_precision(net, args.precision, model_device(net))
    backend = check_backend(args.backend, model_device(net), dtype, args.compile)
    record = job_record(net, args, output)

    def provenance(src: Path) -> str:
        return json.dumps({**record, "input_sha256": sha256_file(src)}, sort_keys=True)

    todo, skipped = [], 0
    for src, dst in jobs:
        if args.overwrite or not dst.exists():
            todo.append((src, dst))
            continue
        try:
            same = read_image_info(dst).provenance == provenance(src)
        except (SisrError, OSError):
            same = False
        if same:
            skipped += 1
        else:
            print(f"sisr upscale: {dst}: exists and was not made from {src} with this model, weights and options "
                  f"(use --overwrite to replace it)", file=sys.stderr)
            failed += 1

    done = 0
    if todo:
        spec = net.sisr_spec
        print(f"sisr upscale: {spec.name} x{spec.scale} on {model_device(net)}, {len(todo)} image(s)", file=sys.stderr)
        options = dict(tile=args.tile, tile_overlap=args.tile_overlap, chop=args.chop, chop_shave=args.chop_shave,
                       chop_min_size=args.chop_min_size, chop_round_to_scale=args.chop_round_to_scale,
                       self_ensemble=args.self_ensemble, alpha=args.alpha,
                       precision=args.precision, channels_last=args.channels_last, compile=args.compile,
                       backend=args.backend, progress=True)
        cached = cached_file(net, backend, model_device(net))
        if cached and not cached[1]:
            print(f"sisr upscale: building the {backend} backend's graph for {spec.name} x{spec.scale} once "
                  f"(30 s or more; cached as {cached[0]})", file=sys.stderr)
        if cached:  # built (or loaded) once here: a failure is one error, not one per image
            prepare_backend(net, backend, model_device(net), dtype)
        lines = not sys.stderr.isatty()  # no bar off a terminal: one line per image instead

        def load(src: Path):
            info = read_image_info(src)
            img = read_image(src)
            if args.color == "srgb":
                img = to_srgb(img, info.icc_profile, str(src))
                info = dataclasses.replace(info, icc_profile=None)  # the pixels are sRGB now
            return info, img, provenance(src)

        # One job per image: read, network, write. Reading and writing overlap with the network; on a
        # multi-core CPU, whole images (each on one thread) run side by side, which uses the cores better
        # than splitting every convolution over them (docs/performance.md, folder job).
        device = model_device(net)
        threads = torch.get_num_threads()
        workers = threads if (device.type == "cpu" and threads > 1 and len(todo) > 1 and args.tile is None
                              and not args.chop and backend in ("auto", "eager")) else 1
        workers = min(workers, len(todo))
        if workers > 1:
            options["progress"] = False
            if backend == "auto":  # convert once: concurrent calls must not each convert and restore it
                net.to(memory_format=torch.channels_last)
        slots = threading.Semaphore(workers)

        def job(i: int, src: Path, dst: Path):
            info, img, prov = load(src)
            if info.frames > 1:
                tqdm.write(f"sisr upscale: note: {src}: {info.frames} frames; only the first is upscaled",
                           file=sys.stderr)
            with slots:
                out = upscale_array(img, net, **options)
            write_image(dst, out, overwrite=args.overwrite, info=info, quality=args.quality,
                        lossless=args.lossless, provenance=prov)
            return i, src, dst

        bar = tqdm(total=len(todo), desc="upscale", unit="img", disable=None)
        pool = ThreadPoolExecutor(max_workers=workers + 1, thread_name_prefix="sisr-upscale")
        if workers > 1:
            torch.set_num_threads(1)
        try:
            futures = [pool.submit(job, i, src, dst) for i, (src, dst) in enumerate(todo, 1)]
            for future in as_completed(futures):
                bar.update(1)
                try:
                    i, src, dst = future.result()
                except SisrError as exc:
                    tqdm.write(f"sisr upscale: {exc}", file=sys.stderr)
                    failed += 1
                    continue
                done += 1
                if lines:
                    print(f"sisr upscale: [{i}/{len(todo)}] {src} -> {dst}", file=sys.stderr, flush=True)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)  # started images finish (atomic writes)
            bar.close()
            torch.set_num_threads(threads)
    if done:
        print(f"wrote {done} image(s) to {output}")
    if skipped:
        print(f"skipped {skipped} existing output(s) made with the same model, weights and options "
              f"(use --overwrite to redo them)")
    if failed:
        print(f"sisr upscale: {failed} input(s) failed (see above)", file=sys.stderr)
        return 1
    return 0
