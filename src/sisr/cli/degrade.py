"""sisr degrade: LR images from a folder of HR images (BI, BD, DN; MATLAB-exact bicubic)."""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("hr_dir", metavar="HR_DIR", help="folder of HR images (searched recursively)")
    parser.add_argument("out_dir", metavar="OUT_DIR",
                        help="output root: OUT_DIR/HR and OUT_DIR/LR_bicubic|LR_BD|LR_DN/X<s> (EDSR layout)")
    parser.add_argument("--mode", default="BI", type=str.upper, choices=("BI", "BD", "DN"),
                        help="BI: bicubic; BD: Gaussian blur (sigma 1.6) + subsampling; DN: bicubic + noise "
                             "(as the RCAN authors' Prepare_TestData_HR_LR.m; default BI)")
    parser.add_argument("--scale", type=int, required=True, help="downscaling factor (integer >= 2)")
    parser.add_argument("--seed", type=int, default=None,
                        help="DN noise seed, the same for every image as in the RCAN script (default: random)")
    parser.add_argument("--border", choices=("symmetric", "replicate"),
                        help="BI/DN bicubic border rule: symmetric = modern MATLAB, replicate = older MATLAB "
                             "(default symmetric)")
    parser.add_argument("--noise-level", type=float, help="DN noise sigma on 0..255 (default 30)")
    parser.add_argument("--blur-sigma", type=float, help="BD Gaussian sigma (default 1.6)")
    parser.add_argument("--workers", type=int, default=None,
                        help="processes degrading images side by side (default: every core this process may use); "
                             "the outputs do not depend on it")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace existing outputs not made from the same HR image with the same options")


def run(args: argparse.Namespace) -> int:
    from ..data.prepare import prepare_dataset
    from .arguments import check_output_dir

    _check_mode_options(args)
    check_output_dir(args.out_dir)
    given = {dest: getattr(args, dest) for dest, *_ in USED_BY.values() if getattr(args, dest) is not None}
    result = prepare_dataset(args.hr_dir, args.out_dir, args.scale, args.mode, overwrite=args.overwrite,
                             workers=args.workers, **given)
    for _, reason in result.failed:
        print(f"sisr degrade: skipped {reason}", file=sys.stderr)
    print(result.summary())
    if result.replaced:
        print(f"replaced {len(result.replaced)} existing file(s) (--overwrite)")
    return 1 if result.failed else 0


USED_BY = {"--seed": ("seed", "DN"), "--noise-level": ("noise_level", "DN"), "--blur-sigma": ("blur_sigma", "BD"),
           "--border": ("border", "BI", "DN")}


def _check_mode_options(args: argparse.Namespace) -> None:
    """An option the mode does not use is an error, not silently ignored."""
    from ..errors import ConfigError

    for flag, (dest, *modes) in USED_BY.items():
        if getattr(args, dest) is not None and args.mode not in modes:
            raise ConfigError(f"{flag} does not apply to --mode {args.mode} (only {' and '.join(modes)})")
