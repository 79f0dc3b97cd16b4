"""GPU continuation of the shipped DeFiAN-S weights, in one command of at most --minutes by construction.

Each scale in turn (x2, then x3 and x4) continues from its shipped file (``model.init``; with
``--finetune-from x2`` x3/x4 start from this run's x2 result instead, as the EDSR authors do) with
``sisr``'s own training engine: the recipe's L1, Adam, batch 16, LR patch 48, flips and rotations,
bf16 autocast + channels_last, T91 + BSD200 + General100 (never a test set), validated at the start
and every --val-every iterations on --val-set, a slice of BSD200 held out of training (default the
last ten images, BSD200:190-199; never a test set). A phase stops on the clock, not on an iteration
count: the wall-clock budget (--minutes, counted from the start of this script) is shared out between
the scales (--shares), and a phase ends at its deadline after the current iteration, with a
validation and a checkpoint (a trainer callback, ``PhaseClock``). The learning rate is halved at fixed
fractions of the phase's training time (--decay-at) through the trainer's schedule; the iterations
where that happened are recorded (the schedule's milestones, saved in the checkpoints).

After each phase, and every --export-every seconds during it, what matters is written to --out,
so that a command cut short loses at most the last minute:

* ``defian-s_x<s>.safetensors``: the candidate, packaged as the shipped files are (float16 after
  an output check, training facts and metrics in the metadata): the better on the validation set
  of the run's best validated and its last weights;
* ``defian-s-x<s>.tar``: the run folder (config, logs, the last checkpoint with the optimiser state)
  without its duplicate weights files, under 16 MiB;
* ``results.json``: per phase the iterations, it/s, validation PSNR before/after, the candidate and its source.

That is 7 files (an 8th, the log of the command, fits the device's limit of 8 files). The shipped
files in ``src/sisr/pretrained`` are never written: --out may not be inside that folder. Whoever
receives the candidates scores them on the CPU and replaces a shipped file only if the validation set
improves (Set5, Set14 and B100 are then reported, never used to choose).

    PYTHONPATH=src python scripts/gpu_train_defian_s.py --data .gpu-data --out $OUT --minutes 8.5
    python scripts/gpu_train_defian_s.py --dry-run --data DATASETS --out /tmp/gpu-train   # CPU, a few iterations

``--dry-run`` runs the same code on the CPU with a few iterations of batch 2 (the test does this).
Back on the CPU, ``--adopt`` scores the candidates that came back against the shipped files on the
validation set (--val-set) and replaces a shipped file only when its candidate is at least 0.01 dB better
(then evaluated on Set5, Set14 and B100 with and without self-ensemble and packaged with those metrics):

    .venv/bin/python scripts/gpu_train_defian_s.py --adopt FOLDER_BACK --dest src/sisr/pretrained --out runs/gpu-adopt
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import shutil
import statistics
import sys
import tarfile
import tempfile
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
try:
    import sisr  # noqa: F401
except ImportError:  # run from the source tree without PYTHONPATH=src
    sys.path.insert(0, str(REPO / "src"))

import torch  # noqa: E402

from sisr.errors import ConfigError, SisrError  # noqa: E402
from sisr.training import trainer as engine  # noqa: E402
from sisr.training.callbacks import Callback  # noqa: E402
from sisr.training.config import load_config  # noqa: E402
from sisr.training.log import read_log  # noqa: E402
from sisr.weights.loading import load_model  # noqa: E402
from sisr.utils.device import resolve_device  # noqa: E402
from sisr.utils.fs import atomic_path, atomic_write_text, check_outputs  # noqa: E402
from sisr.weights import load_weights  # noqa: E402
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


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300] if text else ''}"


class PhaseClock(Callback):
    """A trainer callback: ends the phase at its deadline (a clean stop: validation and checkpoint), halves the
    lr at fractions of the phase's training time (milestones of the trainer's schedule), and exports the best
    weights every ``export_every`` seconds."""

    def __init__(self, deadline: float, decay_at: list[float], export, export_every: float):
        self.deadline, self.decay_at = deadline, sorted(decay_at)
        self.export, self.export_every = export, export_every
        self.started: float | None = None
        self.fired = False
        self.milestones: list[int] = []
        self.last_export = time.monotonic()

    def on_fit_start(self, trainer) -> None:  # data ready: the clock of the schedule starts
        self.started = time.monotonic()

    def on_step_end(self, trainer, result) -> None:
        now = time.monotonic()
        span = max(self.deadline - self.started, 1e-9)
        passed = sum(1 for f in self.decay_at if now >= self.started + f * span)
        while len(self.milestones) < passed:  # halved from the next iteration on
            trainer.schedule.add_milestone(trainer.iteration)
            self.milestones.append(trainer.iteration)
        if now - self.last_export >= self.export_every:
            self.last_export = now
            self.export()

    def should_stop(self, trainer) -> str | None:
        if time.monotonic() >= self.deadline:
            self.fired = True
            return "the phase's deadline"
        return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=REPO.parent / "shared" / "datasets",
                   help="folder holding T91/BSD200/General100 HR (default ../shared/datasets)")
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
    p.add_argument("--val-set", default=VAL_SET,
                   help=f"validation: a slice of the training data, held out of it (default {VAL_SET}; never a test set)")
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
    if args.adopt:
        try:
            return adopt_candidates(args)
        except SisrError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    if args.dry_run:
        args.device, args.batch_size, args.patch_size, args.workers = "cpu", 2, 16, 0
        args.val_every, args.checkpoint_every, args.log_every = 2, 2, 1
        if args.max_iterations == p.get_default("max_iterations"):  # a larger one tests the stop on the clock
            args.max_iterations = 3
    args.minutes = args.minutes if args.minutes is not None else (1.5 if args.dry_run else 8.5)
    shares = args.shares or [2.0 if s == 2 else 1.0 for s in args.scales]
    try:
        return run(args, shares)
    except SisrError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def run(args, shares: list[float]) -> int:
    start = time.monotonic()
    end = start + args.minutes * 60
    if len(shares) != len(args.scales) or min(shares) <= 0:
        raise ConfigError(f"--shares: give one positive share per scale ({len(args.scales)})")
    out = args.out.resolve()
    if out == PRETRAINED_DIR.resolve() or PRETRAINED_DIR.resolve() in out.parents:
        raise ConfigError(f"--out {args.out}: inside the shipped weights folder; choose another folder")
    check_outputs(out, ["results.json"] + [n(s) for s in args.scales for n in (candidate_name, tar_name)],
                  args.overwrite)
    data = args.data
    hr = [str(data / s / "HR") for s in TRAINING_SETS if (data / s / "HR").is_dir()]
    if not hr:
        raise ConfigError(f"--data {data}: none of {', '.join(f'{s}/HR' for s in TRAINING_SETS)} found")
    for scale in args.scales:
        if (scale == 2 or args.finetune_from == "shipped") and not (args.init_dir / candidate_name(scale)).is_file():
            raise ConfigError(f"--init-dir {args.init_dir}: no {candidate_name(scale)} to continue")
    if args.finetune_from == "x2" and args.scales[0] != 2:
        raise ConfigError("--finetune-from x2: the scales must start with 2")
    device = resolve_device(args.device)
    work = args.work or Path(tempfile.mkdtemp(prefix="sisr-gpu-train-"))
    device_name = (torch.cuda.get_device_name(device) if device.type == "cuda"
                   else f"cpu ({torch.get_num_threads()} threads)")
    results = {"command": shlex.join([Path(sys.executable).name, *sys.argv]), "device": device_name,
               "torch": torch.__version__, "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
               "dry_run": args.dry_run, "minutes": args.minutes, "shares": dict(zip(args.scales, shares)),
               "training_data": hr, "work": str(work), "phases": {}}

    def save() -> None:
        results["elapsed_s"] = round(time.monotonic() - start, 1)
        atomic_write_text(out / "results.json", json.dumps(results, indent=2) + "\n", overwrite=True)

    save()
    for i, scale in enumerate(args.scales):
        left = sum(shares[i:])
        deadline = time.monotonic() + (end - time.monotonic() - POST_S * (len(args.scales) - i)) * shares[i] / left
        phase = results["phases"][scale] = {"status": "running", "deadline_in_s": round(deadline - time.monotonic(), 1)}
        save()
        try:
            if args.finetune_from == "x2" and scale != 2:
                weights = results["phases"].get(2, {}).get("candidate", {}).get("weights")
                if not weights:
                    raise SisrError("--finetune-from x2: the x2 phase left no candidate")
                init = Path(weights)
            else:
                init = args.init_dir / candidate_name(scale)
            train_phase(scale, init, deadline, hr, device, device_name, work, out, args, phase, save)
            phase["status"] = "ok"
        except Exception as exc:  # noqa: BLE001 - one failing scale must not cost the others
            traceback.print_exc()
            phase.update(status="failed", error=one_line(exc))
        save()
    print_summary(results)
    if args.work is None:  # our own temporary folder: what matters is in --out
        shutil.rmtree(work, ignore_errors=True)
    return 0 if all(ph["status"] == "ok" for ph in results["phases"].values()) else 1


def train_phase(scale: int, init: Path, deadline: float, hr: list[str], device: torch.device, device_name: str,
                work: Path, out: Path, args, phase: dict, save) -> None:
    run_dir = work / f"{MODEL}-x{scale}"
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
    cfg = load_config(MODEL, overrides)
    cfg.run_dir = str(run_dir)
    started = time.monotonic()
    training = {"data": hr, "val_set": args.val_set, "init": str(init), "device": device_name,
                "precision": args.precision, "channels_last": not args.no_channels_last, "compile": args.compile,
                "batch_size": args.batch_size, "patch_size": args.patch_size, "lr": args.lr,
                "command": shlex.join([Path(sys.executable).name, *sys.argv])}
    holder: dict = {}

    def export(final: bool = False) -> None:
        trainer = holder["trainer"]
        best = trainer.paths.best
        if best.is_file() and (final or phase.get("exported_mtime") != best.stat().st_mtime):
            try:
                phase["exported_mtime"] = best.stat().st_mtime
                package(best, scale, {**training, "iterations": trainer.iteration, "state": "in progress"},
                        {}, out)
                phase["candidate"] = {"source": "best (in progress)", "iteration": trainer.iteration}
                save()
            except Exception as exc:  # noqa: BLE001 - an export failing must not stop the training
                print(f"export x{scale}: {one_line(exc)}", file=sys.stderr)

    clock = PhaseClock(deadline, args.decay_at, export, args.export_every)
    trainer = holder["trainer"] = engine.Trainer(cfg, run_dir, callbacks=[clock])
    trainer.fit()  # the clock's stop is a clean one: fit() returns
    finish_phase(trainer, clock, scale, time.monotonic() - started, training, out, phase, save)


def finish_phase(trainer, clock: PhaseClock, scale: int, seconds: float, training: dict, out: Path, phase: dict,
                 save) -> None:
    """Record the phase, choose the candidate on the validation set, package it and archive the run."""
    log = read_log(trainer.paths.root)
    steps = [e for e in log if e.get("type") == "train"]
    rates = [e["it_per_s"] for e in steps[1:] if e.get("it_per_s")] or [e["it_per_s"] for e in steps]
    val = [{"iteration": e["iteration"], "psnr": e["psnr"]} for e in log if e.get("type") == "val"]
    phase.update(iterations=trainer.iteration, stopped_by="time" if clock.fired else "iterations",
                 seconds=round(seconds, 1), it_per_s_median=statistics.median(rates) if rates else None,
                 lr_milestones=list(trainer.schedule.milestones), val=val, loss_last=steps[-1]["loss"] if steps else None)
    save()
    # the candidate: the better on the validation set of the best validated weights and the last ones
    scored = {}
    for source, path in (("best", trainer.paths.best), ("latest", trainer.paths.latest)):
        if path.is_file():
            scores = trainer.validator(load_model(path, device=trainer.device))
            scored[source] = (path, scores["psnr"], scores["ssim"])
    if not scored:
        raise SisrError(f"{trainer.paths.root}: neither best nor latest weights were written")
    source, (path, psnr, ssim) = max(scored.items(), key=lambda kv: kv[1][1])
    init_val = val[0]["psnr"] if val and val[0]["iteration"] == 0 else None
    training.update(iterations=trainer.iteration, seconds=round(seconds, 1), milestones=list(clock.milestones),
                    source=source, val=val)
    packaged = package(path, scale, training, {trainer.cfg.val.set: {"psnr_y": psnr, "ssim_y": ssim}}, out)
    phase["candidate"] = {"file": packaged.name, "source": source, "weights": str(path), "iteration": trainer.iteration,
                          "val_psnr_y": psnr, "val_ssim_y": ssim, "scores": {k: v[1] for k, v in scored.items()},
                          "val_gain_db": None if init_val is None else psnr - init_val,
                          "improves_on_init": None if init_val is None else psnr - init_val >= MIN_GAIN_DB}
    phase.pop("exported_mtime", None)
    tar = archive(trainer.paths.root, out / tar_name(scale))
    phase["archive"] = {"file": tar.name, "bytes": tar.stat().st_size}
    print(f"x{scale}: {trainer.iteration} iterations in {seconds:.0f} s, {trainer.cfg.val.set} {psnr:.3f} dB "
          f"({source}; start {'n/a' if init_val is None else f'{init_val:.3f}'} dB) -> {packaged}", flush=True)


def package(weights: Path, scale: int, training: dict, metrics: dict, out: Path) -> Path:
    """The candidate in the shipped form, into ``out`` (replacing an earlier export of this run)."""
    return package_pretrained(weights, dest_dir=out, overwrite=True,
                              metadata={"training": training, "metrics": metrics})


def archive(run_dir: Path, dest: Path) -> Path:
    """The run folder without its duplicate weights files; without the optimiser state if over 16 MiB."""
    for keep_state in (True, False):
        with atomic_path(dest, overwrite=True) as tmp:
            with tarfile.open(tmp, "w") as tar:
                for path in sorted(run_dir.rglob("*")):
                    if path.is_file() and path.name not in SKIP_IN_TAR and (keep_state or path.name != "state.pt"):
                        tar.add(path, arcname=str(Path(run_dir.name) / path.relative_to(run_dir)))
        if dest.stat().st_size <= TAR_LIMIT:
            return dest
    return dest


def adopt_candidates(args) -> int:
    """Each candidate in ``args.adopt`` against the file of the same name in ``args.dest``, both scored on the
    validation set (``args.val_set``) here; one at least MIN_GAIN_DB better is evaluated on ``args.sets`` (with
    and without self-ensemble: reported, not chosen on) and packaged over it by ``scripts/ship_defian_s.py``'s
    ``evaluate_and_package``."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import ship_defian_s

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

        def score(path: Path) -> float:
            return validator(load_model(path, device=device))["psnr"]

        new = score(cand)
        old = score(shipped) if shipped.is_file() else None
        gain = None if old is None else new - old
        row = report["scales"][scale] = {"candidate_val": new, "shipped_val": old, "gain_db": gain,
                                         "adopted": old is None or gain >= MIN_GAIN_DB}
        print(f"x{scale}: {args.val_set} {new:.3f} dB, shipped {'none' if old is None else f'{old:.3f} dB'}"
              f"{'' if gain is None else f' ({gain:+.3f})'}: {'adopt' if row['adopted'] else 'keep the shipped file'}",
              flush=True)
        if row["adopted"]:
            ns = argparse.Namespace(data=str(args.data), sets=args.sets, out=str(args.out), dest=str(args.dest),
                                    overwrite=True)
            training = {**meta.get("training", {}), "adopted_from": str(cand), "replaced_val": old}
            row["metrics"], packaged = ship_defian_s.evaluate_and_package(cand, scale, training, command, ns, device)
            row["packaged"] = str(packaged)
    atomic_write_text(args.out / "adopt.json", json.dumps(report, indent=2) + "\n", overwrite=args.overwrite)
    return 0


def print_summary(results: dict) -> None:
    print("\n| scale | status | iterations | it/s | Set5 init (metadata) | validation candidate | source | gain dB |")
    print("|---|---|---:|---:|---:|---:|---|---:|")
    for scale, ph in results["phases"].items():
        cand = ph.get("candidate", {})
        fmt = lambda v, f: "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f.format(v)  # noqa: E731
        print(f"| x{scale} | {ph['status']}{' (' + ph['error'] + ')' if 'error' in ph else ''} | "
              f"{fmt(ph.get('iterations'), '{}')} | {fmt(ph.get('it_per_s_median'), '{:.2f}')} | "
              f"{fmt(ph.get('init_set5_psnr_y_metadata'), '{:.3f}')} | {fmt(cand.get('val_psnr_y'), '{:.3f}')} | "
              f"{cand.get('source', 'n/a')} | {fmt(cand.get('val_gain_db'), '{:+.3f}')} |")
    print(f"elapsed {results.get('elapsed_s')} s on {results['device']}")


if __name__ == "__main__":
    raise SystemExit(main())
