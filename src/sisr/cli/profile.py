"""sisr profile: parameters, FLOPs/MACs, peak memory and runtime per model (CRAN Table 7 layout).

Prints a Markdown table (one column per model) and writes ``profile.json`` and ``profile.md``
into one folder (default ``results/profile-x<s>-<time>``). See ``sisr.evaluation.profile`` for what
each figure is and how it is measured.
"""

from __future__ import annotations

import argparse

from .arguments import command_line

KEEP_FREED_MEMORY = False  # peak memory on the CPU is a growth of the resident set (sisr.utils.malloc)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", required=True, metavar="A,B,...",
                        help="comma-separated registry names (sisr models lists them)")
    parser.add_argument("--scale", type=int, default=2, metavar="S", help="upscaling factor (default: 2)")
    parser.add_argument("--input", default="160x160", metavar="HxW",
                        help="LR input size, height x width (default: 160x160, as CRAN's Table 7)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default: auto)")
    parser.add_argument("--runs", type=int, default=5, metavar="N",
                        help="timed forwards per model; the median is reported (default: 5; 0 skips timing)")
    parser.add_argument("--warmup", type=int, default=1, metavar="N",
                        help="untimed forwards before timing, >= 1; memory is measured on the first (default: 1)")
    from . import threads

    parser.add_argument("--threads", type=threads, metavar="N", help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--tiny", action="store_true",
                        help="use each model's few-channel test configuration (to check the tool, not to report)")
    parser.add_argument("--in-process", action="store_true",
                        help="measure all models in this process instead of a fresh process per model")
    parser.add_argument("-o", "--output", metavar="OUT_DIR", help="result folder (default: results/profile-x<S>-<time>)")
    parser.add_argument("--overwrite", action="store_true", help="replace profile.json/profile.md in OUT_DIR")


def run(args: argparse.Namespace) -> int:
    from ..evaluation.profile import check_output, parse_hw, profile, save_profile

    if args.output:
        check_output(args.output, overwrite=args.overwrite)  # before spending minutes on the models
    result = profile(
        args.models, args.scale, parse_hw(args.input), args.device, runs=args.runs, warmup=args.warmup,
        tiny=args.tiny, isolate=not args.in_process, threads=args.threads,
    )
    result.settings["command"] = command_line("profile", args)
    out_dir = save_profile(result, args.output, overwrite=args.overwrite)
    print(result.markdown(), end="")
    print(f"\nwritten to {out_dir}/ (profile.json, profile.md)")
    return 0
