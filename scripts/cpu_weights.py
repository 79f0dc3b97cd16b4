"""Keep the CPU training the shipped DeFiAN-S weights: one command to start, one to harvest.

    python scripts/cpu_weights.py start [--scale 4]    # background, nice 19, one thread, resumable
    python scripts/cpu_weights.py status
    python scripts/cpu_weights.py harvest [--dry-run]  # stop, decide on held-out data, package, score tests
    python scripts/cpu_weights.py report --out docs/img [--crops REPORT_DIR]   # docs/results.md's table and chart

A run continues the shipped ``src/sisr/pretrained/defian-s_x<scale>.safetensors`` with sisr's own
``sisr train`` (recipe ``defian-s``, L1, batch 16) on T91 + BSD200 + General100 minus a held-out slice:
the last 10 of BSD200's 199 images in sorted order (``val.set=BSD200:190-199``), which validate the run
(``best.safetensors``)
and decide whether it replaces the shipped file (held-out PSNR gain >= ``--min-gain`` dB over the run's
iteration-0 validation, i.e. the shipped file). Set5/Set14/B100 are scored once, after that decision, for
the record (they choose nothing). Without ``--scale``, ``start`` takes the scale furthest below its target.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "datasets"
PRETRAINED = ROOT / "src" / "sisr" / "pretrained"
VAL_SET = "BSD200:190-199"  # the last 10 of BSD200's 199 images, held out of training by the trainer
TARGETS = {2: 37.4, 3: 33.5, 4: 31.2}  # Set5 targets of the weights issue (the paper: 38.03 / 34.42 / 32.16)
TEST_SETS = ("Set5", "Set14", "B100")


def run_dir(scale: int, name: str | None) -> Path:
    return ROOT / "runs" / (name or f"defian-s-x{scale}-heldout")


def running_pid(run: Path) -> int | None:
    """The pid of a ``sisr train`` process working in ``run``, if any."""
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                argv = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            text = [a.decode(errors="replace") for a in argv]
            if any(a.endswith("sisr") for a in text[:2]) and "train" in text and any(
                    Path(a).name == run.name for a in text if "/" in a or a == run.name):
                return int(proc.name)
    return None


def set5_gap(scale: int) -> float:
    from sisr.weights import read_metadata
    meta = read_metadata(PRETRAINED / f"defian-s_x{scale}.safetensors")
    return TARGETS[scale] - meta["metrics"]["Set5"]["psnr_y"]


def start(args) -> int:
    scale = args.scale or max(TARGETS, key=set5_gap)
    run = run_dir(scale, args.run)
    if (pid := running_pid(run)) is not None:
        print(f"{run.name}: already running (pid {pid})")
        return 0
    sisr = str(ROOT / ".venv" / "bin" / "sisr")
    if (run / "checkpoints" / "latest.json").is_file():
        cmd = [sisr, "train", "--resume", "--run-dir", str(run), "--threads", "1"]
    else:
        cmd = [sisr, "train", "--config", "defian-s", "--run-dir", str(run), "--threads", "1",
               f"model.scale={scale}", f"model.init={PRETRAINED / f'defian-s_x{scale}.safetensors'}",
               f"data.root={DATA}", "data.hr=[T91, BSD200, General100]", f"val.root={DATA}",
               f"val.set={VAL_SET}", "val.every=250", "val.at_start=true",
               f"train.iterations={args.iterations}", f"optim.lr={args.lr}", "schedule.step=null",
               f"schedule.milestones=[{args.iterations // 2}, {args.iterations * 4 // 5}]",
               "train.checkpoint_every=250", "data.workers=1", "log.every=50"]
    log = run.with_suffix(".log")
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with open(log, "ab") as out:
        proc = subprocess.Popen(["nice", "-n", "19", *cmd], stdout=out, stderr=subprocess.STDOUT, env=env,
                                cwd=ROOT, start_new_session=True)
    print(f"started {run.name} (x{scale}, pid {proc.pid}); log {log}\n  {shlex.join(cmd)}")
    return 0


def val_rows(run: Path) -> list[dict]:
    path = run / "val.csv"
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return [{"iteration": int(r["iteration"]), "psnr": float(r["psnr"]), "ssim": float(r["ssim"])}
                for r in csv.DictReader(f)]


def status(args) -> int:
    runs = [run_dir(0, args.run)] if args.run else sorted((ROOT / "runs").glob("defian-s-x*"))
    for run in (r for r in runs if r.is_dir()):
        pid = running_pid(run)
        rows = val_rows(run)
        curve = ", ".join(f"{r['iteration']}: {r['psnr']:.3f}" for r in rows) or "no validation yet"
        print(f"{run.name}: {'running, pid %d' % pid if pid else 'stopped'}; {VAL_SET} PSNR {curve}")
    return 0


def stop(run: Path, timeout: float = 600) -> None:
    pid = running_pid(run)
    if pid is None:
        return
    os.kill(pid, signal.SIGTERM)  # the trainer saves a checkpoint and exits 143
    deadline = time.monotonic() + timeout
    while running_pid(run) is not None:
        if time.monotonic() > deadline:
            raise SystemExit(f"{run.name}: pid {pid} did not stop within {timeout:.0f} s")
        time.sleep(2)
    print(f"{run.name}: stopped (pid {pid})")


def harvest(args) -> int:
    run = run_dir(args.scale or 0, args.run) if args.run else None
    if run is None:
        raise SystemExit("harvest needs --run NAME (see 'status')")
    if not args.dry_run:
        stop(run)
    rows = val_rows(run)
    if not rows or rows[0]["iteration"] != 0:
        raise SystemExit(f"{run.name}: no iteration-0 validation (val.at_start) to compare with")
    base, best = rows[0], max(rows, key=lambda r: r["psnr"])
    gain = best["psnr"] - base["psnr"]
    print(f"{run.name}: {VAL_SET} {base['psnr']:.3f} (shipped file) -> {best['psnr']:.3f} at iteration "
          f"{best['iteration']} ({gain:+.3f} dB; replace at >= {args.min_gain:+.3f})")
    if gain < args.min_gain or args.dry_run:
        print("not replaced" if gain < args.min_gain else "dry run: nothing packaged")
        return 0
    return package(run, base, best)


def package(run: Path, base: dict, best: dict) -> int:
    import yaml

    from sisr.evaluation.protocol import weights_metrics
    from sisr.training.log import read_log
    from sisr.weights.package import package_pretrained
    from sisr.weights.pretrained import PRETRAINED_DIR

    config = yaml.safe_load((run / "config.yaml").read_text())
    scale = int(config["model"]["scale"])
    steps = [e for e in read_log(run) if e.get("type") == "train"]
    # test sets, plain and self-ensembled, scored once for the record: they choose nothing
    metrics = weights_metrics(run / "best.safetensors", data_root=DATA, datasets=TEST_SETS, scale=scale)
    selection = {"set": f"{VAL_SET} (the last 10 of BSD200's 199 images in sorted order, held out of training)",
                 "psnr_shipped": base["psnr"], "psnr": best["psnr"], "iteration": best["iteration"],
                 "test_sets_used_for_selection": False}
    training = {"run": run.name, "data": config["data"]["hr"], "init": config["model"].get("init"),
                "iterations": steps[-1]["iteration"] if steps else 0, "lr": config["optim"]["lr"],
                "milestones": config["schedule"]["milestones"], "batch_size": config["train"]["batch_size"],
                "patch_size": config["data"]["patch_size"], "seconds": steps[-1]["elapsed_s"] if steps else None,
                "val": val_rows(run), "date": date.today().isoformat()}
    path = package_pretrained(run / "best.safetensors", dest_dir=PRETRAINED_DIR, overwrite=True,
                              metadata={"training": training, "metrics": metrics, "selection": selection,
                                        "command": shlex.join([sys.executable, *sys.argv])})
    line = " | ".join(f"{k} {v['psnr_y']:.2f} / {v['ssim_y']:.4f}" for k, v in metrics.items())
    print(f"replaced {path}\n  {line}")
    print(json.dumps({"history_row": {"date": training["date"], "scale": scale, "run": run.name,
                                      "iterations": training["iterations"], "heldout": best["psnr"],
                                      **{k: v["psnr_y"] for k, v in metrics.items()}}}))
    return 0


# Table II of the DeFiAN paper (DIV2K, 6e5 updates): (PSNR, SSIM) per scale on Set5, Set14, B100
PAPER = {2: ((38.03, 0.9605), (33.63, 0.9181), (32.20, 0.8999)),
         3: ((34.42, 0.9273), (30.34, 0.8410), (29.12, 0.8053)),
         4: ((32.16, 0.8942), (28.63, 0.7810), (27.58, 0.7363))}


def report(args) -> int:
    """docs/results.md in numbers: the table (shipped files' metadata, bicubic scored here, the paper's rows) and the
    chart of each run's own validation (the handed-over x2 run in --pretraining, then each file's); with --crops a
    'sisr report' folder, the montage of its Set5 crops instead."""
    from sisr.evaluation.protocol import evaluate
    from sisr.utils.plot import line_chart, save_png
    from sisr.weights import read_metadata

    if args.crops:
        print(f"montage: {crop_montage(args.crops, args.out, args.overwrite)}", file=sys.stderr)
        return 0
    cells = lambda pairs: " | ".join(f"{p:.2f} / {q:.4f}" for p, q in pairs)  # noqa: E731
    columns = TEST_SETS + tuple(f"{s}+" for s in TEST_SETS)  # "+": self-ensemble
    lines = ["| scale | model | " + " | ".join(columns) + " |", "|---|---|" + "---|" * len(columns)]
    phase2 = [(r["iteration"] + 807, r["psnr"]) for r in val_rows(args.pretraining)]  # after phase 1's 807
    curves = {"x2 (handed-over run)": [(r["iteration"], r["psnr"]) for r in val_rows(args.pretraining / "phase1")]
              + phase2}
    for scale in (2, 3, 4):
        meta = read_metadata(PRETRAINED / f"defian-s_x{scale}.safetensors")
        metrics, training = meta["metrics"], meta["training"]
        bicubic = evaluate("bicubic", data_root=args.data, datasets=TEST_SETS, scales=[scale], progress=False)
        lines += [f"| x{scale} | bicubic | " + cells((s.psnr_y, s.ssim_y) for s in bicubic.sets) + " |" + " - |" * 3,
                  f"| x{scale} | **defian-s (shipped)** | "
                  + cells((metrics[k]["psnr_y"], metrics[k]["ssim_y"]) for k in columns) + " |",
                  f"| x{scale} | DeFiAN_S (paper, DIV2K, 6e5 updates) | " + cells(PAPER[scale]) + " |" + " - |" * 3]
        # round 1 starts from the handed-over x2 weights (stopped at 2,417); round 2 from round 1's shipped file,
        # which had 1,400 fine-tuning iterations (x3, x4) after those (docs/results.md, history)
        round2 = "pretrained" in str(training.get("init") or "")
        label = (f"x{scale} (continued)" if scale == 2 else f"x{scale} (fine-tuned from x2)") + ", round 2" * round2
        curves[label] = [(2417 + 1400 * round2 + v["iteration"], v["psnr"]) for v in training["val"]]
        print(f"x{scale}: {training['run']}, {training['iterations']} iterations in {training['seconds']:.0f} s on "
              f"{training['device']}, lr {training['lr']}, milestones {training['milestones']}, init "
              f"{training['init']}", file=sys.stderr)
    print("\n".join(lines))
    chart = line_chart(curves, title="DeFiAN-S on the CPU: each run's own Set5 validation",
                       xlabel="iteration (counted from the start of the x2 run)", ylabel="Set5 Y PSNR (dB)")
    print(f"chart: {save_png(chart, args.out / 'defian-s-val.png', overwrite=args.overwrite)}", file=sys.stderr)
    return 0


def crop_montage(report_dir: Path, out: Path, overwrite: bool) -> Path:
    """HR | bicubic | defian-s crops (the report's largest-bicubic-error crop) for three Set5 images."""
    from PIL import Image, ImageDraw

    from sisr.utils.plot import font, save_png

    names, columns, side, top = ("butterfly", "baby", "woman"), ("HR", "bicubic", "defian-s"), 192, 24
    sheet = Image.new("RGB", (side * len(columns), top + side * len(names)), "white")
    draw = ImageDraw.Draw(sheet)
    for j, col in enumerate(columns):
        draw.text((j * side + 6, 4), col, fill="black", font=font(15))
        for i, name in enumerate(names):
            crop = Image.open(report_dir / "crops" / "Set5" / name / f"c1_{j}_{col}.png").convert("RGB")
            sheet.paste(crop.resize((side, side), Image.NEAREST), (j * side, top + i * side))
    return save_png(sheet, out / "defian-s-x4-crops.png", overwrite=overwrite)


def main() -> int:
    sys.path.insert(0, str(ROOT / "src"))
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    for name in ("start", "status", "harvest"):
        s = sub.add_parser(name)
        s.add_argument("--scale", type=int, choices=sorted(TARGETS))
        s.add_argument("--run", help="run folder name under runs/ (default defian-s-x<scale>-heldout)")
    sub.choices["start"].add_argument("--iterations", type=int, default=3000)
    sub.choices["start"].add_argument("--lr", type=float, default=1e-4)
    sub.choices["harvest"].add_argument("--min-gain", type=float, default=0.02, help="held-out dB to replace")
    sub.choices["harvest"].add_argument("--dry-run", action="store_true", help="decide, do not stop or package")
    rep = sub.add_parser("report", help="the table and chart of docs/results.md")
    rep.add_argument("--out", type=Path, required=True, help="folder for defian-s-val.png (or the crop montage)")
    rep.add_argument("--crops", type=Path, metavar="REPORT_DIR", help="a 'sisr report' folder: montage of its crops")
    rep.add_argument("--data", type=Path, default=DATA)
    rep.add_argument("--pretraining", type=Path, default=ROOT.parent / "shared" / "pretraining" / "defian-s-x2")
    rep.add_argument("--overwrite", action="store_true")
    args = p.parse_args()
    return {"start": start, "status": status, "harvest": harvest, "report": report}[args.command](args)


if __name__ == "__main__":
    raise SystemExit(main())
