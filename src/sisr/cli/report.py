"""sisr report: an HTML page comparing models on benchmark sets.

Writes ``DIR/index.html`` (metrics table, PSNR bar charts, zoomed crops per image with PSNR
per crop; bicubic always included) plus the PNGs it links to and ``metrics.json``; see
:mod:`sisr.evaluation.report`.
"""

from __future__ import annotations

import argparse

from .arguments import command_line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", required=True, type=_comma_list, metavar="M1,M2,...",
                        help="registry names (shipped weights, or --weights) and/or sisr weights files, "
                             "comma-separated; bicubic is always included")
    parser.add_argument("--datasets", required=True, type=_comma_list, metavar="SET1,SET2,...",
                        help="benchmark set folder names, comma-separated (e.g. Set5,Set14)")
    parser.add_argument("--scale", required=True, type=int, metavar="S", help="upscaling factor")
    parser.add_argument("-o", "--output", required=True, metavar="DIR", help="report folder (absent or empty)")
    parser.add_argument("--weights", action="append", default=[], metavar="[NAME=]FILE",
                        help="weights for a registry model in --models: NAME=FILE (repeatable), or just FILE "
                             "when --models names one registry model besides bicubic")
    parser.add_argument("--data-root", metavar="DIR",
                        help="folder holding <Set>/HR (default: $SISR_DATASETS, ./datasets, ../shared/datasets)")
    parser.add_argument("--crop-size", type=int, default=64, metavar="PX", help="crop side in HR pixels (default: 64)")
    parser.add_argument("--crops-per-image", type=int, default=1, metavar="N",
                        help="crops per image, non-overlapping, largest bicubic error first (default: 1)")
    parser.add_argument("--zoom", type=int, metavar="K",
                        help="nearest-neighbour enlargement of the crops (default: 256 // crop size)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N, mps or auto (default: cpu)")
    parser.add_argument("--overwrite", action="store_true", help="write into a non-empty DIR, replacing report files")


def _comma_list(text: str) -> list[str]:
    items = [t.strip() for t in text.split(",")]
    if not all(items):
        raise argparse.ArgumentTypeError(f"empty item in '{text}'")
    return items


def _weights(entries: list[str], models: list[str]) -> dict[str, str]:
    from ..weights.loading import is_model_name
    from ..errors import ConfigError

    out: dict[str, str] = {}
    for entry in entries:
        name, sep, path = entry.partition("=")
        if sep and is_model_name(name):
            out[name.lower()] = path
            continue
        candidates = [m.lower() for m in models if is_model_name(m) and m.lower() != "bicubic"]
        if len(candidates) != 1:
            raise ConfigError(f"--weights {entry}: say which model it is for (--weights NAME=FILE); "
                              f"registry models given: {', '.join(candidates) or 'none besides bicubic'}")
        out[candidates[0]] = entry
    return out


def run(args: argparse.Namespace) -> int:
    from ..evaluation.report import make_report

    index = make_report(
        args.models, args.datasets, args.scale, args.output, data_root=args.data_root,
        weights=_weights(args.weights, args.models), crop_size=args.crop_size,
        crops_per_image=args.crops_per_image, zoom=args.zoom, device=args.device, overwrite=args.overwrite,
        command=command_line("report", args, comma=("models", "datasets"), repeat=("weights",)),
    )
    print(f"report written to {index}")
    return 0
