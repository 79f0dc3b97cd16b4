"""sisr train: train a model from a YAML config or a shipped recipe.

    sisr train --config defian-s model.scale=4 data.hr=[/data/DIV2K]
    sisr train --config my.yaml --run-dir runs/exp1 optim.lr=2e-4
    sisr train --resume --run-dir runs/exp1            # continue with the run's own config
    sisr train --config rcan data.hr=[/data/DIV2K] --prepare-only   # decode and cache the data, all cores
    torchrun --nproc_per_node 4 -m sisr train --config rcan   # DDP; batch_size is global

Overrides may come before, between or after the options. Stopped by SIGINT/SIGTERM, the run saves
a checkpoint and exits with 130/143 ("interrupted at iteration N; resume with: ..."); stopped by
train.time_limit_s, it saves a checkpoint and exits with 0. Warnings are printed as one line each
("sisr train: warning: ...").
"""

from __future__ import annotations

import argparse
import os

from .arguments import one_line_warnings


# overrides after an option (`--run-dir r data.hr=[...]`) belong to the positionals too: main() parses
# this command's arguments with parse_intermixed_args
INTERMIXED_ARGS = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..training.config import list_recipes

    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = (f"recipes: {', '.join(list_recipes())}\n"
                     "overrides: dotted keys with YAML values, e.g. train.iterations=1000 val.every=0 "
                     "model.hparams={n_feats: 32}\n"
                     "validation: a held-out set, never a test set: the recipes' val.set=DIV2K:801-810, or e.g. "
                     "val.set=BSD200:190-199 (a slice of a training source is held out of training)\n"
                     "An existing run directory with the same config is resumed from its last checkpoint.\n"
                     "Stopped by Ctrl-C or SIGTERM: a checkpoint, then exit status 130 / 143.")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")
    parser.add_argument("--config", "-c", help="YAML config file or recipe name")
    parser.add_argument("--run-dir", help="run directory (default: runs/<model>-x<scale>)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --run-dir (its saved config when --config is not given)")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    parser.add_argument("--prepare-only", action="store_true",
                        help="decode and cache the training data with every core (as sisr prepare) and exit; "
                             "a prepared set makes torchrun start in seconds")


def run(args: argparse.Namespace) -> int:
    from ..training.config import load_config
    from ..errors import ConfigError

    if args.config is None and not (args.resume and args.run_dir):
        raise ConfigError("give --config CONFIG (a YAML file or a recipe name), or --resume --run-dir DIR")
    if args.print_config or args.prepare_only:
        from pathlib import Path

        source = args.config if args.config is not None else Path(args.run_dir) / "config.yaml"
        cfg = load_config(source, args.overrides)
        if args.prepare_only:
            print(prepare_scale(cfg, None))
        else:
            print(cfg.to_yaml(), end="")
        return 0
    import sys
    import warnings

    from ..training.trainer import TrainingInterrupted, train

    shown, warnings.showwarning = warnings.showwarning, one_line_warnings()
    try:
        run_dir = train(args.config, args.overrides, run_dir=args.run_dir, resume=args.resume)
    except TrainingInterrupted as exc:
        if os.environ.get("RANK", "0") == "0":
            print(f"sisr train: {exc}", file=sys.stderr)
        return exc.exit_code
    finally:
        warnings.showwarning = shown
    if os.environ.get("RANK", "0") == "0":  # under torchrun, one line from rank 0
        print(run_dir)
    return 0


def prepare_scale(cfg, workers: int | None, prog: str = "sisr train") -> str:
    """Prepare ``cfg``'s training data at its scale; the summary line (one-line warnings for skipped images)."""
    import warnings

    from ..data.training import default_cache_dir
    from ..training.parts import prepare_training_data

    shown, warnings.showwarning = warnings.showwarning, one_line_warnings(prog)
    try:
        result, pairs = prepare_training_data(cfg, workers=workers)
    finally:
        warnings.showwarning = shown
    cache = cfg.data.cache_dir or default_cache_dir()
    by = f" by {result.workers} processes" if result.workers > 1 else ""
    return (f"x{cfg.model.scale}: {len(pairs)} training images ready ({result.made} decoded now{by}, {result.cached} "
            f"cached already, {len(result.skipped)} skipped) in {result.seconds:.1f} s; "
            f"{result.bytes() / 2**30:.2f} GiB in {cache}")


