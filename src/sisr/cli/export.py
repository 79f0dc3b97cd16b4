"""sisr export: a network with its weights -> an ONNX file (dynamic batch, height, width).

``sisr export --model edsr --weights edsr_x2.safetensors -o edsr_x2.onnx`` or
``sisr export --model run/best.safetensors --format onnx -o model.onnx [--opset 18]``.

The graph takes ``lr`` (float32 RGB in [0, 1], N x 3 x H x W) and gives ``sr`` (N x 3 x sH x sW).
With onnxruntime installed it is checked against PyTorch at two input sizes before it is written
(:mod:`sisr.inference.export`). Needs the optional packages: ``pip install 'sisr[onnx]'``.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, metavar="NAME|FILE",
                        help="registry model (shipped weights, or --weights) or a weights file")
    parser.add_argument("--weights", metavar="FILE",
                        help="sisr .safetensors or an official .pt/.pth checkpoint for --model NAME")
    parser.add_argument("--scale", type=int, metavar="S", help="upscaling factor (default: the weights' scale)")
    parser.add_argument("--format", default="onnx", choices=("onnx",), help="output format (onnx)")
    parser.add_argument("-o", "--output", required=True, metavar="OUT.onnx", help="file to write")
    parser.add_argument("--opset", type=int, metavar="N", help="ONNX opset (default: torch.onnx's)")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")


def run(args: argparse.Namespace) -> int:
    from ..inference.export import (INSTALL_HINT, ExportError, export_onnx, onnx_unsupported_reason,
                                 onnxruntime_available, require_onnx)
    from ..weights.handle import identify
    from ..weights.loading import is_model_name, load_model
    from ..utils.fs import OutputExistsError
    from .arguments import check_output_file

    output = Path(args.output)
    # cheap checks first: no weights are read when the export cannot happen
    if output.suffix.lower() != ".onnx":
        raise ExportError(f"{output}: the output must be an .onnx file")
    for source in (args.model, args.weights):
        if source and Path(source).exists() and output.exists() and os.path.samefile(source, output):
            raise ExportError(f"{output}: is the weights file being exported; write the ONNX file elsewhere")
    check_output_file(output)
    if output.exists() and not args.overwrite:
        raise OutputExistsError(f"{output}: already exists (use --overwrite to replace it)")
    if is_model_name(args.model):
        reason = onnx_unsupported_reason(args.model)
        if reason:
            raise ExportError(f"{args.model.lower()} cannot be exported to ONNX with a dynamic input size: {reason}")
    require_onnx()

    model = load_model(args.model, args.scale, weights=args.weights)
    result = export_onnx(model, output, opset=args.opset, overwrite=args.overwrite, verify=onnxruntime_available())
    spec = identify(model).spec
    what = f"{spec.name} x{spec.scale}" if spec is not None else args.model
    if result.verified:
        shapes = " and ".join("x".join(map(str, s)) for s in result.checked_shapes)
        check = f"matches PyTorch within {result.max_abs_diff:.1e} on {shapes} inputs (onnxruntime)"
    else:
        check = f"not checked against PyTorch: onnxruntime is not installed ({INSTALL_HINT})"
    print(f"{what} -> {output} ({result.size_bytes / 2**20:.1f} MiB, opset {result.opset}, "
          f"dynamic batch/height/width); {check}")
    if result.notes:
        print(f"note: {result.notes}")
    return 0
