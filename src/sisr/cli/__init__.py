"""Command line: a thin layer over the Python API.

Each sub-command lives in its own module exposing ``add_arguments(parser)`` and
``run(args) -> int``; only the module of the command being run is imported.
Errors caused by the user's input (``SisrError``) are printed as one line.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .. import __version__
from ..errors import SisrError

# command -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "upscale": ("sisr.cli.upscale", "upscale images or folders with a model"),
    "demo": ("sisr.cli.demo", "render a test chart and upscale it with the default model"),
    "models": ("sisr.cli.models", "list the models, their scales and pretrained weights"),
    "eval": ("sisr.cli.evaluate", "PSNR/SSIM tables on benchmark sets (paper protocol)"),
    "degrade": ("sisr.cli.degrade", "make LR images from HR images (BI, BD, DN; MATLAB-exact)"),
    "resize": ("sisr.cli.resize", "resize images with MATLAB-exact bicubic"),
    "train": ("sisr.cli.train", "train a model from a YAML recipe"),
    "plot": ("sisr.cli.plot", "plot loss and validation curves of a training run"),
    "convert": ("sisr.cli.convert", "convert an official checkpoint to sisr safetensors"),
    "profile": ("sisr.cli.profile", "parameters, FLOPs, memory and runtime per model"),
    "report": ("sisr.cli.report", "HTML report with metrics and zoomed crops"),
    "export": ("sisr.cli.export", "export a model to ONNX"),
}


def _top_level_help() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"usage: sisr COMMAND [options]   (sisr COMMAND --help for details)", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_top_level_help())
        return 0 if argv else 2
    if argv[0] == "--version":
        print(f"sisr {__version__}")
        return 0
    name = argv[0]
    if name not in COMMANDS:
        print(f"sisr: error: unknown command '{name}'\n\n{_top_level_help()}", file=sys.stderr)
        return 2
    module_name, help_ = COMMANDS[name]
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=f"sisr {name}", description=help_)
    module.add_arguments(parser)
    args = parser.parse_args(argv[1:])
    try:
        return int(module.run(args) or 0)
    except SisrError as exc:
        print(f"sisr {name}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"sisr {name}: interrupted", file=sys.stderr)
        return 130
