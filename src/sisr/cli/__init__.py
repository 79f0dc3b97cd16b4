"""Command line: a thin layer over the Python API.

Each sub-command lives in its own module exposing ``add_arguments(parser)`` and
``run(args) -> int``; only the module of the command being run is imported.
Errors caused by the user's input (``SisrError``) and file-system failures
(``OSError``) are printed as one line.

Every command takes ``--threads N`` (torch CPU threads). Unless the user set
``OMP_WAIT_POLICY``, it is set to ``PASSIVE`` before torch is imported, with
``GOMP_SPINCOUNT=10000`` (unless set): libgomp's default spins about 3 ms for
work, which on a 2-core machine shared with other processes cost 2.7-8x; not
spinning at all cost 1.45x for a 96x96 image on 2 idle cores; a short spin costs
neither (docs/performance.md, "OpenMP waiting"). glibc keeps freed
memory for reuse (``sisr.utils.malloc``; ``SISR_MALLOC=default`` leaves it alone), except in
``sisr profile``, whose CPU peak memory is a growth of the resident set.

The ``sisr`` command itself (console script, ``python -m sisr``) is :func:`entry`: ``main`` with
Python's cycle collector off while the command's imports run, and what they made frozen after
(``gc.freeze``). Importing torch makes about 165,000 objects, which every full collection walks
again, while they are made and once more at exit: 0.3 s of a 1.2 s start (docs/performance.md).
"""

from __future__ import annotations

import argparse
import gc
import importlib
import os
import sys

from ..utils.malloc import keep_freed_memory

from .. import __version__, tune_process
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
    "prepare": ("sisr.cli.prepare", "decode and cache a training set once, with every core"),
    "plot": ("sisr.cli.plot", "plot loss and validation curves of a training run"),
    "convert": ("sisr.cli.convert", "convert an official checkpoint to sisr safetensors"),
    "profile": ("sisr.cli.profile", "parameters, FLOPs, memory and runtime per model"),
    "report": ("sisr.cli.report", "HTML report with metrics and zoomed crops"),
    "export": ("sisr.cli.export", "export a model to ONNX"),
    "experiment": ("sisr.cli.experiment", "the papers' ablation and results tables: list, run, table"),
    "inspect": ("sisr.cli.inspect", "the papers' attention, Hessian, correlation and kernel-diversity figures"),
    "serve": ("sisr.cli.serve", "a local web page and HTTP API for upscaling (needs sisr[serve])"),
}


def _top_level_help() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"usage: sisr COMMAND [options]   (sisr COMMAND --help for details)", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    return "\n".join(lines)


def entry() -> None:
    """The ``sisr`` command: :func:`main` with a quicker start and exit (module docstring)."""
    raise SystemExit(main(freeze_imports=True))


def main(argv: list[str] | None = None, freeze_imports: bool = False) -> int:
    """Run one command; ``freeze_imports``: collector off during imports, their objects frozen (one process)."""
    if freeze_imports:
        gc.disable()
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
    tune_process(allocator=False)  # OpenMP's wait policy, read when torch loads: before the command's imports
    module = importlib.import_module(module_name)
    if getattr(module, "KEEP_FREED_MEMORY", True):  # profile measures RSS growth: it keeps glibc's defaults
        keep_freed_memory()
    parser = argparse.ArgumentParser(prog=f"sisr {name}", description=help_)
    module.add_arguments(parser)
    own_threads = "--threads" in parser._option_string_actions  # profile: threads of its measurements
    if not own_threads:
        _add_threads(parser)
    _refuse_empty_paths(parser)
    parse = parser.parse_intermixed_args if getattr(module, "INTERMIXED_ARGS", False) else parser.parse_args
    args = parse(argv[1:])
    if freeze_imports:
        if getattr(module, "USES_TORCH", True):
            import torch  # noqa: F401 - the command's run() imports it: made here, it is frozen with the rest
        gc.freeze()  # never walked again: these objects live until exit anyway
        gc.enable()
    import warnings

    from .arguments import one_line_warnings

    shown, warnings.showwarning = warnings.showwarning, one_line_warnings(f"sisr {name}")  # no file:line for users
    try:
        if not own_threads and args.threads:
            import torch

            torch.set_num_threads(args.threads)
        return int(module.run(args) or 0)
    except SisrError as exc:
        print(f"sisr {name}: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # a file-system failure not caught closer to its cause
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"sisr {name}: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"sisr {name}: interrupted", file=sys.stderr)
        return 130
    finally:
        warnings.showwarning = shown


PATH_DESTS = {"inputs", "output", "out", "hr_dir", "out_dir", "folder", "run_dir", "data_root", "images", "image"}


def _refuse_empty_paths(parser: argparse.ArgumentParser) -> None:
    """A path given as '' (an unset shell variable) is an error, not the current folder."""
    for action in parser._actions + [a for sub in _sub_commands(parser) for a in sub._actions]:
        if action.dest in PATH_DESTS and action.type is None:
            action.type = _non_empty_path


def _non_empty_path(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty path (an unset shell variable?)")
    return text


def _add_threads(parser: argparse.ArgumentParser) -> None:
    """``--threads`` on the command and on each of its sub-commands (``sisr experiment run ... --threads 1``)."""
    help_ = "torch CPU threads (default: torch's choice, the number of cores)"
    parser.add_argument("--threads", type=threads, metavar="N", help=help_)
    for sub in _sub_commands(parser):  # SUPPRESS: absent there keeps the command's value
        sub.add_argument("--threads", type=threads, metavar="N", default=argparse.SUPPRESS, help=help_)


def _sub_commands(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """The parsers of a command's sub-commands (``sisr experiment list|run|table``); [] for most commands."""
    return [sub for a in parser._actions if isinstance(a, argparse._SubParsersAction) for sub in a.choices.values()]


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got '{text}'")
    return value


def max_threads() -> int:
    """The most torch CPU threads a command accepts: 4 per core (at least 8); thousands crash the process."""
    return max(8, 4 * (os.cpu_count() or 1))


def threads(text: str) -> int:
    """``--threads``: a positive integer up to :func:`max_threads`."""
    value = _positive_int(text)
    if value > max_threads():
        raise argparse.ArgumentTypeError(f"at most {max_threads()} (4 per core, at least 8), got {value}")
    return value
