"""GPU continuation of the shipped DeFiAN-S weights, in one command of at most --minutes by construction.

Each scale continues its shipped file with the training engine (the recipe in bf16 + channels_last on T91 + BSD200 +
General100, validated on --val-set, held out of training), x2 taking twice the time of each other scale; a trainer
callback (``PhaseClock``) stops each phase at its deadline and halves the lr at 60 % and 85 % of its time. Written to
--out after each phase and every 90 s (never into src/sisr/pretrained): the candidates ``defian-s_x<s>.safetensors``,
the run folders ``defian-s-x<s>.tar`` (under 16 MiB) and ``results.json``. docs/performance.md, "GPU runs".

    PYTHONPATH=src python scripts/gpu_train_defian_s.py --data .gpu-data --out $OUT --minutes 8.5
    python scripts/gpu_train_defian_s.py --dry-run --data DATASETS --out /tmp/gpu-train   # CPU, a few iterations
    .venv/bin/python scripts/cpu_weights.py adopt FOLDER_BACK   # on the CPU: a better candidate replaces its file
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import statistics
import sys
import tarfile
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import common  # noqa: E402  (benchmarks/common.py: one_line; makes sisr importable from a checkout)
import torch  # noqa: E402

from sisr.errors import ConfigError, SisrError  # noqa: E402
from sisr.training import trainer as engine  # noqa: E402
from sisr.training.callbacks import Callback  # noqa: E402
from sisr.training.config import load_config  # noqa: E402
from sisr.training.log import read_log  # noqa: E402
from sisr.utils.device import device_name, resolve_device  # noqa: E402
from sisr.utils.fs import atomic_path, atomic_write_text, check_outputs  # noqa: E402
from sisr.weights import load_weights  # noqa: E402
from sisr.weights.loading import load_model  # noqa: E402
from sisr.weights.package import package_pretrained  # noqa: E402
from sisr.weights.pretrained import PRETRAINED_DIR  # noqa: E402

MODEL = "defian-s"
TRAINING_SETS = ("T91", "BSD200", "General100")
VAL_SET = "BSD200:190-199"  # the last ten of the 199 BSD200 images, held out of training
DECAY_AT = (0.6, 0.85)  # fractions of a phase's training time at which the lr is halved
EXPORT_S = 90.0  # seconds between exports of the best weights during a phase (dry run: 1)
POST_S = 25.0  # seconds kept after each phase for scoring its candidates, packaging and tar
TAR_LIMIT = 16 * 2**20  # the largest file the device machine sends back
SKIP_IN_TAR = {"best.safetensors", "latest.safetensors", "latest_ema.safetensors"}  # copies of checkpoint files
GPU = ["train.device=cuda", "data.workers=6", "train.iterations=200000"]  # the clock ends a phase first
DRY_RUN = ["train.device=cpu", "train.batch_size=2", "data.patch_size=16", "data.workers=0", "val.every=2",
           "train.checkpoint_every=2", "log.every=1", "train.iterations=3"]


class PhaseClock(Callback):
    """Ends the phase at its deadline (a clean stop: validation and checkpoint), halves the lr at fractions of the
    phase's training time (milestones of the trainer's schedule), exports the best weights every ``export_every`` s."""

    def __init__(self, deadline: float, decay_at, export, export_every: float):
        self.deadline, self.decay_at, self.export, self.export_every = deadline, sorted(decay_at), export, export_every
        self.started, self.fired, self.milestones, self.last_export = None, False, [], time.monotonic()

    def on_fit_start(self, trainer) -> None:  # data ready: the clock of the schedule starts
        self.started = time.monotonic()

    def on_step_end(self, trainer, result) -> None:
        now = time.monotonic()
        span = max(self.deadline - self.started, 1e-9)
        while len(self.milestones) < sum(now >= self.started + f * span for f in self.decay_at):
            trainer.schedule.add_milestone(trainer.iteration)  # halved from the next iteration on
            self.milestones.append(trainer.iteration)
        if now - self.last_export >= self.export_every:
            self.last_export = now
            self.export()

    def should_stop(self, trainer) -> str | None:
        self.fired = time.monotonic() >= self.deadline
        return "the phase's deadline" if self.fired else None


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=common.DATASETS, help="folder holding T91/BSD200/General100 HR")
    p.add_argument("--out", type=Path, required=True, help="candidates, run archives and results.json")
    p.add_argument("--work", type=Path, help="run folders (default: a temporary folder, removed at the end)")
    p.add_argument("--init-dir", type=Path, default=PRETRAINED_DIR,
                   help="the weights to continue, defian-s_x<s>.safetensors (default: the shipped ones)")
    p.add_argument("--scales", type=int, nargs="+", default=[2, 3, 4])
    p.add_argument("--minutes", type=float, help="wall-clock budget of the whole command (default 8.5; dry run 1.5)")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--precision", choices=["bf16", "fp32"], default="bf16")
    p.add_argument("--val-set", default=VAL_SET, help=f"a slice held out of the training data (default {VAL_SET})")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a training config override applied last, e.g. train.batch_size=32 (repeatable)")
    p.add_argument("--dry-run", action="store_true", help="CPU, batch 2, LR patch 16, 3 iterations per phase "
                   "(unless --set train.iterations=N), exports every second: the code path")
    p.add_argument("--overwrite", action="store_true", help="replace results already in --out")
    args = p.parse_args(argv)
    args.minutes = args.minutes if args.minutes is not None else (1.5 if args.dry_run else 8.5)
    args.shares = [2.0 if s == 2 else 1.0 for s in args.scales]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return run(args)
    except SisrError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def overrides(args, scale: int, hr: list[str]) -> list[str]:
    """The phase's training config over the recipe; --set last."""
    init = args.init_dir / f"{MODEL}_x{scale}.safetensors"
    return [f"model.scale={scale}", f"model.init={init}", f"data.hr=[{', '.join(hr)}]", f"val.root={args.data}",
            f"val.set={args.val_set}", "val.at_start=true", f"optim.lr={args.lr}",
            "schedule.step=null", "schedule.milestones=[]", "schedule.gamma=0.5", f"train.precision={args.precision}",
            "train.channels_last=true", "train.compile=false", "log.plots=false", "log.tensorboard=false",
            *(DRY_RUN if args.dry_run else GPU), *args.set]


