"""The bicubic rows of the papers' tables, reproduced under each convention that changes them: ``sisr eval``
(the float ``bicubic`` model, gray images as RGB), ``gray`` (Set14 bridge scored as gray), ``uint8 + gray``
(MATLAB ``imresize`` of the uint8 LR, rounding after each pass: how the literature's rows were made) and the same
with B100's LR made with the symmetric border; beside the literature's values. Method: docs/evaluation.md.

    python benchmarks/bicubic_table.py               # table; JSON to benchmarks/results/bicubic_table.json
    python benchmarks/bicubic_table.py --data-root /work/shared/datasets --json /tmp/b.json --overwrite
"""

from __future__ import annotations

import sys
from pathlib import Path

import common  # benchmarks/common.py (makes sisr importable from a checkout)
import numpy as np
import torch
from common import md_table

from sisr.data.io import image_to_tensor, tensor_to_image
from sisr.data.resize import imresize
from sisr.evaluation.protocol import evaluate

LITERATURE = {
    "Set5": {2: (33.66, 0.9299), 3: (30.39, 0.8682), 4: (28.42, 0.8104)},
    "Set14": {2: (30.24, 0.8688), 3: (27.55, 0.7742), 4: (26.00, 0.7027)},
    "B100": {2: (29.56, 0.8431), 3: (27.21, 0.7385), 4: (25.96, 0.6675)},
}


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
            opts = dict(data_root=root, datasets=[d], scales=[s], lr_source=lr_source, check_border=False,
                        progress=False, gray_images="rgb" if name == "sisr eval" else "gray")
            model = "bicubic" if name in ("sisr eval", "gray") else MatlabUint8Bicubic(s)
            r = evaluate(model, **opts).get(d, s)
            cells[d][s] = (r.psnr_y, r.ssim_y)
            print(f"  {name:<30} {d:<6} x{s}: {r.psnr_y:.4f}/{r.ssim_y:.5f}", file=sys.stderr, flush=True)
    return cells


def main(argv=None) -> int:
    p = common.make_parser(__doc__, "bicubic_table.json")
    p.add_argument("--data-root", type=Path, default=common.DATASETS)
    p.add_argument("--datasets", nargs="+", default=list(LITERATURE))
    p.add_argument("--scales", nargs="+", type=int, default=[2, 3, 4])
    args = p.parse_args(argv)
    common.check_json(args.json, args.overwrite)
    torch.set_num_threads(2)
    names = ["sisr eval", "gray", "uint8 + gray", "uint8 + gray, B100 symmetric"]
    table = {n: column(n, args.data_root, args.datasets, args.scales) for n in names}
    rows = []
    for d in args.datasets:
        for s in args.scales:
            lit, ours = LITERATURE.get(d, {}).get(s), table["uint8 + gray"][d][s]
            rows.append([d, f"x{s}"] + [f"{table[n][d][s][0]:.2f}/{table[n][d][s][1]:.4f}" if s in table[n][d] else "-"
                                        for n in names] +
                        ([f"{lit[0]:.2f}/{lit[1]:.4f}", f"{ours[0] - lit[0]:+.3f}/{ours[1] - lit[1]:+.4f}"] if lit
                         else ["-", "-"]))
    print("\n".join(md_table(["set", "scale", *names, "literature", "uint8 + gray - lit."], rows)))
    as_dict = lambda cells: {d: {str(s): {"psnr_y": p, "ssim_y": q} for s, (p, q) in v.items()}  # noqa: E731
                             for d, v in cells.items()}
    common.write_json(args.json, {"data_root": str(args.data_root), "literature": as_dict(LITERATURE),
                                  "columns": {n: as_dict(c) for n, c in table.items()}}, args.overwrite)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
