"""sisr inspect: the papers' interpretability figures (attention, Hessian, correlation maps; CRAN's kernel diversity).

    sisr inspect --model defian-s --scale 2 --image x.png --what all -o figs/
    sisr inspect --model csnln --weights model_x2.pt --image x.png --what correlation --query 40,60 -o figs/
    sisr inspect --weights cran_x2.safetensors --images photos/ --what diversity -o figs/   # CRAN Fig. 8

Writes ``figs/<image stem>-<what>.png`` (``<folder name>-diversity.png`` for a set of images); the maps come
from forward hooks (sisr.evaluation.inspect). Every option is checked, and no figure may already exist (unless
--overwrite), before the network runs.
"""

from __future__ import annotations

import argparse

WHAT_HELP = ("comma-separated: hessian, attention, endec (DeFiAN: Fig. 1, 10, 13), correlation (CSNLN: Fig. 6), "
             "diversity (CRAN: Fig. 8, needs --images), or all (default: all the network has)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--image", metavar="FILE", help="input image (the network's LR input) of the maps")
    parser.add_argument("--images", metavar="FOLDER", help="diversity: a folder of input images (the first --limit)")
    parser.add_argument("--limit", type=int, default=100, metavar="N",
                        help="diversity: at most N images, in sorted order (default 100, the paper's)")
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
    if (args.image is None) == (args.images is None):
        raise ConfigError("give --image FILE (the maps of one image) or --images FOLDER (CRAN's diversity, Fig. 8)")
    if args.limit < 1:
        raise ConfigError(f"--limit {args.limit}: must be >= 1")
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
    from .arguments import check_output_dir

    what, query = _check_options(args)
    out = check_output_dir(args.output)
    if args.images is not None:
        return _diversity(args, what, out)
    image_path = Path(args.image)
    image = read_image(image_path)
    if query is not None:
        check_query(query, image.shape[:2], str(image_path))
    net = _load(args)
    what = parse_what(list(what), net)
    if "diversity" in what:
        from ..errors import ConfigError

        raise ConfigError("--what diversity: CRAN's Fig. 8 is over a set of images; give --images FOLDER")
    if args.module is not None and "endec" in what:
        check_module(net, args.module)
    if query is not None and "correlation" not in what:
        from ..errors import ConfigError

        raise ConfigError("--query applies to --what correlation, which this network does not have")
    stem = slug(image_path.stem, "image")
    check_outputs(out, figure_names(stem, what), overwrite=args.overwrite)
    figures = render(net, image, what, query=query, module=args.module, label=_label(net, image_path.name))
    for path in write_figures(figures, out, stem, overwrite=args.overwrite):
        print(path)
    return 0


def _load(args: argparse.Namespace):
    from ..weights.loading import load_model

    if args.model is None and args.weights is not None:
        return load_model(args.weights, args.scale, device=args.device)
    return load_model(args.model or "defian-s", args.scale, weights=args.weights, device=args.device)


def _label(net, name: str) -> str:
    from ..weights.handle import identify

    spec = identify(net).spec
    return f"{spec.name} x{spec.scale}, {name}" if spec else name


def _diversity(args: argparse.Namespace, what: tuple[str, ...], out) -> int:
    """CRAN Fig. 8 over the first --limit images of --images: the figure and the spread of the distances."""
    from pathlib import Path

    from ..data.io import find_images, read_image
    from ..errors import ConfigError
    from ..evaluation.inspect import image_batch, mask_distances, parse_what, render_diversity, write_figures
    from ..utils.fs import check_outputs, slug

    folder = Path(args.images)
    files = find_images(folder)[: args.limit]
    if not files:
        raise ConfigError(f"--images {folder}: no image files in this folder")
    net = _load(args)
    if parse_what(list(what), net) != ("diversity",):
        raise ConfigError("--images: only --what diversity (CRAN's Fig. 8) is drawn over a set of images")
    stem = slug(folder.resolve().name, "images")
    check_outputs(out, [f"{stem}-diversity.png"], overwrite=args.overwrite)
    names, distances = mask_distances(net, (image_batch(read_image(f)) for f in files))
    title = _label(net, f"{len(files)} images of {folder.name}") + ": ||F_A - 1|| per image (Fig. 8)"
    for path in write_figures({"diversity": render_diversity(distances, title)}, out, stem, overwrite=args.overwrite):
        print(path)
    per_image = distances.mean(1)
    print(f"{len(names)} CRACs, {len(files)} images: mean distance per image {per_image.mean():.4g} "
          f"(sd {per_image.std():.3g}, min {per_image.min():.4g}, max {per_image.max():.4g}; "
          f"sd / mean {per_image.std() / per_image.mean():.3g})")
    return 0