def check_run(args) -> list[str]:
    """The training folders to read (a one-line ConfigError for each mistake before anything runs)."""
    out = args.out.resolve()
    if out == PRETRAINED_DIR.resolve() or PRETRAINED_DIR.resolve() in out.parents:
        raise ConfigError(f"--out {args.out}: inside the shipped weights folder; choose another folder")
    names = [f"{MODEL}_x{s}.safetensors" for s in args.scales] + [f"{MODEL}-x{s}.tar" for s in args.scales]
    check_outputs(out, ["results.json", *names], args.overwrite)
    hr = [str(args.data / s / "HR") for s in TRAINING_SETS if (args.data / s / "HR").is_dir()]
    if not hr:
        raise ConfigError(f"--data {args.data}: none of {', '.join(f'{s}/HR' for s in TRAINING_SETS)} found")
    for scale in args.scales:
        if not (init := args.init_dir / f"{MODEL}_x{scale}.safetensors").is_file():
            raise ConfigError(f"--init-dir {args.init_dir}: no {init.name} to continue")
    return hr


def run(args) -> int:
    start = time.monotonic()
    end, hr = start + args.minutes * 60, check_run(args)
    device = resolve_device(load_config(MODEL, overrides(args, args.scales[0], hr)).train.device)  # checks --set
    work = args.work or Path(tempfile.mkdtemp(prefix="sisr-gpu-train-"))
    results = {"command": shlex.join([Path(sys.executable).name, *sys.argv]), "device": device_name(device),
               "torch": torch.__version__, "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
               "dry_run": args.dry_run, "minutes": args.minutes, "shares": dict(zip(args.scales, args.shares)),
               "training_data": hr, "work": str(work), "phases": {}}

    def save() -> None:
        results["elapsed_s"] = round(time.monotonic() - start, 1)
        atomic_write_text(args.out / "results.json", json.dumps(results, indent=2) + "\n", overwrite=True)

    save()
    for i, scale in enumerate(args.scales):
        share = args.shares[i] / sum(args.shares[i:])
        deadline = time.monotonic() + (end - time.monotonic() - POST_S * (len(args.scales) - i)) * share
        phase = results["phases"][scale] = {"status": "running", "deadline_in_s": round(deadline - time.monotonic(), 1)}
        save()
        try:
            train_phase(scale, deadline, hr, work, args, phase, save)
            phase["status"] = "ok"
        except Exception as exc:  # noqa: BLE001 - one failing scale must not cost the others
            traceback.print_exc()
            phase.update(status="failed", error=common.one_line(exc))
        save()
    print(f"elapsed {results['elapsed_s']} s on {results['device']}: {args.out / 'results.json'}")
    if args.work is None:  # our own temporary folder: what matters is in --out
        shutil.rmtree(work, ignore_errors=True)
    return 0 if all(ph["status"] == "ok" for ph in results["phases"].values()) else 1


