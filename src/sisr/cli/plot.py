"""sisr plot: PNG curves (training loss, validation PSNR) of one or more training runs.

    sisr plot runs/defian-s-x2                  # redraws runs/defian-s-x2/plots/*.png
    sisr plot runs/a runs/b --out compare/      # one curve per run
"""

from __future__ import annotations

import argparse

USES_TORCH = False  # sisr.cli.main imports torch before run() for every other command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR", help="training run directories")
    parser.add_argument("--out", help="output folder (default: RUN_DIR/plots for a single run)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing PNG files in --out")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..training.log import plot_runs
    from .arguments import check_output_dir
    from ..errors import ConfigError

    if args.out is None and len(args.runs) > 1:
        raise ConfigError("several runs: give --out FOLDER for the comparison plots")
    # a run's own plots/ folder is redrawn in place; elsewhere files are kept unless --overwrite
    out = Path(args.out) if args.out else Path(args.runs[0]) / "plots"
    check_output_dir(out)  # a file or an unwritable folder on the way: one line before any drawing
    overwrite = args.overwrite or args.out is None
    for path in plot_runs(args.runs, out, overwrite=overwrite):
        print(path)
    return 0
