"""GPU continuation of the shipped DeFiAN-S weights, in one command of at most --minutes by construction.

Each scale in turn continues its shipped file with the training engine (the recipe, bf16 + channels_last, T91 +
BSD200 + General100, validated on --val-set, a slice of BSD200 held out of training, never a test set), sharing the
budget between the scales; a trainer callback (``PhaseClock``) stops each phase at its deadline and halves the learning
rate at fractions of its time. Written to --out, after each phase and every --export-every seconds: the candidates
``defian-s_x<s>.safetensors`` (packaged as the shipped files), the run folders ``defian-s-x<s>.tar`` (under 16 MiB) and
``results.json``; never into src/sisr/pretrained. Back on the CPU, ``--adopt`` replaces a shipped file only when its
candidate is at least 0.01 dB better on --val-set (then scores it on --sets). docs/performance.md, "GPU runs".

    PYTHONPATH=src python scripts/gpu_train_defian_s.py --data .gpu-data --out $OUT --minutes 8.5
    python scripts/gpu_train_defian_s.py --dry-run --data DATASETS --out /tmp/gpu-train   # CPU, a few iterations
    .venv/bin/python scripts/gpu_train_defian_s.py --adopt FOLDER_BACK --dest src/sisr/pretrained --out runs/gpu-adopt
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
from sisr.evaluation.protocol import weights_metrics  # noqa: E402
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
MIN_GAIN_DB = 0.01  # an improvement is at least what the results tables show (two decimals)
POST_S = 25.0  # seconds kept after each phase for scoring its candidates, packaging and tar
TAR_LIMIT = 16 * 2**20  # the largest file the device machine sends back
SKIP_IN_TAR = {"best.safetensors", "latest.safetensors", "latest_ema.safetensors"}  # copies of checkpoint files


def candidate_name(scale: int) -> str:
    return f"{MODEL}_x{scale}.safetensors"


def tar_name(scale: int) -> str:
    return f"{MODEL}-x{scale}.tar"


class PhaseClock(Callback):
    """Ends the phase at its deadline (a clean stop: validation and checkpoint), halves the lr at fractions of the
    phase's training time (milestones of the trainer's schedule), exports the best weights every ``export_every`` s."""

    def __init__(self, deadline: float, decay_at: list[float], export, export_every: float):
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
    p.add_argument("--out", type=Path, required=True,
                   help="candidates, run archives and results.json (--adopt: adopt.json and evaluations)")
    p.add_argument("--work", type=Path, help="run folders (default: a temporary folder, removed at the end)")
    p.add_argument("--init-dir", type=Path, default=PRETRAINED_DIR,
                   help="the weights to continue, defian-s_x<s>.safetensors (default: the shipped ones)")
    p.add_argument("--scales", type=int, nargs="+", default=[2, 3, 4])
    p.add_argument("--minutes", type=float, help="wall-clock budget of the whole command (default 8.5; dry run 1.5)")
    p.add_argument("--shares", type=float, nargs="+", help="time share of each scale (default 2 1 1)")
    p.add_argument("--finetune-from", choices=["shipped", "x2"], default="shipped",
                   help="init of x3/x4: their shipped files, or this run's x2 result (default shipped)")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--decay-at", type=float, nargs="*", default=[0.6, 0.85],
                   help="fractions of a phase's training time at which the lr is halved")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--patch-size", type=int, default=48, help="LR patch side")
    p.add_argument("--precision", choices=["bf16", "fp32"], default="bf16")
    p.add_argument("--no-channels-last", action="store_true")
    p.add_argument("--compile", action="store_true", help="torch.compile the training forward")
    p.add_argument("--workers", type=int, default=6, help="data loader processes")
    p.add_argument("--val-every", type=int, default=1000)
    p.add_argument("--val-set", default=VAL_SET, help=f"a slice held out of the training data (default {VAL_SET})")
    p.add_argument("--checkpoint-every", type=int, default=1000)
    p.add_argument("--log-every", type=int, default=100)
    p.add_argument("--max-iterations", type=int, default=200_000, help="per phase; the clock ends it first")
    p.add_argument("--export-every", type=float, default=90.0, help="seconds between exports of the best weights")
    p.add_argument("--device", default="cuda")
    p.add_argument("--dry-run", action="store_true",
                   help="CPU, batch 2, LR patch 16, 3 iterations per phase (unless --max-iterations): the code path")
    p.add_argument("--overwrite", action="store_true", help="replace results already in --out")
    adopt = p.add_argument_group("adopting the candidates (on the CPU, after the GPU run)")
    adopt.add_argument("--adopt", type=Path, metavar="DIR",
                       help="score the candidates a GPU run wrote to DIR on --val-set; package the better into --dest")
    adopt.add_argument("--dest", type=Path, help="the folder of the files to replace (src/sisr/pretrained to ship)")
    adopt.add_argument("--sets", nargs="+", default=["Set5", "Set14", "B100"], help="sets of an adopted file's metrics")
    args = p.parse_args(argv)
    if args.dry_run:
        args.device, args.batch_size, args.patch_size, args.workers = "cpu", 2, 16, 0
        args.val_every = args.checkpoint_every = 2
        args.log_every = 1
        if args.max_iterations == p.get_default("max_iterations"):  # a larger one tests the stop on the clock
            args.max_iterations = 3
    args.minutes = args.minutes if args.minutes is not None else (1.5 if args.dry_run else 8.5)
    args.shares = args.shares or [2.0 if s == 2 else 1.0 for s in args.scales]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return adopt_candidates(args) if args.adopt else run(args)
    except SisrError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def check_run(args) -> list[str]:
    """The training folders to read (a one-line ConfigError for each mistake before anything runs)."""
    if len(args.shares) != len(args.scales) or min(args.shares) <= 0:
        raise ConfigError(f"--shares: give one positive share per scale ({len(args.scales)})")
    out = args.out.resolve()
    if out == PRETRAINED_DIR.resolve() or PRETRAINED_DIR.resolve() in out.parents:
        raise ConfigError(f"--out {args.out}: inside the shipped weights folder; choose another folder")
    check_outputs(out, ["results.json"] + [n(s) for s in args.scales for n in (candidate_name, tar_name)],
                  args.overwrite)
    hr = [str(args.data / s / "HR") for s in TRAINING_SETS if (args.data / s / "HR").is_dir()]
    if not hr:
        raise ConfigError(f"--data {args.data}: none of {', '.join(f'{s}/HR' for s in TRAINING_SETS)} found")
    for scale in args.scales:
        if (scale == 2 or args.finetune_from == "shipped") and not (args.init_dir / candidate_name(scale)).is_file():
            raise ConfigError(f"--init-dir {args.init_dir}: no {candidate_name(scale)} to continue")
    if args.finetune_from == "x2" and args.scales[0] != 2:
        raise ConfigError("--finetune-from x2: the scales must start with 2")
    return hr


def run(args) -> int:
    start = time.monotonic()
    end, hr = start + args.minutes * 60, check_run(args)
    device = resolve_device(args.device)
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
            init = args.init_dir / candidate_name(scale)
            if args.finetune_from == "x2" and scale != 2:
                init = results["phases"].get(2, {}).get("candidate", {}).get("weights")
                if not init:
                    raise SisrError("--finetune-from x2: the x2 phase left no candidate")
            train_phase(scale, Path(init), deadline, hr, device, work, args, phase, save)
            phase["status"] = "ok"
        except Exception as exc:  # noqa: BLE001 - one failing scale must not cost the others
            traceback.print_exc()
            phase.update(status="failed", error=common.one_line(exc))
        save()
    print_summary(results)
    if args.work is None:  # our own temporary folder: what matters is in --out
        shutil.rmtree(work, ignore_errors=True)
    return 0 if all(ph["status"] == "ok" for ph in results["phases"].values()) else 1


def train_phase(scale: int, init: Path, deadline: float, hr: list[str], device, work: Path, args, phase: dict,
                save) -> None:
    overrides = [f"model.scale={scale}", f"model.init={init}", f"data.hr=[{', '.join(hr)}]",
                 f"data.patch_size={args.patch_size}", f"data.workers={args.workers}", f"val.root={args.data}",
                 f"val.set={args.val_set}", f"val.every={args.val_every}", "val.at_start=true", f"optim.lr={args.lr}",
                 "schedule.step=null", "schedule.milestones=[]", "schedule.gamma=0.5",
                 f"train.iterations={args.max_iterations}", f"train.batch_size={args.batch_size}",
                 f"train.checkpoint_every={args.checkpoint_every}", f"train.device={device}",
                 f"train.precision={args.precision}", f"train.channels_last={str(not args.no_channels_last).lower()}",
                 f"train.compile={str(args.compile).lower()}", f"log.every={args.log_every}", "log.plots=false",
                 "log.tensorboard=false"]
    init_set5 = ((load_weights(init)[1].get("metrics") or {}).get("Set5") or {}).get("psnr_y")  # reported only
    phase.update(init=str(init), init_set5_psnr_y_metadata=init_set5, overrides=overrides)
    cfg, run_dir = load_config(MODEL, overrides), work / f"{MODEL}-x{scale}"
    cfg.run_dir = str(run_dir)
    started = time.monotonic()
    training = {"data": hr, "val_set": args.val_set, "init": str(init), "device": device_name(device),
                "precision": args.precision, "channels_last": not args.no_channels_last, "compile": args.compile,
                "batch_size": args.batch_size, "patch_size": args.patch_size, "lr": args.lr,
                "command": shlex.join([Path(sys.executable).name, *sys.argv])}

    def export() -> None:
        best = trainer.paths.best
        if best.is_file() and phase.get("exported_mtime") != best.stat().st_mtime:
            try:
                phase["exported_mtime"] = best.stat().st_mtime
                package(best, {**training, "iterations": trainer.iteration, "state": "in progress"}, {}, args.out)
                phase["candidate"] = {"source": "best (in progress)", "iteration": trainer.iteration}
                save()
            except Exception as exc:  # noqa: BLE001 - an export failing must not stop the training
                print(f"export x{scale}: {common.one_line(exc)}", file=sys.stderr)

    clock = PhaseClock(deadline, args.decay_at, export, args.export_every)
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
    packaged = package(path, training, {trainer.cfg.val.set: {"psnr_y": psnr, "ssim_y": scores["ssim"]}}, out)
    phase["candidate"] = {"file": packaged.name, "source": source, "weights": str(path), "iteration": trainer.iteration,
                          "val_psnr_y": psnr, "val_ssim_y": scores["ssim"],
                          "scores": {k: v[1]["psnr"] for k, v in scored.items()},
                          "val_gain_db": None if init_val is None else psnr - init_val,
                          "improves_on_init": None if init_val is None else psnr - init_val >= MIN_GAIN_DB}
    phase.pop("exported_mtime", None)
    tar = archive(trainer.paths.root, out / tar_name(scale))
    phase["archive"] = {"file": tar.name, "bytes": tar.stat().st_size}
    print(f"x{scale}: {trainer.iteration} iterations in {seconds:.0f} s, {trainer.cfg.val.set} {psnr:.3f} dB "
          f"({source}; start {common.fmt(init_val, '{:.3f}')} dB) -> {packaged}", flush=True)


def package(weights: Path, training: dict, metrics: dict, out: Path) -> Path:
    """The candidate in the shipped form, into ``out`` (replacing an earlier export of this run)."""
    return package_pretrained(weights, dest_dir=out, overwrite=True,
                              metadata={"training": training, "metrics": metrics})


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


def adopt_candidates(args) -> int:
    """Each candidate in ``args.adopt`` against the file of the same name in ``args.dest``, both scored on the
    validation set here; one at least MIN_GAIN_DB better is scored on ``args.sets`` (plain and self-ensembled:
    reported, not chosen on) and packaged over it."""
    if args.dest is None:
        raise ConfigError("--adopt: give --dest, the folder whose files a better candidate replaces")
    candidates = sorted(args.adopt.glob(f"{MODEL}_x*.safetensors"))
    if not candidates:
        raise ConfigError(f"--adopt {args.adopt}: no {MODEL}_x<s>.safetensors")
    check_outputs(args.out, ["adopt.json"], args.overwrite)
    device = resolve_device("cpu" if args.device == "cuda" and not torch.cuda.is_available() else args.device)
    command = shlex.join([Path(sys.executable).name, *sys.argv])
    report = {"command": command, "candidates": str(args.adopt), "dest": str(args.dest), "val_set": args.val_set,
              "min_gain_db": MIN_GAIN_DB, "scales": {}}
    for cand in candidates:
        meta = load_weights(cand)[1]
        scale, shipped = int(meta["scale"]), args.dest / cand.name
        validator = engine.Validator(args.val_set, scale, root=str(args.data), device=device)
        new = validator(load_model(cand, device=device))["psnr"]
        old = validator(load_model(shipped, device=device))["psnr"] if shipped.is_file() else None
        gain = None if old is None else new - old
        row = report["scales"][scale] = {"candidate_val": new, "shipped_val": old, "gain_db": gain,
                                         "adopted": old is None or gain >= MIN_GAIN_DB}
        print(f"x{scale}: {args.val_set} {new:.3f} dB, shipped {common.fmt(old, '{:.3f} dB')}"
              f"{common.fmt(gain, ' ({:+.3f})') if gain is not None else ''}: "
              f"{'adopt' if row['adopted'] else 'keep the shipped file'}", flush=True)
        if row["adopted"]:
            row["metrics"] = weights_metrics(cand, data_root=args.data, datasets=args.sets, scale=scale, device=device,
                                             out_dir=args.out, overwrite=True)
            training = {**meta.get("training", {}), "adopted_from": str(cand), "replaced_val": old}
            row["packaged"] = str(package_pretrained(cand, dest_dir=args.dest, overwrite=True, metadata={
                "training": training, "metrics": row["metrics"], "command": command}))
    atomic_write_text(args.out / "adopt.json", json.dumps(report, indent=2) + "\n", overwrite=args.overwrite)
    return 0


def print_summary(results: dict) -> None:
    fmt = common.fmt
    print("\n" + "\n".join(common.md_table(
        ["scale", "status", "iterations", "it/s", "Set5 init (metadata)", "validation candidate", "source", "gain dB"],
        [[f"x{scale}", ph["status"] + (f" ({ph['error']})" if "error" in ph else ""), fmt(ph.get("iterations"), "{}"),
          fmt(ph.get("it_per_s_median")), fmt(ph.get("init_set5_psnr_y_metadata"), "{:.3f}"),
          fmt(ph.get("candidate", {}).get("val_psnr_y"), "{:.3f}"), ph.get("candidate", {}).get("source", "n/a"),
          fmt(ph.get("candidate", {}).get("val_gain_db"), "{:+.3f}")] for scale, ph in results["phases"].items()])))
    print(f"elapsed {results.get('elapsed_s')} s on {results['device']}")


if __name__ == "__main__":
    raise SystemExit(main())
