"""``sisr experiment list|run|table``: the papers' tables, runnable (a thin layer over sisr.experiments)."""

from __future__ import annotations

import argparse
import json
import sys

from ..errors import ConfigError

def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="list|run|table")
    ls = sub.add_parser("list", help="every experiment and its variants")
    ls.add_argument("--json", action="store_true", help="a JSON list (variants with model, scale, hparams, paper)")
    run = sub.add_parser("run", help="train and score every variant into a resumable folder")
    run.add_argument("name")
    run.add_argument("-o", "--out", required=True, help="output folder (rerun with the same options to resume)")
    budget = run.add_mutually_exclusive_group()
    budget.add_argument("--budget", choices=["paper"], help="the paper's schedule (the default)")
    budget.add_argument("--iterations", type=_positive, help="the paper's schedule scaled to N updates")
    run.add_argument("--seeds", type=_positive, default=1, help="repeat each variant with seeds 1..K")
    run.add_argument("--tiny", action="store_true", help="each variant's tiny configuration (seconds; for tests)")
    run.add_argument("--device", default="auto")
    run.add_argument("--counts-only", action="store_true",
                     help="complexity tables: parameters and FLOPs only, no memory/time runs (a rerun without it "
                          "measures them)")
    run.add_argument("--data-root", help="folder with the training and test sets (default: found automatically)")
    run.add_argument("--train-sets", nargs="+", metavar="SET", help="training sets (default: the recipe's, DIV2K)")
    run.add_argument("--val-set", help="held-out validation: a folder or a slice such as BSD200:190-199")
    run.add_argument("--weights", nargs="+", default=[], metavar="[MODEL:]SCALE=FILE",
                     help="evaluation tables: weights per model and scale (shipped weights otherwise)")
    run.add_argument("--hparams", type=_mapping, default={}, metavar="YAML",
                     help="hyper-parameters merged over every variant, e.g. '{n_feats: 32, n_resblocks: 8}' "
                          "(a reduced size; recorded in the folder)")
    run.add_argument("--set", dest="overrides", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                     help="extra sisr train overrides for every variant (e.g. --set train.device=cuda val.every=500)")
    table = sub.add_parser("table", help="the paper's layout: ours beside the paper's, spread, ordering")
    table.add_argument("folder")
    table.add_argument("--format", default="md", choices=["md", "csv", "json", "tex"])


def run(args: argparse.Namespace) -> int:
    if args.action == "list":
        return _list(args.json)
    if args.action == "table":
        from ..experiments.table import write_table

        text, written = write_table(args.folder, args.format)
        sys.stdout.write(text)
        print(f"written: {', '.join(str(p) for p in written)}", file=sys.stderr)
        return 0
    from ..experiments import ExperimentOptions, run_experiment

    options = ExperimentOptions(iterations=args.iterations, seeds=args.seeds, tiny=args.tiny, device=args.device,
                                data_root=args.data_root, train_sets=tuple(args.train_sets or ()),
                                val_set=args.val_set, overrides=tuple(args.overrides),
                                weights=_weights(args.weights), hparams=args.hparams, counts_only=args.counts_only)
    from ..training.trainer import TrainingInterrupted

    try:
        out = run_experiment(args.name, args.out, options,
                             progress=lambda line: print(line, file=sys.stderr, flush=True))
    except TrainingInterrupted as exc:  # the variant's checkpoint is what the same command resumes from
        state = str(exc).split("; resume with")[0]
        print(f"sisr experiment: {exc.run_dir.name}: {state}; resume with the same command (sisr experiment run "
              f"{args.name} -o {args.out} and the same options)", file=sys.stderr)
        return exc.exit_code
    print(f"done: {out} (sisr experiment table {out})", file=sys.stderr)
    return 0


def _list(as_json: bool) -> int:
    from ..experiments import list_experiments

    experiments = list_experiments()
    if as_json:
        print(json.dumps([e.summary() for e in experiments], indent=2))
        return 0
    for e in experiments:
        count = f"{len(e.variants)} variants" if e.kind == "ablation" else f"{len(e.rows)} rows x{e.scales}"
        print(f"{e.name:<18} {e.paper:<7} {e.table:<12} {count:<14} {e.title}")
        for v in e.variants:
            print(f"    {v.label:<28} {v.model} x{e.scale} {json.dumps(dict(v.hparams))}")
    return 0


def _weights(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, path = item.partition("=")
        scale = key.rpartition(":")[2]
        if not sep or not path or not scale.isdigit():
            raise ConfigError(f"--weights: expected [MODEL:]SCALE=FILE, got '{item}'")
        out[key.lower()] = path
    return out


def _mapping(text: str) -> dict:
    import yaml

    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise argparse.ArgumentTypeError(f"not YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a mapping such as '{{n_feats: 32}}', got '{text}'")
    return value


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got '{text}'")
    return int(text)
