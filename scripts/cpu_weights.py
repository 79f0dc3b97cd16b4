"""Keep the CPU training the shipped DeFiAN-S weights: one command to start, one to harvest.

    python scripts/cpu_weights.py start [--scale 4]    # background, nice 19, one thread, resumable
    python scripts/cpu_weights.py status
    python scripts/cpu_weights.py harvest [--dry-run]  # stop, decide on held-out data, package, score tests
    python scripts/cpu_weights.py adopt DIR [--dry-run]   # the same for the candidates of gpu_train_defian_s.py
    python scripts/cpu_weights.py report --out docs/img [--crops REPORT_DIR]   # docs/results.md's table and chart

A run continues the shipped ``src/sisr/pretrained/defian-s_x<scale>.safetensors`` with sisr's own
``sisr train`` (recipe ``defian-s``, L1, batch 16) on T91 + BSD200 + General100 minus a held-out slice:
the last 10 of BSD200's 199 images in sorted order (``val.set=BSD200:190-199``), which validate the run
(``best.safetensors``) and decide whether it replaces the shipped file: a held-out PSNR gain of at least
``--min-gain`` dB (default 0.02) over the file shipped now, validated here (a run resumed after an earlier
harvest is compared with what that harvest shipped, not with the file it started from). Set5/Set14/B100 are scored once, after that decision, for the record (they choose
nothing). Without ``--scale``, ``start`` takes the scale furthest below its target.
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
    import yaml

    from sisr.training.log import read_log

    if not args.run:
        raise SystemExit("harvest needs --run NAME (see 'status')")
    run = run_dir(0, args.run)
    if not args.dry_run:
        stop(run)
    rows = val_rows(run)
    if not rows:
        raise SystemExit(f"{run.name}: no validation yet")
    config = yaml.safe_load((run / "config.yaml").read_text())
    steps = [e for e in read_log(run) if e.get("type") == "train"]
    training = {"run": run.name, "data": config["data"]["hr"], "init": config["model"].get("init"),
                "iterations": steps[-1]["iteration"] if steps else 0, "lr": config["optim"]["lr"],
                "milestones": config["schedule"]["milestones"], "batch_size": config["train"]["batch_size"],
                "patch_size": config["data"]["patch_size"], "seconds": steps[-1]["elapsed_s"] if steps else None,
                "val": rows, "date": date.today().isoformat()}
    env = json.loads((run / "env.json").read_text()) if (run / "env.json").is_file() else {}
    training["device"] = f"cpu ({env.get('cpu', 'unknown')}, {env.get('cpu_threads', '?')} thread(s))"
    scale, val_set = int(config["model"]["scale"]), config["val"]["set"]  # the set that chose the run's best
    # against the file shipped now (a run may outlive an earlier harvest), on the same held-out set
    shipped = held_out_psnr(args.dest / f"defian-s_x{scale}.safetensors", scale, val_set, args)
    return package(run / "best.safetensors", training, val_set, shipped, max(rows, key=lambda r: r["psnr"]), args)


def held_out_psnr(path: Path, scale: int, val_set: str, args) -> float | None:
    """``path`` validated here on ``val_set`` (None: no such file)."""
    from sisr.training.trainer import Validator
    from sisr.weights.loading import load_model

    if not path.is_file():
        return None
    return Validator(val_set, scale, root=str(args.data), device="cpu")(load_model(path, device="cpu"))["psnr"]


def adopt(args) -> int:
    """The candidates a GPU run wrote (scripts/gpu_train_defian_s.py), each against the file of its name in --dest,
    both validated here on --val-set, then through package() as a harvest."""
    from sisr.weights import read_metadata

    candidates = sorted(args.dir.glob("defian-s_x*.safetensors"))
    if not candidates:
        raise SystemExit(f"{args.dir}: no defian-s_x<scale>.safetensors")
    for cand in candidates:
        meta = read_metadata(cand)
        scale = int(meta["scale"])
        old = held_out_psnr(args.dest / cand.name, scale, args.val_set, args)
        training = {**meta.get("training", {}), "run": str(cand), "date": date.today().isoformat()}
        best = {"psnr": held_out_psnr(cand, scale, args.val_set, args), "iteration": training.get("iterations")}
        package(cand, training, args.val_set, old, best, args)
    return 0


def package(weights: Path, training: dict, val_set: str, shipped: float | None, best: dict, args) -> int:
    """``weights`` over the file of its name in --dest when ``best`` beats ``shipped`` (the shipped file's PSNR; None:
    nothing shipped) on ``val_set`` by at least --min-gain dB; then the test sets are scored once, plain and
    self-ensembled, for the record: they choose nothing."""
    from sisr.evaluation.protocol import weights_metrics
    from sisr.weights import read_metadata
    from sisr.weights.package import package_pretrained

    gain = best["psnr"] - (float("-inf") if shipped is None else shipped)
    print(f"{training['run']}: {val_set} {'none' if shipped is None else f'{shipped:.3f}'} (the file shipped now) -> "
          f"{best['psnr']:.3f} at iteration {best['iteration']} ({gain:+.3f} dB; replace at >= {args.min_gain:+.3f})")
    if gain < args.min_gain or args.dry_run:
        print("not replaced" if gain < args.min_gain else "dry run: nothing packaged")
        return 0
    metrics = weights_metrics(weights, data_root=args.data, datasets=TEST_SETS)
    note = " (the last 10 of BSD200's 199 images in sorted order, held out of training)" if val_set == VAL_SET else ""
    selection = {"set": val_set + note, "psnr_shipped": shipped, "psnr": best["psnr"], "iteration": best["iteration"],
                 "test_sets_used_for_selection": False}
    path = package_pretrained(weights, dest_dir=args.dest, overwrite=True,
                              metadata={"training": training, "metrics": metrics, "selection": selection,
                                        "command": shlex.join([sys.executable, *sys.argv])})
    line = " | ".join(f"{k} {v['psnr_y']:.2f} / {v['ssim_y']:.4f}" for k, v in metrics.items())
    print(f"replaced {path}\n  {line}")
    print(json.dumps({"history_row": {"date": training["date"], "scale": read_metadata(path)["scale"],
                                      "run": training["run"], "iterations": training.get("iterations"),
                                      "heldout": best["psnr"], **{k: v["psnr_y"] for k, v in metrics.items()}}}))
    return 0


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
    from sisr.experiments import get_experiment

    paper = next(r.paper for r in get_experiment("defian-bi").rows if r.model == "defian-s")  # Table II
    cells = lambda pairs: " | ".join(f"{p:.2f} / {q:.4f}" for p, q in pairs)  # noqa: E731
    columns = TEST_SETS + tuple(f"{s}+" for s in TEST_SETS)  # "+": self-ensemble
    lines = ["| scale | model | " + " | ".join(columns) + " |", "|---|---|" + "---|" * len(columns)]
    phase2 = [(r["iteration"] + 807, r["psnr"]) for r in val_rows(args.pretraining)]  # after phase 1's 807
    heldout: dict[str, list] = {}
    curves = {"x2 (handed-over run)": [(r["iteration"], r["psnr"]) for r in val_rows(args.pretraining / "phase1")]
              + phase2}
    for scale in (2, 3, 4):
        meta = read_metadata(PRETRAINED / f"defian-s_x{scale}.safetensors")
        metrics, training = meta["metrics"], meta["training"]
        bicubic = evaluate("bicubic", data_root=args.data, datasets=TEST_SETS, scales=[scale], progress=False)
        lines += [f"| x{scale} | bicubic | " + cells((s.psnr_y, s.ssim_y) for s in bicubic.sets) + " |" + " - |" * 3,
                  f"| x{scale} | **defian-s (shipped)** | "
                  + cells((metrics[k]["psnr_y"], metrics[k]["ssim_y"]) for k in columns) + " |",
                  f"| x{scale} | DeFiAN_S (paper, DIV2K, 6e5 updates) | "
                  + cells(paper[scale][k] for k in TEST_SETS) + " |" + " - |" * 3]
        # round 1 starts from the handed-over x2 weights (stopped at 2,417); round 2 from round 1's shipped file,
        # which had 1,400 fine-tuning iterations (x3, x4) after those (docs/results.md, history)
        round2 = "pretrained" in str(training.get("init") or "")
        if meta.get("selection", {}).get("test_sets_used_for_selection") is False:  # its curve is held-out data
            heldout[f"x{scale} ({training['run']})"] = [(v["iteration"], v["psnr"]) for v in training["val"]]
        else:
            label = (f"x{scale} (continued)" if scale == 2 else f"x{scale} (fine-tuned from x2)") + ", round 2" * round2
            curves[label] = [(2417 + 1400 * round2 + v["iteration"], v["psnr"]) for v in training["val"]]
        print(f"x{scale}: {training['run']}, {training['iterations']} iterations in {training['seconds']:.0f} s on "
              f"{training.get('device')}, lr {training['lr']}, milestones {training['milestones']}, init "
              f"{training['init']}", file=sys.stderr)
    print("\n".join(lines))
    charts = {"defian-s-val.png": line_chart(
        curves, title="DeFiAN-S on the CPU: each run's own Set5 validation (files chosen on Set5)",
        xlabel="iteration (counted from the start of the x2 run)", ylabel="Set5 Y PSNR (dB)")}
    if heldout:
        charts["defian-s-heldout.png"] = line_chart(
            heldout, title=f"DeFiAN-S continued on the CPU: held-out validation ({VAL_SET})",
            xlabel="iteration of the run (0: the file it continued)", ylabel=f"{VAL_SET} Y PSNR (dB)")
    for name, chart in charts.items():
        print(f"chart: {save_png(chart, args.out / name, overwrite=args.overwrite)}", file=sys.stderr)
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
        s.add_argument("--run", help="run folder name under runs/ (default defian-s-x<scale>-heldout), or a path")
    sub.choices["start"].add_argument("--iterations", type=int, default=3000)
    sub.choices["start"].add_argument("--lr", type=float, default=1e-4)
    sub.add_parser("adopt", help="package the better candidates of scripts/gpu_train_defian_s.py").add_argument(
        "dir", type=Path, help="the --out of scripts/gpu_train_defian_s.py, fetched")
    sub.choices["adopt"].add_argument("--val-set", default=VAL_SET, help="held out of the training data")
    for name in ("harvest", "adopt"):
        s = sub.choices[name]
        s.add_argument("--min-gain", type=float, default=0.02, help="held-out dB to replace (default 0.02)")
        s.add_argument("--dry-run", action="store_true", help="decide, do not stop the run or package")
        s.add_argument("--data", type=Path, default=DATA, help="the validation and test sets")
        s.add_argument("--dest", type=Path, default=PRETRAINED, help="the files to replace (default: the shipped)")
    rep = sub.add_parser("report", help="the table and chart of docs/results.md")
    rep.add_argument("--out", type=Path, required=True, help="folder for defian-s-val.png (or the crop montage)")
    rep.add_argument("--crops", type=Path, metavar="REPORT_DIR", help="a 'sisr report' folder: montage of its crops")
    rep.add_argument("--data", type=Path, default=DATA)
    rep.add_argument("--pretraining", type=Path, default=ROOT.parent / "shared" / "pretraining" / "defian-s-x2")
    rep.add_argument("--overwrite", action="store_true")
    args = p.parse_args()
    return {"start": start, "status": status, "harvest": harvest, "adopt": adopt, "report": report}[args.command](args)


if __name__ == "__main__":
    raise SystemExit(main())
