"""sisr prepare: decode and cache a training set once, with every core, before training.

    sisr prepare --config rcan data.hr=[/data/DIV2K] --scales 2 3 4
    sisr prepare --config cran data.hr=[/data/DIV2K,/data/Flickr2K] --scales 2 3 4 --workers 16

The images ``sisr train`` with the same config (and overrides) would train on, at each of ``--scales``
(default: the config's ``model.scale``), are decoded and cached by a pool of processes
(:func:`sisr.data.training.cache_images`): the HR once per image whatever the scale, the LR once per scale.
Idempotent (cached images are only checked) and resumable (each cache entry is written atomically: an
interrupted run keeps what it finished). ``sisr train --prepare-only`` does the same for one scale.
A prepared set makes ``torchrun ... sisr train`` start in seconds.
"""

from __future__ import annotations

import argparse

INTERMIXED_ARGS = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, as for sisr train")
    parser.add_argument("--config", "-c", required=True, help="YAML config file or recipe name")
    parser.add_argument("--scales", type=int, nargs="+", metavar="S",
                        help="scales to prepare (default: the config's model.scale)")
    parser.add_argument("--workers", type=int, default=None,
                        help="preparation processes (default: every core this process may use)")


def run(args: argparse.Namespace) -> int:
    from ..errors import ConfigError
    from ..training.config import load_config

    if args.workers is not None and args.workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {args.workers}")
    configs = [load_config(args.config, args.overrides)]
    if args.scales:
        _check_scales(configs[0].model.name, args.scales)
        configs = [load_config(args.config, [*args.overrides, f"model.scale={s}"]) for s in dict.fromkeys(args.scales)]
    from .train import prepare_scale

    for cfg in configs:
        print(prepare_scale(cfg, args.workers, "sisr prepare"))
    return 0


def _check_scales(model: str, scales: list[int]) -> None:
    """A scale the model lacks names --scales (not the model.scale override made from it, nor the config file)."""
    from ..errors import ConfigError, ModelError
    from ..models import get_info

    for scale in scales:
        try:
            get_info(model).check_scale(scale)
        except ModelError as exc:
            raise ConfigError(f"--scales {scale}: {exc}") from None