def train_phase(scale: int, deadline: float, hr: list[str], work: Path, args, phase: dict, save) -> None:
    cfg, run_dir = load_config(MODEL, overrides(args, scale, hr)), work / f"{MODEL}-x{scale}"
    cfg.run_dir, init = str(run_dir), Path(cfg.model.init)
    init_set5 = ((load_weights(init)[1].get("metrics") or {}).get("Set5") or {}).get("psnr_y")  # reported only
    phase.update(init=str(init), init_set5_psnr_y_metadata=init_set5, overrides=overrides(args, scale, hr))
    started = time.monotonic()
    training = {"data": hr, "val_set": cfg.val.set, "init": str(init), "device": device_name(resolve_device(
                cfg.train.device)), "precision": cfg.train.precision, "channels_last": cfg.train.channels_last,
                "compile": cfg.train.compile, "batch_size": cfg.train.batch_size, "patch_size": cfg.data.patch_size,
                "lr": cfg.optim.lr, "command": shlex.join([Path(sys.executable).name, *sys.argv])}

    def export() -> None:
        best = trainer.paths.best
        if best.is_file() and phase.get("exported_mtime") != best.stat().st_mtime:
            try:
                phase["exported_mtime"] = best.stat().st_mtime
                package_pretrained(best, dest_dir=args.out, overwrite=True, metadata={"training": {
                    **training, "iterations": trainer.iteration, "state": "in progress"}, "metrics": {}})
                phase["candidate"] = {"source": "best (in progress)", "iteration": trainer.iteration}
                save()
            except Exception as exc:  # noqa: BLE001 - an export failing must not stop the training
                print(f"export x{scale}: {common.one_line(exc)}", file=sys.stderr)

    clock = PhaseClock(deadline, DECAY_AT, export, 1.0 if args.dry_run else EXPORT_S)
    trainer = engine.Trainer(cfg, run_dir, callbacks=[clock])
    trainer.fit()  # the clock's stop is a clean one: fit() returns
    finish_phase(trainer, clock, scale, time.monotonic() - started, training, args.out, phase, save)


def finish_phase(trainer, clock: PhaseClock, scale: int, seconds: float, training: dict, out: Path, phase: dict,
                 save) -> None:
    """Record the phase, choose the candidate on the validation set, package it and archive the run."""
    log = read_log(trainer.paths.root)
    steps = [e for e in log if e.get("type") == "train"]
    rates = [e["it_per_s"] for e in steps[1:] if e.get("it_per_s")] or [e["it_per_s"] for e in steps]
    val = [{"iteration": e["iteration"], "psnr": e["psnr"]} for e in log if e.get("type") == "val"]
    phase.update(iterations=trainer.iteration, stopped_by="time" if clock.fired else "iterations",
                 seconds=round(seconds, 1), it_per_s_median=statistics.median(rates) if rates else None,
                 lr_milestones=list(trainer.schedule.milestones), val=val,
                 loss_last=steps[-1]["loss"] if steps else None)
    save()
    scored = {source: (path, trainer.validator(load_model(path, device=trainer.device)))  # best validated vs last
              for source, path in (("best", trainer.paths.best), ("latest", trainer.paths.latest)) if path.is_file()}
    if not scored:
        raise SisrError(f"{trainer.paths.root}: neither best nor latest weights were written")
    source, (path, scores) = max(scored.items(), key=lambda kv: kv[1][1]["psnr"])
    psnr, init_val = scores["psnr"], val[0]["psnr"] if val and val[0]["iteration"] == 0 else None
    training.update(iterations=trainer.iteration, seconds=round(seconds, 1), milestones=list(clock.milestones),
                    source=source, val=val)
    packaged = package_pretrained(path, dest_dir=out, overwrite=True, metadata={"training": training, "metrics": {
        trainer.cfg.val.set: {"psnr_y": psnr, "ssim_y": scores["ssim"]}}})  # replaces the exports of the phase
    phase["candidate"] = {"file": packaged.name, "source": source, "weights": str(path), "iteration": trainer.iteration,
                          "val_psnr_y": psnr, "val_ssim_y": scores["ssim"],
                          "scores": {k: v[1]["psnr"] for k, v in scored.items()},
                          "val_gain_db": None if init_val is None else psnr - init_val}
    phase.pop("exported_mtime", None)
    tar = archive(trainer.paths.root, out / f"{MODEL}-x{scale}.tar")
    phase["archive"] = {"file": tar.name, "bytes": tar.stat().st_size}
    print(f"x{scale}: {trainer.iteration} iterations in {seconds:.0f} s, {trainer.cfg.val.set} {psnr:.3f} dB "
          f"({source}; start {common.fmt(init_val, '{:.3f}')} dB) -> {packaged}", flush=True)


def archive(run_dir: Path, dest: Path) -> Path:
    """The run folder without its duplicate weights files; without the optimiser state if over 16 MiB."""
    for keep_state in (True, False):
        with atomic_path(dest, overwrite=True) as tmp, tarfile.open(tmp, "w") as tar:
            for path in sorted(run_dir.rglob("*")):
                if path.is_file() and path.name not in SKIP_IN_TAR and (keep_state or path.name != "state.pt"):
                    tar.add(path, arcname=str(Path(run_dir.name) / path.relative_to(run_dir)))
        if dest.stat().st_size <= TAR_LIMIT:
            break
    return dest


if __name__ == "__main__":
    raise SystemExit(main())
