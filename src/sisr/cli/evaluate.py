"""sisr eval: PSNR/SSIM tables on benchmark sets in the papers' protocol.

Prints a table (rows = sets, columns = scales, cells ``PSNR/SSIM`` on Y) and writes
``results.json``, ``per_image.csv``, ``table.md`` and ``env.json`` into one folder (default
``results/eval-<model>-<timestamp>/``), each recording the protocol.

A paper's table in one call: weights for several scales (``--weights 2=a.safetensors 3=b 4=c``) and/or
``--self-ensemble both`` score every scale plain and "+" and write the papers' layout (rows: method and scale;
columns: datasets) as ``table.md``/``table.csv``/``table.tex`` beside ``results.json`` and ``env.json``, each
run's own files in ``x<s>[-plus]/``.

Under ``torchrun --nproc_per_node N sisr eval ...`` the N processes share the images (each scores every N-th,
on its own GPU for ``--device cuda``), gather the scores, and rank 0 alone writes and prints the results:
identical to one process's.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .arguments import command_line, tile


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, metavar="NAME|FILE",
                        help="registry name (shipped weights, or --weights) or a weights file")
    parser.add_argument("--weights", nargs="+", metavar="[S=]FILE",
                        help="weights for a registry model: one FILE, or S=FILE per scale (a paper table)")
    parser.add_argument("--data-root", required=True, metavar="DIR",
                        help="folder holding <Set>/HR and <Set>/LR_bicubic/X<s> (the EDSR benchmark layout)")
    parser.add_argument("--datasets", nargs="+", default=["Set5", "Set14", "B100"], metavar="SET",
                        help="set folder names (default: Set5 Set14 B100)")
    parser.add_argument("--scales", nargs="+", type=int, metavar="S",
                        help="scales (default: 2 3 4 for a model name, the file's scale for a weights file)")
    parser.add_argument("--self-ensemble", nargs="?", const="yes", default="no", choices=("no", "yes", "both"),
                        help="mean of the 8 flips/transposes (the '+' models); 'both': plain and '+' rows")
    parser.add_argument("--chop", action="store_true", help="EDSR-style 4-quadrant chop (the authors' test protocol)")
    parser.add_argument("--tile", type=tile, metavar="N|auto", help="run in overlapping tiles of N LR pixels")
    parser.add_argument("--tile-overlap", type=int, metavar="P", help="tile overlap in LR pixels")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"))
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N, mps or auto (default: cpu)")
    parser.add_argument("--lr-source", default="auto", choices=("auto", "files", "resize"),
                        help="LR from files, from MATLAB-exact bicubic of the HR, or files when present (default)")
    parser.add_argument("--degradation", default="BI", choices=("BI", "BD", "DN"),
                        help="LR folder: LR_bicubic (BI), LR_BD or LR_DN (default: BI)")
    parser.add_argument("--border", default="symmetric", choices=("symmetric", "replicate"),
                        help="border rule when LR is made by resizing (default: symmetric, modern MATLAB)")
    parser.add_argument("--no-border-check", action="store_true",
                        help="do not verify which MATLAB border rule the LR files follow (saves one resize per image)")
    parser.add_argument("--gray-images", default="rgb", choices=("rgb", "gray"),
                        help="score gray test images (Set14 bridge) as replicated RGB (default, the EDSR/RCAN code) "
                             "or as gray (the literature's bicubic rows)")
    parser.add_argument("--shave", type=int, metavar="PX", help="border pixels excluded from scores (default: the scale)")
    parser.add_argument("-o", "--output", metavar="OUT_DIR", help="result folder (default: results/eval-<model>-<time>)")
    parser.add_argument("--overwrite", action="store_true", help="replace result files in an existing OUT_DIR")


def run(args: argparse.Namespace) -> int:
    rank, world, created = _join_launch(args)
    try:
        per_scale = _weights_by_scale(args.weights)
        if per_scale is not None or args.self_ensemble == "both":
            return _paper_table(args, per_scale, rank, world)
        return _one_run(args, rank, world)
    finally:
        if created:
            import torch.distributed as dist

            dist.destroy_process_group()


def _join_launch(args: argparse.Namespace) -> tuple[int, int, bool]:
    """Under ``torchrun``: join the process group; a bare ``cuda`` device becomes this rank's GPU."""
    import torch

    from ..utils.distributed import init_from_env

    rank, world, local_rank, created = init_from_env(args.device)
    if world > 1 and args.device in ("cuda", "auto") and torch.cuda.is_available():
        args.device = f"cuda:{local_rank % torch.cuda.device_count()}"
    return rank, world, created


def _not_writing(rank: int, world: int, what: str) -> int:
    print(f"sisr eval: rank {rank} of {world}: scored its share of {what}; rank 0 writes the results")
    return 0


