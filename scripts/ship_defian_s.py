"""Train, evaluate and package the DeFiAN-S weights sisr ships (x2, then x3/x4 fine-tuned from x2).

The whole pipeline of the trained-weights issue in one command:

1. ``sisr.train`` defian-s x2 from scratch on every training set under DATA (T91, BSD200,
   General100; never a test set), then x3 and x4 initialised from the x2 body (``model.init``,
   as the EDSR authors do).
2. ``sisr.evaluation.protocol`` each scale on Set5, Set14, B100 (paper protocol), with and
   without self-ensemble.
3. ``package_pretrained``: float16 copies with the training data, iterations, device, metrics and
   this command in their metadata, into ``--dest`` (the package's ``src/sisr/pretrained`` for a
   real run; anywhere else for a trial).
4. ``results.json`` and ``results.md`` (the table) in ``--out``.

GPU run (the plan for ~45 device-minutes; adjust the iterations to the measured it/s):

    PYTHONPATH=src python scripts/ship_defian_s.py --device cuda --iterations-x2 40000 \\
        --iterations-finetune 10000 --out runs/ship --dest src/sisr/pretrained

Evaluate and package runs trained elsewhere (e.g. the CPU runs of runs/cpu_ship.sh; no training):

    python scripts/ship_defian_s.py --runs 2=runs/defian-s-x2-c 3=runs/defian-s-x3 4=runs/defian-s-x4 \\
        --out results/defian-s-cpu --dest src/sisr/pretrained

CPU trial of the pipeline (minutes, weights far from trained):

    python scripts/ship_defian_s.py --device cpu --iterations-x2 20 --iterations-finetune 10 \\
        --batch-size 4 --sets Set5 --out /tmp/ship --dest /tmp/ship/pretrained
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import torch

from sisr.evaluation.protocol import evaluate, save_results
from sisr.training.trainer import train
from sisr.utils.device import resolve_device
from sisr.utils.fs import atomic_write_text
from sisr.weights.package import package_pretrained

TRAINING_SETS = ("T91", "BSD200", "General100")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "datasets"),
                   help="folder with the training sets and Set5/Set14/B100 (default ../shared/datasets)")
    p.add_argument("--scales", type=int, nargs="+", default=[2, 3, 4])
    p.add_argument("--iterations-x2", type=int, default=40000)
    p.add_argument("--iterations-finetune", type=int, default=10000, help="x3/x4 iterations from the x2 weights")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--sets", nargs="+", default=["Set5", "Set14", "B100"])
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default="runs/ship", help="run directories and result tables")
    p.add_argument("--dest", required=True, help="where the packaged weights go (src/sisr/pretrained to ship)")
    p.add_argument("--overwrite", action="store_true", help="replace packaged weights already in --dest")
    p.add_argument("--runs", nargs="+", metavar="SCALE=RUN_DIR",
                   help="skip training: evaluate and package these finished 'sisr train' runs")
    args = p.parse_args()
    if args.runs:
        return package_runs(args)

    data, out = Path(args.data), Path(args.out)
    device = resolve_device(args.device)
    hr = [str(data / s / "HR") for s in TRAINING_SETS if (data / s / "HR").is_dir()]
    if not hr:
        raise SystemExit(f"{data}: none of {', '.join(TRAINING_SETS)} found")
    command = shlex.join([sys.executable, *sys.argv])
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    results: dict = {"command": command, "device": device_name, "training_data": hr, "scales": {}}
    for scale in args.scales:
        first = scale == args.scales[0]
        iterations = args.iterations_x2 if first else args.iterations_finetune
        overrides = [f"model.scale={scale}", f"data.hr=[{', '.join(hr)}]", f"val.root={data}",
                     "val.set=BSD200:190-199",  # held out of training (the recipes validate on DIV2K:801-810)
                     f"train.iterations={iterations}", f"train.batch_size={args.batch_size}",
                     f"schedule.step={max(iterations // 2, 1)}", f"val.every={max(iterations // 10, 1)}",
                     f"train.checkpoint_every={max(iterations // 20, 1)}", f"train.device={device}"]
        if not first:
            overrides.append(f"model.init={out / f'defian-s-x{args.scales[0]}' / 'best.safetensors'}")
        start = time.perf_counter()
        run_dir = train("defian-s", overrides, run_dir=out / f"defian-s-x{scale}")
        seconds = time.perf_counter() - start
        best = run_dir / "best.safetensors"
        training = {"data": hr, "iterations": iterations, "batch_size": args.batch_size, "device": device_name,
                    "seconds": round(seconds, 1), "overrides": overrides,
                    "init": None if first else f"defian-s x{args.scales[0]} (this pipeline)"}
        metrics, packaged = evaluate_and_package(best, scale, training, command, args, device)
        results["scales"][scale] = {"training": training, "metrics": metrics, "weights": str(packaged)}
        print(f"x{scale}: {iterations} iterations in {seconds:.0f} s")
    write_tables(results, args.sets, out)
    return 0


def evaluate_and_package(best: Path, scale: int, training: dict, command: str, args, device) -> tuple[dict, Path]:
    """Evaluate ``best`` on ``args.sets`` with and without self-ensemble, then package it with that metadata."""
    metrics = {}
    for ensemble in (False, True):
        res = evaluate(best, data_root=args.data, datasets=args.sets, scales=[scale], self_ensemble=ensemble,
                       device=device, progress=False)
        save_results(res, Path(args.out) / f"eval-x{scale}{'-plus' if ensemble else ''}", overwrite=True)
        for s in res.sets:
            metrics.setdefault(s.dataset + ("+" if ensemble else ""), {"psnr_y": s.psnr_y, "ssim_y": s.ssim_y})
    packaged = package_pretrained(best, dest_dir=args.dest, overwrite=args.overwrite,
                                  metadata={"training": training, "metrics": metrics, "command": command})
    print(f"x{scale}: " + ", ".join(f"{k} {v['psnr_y']:.2f} dB" for k, v in metrics.items()) + f"; packaged {packaged}",
          flush=True)
    return metrics, packaged


def package_runs(args) -> int:
    """Evaluate and package finished runs (``SCALE=RUN_DIR``), their training facts read from the run folder."""
    import yaml

    device = resolve_device(args.device)
    command = shlex.join([sys.executable, *sys.argv])
    results: dict = {"command": command, "device": str(device), "scales": {}}
    for item in args.runs:
        scale_text, _, run = item.partition("=")
        scale, run = int(scale_text), Path(run)
        config = yaml.safe_load((run / "config.yaml").read_text())
        log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if line.strip()]
        steps = [e for e in log if e.get("type") == "train"]
        training = {"data": config["data"]["hr"], "run": run.name, "iterations": steps[-1]["iteration"] if steps else 0,
                    "batch_size": config["train"]["batch_size"], "patch_size": config["data"]["patch_size"],
                    "lr": config["optim"]["lr"], "milestones": config["schedule"]["milestones"],
                    "init": config["model"].get("init"), "device": _cpu_name(),
                    "precision": config["train"]["precision"], "compile": config["train"]["compile"],
                    "seconds": round(steps[-1]["elapsed_s"], 1) if steps else None,
                    "val": [{"iteration": e["iteration"], "psnr": round(e["psnr"], 3)} for e in log if e.get("type") == "val"]}
        metrics, packaged = evaluate_and_package(run / "best.safetensors", scale, training, command, args, device)
        results["scales"][scale] = {"training": training, "metrics": metrics, "weights": str(packaged)}
    write_tables(results, args.sets, Path(args.out))
    return 0


def _cpu_name() -> str:
    try:
        names = [ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")]
    except OSError:
        names = []
    return f"cpu {names[0] if names else ''} ({torch.get_num_threads()} threads)".replace("  ", " ")


def write_tables(results: dict, sets: list[str], out: Path) -> None:
    """``results.json`` and ``results.md`` (PSNR/SSIM per scale and set, with and without self-ensemble)."""
    atomic_write_text(out / "results.json", json.dumps(results, indent=2) + "\n", overwrite=True)
    lines = ["| scale | " + " | ".join(sets + [f"{s}+" for s in sets]) + " |",
             "|---" * (1 + 2 * len(sets)) + "|"]
    for scale, r in results["scales"].items():
        cells = [f"{r['metrics'][k]['psnr_y']:.2f}/{r['metrics'][k]['ssim_y']:.4f}"
                 for k in sets + [f"{s}+" for s in sets]]
        lines.append(f"| x{scale} | " + " | ".join(cells) + " |")
    atomic_write_text(out / "results.md", "\n".join(lines) + "\n", overwrite=True)
    print("\n".join(lines))


if __name__ == "__main__":
    raise SystemExit(main())
