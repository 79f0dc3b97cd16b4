"""sisr upscale: super-resolve image files and folders.

``sisr upscale photo.jpg scans/ -o out/ --model rcan --weights RCAN_BIX2.pt --tile auto``

Folders are searched recursively and their sub-folder structure is kept under
OUT; files in them that are not images are ignored, while a file named
explicitly must be an image. Outputs are PNG (8 or 16 bit, as the input),
written atomically; existing outputs are skipped unless ``--overwrite``. A bad
file is reported by name and skipped; the exit status is 1 if any failed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import ConfigError, SisrError
from .arguments import plan_outputs, tile


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files and/or folders (searched recursively)")
    parser.add_argument("-o", "--output", required=True, metavar="OUT",
                        help="output folder (or a .png file name when the input is one image file)")
    parser.add_argument("--model", metavar="NAME",
                        help="registry model (default: defian-s with shipped weights, else bicubic)")
    parser.add_argument("--scale", type=int, metavar="S", help="upscaling factor (default: the weights' scale, else 2)")
    parser.add_argument("--weights", metavar="FILE",
                        help="sisr .safetensors or an official .pt/.pth checkpoint (architecture recognised)")
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
    parser.add_argument("--channels-last", action="store_true", help="channels-last memory format (faster on GPUs)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the network (slow start, faster runs)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    parser.add_argument("--suffix", default="", help="added to each output name before .png (e.g. _x4)")


def run(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from ..data.io import read_image, write_image
    from ..inference.images import resolve_model, upscale_array
    from ..inference.network import check_precision, model_device
    from ..utils.device import resolve_device

    if args.chop and args.tile is not None:
        raise ConfigError("choose --tile or --chop, not both")
    resolve_device(args.device)  # an unavailable device is reported before anything else
    output = Path(args.output)
    jobs, errors = plan_outputs(args.inputs, output, args.suffix)
    for message in errors:
        print(f"sisr upscale: {message}", file=sys.stderr)
    todo = [(s, d) for s, d in jobs if args.overwrite or not d.exists()]
    skipped = len(jobs) - len(todo)

    failed = len(errors)
    done = 0
    if todo:
        net = resolve_model(args.model, args.scale, weights=args.weights, device=args.device,
                            notify=lambda m: print(f"sisr upscale: note: {m}", file=sys.stderr))
        check_precision(net, args.precision, model_device(net))
        spec = getattr(net, "sisr_spec", None)
        print(f"sisr upscale: {spec.name} x{spec.scale} on {model_device(net)}, {len(todo)} image(s)", file=sys.stderr)
        options = dict(tile=args.tile, tile_overlap=args.tile_overlap, chop=args.chop, chop_shave=args.chop_shave,
                       chop_min_size=args.chop_min_size, chop_round_to_scale=args.chop_round_to_scale,
                       self_ensemble=args.self_ensemble,
                       precision=args.precision, channels_last=args.channels_last, compile=args.compile,
                       progress=True)
        for src, dst in tqdm(todo, desc="upscale", unit="img", disable=None):
            try:
                img = read_image(src)
                write_image(dst, upscale_array(img, net, **options), overwrite=args.overwrite)
                done += 1
            except SisrError as exc:
                tqdm.write(f"sisr upscale: {exc}", file=sys.stderr)
                failed += 1
    if done:
        print(f"wrote {done} image(s) to {output}")
    if skipped:
        print(f"skipped {skipped} existing output(s) (use --overwrite to replace them)")
    if failed:
        print(f"sisr upscale: {failed} input(s) failed (see above)", file=sys.stderr)
        return 1
    if not jobs:
        print("sisr upscale: nothing to do (no input images)", file=sys.stderr)
        return 1
    return 0
