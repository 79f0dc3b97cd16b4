"""sisr resize: MATLAB-exact bicubic resizing of image files."""

from __future__ import annotations

import argparse
import math
import sys
from fractions import Fraction
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders (searched recursively)")
    parser.add_argument("-o", "--output", required=True, metavar="OUT",
                        help="output folder (created; folder inputs keep their sub-folders), or a "
                             ".png/.jpg/.webp/.tif file name for a single input file")
    size = parser.add_mutually_exclusive_group(required=True)
    size.add_argument("--scale", type=_scale, help="resize factor, e.g. 0.25, 1/3 or 2 (output ceil(size * scale))")
    size.add_argument("--size", type=_size, metavar="HxW", help="output height x width in pixels, e.g. 120x160")
    parser.add_argument("--border", choices=("symmetric", "replicate"), default="symmetric",
                        help="border rule: symmetric = modern MATLAB, replicate = older MATLAB (default symmetric)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")


def _scale(text: str) -> float:
    try:
        value = float(Fraction(text.strip()))
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"'{text}' is not a number or a fraction like 1/3") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"scale must be positive, got {text}")
    return value


def _size(text: str) -> tuple[int, int]:
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(f"'{text}' is not HxW with positive integers, e.g. 120x160")
    return int(parts[0]), int(parts[1])


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..data.io import read_image, write_image
    from ..data.resize import imresize
    from ..errors import ConfigError, SisrError
    from .arguments import plan_outputs

    out = Path(args.output)
    if out.suffix.lower() == ".png" and (len(args.inputs) != 1 or Path(args.inputs[0]).is_dir()):
        raise ConfigError(f"{out}: a .png output needs exactly one input file; give a folder instead")
    jobs, failed = plan_outputs(args.inputs, out, "")  # also refuses an output that would replace its input
    for error in failed:
        print(f"sisr resize: skipped {error}", file=sys.stderr)
    if not jobs and not failed:
        raise ConfigError("no image files in the inputs")

    written = 0
    for src, dst in tqdm(jobs, desc="resize", unit="img", disable=None):
        try:
            img = read_image(src)
            if (problem := _too_large(img, args.scale, args.size)) is not None:
                failed.append(f"{src}: {problem}")
                print(f"sisr resize: skipped {failed[-1]}", file=sys.stderr)
                continue
            if args.scale is not None:
                result = imresize(img, args.scale, border=args.border)
            else:
                result = imresize(img, output_size=args.size, border=args.border)
            write_image(dst, result, overwrite=args.overwrite)
            written += 1
        except MemoryError:
            h, w = img.shape[:2]
            size = args.size or (math.ceil(h * args.scale), math.ceil(w * args.scale))
            failed.append(f"{src}: the {size[0]}x{size[1]} output does not fit in memory")
            print(f"sisr resize: skipped {failed[-1]}", file=sys.stderr)
        except SisrError as exc:
            failed.append(str(exc))
            print(f"sisr resize: skipped {exc}", file=sys.stderr)
    print(f"{written} written, {len(failed)} failed -> {out}")
    return 1 if failed else 0


BYTES_PER_OUTPUT_VALUE = 16  # float64 passes plus the result; measured about 11 per value at 3000x3000x3


def _too_large(img, scale: float | None, size: tuple[int, int] | None) -> str | None:
    """Why the output would not fit in the memory available now (the kernel would kill the process), or None."""
    import torch

    from ..data.resize import output_shape
    from ..utils.device import free_memory

    out_h, out_w = output_shape(img.shape[0], img.shape[1], scale, size)
    need, free = BYTES_PER_OUTPUT_VALUE * out_h * out_w * (img.shape[2] if img.ndim == 3 else 1), free_memory(
        torch.device("cpu"))
    if need <= free:
        return None
    return f"the {out_w}x{out_h} output needs about {need / 2**30:.1f} GiB; {free / 2**30:.1f} GiB are available"
