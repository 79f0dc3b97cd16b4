"""The bicubic rows of the papers' tables, reproduced under each convention that changes them.

Columns (every cell is the mean Y PSNR/SSIM, shave = scale, SR quantised to uint8):

* ``sisr eval``: ``sisr eval --model bicubic`` defaults: the ``bicubic`` model (MATLAB
  ``imresize`` on float input, one final rounding), LR files (Set5/Set14 symmetric border,
  B100 replicate border: see docs/evaluation.md), gray images scored as replicated RGB;
* ``gray``: the same with ``gray_images="gray"`` (Set14 ``bridge`` scored as a gray image);
* ``uint8 + gray``: MATLAB ``imresize(LR_uint8, s, 'bicubic')``, i.e. rounding after each 1-D pass
  (``sisr.data.resize.imresize`` on uint8), with ``bridge`` scored as gray: the way the
  literature's rows were made;
* ``uint8 + gray, B100 symmetric``: as the previous column, with B100 LR made by the MATLAB-exact
  resize with the symmetric border (the EDSR benchmark package's LR) instead of the B100 files.

The literature values (EDSR/RCAN tables) are printed beside them with the differences of the
``uint8 + gray`` column.

    python benchmarks/bicubic_table.py               # table; JSON to benchmarks/results/bicubic_table.json
    python benchmarks/bicubic_table.py --data-root /work/shared/datasets --json /tmp/b.json --overwrite
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from sisr.data.io import image_to_tensor, tensor_to_image
from sisr.data.resize import imresize
from sisr.evaluation.protocol import evaluate
from sisr.utils.fs import atomic_write_text

LITERATURE = {
    "Set5": {2: (33.66, 0.9299), 3: (30.39, 0.8682), 4: (28.42, 0.8104)},
    "Set14": {2: (30.24, 0.8688), 3: (27.55, 0.7742), 4: (26.00, 0.7027)},
    "B100": {2: (29.56, 0.8431), 3: (27.21, 0.7385), 4: (25.96, 0.6675)},
}
DEFAULT_ROOT = Path(__file__).resolve().parents[2] / "shared" / "datasets"


class MatlabUint8Bicubic(torch.nn.Module):
    """MATLAB ``imresize(LR, s, 'bicubic')`` on the uint8 LR: rounded and clamped after each pass."""

    def __init__(self, scale: int):
        super().__init__()
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lr = tensor_to_image(x[0], np.uint8)  # exact: x is image_to_tensor of a uint8 image
        return image_to_tensor(imresize(lr, self.scale))[None]


def column(name: str, root: Path, datasets: list[str], scales: list[int]) -> dict[str, dict[int, tuple[float, float]]]:
    cells: dict[str, dict[int, tuple[float, float]]] = {d: {} for d in datasets}
    for d in datasets:
        lr_source = "resize" if name.endswith("symmetric") and d == "B100" else "auto"
        if name.endswith("symmetric") and d != "B100":
            continue
        for s in scales:
            common = dict(data_root=root, datasets=[d], scales=[s], lr_source=lr_source, check_border=False,
                          progress=False, gray_images="rgb" if name == "sisr eval" else "gray")
            model = "bicubic" if name in ("sisr eval", "gray") else MatlabUint8Bicubic(s)
            r = evaluate(model, **common).get(d, s)
            cells[d][s] = (r.psnr_y, r.ssim_y)
            print(f"  {name:<30} {d:<6} x{s}: {r.psnr_y:.4f}/{r.ssim_y:.5f}", file=sys.stderr, flush=True)
    return cells


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", type=Path, default=DEFAULT_ROOT)
    parser.add_argument("--datasets", nargs="+", default=list(LITERATURE))
    parser.add_argument("--scales", nargs="+", type=int, default=[2, 3, 4])
    parser.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "bicubic_table.json")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing JSON file")
    args = parser.parse_args()
    if args.json.exists() and not args.overwrite:
        parser.error(f"{args.json} exists (use --overwrite)")
    torch.set_num_threads(2)

    names = ["sisr eval", "gray", "uint8 + gray", "uint8 + gray, B100 symmetric"]
    table = {n: column(n, args.data_root, args.datasets, args.scales) for n in names}

    header = ["set", "scale", *names, "literature", "uint8 + gray - lit."]
    rows = [header]
    for d in args.datasets:
        for s in args.scales:
            cells = [f"{table[n][d][s][0]:.2f}/{table[n][d][s][1]:.4f}" if s in table[n][d] else "-" for n in names]
            lit = LITERATURE.get(d, {}).get(s)
            ours = table["uint8 + gray"][d][s]
            delta = f"{ours[0] - lit[0]:+.3f}/{ours[1] - lit[1]:+.4f}" if lit else "-"
            rows.append([d, f"x{s}", *cells, f"{lit[0]:.2f}/{lit[1]:.4f}" if lit else "-", delta])
    print("| " + " | ".join(header) + " |")
    print("|---" * len(header) + "|")
    for r in rows[1:]:
        print("| " + " | ".join(r) + " |")

    out = {
        "command": "python " + " ".join(sys.argv),
        "data_root": str(args.data_root),
        "torch": torch.__version__,
        "columns": {n: {d: {str(s): {"psnr_y": p, "ssim_y": q} for s, (p, q) in v.items()} for d, v in c.items()}
                    for n, c in table.items()},
        "literature": {d: {str(s): {"psnr_y": p, "ssim_y": q} for s, (p, q) in v.items()} for d, v in LITERATURE.items()},
    }
    atomic_write_text(args.json, json.dumps(out, indent=2) + "\n", overwrite=args.overwrite)
    print(f"JSON written to {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