def _one_run(args: argparse.Namespace, rank: int, world: int) -> int:
    from ..evaluation.protocol import RESULT_FILES, evaluate, save_results
    from ..utils.fs import check_outputs
    from .arguments import check_output_dir, run_options

    args.weights = args.weights[0] if args.weights else None
    args.self_ensemble = args.self_ensemble == "yes"
    options = run_options(args)
    if args.output:
        check_output_dir(args.output)
        check_outputs(args.output, RESULT_FILES, args.overwrite)  # before the slow part
        _check_no_stale(args.output, RESULT_FILES, ())
    results = evaluate(
        args.model, data_root=args.data_root, datasets=args.datasets, scales=args.scales, weights=args.weights,
        options=options, lr_source=args.lr_source, degradation=args.degradation, border=args.border,
        check_border=not args.no_border_check, gray_images=args.gray_images, shave=args.shave, device=args.device,
        distributed=world > 1, progress=rank == 0,
    )
    if rank:
        return _not_writing(rank, world, "the images")
    results.protocol["command"] = command_line("eval", args)
    out_dir = save_results(results, args.output, overwrite=args.overwrite)
    print(results.table())
    for key, text in results.protocol["lr"].items():
        print(f"LR {key}: {text}")
    print(f"results written to {out_dir}/ (results.json, per_image.csv, table.md, env.json)")
    return 0


def _check_no_stale(out: str, files: tuple[str, ...], folders: list[str]) -> None:
    """``--overwrite`` replaces this run's files; results of another eval run it would not replace (the other
    layout's files, other scales' x<s>[-plus]/ folders) would be left beside them, so they are an error."""
    import re

    from ..errors import ConfigError
    from ..evaluation.protocol import RESULT_FILES
    from ..evaluation.tables import TABLE_FILES

    folder = Path(out)
    if not folder.is_dir():
        return
    stale = sorted({n for n in RESULT_FILES + TABLE_FILES if n not in files and (folder / n).exists()}
                   | {p.name + "/" for p in folder.iterdir() if p.is_dir() and re.fullmatch(r"x\d+(-plus)?", p.name)
                      and p.name not in folders})
    if stale:
        raise ConfigError(f"{folder}: holds results of another eval run that this one would not replace "
                          f"({', '.join(stale)}); choose another -o or remove them")


def _weights_by_scale(items: list[str] | None) -> dict[int, str] | None:
    """``S=FILE`` items as {scale: file}; None for a plain single FILE (today's meaning)."""
    from ..errors import ConfigError

    if not items or (len(items) == 1 and "=" not in items[0]):
        return None
    out: dict[int, str] = {}
    for item in items:
        scale, sep, path = item.partition("=")
        if not sep or not scale.isdigit() or not path or int(scale) in out:
            raise ConfigError(f"--weights: expected one FILE or S=FILE once per scale, got '{item}'")
        out[int(scale)] = path
    return out


def _paper_table(args: argparse.Namespace, per_scale: dict[int, str] | None, rank: int, world: int) -> int:
    """Several scales and/or plain and "+" in one call: the papers' layout (evaluation.tables)."""
    from ..errors import ConfigError
    from ..evaluation.tables import TABLE_FILES, evaluate_table, render, write_table
    from ..utils.fs import check_outputs
    from .arguments import check_output_dir, run_options

    if per_scale is None:
        if args.weights and args.scales and len(args.scales) > 1:
            raise ConfigError("one weights file holds one scale: give --weights S=FILE per scale")
        per_scale = {s: (args.weights[0] if args.weights else None) for s in (args.scales or [2, 3, 4])}
    elif args.scales:
        raise ConfigError("--scales and --weights S=FILE both choose the scales: give one of them")
    out = args.output or f"results/eval-{Path(str(args.model)).stem}-table"
    check_output_dir(out)
    check_outputs(out, TABLE_FILES, args.overwrite)
    plus = {"no": (False,), "yes": (True,), "both": (False, True)}[args.self_ensemble]
    _check_no_stale(out, TABLE_FILES, [f"x{s}{'-plus' if p else ''}" for s in per_scale for p in plus])
    args.self_ensemble = False
    rows = evaluate_table(args.model, per_scale, self_ensemble=plus, data_root=args.data_root,
                          datasets=args.datasets, options=run_options(args), lr_source=args.lr_source,
                          degradation=args.degradation, border=args.border, check_border=not args.no_border_check,
                          gray_images=args.gray_images, shave=args.shave, device=args.device,
                          distributed=world > 1, progress=rank == 0)
    if rank:
        return _not_writing(rank, world, "every run of the table")
    folder = write_table(rows, out, args.datasets, command=command_line("eval", args), overwrite=args.overwrite)
    print(render(rows, args.datasets, "md"), end="")
    print(f"results written to {folder}/ ({', '.join(TABLE_FILES)}; each run in x<s>[-plus]/)")
    return 0
