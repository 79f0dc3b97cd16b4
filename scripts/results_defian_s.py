"""The shipped DeFiAN-S weights in numbers: the table and the validation chart of docs/results.md.

    python scripts/results_defian_s.py --out docs/img     # prints the Markdown table, writes the chart
    sisr report --models defian-s --datasets Set5 --scale 4 -o /tmp/report-x4
    python scripts/results_defian_s.py --out docs/img --crops /tmp/report-x4   # + a crop montage of that report

Everything comes from the shipped files' metadata (scores measured by scripts/ship_defian_s.py when
they were packaged, and each run's own Set5 validation curve), the handed-over x2 run in
../shared/pretraining/defian-s-x2 (its val.csv files), and bicubic scored here with the same
protocol. The paper's DeFiAN_S rows are Table II of ../shared/papers/defian.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from sisr.evaluation.protocol import evaluate  # noqa: E402
from sisr.utils.plot import line_chart, save_png  # noqa: E402
from sisr.weights import read_metadata  # noqa: E402
from sisr.weights.pretrained import pretrained_path  # noqa: E402

SETS = ("Set5", "Set14", "B100")
# Table II of the DeFiAN paper (DIV2K, 6e5 updates): (PSNR, SSIM) per scale and set
PAPER = {2: ((38.03, 0.9605), (33.63, 0.9181), (32.20, 0.8999)),
         3: ((34.42, 0.9273), (30.34, 0.8410), (29.12, 0.8053)),
         4: ((32.16, 0.8942), (28.63, 0.7810), (27.58, 0.7363))}


def _val_csv(path: Path, offset: int) -> list[tuple[int, float]]:
    with open(path, newline="") as f:
        return [(int(r["iteration"]) + offset, float(r["psnr"])) for r in csv.DictReader(f)]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "datasets"))
    p.add_argument("--pretraining", default=str(ROOT.parent / "shared" / "pretraining" / "defian-s-x2"))
    p.add_argument("--out", required=True, help="folder for defian-s-val.png")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--crops", metavar="REPORT_DIR", help="a 'sisr report' folder: montage of its Set5 crops")
    args = p.parse_args()
    if args.crops:
        path = crop_montage(Path(args.crops), Path(args.out), args.overwrite)
        print(f"montage: {path}", file=sys.stderr)
        return 0

    lines = ["| scale | model | " + " | ".join(SETS) + " | " + " | ".join(f"{s}+" for s in SETS) + " |",
             "|---|---|" + "---|" * (2 * len(SETS))]
    curves: dict[str, list[tuple[int, float]]] = {}
    pre = Path(args.pretraining)
    phase1 = _val_csv(pre / "phase1" / "val.csv", 0)
    handed_over = phase1 + _val_csv(pre / "val.csv", 807)  # phase 2 counts from phase 1's 807 iterations
    base = 2417  # where the handed-over run stopped
    curves["x2 (handed-over run)"] = handed_over
    for scale in (2, 3, 4):
        meta = read_metadata(pretrained_path("defian-s", scale))
        metrics, training = meta["metrics"], meta["training"]
        bicubic = evaluate("bicubic", data_root=args.data, datasets=SETS, scales=[scale], progress=False)
        bic = {s.dataset: (s.psnr_y, s.ssim_y) for s in bicubic.sets}
        lines.append(f"| x{scale} | bicubic | " + " | ".join(f"{bic[s][0]:.2f} / {bic[s][1]:.4f}" for s in SETS)
                     + " |" + " - |" * len(SETS))
        lines.append(f"| x{scale} | **defian-s (shipped)** | "
                     + " | ".join(f"{metrics[s]['psnr_y']:.2f} / {metrics[s]['ssim_y']:.4f}" for s in SETS + tuple(
                         f"{x}+" for x in SETS)) + " |")
        lines.append(f"| x{scale} | DeFiAN_S (paper, DIV2K, 6e5 updates) | "
                     + " | ".join(f"{a:.2f} / {b:.4f}" for a, b in PAPER[scale]) + " |" + " - |" * len(SETS))
        # round 1 starts from the handed-over x2 weights; round 2 from round 1's shipped file, which had
        # 1,400 fine-tuning iterations (x3, x4) after those (docs/results.md, history)
        round2 = "pretrained" in str(training.get("init") or "")
        start = base + (1400 if round2 else 0)
        label = (f"x{scale} (continued)" if scale == 2 else f"x{scale} (fine-tuned from x2)") + (
            ", round 2" if round2 else "")
        curves[label] = [(start + v["iteration"], v["psnr"]) for v in training["val"]]
        print(f"x{scale}: {training['run']}, {training['iterations']} iterations in {training['seconds']:.0f} s on "
              f"{training['device']}, lr {training['lr']}, milestones {training['milestones']}, init "
              f"{training['init']}", file=sys.stderr)
    print("\n".join(lines))
    chart = line_chart(curves, title="DeFiAN-S on the CPU: each run's own Set5 validation",
                       xlabel="iteration (counted from the start of the x2 run)", ylabel="Set5 Y PSNR (dB)")
    path = save_png(chart, Path(args.out) / "defian-s-val.png", overwrite=args.overwrite)
    print(f"chart: {path}", file=sys.stderr)
    print(json.dumps({"curves": curves}), file=sys.stderr)
    return 0


def crop_montage(report: Path, out: Path, overwrite: bool) -> Path:
    """HR | bicubic | defian-s crops (the report's largest-bicubic-error crop) for three Set5 images."""
    from PIL import Image, ImageDraw

    from sisr.utils.plot import font

    names, columns, side, top = ("butterfly", "baby", "woman"), ("HR", "bicubic", "defian-s"), 192, 24
    sheet = Image.new("RGB", (side * len(columns), top + side * len(names)), "white")
    draw = ImageDraw.Draw(sheet)
    for j, col in enumerate(columns):
        draw.text((j * side + 6, 4), col, fill="black", font=font(15))
    for i, name in enumerate(names):
        for j, col in enumerate(columns):
            crop = Image.open(report / "crops" / "Set5" / name / f"c1_{j}_{col}.png").convert("RGB")
            sheet.paste(crop.resize((side, side), Image.NEAREST), (j * side, top + i * side))
    return save_png(sheet, out / "defian-s-x4-crops.png", overwrite=overwrite)


if __name__ == "__main__":
    raise SystemExit(main())
