"""sisr inspect: the papers' interpretability figures (attention, Hessian and correlation maps) of a network.

    sisr inspect --model defian-s --scale 2 --image x.png --what all -o figs/
    sisr inspect --model csnln --weights model_x2.pt --image x.png --what correlation --query 40,60 -o figs/

Writes ``figs/<image stem>-<what>.png``; the maps come from forward hooks (sisr.evaluation.inspect).
Every option is checked, and no figure may already exist (unless --overwrite), before the network runs.
"""

from __future__ import annotations

import argparse

WHAT_HELP = ("comma-separated: hessian, attention, endec (DeFiAN: Fig. 1, 10, 13), correlation (CSNLN: Fig. 6), "
             "or all (default: all the network has)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--image", required=True, metavar="FILE", help="input image (the network's LR input)")
    parser.add_argument("-o", "--output", required=True, metavar="DIR", help="folder for the PNG figures")
    parser.add_argument("--model", metavar="NAME", help="registry model (default: defian-s, or the --weights file's)")
    parser.add_argument("--scale", type=int, metavar="S", help="upscaling factor (default: the weights' scale, else 2)")
    parser.add_argument("--weights", metavar="FILE",
                        help="sisr .safetensors or an official .pt/.pth checkpoint (default: the shipped weights)")
    parser.add_argument("--what", default="all", metavar="LIST", help=WHAT_HELP)
    parser.add_argument("--query", metavar="X,Y",
                        help="correlation: pixel column X and row Y of the input, from 0 (default: the centre)")
    parser.add_argument("--module", type=int, metavar="N",
                        help="endec: the DeFiAM (1..N) whose DiEnDec features are shown (default 3, the paper's)")
    parser.add_argument("--device", default="auto", help="auto (cuda > mps > cpu), cpu, cuda, cuda:N or mps")
    parser.add_argument("--overwrite", action="store_true", help="replace existing figures")


def _check_options(args: argparse.Namespace) -> tuple[tuple[str, ...], tuple[int, int] | None]:
    """The requested maps and query, checked before any file is read."""
    from ..errors import ConfigError
    from ..evaluation.inspect import parse_query, parse_what

    what = parse_what(args.what)
    query = parse_query(args.query) if args.query is not None else None
    if query is not None and not {"correlation", "all"} & set(what):
        raise ConfigError("--query applies to --what correlation")
    if args.module is not None:
        if args.module < 1:
            raise ConfigError(f"--module {args.module}: DeFiAMs are numbered from 1")
        if not {"endec", "all"} & set(what):
            raise ConfigError("--module applies to --what endec")
    return what, query


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..data.io import read_image
    from ..evaluation.inspect import check_module, check_query, figure_names, parse_what, render, write_figures
    from ..utils.fs import check_outputs, slug
    from ..weights.loading import load_model
    from .arguments import check_output_dir

    what, query = _check_options(args)
    out = check_output_dir(args.output)
    image_path = Path(args.image)
    image = read_image(image_path)
    if query is not None:
        check_query(query, image.shape[:2], str(image_path))
    if args.model is None and args.weights is not None:
        net = load_model(args.weights, args.scale, device=args.device)
    else:
        net = load_model(args.model or "defian-s", args.scale, weights=args.weights, device=args.device)
    what = parse_what(list(what), net)
    if args.module is not None and "endec" in what:
        check_module(net, args.module)
    if query is not None and "correlation" not in what:
        from ..errors import ConfigError

        raise ConfigError("--query applies to --what correlation, which this network does not have")
    stem = slug(image_path.stem, "image")
    check_outputs(out, figure_names(stem, what), overwrite=args.overwrite)
    from ..weights.handle import identify

    spec = identify(net).spec
    label = f"{spec.name} x{spec.scale}, {image_path.name}" if spec else image_path.name
    figures = render(net, image, what, query=query, module=args.module, label=label)
    for path in write_figures(figures, out, stem, overwrite=args.overwrite):
        print(path)
    return 0
