"""sisr convert: an official checkpoint -> a sisr safetensors weights file.

``sisr convert RCAN_BIX2.pt rcan_x2.safetensors`` reads the checkpoint safely
(tensors only), recognises the architecture, scale and width/depth from its
keys and shapes, checks that every key fits the network, and writes the
weights with metadata (model, scale, hyper-parameters, source file name and
sha256, the official input/output convention).
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", metavar="FILE", help="official checkpoint (.pt/.pth, or a plain safetensors state_dict)")
    parser.add_argument("output", metavar="OUT.safetensors", help="sisr weights file to write")
    parser.add_argument("--model", metavar="NAME", help="registry model the file must be (default: recognised)")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")


def run(args: argparse.Namespace) -> int:
    from ..weights.official import convert_official
    from .arguments import check_output_file

    check_output_file(args.output)
    dst, found = convert_official(args.checkpoint, args.output, model=args.model, overwrite=args.overwrite)
    hp = ", ".join(f"{k}={v}" for k, v in found.hparams.items())
    print(f"{args.checkpoint}: {found.model} x{found.scale} ({hp}) -> {dst}")
    return 0
