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
its sha256, the input's sha256, the options that change pixels) and a fingerprint
of its pixels; an existing output is skipped only when its record equals this
job's and it decodes completely to the expected size and the recorded pixels, and
is an error otherwise (``--overwrite`` replaces it). Outputs are written
atomically. A bad file is reported by name and skipped; the exit status is 1 if
any failed. The work is the library's :func:`sisr.inference.batch.upscale_files`;
this module parses the arguments and prints.
"""

from __future__ import annotations

import argparse
import sys

from ..inference.batch import COLOR_MODES, EXTENSIONS
from ..inference.options import ALPHA_MODES, CHOP_MIN_SIZE, CHOP_SHAVE, DEFAULT_TILE_OVERLAP, PRECISION_NAMES
from .arguments import tile


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files and/or folders (searched recursively)")
    parser.add_argument("-o", "--output", required=True, metavar="OUT",
                        help="output folder, or a .png/.jpg/.webp/.tif file name when the input is one image file")
    parser.add_argument("--model", metavar="NAME",
                        help="registry model (default: defian-s with shipped weights, else bicubic)")
    parser.add_argument("--scale", type=int, metavar="S", help="upscaling factor (default: the weights' scale, else 2)")
    parser.add_argument("--weights", metavar="FILE",
                        help="sisr .safetensors or an official .pt/.pth checkpoint (architecture recognised)")
    parser.add_argument("--ext", choices=tuple(EXTENSIONS),
                        help="format of the files written into a folder (default png; same: the input's)")
    parser.add_argument("--quality", type=int, default=95, metavar="Q", help="JPEG/WebP quality 1-100 (default 95)")
    parser.add_argument("--lossless", action="store_true", help="lossless WebP")
    parser.add_argument("--color", default="keep", choices=COLOR_MODES,
                        help="keep: carry the input's ICC profile (default); srgb: convert the pixels to sRGB")
    parser.add_argument("--alpha", default="bicubic", choices=ALPHA_MODES,
                        help="transparency: MATLAB bicubic (default) or through the network as gray")
    parser.add_argument("--tile", type=tile, metavar="N|auto",
                        help="process in overlapping N x N LR tiles, or 'auto' to fit the free memory")
    parser.add_argument("--tile-overlap", type=int, metavar="P",
                        help=f"tile overlap in LR pixels (default {DEFAULT_TILE_OVERLAP})")
    parser.add_argument("--chop", action="store_true", help="the authors' forward_chop (reproduces their protocol)")
    parser.add_argument("--chop-shave", type=int, metavar="P",
                        help=f"chop overlap in LR pixels (default {CHOP_SHAVE})")
    parser.add_argument("--chop-min-size", type=int, metavar="A",
                        help=f"chop until quadrants are smaller than A LR pixels (default {CHOP_MIN_SIZE})")
    parser.add_argument("--chop-round-to-scale", action="store_true",
                        help="round chop quadrants up as CSNLN's code does (size += s - size %% s)")
    parser.add_argument("--self-ensemble", action="store_true", help="average the 8 flips/transposes (x8 slower)")
    parser.add_argument("--device", default="auto", help="auto (cuda > mps > cpu), cpu, cuda, cuda:N or mps")
    parser.add_argument("--precision", default="fp32", choices=PRECISION_NAMES,
                        help="compute precision (autocast; fp16 needs a GPU)")
    parser.add_argument("--backend", default="auto", choices=("auto", "eager", "compile", "onnxruntime"),
                        help="auto: eager, channels-last on the CPU; compile: an AOTInductor package built once "
                             "(30 s or more) and cached, faster after; onnxruntime: the exported graph, cached "
                             "(needs sisr[onnx]); see docs/performance.md")
    parser.add_argument("--channels-last", action="store_true",
                        help="load the network in channels-last memory format (the default on the CPU; faster on GPUs)")
    parser.add_argument("--compile", action="store_true", help="same as --backend compile")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    parser.add_argument("--suffix", default="", help="added to each output name before the extension (e.g. _x4)")
    parser.add_argument("--shard", type=_shard, metavar="I/N",
                        help="only the I-th of N deterministic shares of the images (cluster job arrays; "
                             "under torchrun: RANK+1/WORLD_SIZE by default)")


def run(args: argparse.Namespace) -> int:
    from ..inference.batch import OutputOptions, upscale_files
    from .arguments import run_options

    options = run_options(args, progress=True)  # every option is checked here, before the model is loaded
    _check_output_format(args)
    files = OutputOptions(ext=args.ext or "png", suffix=args.suffix, quality=args.quality, lossless=args.lossless,
                          color=args.color, overwrite=args.overwrite)
    console = _Console()
    try:
        result = upscale_files(args.inputs, args.output, args.model, args.scale, weights=args.weights,
                               device=args.device, options=options, output_options=files, progress=console,
                               shard=args.shard,
                               notify=lambda m: console.write(f"sisr upscale: note: {m}"))
    finally:
        console.close()
    if not (result.done or result.skipped or result.failed):
        print("sisr upscale: nothing to do (no input images)", file=sys.stderr)
        return 1
    if result.done:
        print(f"wrote {len(result.done)} image(s) to {args.output}")
    if result.skipped:
        print(f"skipped {len(result.skipped)} existing output(s) made with the same model, weights and options "
              f"(use --overwrite to redo them)")
    if result.failed:
        print(f"sisr upscale: {len(result.failed)} input(s) failed (see above)", file=sys.stderr)
        return 1
    return 0


class _Console:
    """Progress on stderr: a bar on a terminal, else one line per image in completion order."""

    def __init__(self):
        self.bar = None
        self.lines = not sys.stderr.isatty()

    def write(self, line: str) -> None:
        from tqdm.auto import tqdm

        tqdm.write(line, file=sys.stderr)

    def __call__(self, event) -> None:
        from tqdm.auto import tqdm

        if event.kind == "start":
            print(f"sisr upscale: {event.message}", file=sys.stderr)
            self.bar = tqdm(total=event.total, desc="upscale", unit="img", disable=None)
            return
        if event.position and self.bar is not None:
            self.bar.update(1)
        if event.kind == "failed":
            self.write(f"sisr upscale: {event.message}")
        elif event.kind == "done" and self.lines:
            print(f"sisr upscale: [{event.position}/{event.total}] {event.job.source} -> {event.job.output}",
                  file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _check_output_format(args: argparse.Namespace) -> None:
    """--ext with an output file name, or --lossless for a format that is not WebP: errors, not ignored."""
    from pathlib import Path

    from ..data.io import OUTPUT_FORMATS
    from ..errors import ConfigError

    out = Path(args.output)
    names_file = out.suffix.lower() in OUTPUT_FORMATS and not out.is_dir()
    if args.ext and names_file:
        raise ConfigError(f"--ext {args.ext}: {out} names the output file and its format; drop --ext or give a folder")
    webp = out.suffix.lower() == ".webp" if names_file else args.ext in ("webp", "same")
    if args.lossless and not webp:
        raise ConfigError("--lossless applies to WebP outputs only (-o NAME.webp or --ext webp)")


def _shard(text: str) -> tuple[int, int]:
    i, sep, n = text.partition("/")
    if not (sep and i.isdigit() and n.isdigit() and 1 <= int(i) <= int(n)):
        raise argparse.ArgumentTypeError(f"expected I/N with 1 <= I <= N, got '{text}'")
    return int(i), int(n)
