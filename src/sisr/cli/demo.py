"""sisr demo: render a test chart, make its LR version, upscale it and score the result.

Everything is created by sisr itself (no downloaded image): the chart is
rendered, downscaled with MATLAB-exact bicubic (the BI degradation), and
upscaled with the default model (``defian-s`` when its weights are shipped,
otherwise bicubic interpolation, with a notice). Files go to ``sisr-demo/``: the chart, its LR
version, the output and a side-by-side picture (bicubic | model | original, whole and zoomed on the
text) to open; the gain over bicubic is printed in dB.
An existing file with the same pixels is kept; one with other pixels (another
model, older weights) is an error unless ``--overwrite``, checked before
anything is written.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--output", default="sisr-demo", metavar="DIR", help="output folder (default sisr-demo)")
    parser.add_argument("--scale", type=int, default=2, choices=(2, 3, 4, 8), help="upscaling factor (default 2)")
    parser.add_argument("--model", metavar="NAME", help="registry model or weights file (default: the default model)")
    parser.add_argument("--weights", metavar="FILE", help="weights for --model (sisr .safetensors or an official checkpoint)")
    parser.add_argument("--device", default="auto", help="auto (cuda > mps > cpu), cpu, cuda or mps")
    parser.add_argument("--overwrite", action="store_true", help="replace existing files")


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from ..data.chart import render_chart
    from ..data.io import write_image
    from ..data.resize import imresize
    from ..errors import ConfigError
    from ..inference.images import upscale_array
    from ..weights.loading import resolve
    from ..metrics import psnr, ssim
    from .arguments import check_output_dir

    out = Path(args.output)
    check_output_dir(out)
    s = args.scale
    hr = render_chart()  # 384 x 288: divisible by 2, 3, 4 and 8
    lr = imresize(hr, 1 / s)
    loaded = resolve(args.model, s, weights=args.weights, device=args.device, notify=lambda m: print(f"note: {m}"))
    name = loaded.name
    start = time.perf_counter()
    sr = upscale_array(lr, loaded)
    seconds = time.perf_counter() - start
    bicubic = np.asarray(imresize(lr, s))
    scores = {"bicubic": psnr(bicubic, hr, shave=s), name: psnr(sr, hr, shave=s)}

    files = {"HR chart": (out / "chart_hr.png", hr), f"LR input (x1/{s})": (out / f"chart_lr_x{s}.png", lr),
             f"{name} x{s} output": (out / f"chart_x{s}_{name}.png", sr),
             "side by side": (out / f"compare_x{s}_{name}.png", side_by_side(bicubic, sr, hr, name, s, scores))}
    same = {}
    for label, (path, img) in files.items():
        if path.exists() and not args.overwrite:
            same[label] = _same_pixels(path, img)
            if not same[label]:
                raise ConfigError(f"{path}: exists with other content (another model or older weights?); "
                                  f"use --overwrite to replace it, or another -o")
    for label, (path, img) in files.items():
        if same.get(label):
            print(f"{label:<22} {path} (exists, same pixels)")
            continue
        write_image(path, img, overwrite=args.overwrite)
        print(f"{label:<22} {path}")
    gain = scores[name] - scores["bicubic"]
    print(f"{name} x{s}: {lr.shape[1]}x{lr.shape[0]} -> {sr.shape[1]}x{sr.shape[0]} in {seconds:.2f} s; "
          f"vs HR (Y, shave {s}): PSNR {scores[name]:.2f} dB, SSIM {ssim(sr, hr, shave=s):.4f}"
          + (f"; {gain:+.2f} dB over bicubic ({scores['bicubic']:.2f} dB)" if name != "bicubic" else ""))
    print(f"open {files['side by side'][0]} to compare bicubic | {name} | the original")
    return 0


def side_by_side(bicubic, sr, hr, name: str, scale: int, scores: dict):
    """bicubic | model | original, whole and zoomed 2x on the chart's text (an RGB uint8 array)."""
    import numpy as np
    from PIL import Image

    from ..utils.plot import tile_grid

    h, w = hr.shape[:2]
    zoom = (slice(0, h // 2), slice(0, w // 2))  # the chart's text, as large as a whole panel at 2x

    def panel(img, crop=False):
        part = img[zoom] if crop else img
        pil = Image.fromarray(np.ascontiguousarray(part))
        return pil.resize((pil.width * 2, pil.height * 2), Image.Resampling.NEAREST) if crop else pil

    images = (("bicubic", bicubic), (name, sr), ("original", hr))
    rows = [[(label, panel(img)) for label, img in images],
            [(f"{label}, zoomed 2x", panel(img, crop=True)) for label, img in images]]
    note = ", ".join(f"{k} {v:.2f} dB" for k, v in scores.items())
    grid = tile_grid(rows, title=f"sisr demo x{scale}: bicubic | {name} | original", tile_size=max(w, h),
                     note=f"PSNR (Y, shave {scale}) against the original: {note}")
    return np.asarray(grid.convert("RGB"))


def _same_pixels(path: Path, img) -> bool:
    import numpy as np

    from ..data.io import read_image
    from ..errors import SisrError

    try:
        old = read_image(path)
    except SisrError:
        return False
    return old.shape == img.shape and old.dtype == img.dtype and bool(np.array_equal(old, img))
