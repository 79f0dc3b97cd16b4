"""Training engine: ``sisr.train(config) -> run_dir``.

``train("defian-s")``, ``train("my.yaml", ["optim.lr=2e-4"], run_dir="runs/a")`` or
``train(Config(...))``. The loop is iteration-based:

* data: :mod:`sisr.data.training` (cached patch pairs, sampling a pure function of the seed
  and the sample index; ``train.batch_size`` is the global batch, split over DDP processes);
* step: forward under autocast (``train.precision`` bf16, or fp16 with a GradScaler), L1 (or
  MSE) loss in fp32, backward, optional gradient-norm clipping (``train.grad_clip``), Adam;
  the learning rate is ``optim.lr * gamma ** (number of decays passed)`` (``schedule``);
  a non-finite loss skips the step (warned and logged); ``train.max_nonfinite`` in a row stop
  the run; an optional EMA of the weights (``train.ema``) is updated after each step and is
  what gets validated and saved as ``best``;
* every ``log.every`` iterations a log record (JSONL, CSV, TensorBoard), every ``val.every`` a
  validation (Y PSNR/SSIM in the papers' convention on ``val.set``, default Set5 at the run's
  scale), every ``train.checkpoint_every`` a crash-safe checkpoint
  (:mod:`sisr.training.checkpoint`), and PNG curves in ``plots/``;
* nothing is written to the run directory before the run can start (config, model.init,
  validation set and training data all checked and loaded);
* an existing run directory with the same config (up to the keys in
  ``config.RESUME_SAFE``) and the same training images (fingerprint) is resumed from its last
  checkpoint: the weights after resuming equal those of an uninterrupted run (CPU, bitwise); a
  run directory without a committed checkpoint counts as empty. Ctrl-C / SIGTERM stop after the
  current iteration with a checkpoint and raise :class:`TrainingInterrupted`;
* under ``torchrun`` (``WORLD_SIZE`` > 1) the model is wrapped in DistributedDataParallel
  (NCCL on CUDA, gloo on CPU; BatchNorm becomes SyncBatchNorm on CUDA); rank 0 logs,
  validates and checkpoints.
"""

from __future__ import annotations

import math
import os
import random
import signal
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from ..errors import ConfigError, SisrError
from ..models import create_model, get_info
from ..utils.fs import atomic_write_text
from ..weights import save_weights
from .config import Config, load_config, read_yaml, resume_conflicts
from .checkpoint import (RunPaths, capture_rng, clean_run_dir, fingerprint_mismatch, load_checkpoint,
                         publish_latest, restore_rng, save_checkpoint, training_set_fingerprint)
from .log import RunLog, plot_runs, summary_writer_class, truncate_logs
from .step import EMA, StepResult, StopSignals, TrainStep, lr_factor, make_optimizer  # noqa: F401 (public here too)


class TrainingError(SisrError):
    """The run cannot go on (diverged, or its run directory does not fit)."""


class TrainingInterrupted(TrainingError):
    """SIGINT/SIGTERM stopped the run before ``train.iterations``; ``exit_code`` is 128 + the signal."""

    def __init__(self, run_dir: Path, iteration: int, signum: int | None, saved_at: int | None):
        self.run_dir, self.iteration, self.saved_at = run_dir, iteration, saved_at
        self.exit_code = 128 + int(signum or signal.SIGTERM)  # a DDP peer of the signalled process: SIGTERM
        if saved_at == iteration:
            state = "checkpoint saved"
        else:
            state = f"no checkpoint since iteration {saved_at}" if saved_at else "no checkpoint yet"
        super().__init__(f"interrupted at iteration {iteration} ({state}); resume with: "
                         f"sisr train --resume --run-dir {run_dir}")


def train(config: Config | Mapping[str, Any] | str | os.PathLike | None = None, overrides: Sequence[str] = (), *,
          run_dir: str | os.PathLike | None = None, resume: bool = False) -> Path:
    """Train (or resume) a model; return the run directory.

    ``config``: a Config, a mapping, a YAML file or a shipped recipe name; ``None`` with
    ``resume=True`` takes the config saved in ``run_dir``. ``resume=True`` requires an existing
    run; without it an existing run with the same config is resumed too.
    """
    if config is None:
        if not resume or run_dir is None:
            raise ConfigError("no config given (a recipe name or YAML file; or resume=True with run_dir)")
        saved = Path(run_dir) / "config.yaml"
        if not saved.is_file():
            raise ConfigError(f"{run_dir}: no run to resume (no config.yaml)")
        config = saved
    cfg = load_config(config, overrides)
    root = Path(run_dir or cfg.run_dir or Path("runs") / f"{cfg.model.name}-x{cfg.model.scale}")
    cfg.run_dir = str(root)
    trainer = Trainer(cfg, root, resume=resume)
    return trainer.fit()


# --------------------------------------------------------------------------- building blocks


def resolve_device(spec: str, local_rank: int = 0) -> torch.device:
    """``train.device`` as a torch device; a bare ``cuda`` is this process's GPU (``LOCAL_RANK``)."""
    from ..utils.device import resolve_device as resolve

    device = resolve(spec)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank % torch.cuda.device_count())
    return device


def load_init(model: torch.nn.Module, path: str | os.PathLike) -> tuple[int, list[str]]:
    """Copy the tensors of a weights file whose names and shapes fit; return (count, names left out).

    Any weights file: sisr safetensors or an official checkpoint (``.pt``/``.pth``, read by
    :func:`sisr.weights.official.read_checkpoint`: tensors only, never an arbitrary pickle).
    """
    from ..errors import WeightsError
    from ..weights.official import read_checkpoint

    path = Path(path)
    try:
        state = read_checkpoint(path)
    except WeightsError as exc:
        raise ConfigError(f"model.init: {exc}") from None
    own = model.state_dict()
    fits = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not fits:
        raise ConfigError(f"model.init: {path}: no tensor fits this model")
    model.load_state_dict(fits, strict=False)
    return len(fits), sorted(set(own) - set(fits))


# --------------------------------------------------------------------------- validation


class Validator:
    """Y PSNR/SSIM (papers' convention, shave = scale) of a network on one benchmark set."""

    def __init__(self, set_name: str, scale: int, *, root: str | None, degradation: str = "BI",
                 noise_level: float = 30.0, tile: int | None = None, device: torch.device):
        from ..data.benchmark import BenchmarkSet, DatasetError, default_roots, find_root
        from ..data.io import image_to_tensor
        from ..data.training import made_lr

        roots = [Path(root)] if root else default_roots()
        found = find_root([set_name], roots)
        if found is None:
            raise ConfigError(f"val.set: {set_name} not found in {', '.join(map(str, roots))} "
                              f"(set val.root=FOLDER, or val.every=0 to train without validation)")
        self.set_name, self.scale, self.tile, self.device = set_name, scale, tile, device
        try:
            bench = BenchmarkSet(found, set_name, scale, degradation=degradation, check_border=False)
            made = False
        except DatasetError:
            if degradation == "BI":
                raise
            bench = BenchmarkSet(found, set_name, scale, lr_source="resize", check_border=False)
            made = True
        self.items = []
        for item in bench:
            lr = item.lr
            if made:  # no prepared BD/DN files: degrade the HR as the training data is
                lr = made_lr(item.hr, scale, degradation, noise_level, item.hr_path.name)
            self.items.append((item.name, image_to_tensor(lr), image_to_tensor(item.hr)))
        self.source = f"{found / set_name} x{scale} {degradation}" + (" (LR made by sisr.data.degrade)" if made else "")

    def __call__(self, model: torch.nn.Module) -> dict[str, float]:
        from ..metrics import psnr_y_batch, ssim_y_batch
        from ..inference.forward import run

        psnrs, ssims = [], []
        for _, lr, hr in self.items:  # run() evaluates in eval mode and restores the mode
            sr = run(model, lr[None].to(self.device), tile=self.tile).float().cpu()
            psnrs.append(float(psnr_y_batch(sr, hr[None], shave=self.scale)[0]))
            ssims.append(float(ssim_y_batch(sr, hr[None], shave=self.scale)[0]))
        return {"psnr": float(np.mean(psnrs)), "ssim": float(np.mean(ssims))}


# --------------------------------------------------------------------------- the trainer


AUTO_COMPILE_MIN_ITERATIONS = 1000  # a CPU compile (14-208 s measured) is repaid within ~150 iterations
AUTO_COMPILE_MIN_PARAMETERS = 1_000_000  # a tiny EDSR baseline ran 0.32x compiled; every full recipe >= 1.03 M


def resolve_cpu_path(cfg: Config, device: torch.device, parameters: int) -> tuple[bool, bool]:
    """``(compile, channels_last)`` after the auto rules of ``train.compile`` / ``train.channels_last``.

    Measured on the CPU (docs/performance.md, Training): torch.compile 1.19x-3.32x faster per step for
    every full-size recipe but CSNLN (0.94x), yet 0.32x for a tiny EDSR baseline; channels_last without
    compile 0.93x-2.66x. So auto compiles CPU runs long enough to repay the compilation, of networks of
    at least a million parameters whose model allows it (``cpu_train_compile``), and otherwise uses
    channels_last on the CPU; on other devices both stay off unless asked for.
    """
    compile_ = cfg.train.compile
    if compile_ is None:
        compile_ = (device.type == "cpu" and cfg.train.iterations >= AUTO_COMPILE_MIN_ITERATIONS
                    and parameters >= AUTO_COMPILE_MIN_PARAMETERS and get_info(cfg.model.name).cpu_train_compile)
    channels_last = cfg.train.channels_last
    if channels_last is None:
        channels_last = device.type == "cpu" and not compile_
    return bool(compile_), bool(channels_last)


class Trainer:
    """Holds the state of one run; ``fit()`` trains to ``train.iterations``."""

    def __init__(self, cfg: Config, run_dir: str | os.PathLike, *, resume: bool = False):
        self.cfg = cfg
        self.paths = RunPaths(run_dir)
        self.rank, self.world_size, local_rank, self._own_group = _init_distributed(cfg.train.device)
        self.main = self.rank == 0
        if cfg.train.batch_size % self.world_size:
            raise ConfigError(f"train.batch_size: {cfg.train.batch_size} is not divisible by the "
                              f"{self.world_size} processes")
        self.device = resolve_device(cfg.train.device, local_rank)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
            torch.backends.cudnn.benchmark = True
        checkpoint = self._inspect_run_dir(resume)  # reads only: nothing is written before fit() starts
        if self.main:
            summary_writer_class(cfg.log.tensorboard)  # log.tensorboard=true without the package: now
        self.log: RunLog | None = None
        self.fingerprint: dict[str, Any] | None = None  # of the training images, set by _loader
        self._saved_fingerprint: dict[str, Any] | None = None
        self._committed = checkpoint[0] if checkpoint else None

        # model, optimizer, schedule (same seed everywhere: DDP also broadcasts rank 0's weights)
        random.seed(cfg.train.seed)
        np.random.seed(cfg.train.seed % 2**32)
        torch.manual_seed(cfg.train.seed)
        self.net = create_model(cfg.model.name, scale=cfg.model.scale, **cfg.model.hparams)
        if not any(p.requires_grad for p in self.net.parameters()):
            raise ConfigError(f"model.name: '{cfg.model.name}' has no trainable parameters")
        if cfg.model.init and checkpoint is None:
            count, left = load_init(self.net, cfg.model.init)
            self.say(f"initialised {count} tensors from {cfg.model.init}"
                     + (f"; {len(left)} left at their initial values ({', '.join(left[:4])}"
                        f"{', ...' if len(left) > 4 else ''})" if left else ""))
        self.net.to(self.device)
        compile_, channels_last = resolve_cpu_path(cfg, self.device, sum(p.numel() for p in self.net.parameters()))
        if cfg.train.compile is None and compile_:
            self.say("train.compile=auto: torch.compile on (a CPU run of >= "
                     f"{AUTO_COMPILE_MIN_ITERATIONS} iterations); the first step compiles (15 s to 3.5 min)")
        if channels_last:
            self.net.to(memory_format=torch.channels_last)
        self.optimizer = make_optimizer(cfg, [p for p in self.net.parameters() if p.requires_grad])
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda it: lr_factor(cfg.schedule, it))
        self.ema = EMA(self.net, cfg.train.ema) if cfg.train.ema and self.main else None
        self.iteration, self.best_psnr, self.best_iteration, self.nonfinite = 0, -math.inf, None, 0
        self.last_metrics: dict[str, Any] | None = None
        self._scaler_state: dict[str, Any] | None = None
        if checkpoint is not None:
            self._restore(checkpoint)

        forward = self.net
        if self.world_size > 1:
            from torch.nn.parallel import DistributedDataParallel

            if self.device.type == "cuda":
                forward = torch.nn.SyncBatchNorm.convert_sync_batchnorm(forward)
            forward = DistributedDataParallel(forward, device_ids=[self.device.index] if self.device.type == "cuda"
                                              else None)
        if compile_:
            forward = torch.compile(forward)
        self.net.train()
        self.step = TrainStep(forward, self.optimizer, device=self.device, precision=cfg.train.precision,
                              loss=cfg.train.loss, grad_clip=cfg.train.grad_clip,
                              channels_last=channels_last, world_size=self.world_size)
        if self.step.scaler is not None and self._scaler_state:
            self.step.scaler.load_state_dict(self._scaler_state)

        self.validator = None
        if self.main and (cfg.val.every or cfg.val.at_start):
            self.validator = Validator(cfg.val.set, cfg.model.scale, root=cfg.val.root,
                                       degradation=cfg.data.degradation, noise_level=cfg.data.noise_level,
                                       tile=cfg.val.tile, device=self.device)

    # ---- run directory and resume

    def _inspect_run_dir(self, resume: bool) -> tuple[int, Path] | None:
        """Check the run directory; the checkpoint to resume from, if any. Writes nothing.

        A sisr run directory without a committed checkpoint (a run that failed to start or stopped
        before its first checkpoint) counts as empty: it is started afresh, whatever its config.
        """
        cfg, paths = self.cfg, self.paths
        _barrier(self.world_size)
        existing = paths.config.is_file()
        occupied = paths.root.exists() and any(paths.root.iterdir())
        checkpoint = paths.latest_checkpoint() if existing else None
        _barrier(self.world_size)
        self._existing = existing
        if not existing:
            if resume:
                raise TrainingError(f"{paths.root}: no run to resume (no config.yaml)")
            if occupied:
                raise TrainingError(f"{paths.root}: exists and is not a sisr run (no config.yaml); "
                                    f"choose another run directory")
            return None
        if checkpoint is None:
            return None
        conflicts = resume_conflicts(read_yaml(paths.config), cfg.to_dict())
        if conflicts:
            shown = ", ".join(conflicts[:4]) + (", ..." if len(conflicts) > 4 else "")
            raise TrainingError(f"{paths.root}: holds a run with a different config ({shown}); "
                                f"choose another run directory (--run-dir)")
        return checkpoint

    def _open_run_dir(self) -> None:
        """Write the config, drop what an interrupted run left after its checkpoint, open the logs."""
        cfg, paths = self.cfg, self.paths
        if self.main:
            if self._existing and self._committed is None:
                self.say(f"{paths.root}: no checkpoint yet; starting the run afresh")
                paths.best.unlink(missing_ok=True)  # validated weights of the abandoned start
            paths.root.mkdir(parents=True, exist_ok=True)
            if not self._existing or read_yaml(paths.config) != cfg.to_dict():
                atomic_write_text(paths.config, cfg.to_yaml(), overwrite=True)
            if self._existing:
                clean_run_dir(paths, self._committed, cfg.train.keep_checkpoints)
                truncate_logs(paths.root, self._committed or 0)
                if self._committed is not None:
                    publish_latest(paths, paths.latest_checkpoint()[1])
            purge = None if not self._existing else (self._committed + 1 if self._committed is not None else 0)
            self.log = RunLog(paths.root, cfg.log.tensorboard, purge_step=purge)
        _barrier(self.world_size)

    def _restore(self, checkpoint: tuple[int, Path]) -> None:
        iteration, folder = checkpoint
        model_sd, ema_sd, state = load_checkpoint(folder)
        self.net.load_state_dict(model_sd, strict=True)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.ema is not None:
            if ema_sd is None:
                raise TrainingError(f"{folder}: no EMA weights to resume train.ema from")
            self.ema.module.load_state_dict(ema_sd, strict=True)
        self._scaler_state = state.get("scaler")
        restore_rng(state["rng"])
        if state["data"]["seed"] != self.cfg.train.seed or state["data"]["batch_size"] != self.cfg.train.batch_size:
            raise TrainingError(f"{folder}: data order of another seed or batch size")
        self._saved_fingerprint = state["data"].get("fingerprint")
        self.iteration = int(state["iteration"])
        self.best_psnr = state["best"]["psnr"] if state["best"]["psnr"] is not None else -math.inf
        self.best_iteration = state["best"]["iteration"]
        self.nonfinite = int(state["nonfinite"])
        self.say(f"resuming {self.paths.root} from iteration {self.iteration}")

    def _state(self) -> dict[str, Any]:
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.step.scaler.state_dict() if self.step.scaler else None,
            "rng": capture_rng(),
            "data": {"seed": self.cfg.train.seed, "batch_size": self.cfg.train.batch_size,
                     "samples_seen": self.iteration * self.cfg.train.batch_size, "fingerprint": self.fingerprint},
            "best": {"psnr": self.best_psnr if math.isfinite(self.best_psnr) else None,
                     "iteration": self.best_iteration},
            "nonfinite": self.nonfinite,
            "config": self.cfg.to_dict(),
        }

    def _weights_meta(self, metrics: Mapping[str, Any] | None = None) -> dict[str, Any]:
        cfg = self.cfg
        meta = {"training": {"iteration": self.iteration, "epoch": self.epoch, "config": cfg.to_dict()}}
        if metrics:
            meta["metrics"] = dict(metrics)
        return {"model": cfg.model.name, "scale": cfg.model.scale, "hparams": cfg.model.hparams, "metadata": meta}

    @property
    def epoch(self) -> float:
        return self.iteration / self.cfg.data.iterations_per_epoch

    def say(self, message: str) -> None:
        if self.main:
            tqdm.write(message, file=sys.stderr)

    # ---- data

    def _loader(self):
        from ..data.training import PatchDataset, make_loader, prepare_pairs

        cfg, data = self.cfg, self.cfg.data
        root = data.root
        kwargs = dict(root=root, lr_dir=data.lr, degradation=data.degradation, noise_level=data.noise_level,
                      cache_dir=data.cache_dir, allow_test_sets=data.allow_test_sets)
        if not self.main:
            _barrier(self.world_size)  # rank 0 decodes and caches first
        with warnings.catch_warnings():
            if not self.main:
                warnings.simplefilter("ignore")
            pairs = prepare_pairs(data.hr, cfg.model.scale, data.patch_size, report=self.main, **kwargs)
        if self.main:
            _barrier(self.world_size)
            self.say(f"training data: {len(pairs)} images from {', '.join(data.hr)} "
                     f"(LR: {data.lr or 'made on the fly, ' + data.degradation})")
        self._check_fingerprint(training_set_fingerprint(pairs))
        dataset = PatchDataset(pairs, cfg.model.scale, data.patch_size, seed=cfg.train.seed, augment=data.augment,
                               samples_per_epoch=data.iterations_per_epoch * cfg.train.batch_size)
        return make_loader(dataset, self.iteration, cfg.train.iterations, cfg.train.batch_size, rank=self.rank,
                           world_size=self.world_size, workers=data.workers,
                           pin_memory=self.device.type == "cuda")

    def _check_fingerprint(self, current: dict[str, Any]) -> None:
        """Refuse to resume on other training images (``data.root`` moves relative ``data.hr``)."""
        self.fingerprint = current
        if self._committed is None:
            return
        saved = self._saved_fingerprint
        if saved is None:
            self.say(f"note: the checkpoint of iteration {self._committed} predates training-set fingerprints; "
                     f"the training images are not checked")
            return
        problem = fingerprint_mismatch(saved, current)
        if problem:
            raise TrainingError(f"{self.paths.root}: the training images differ from those the run was trained on "
                                f"({problem}); data.hr and data.root must name the same images to resume")

    # ---- the loop

    def fit(self) -> Path:
        cfg = self.cfg
        try:
            if self.iteration >= cfg.train.iterations:
                self.say(f"{self.paths.root}: already trained to iteration {self.iteration}")
                if self.main:  # finish what an interruption after the last commit left undone
                    clean_run_dir(self.paths, self._committed, cfg.train.keep_checkpoints)
                    publish_latest(self.paths, self.paths.latest_checkpoint()[1])
                self._plots()
                return self.paths.root
            loader = self._loader()
            self._open_run_dir()
            if cfg.val.at_start and self.iteration == 0:
                self._validate()
            self._loop(loader)
            return self.paths.root
        finally:
            if self.log is not None:
                self.log.close()
            if self._own_group and dist.is_initialized():
                dist.destroy_process_group()

    def _loop(self, loader) -> None:
        cfg = self.cfg
        total = cfg.train.iterations
        bar = tqdm(total=total, initial=self.iteration, unit="it", dynamic_ncols=True, smoothing=0.05,
                   disable=None if self.main else True, desc=f"{cfg.model.name} x{cfg.model.scale}")
        window = _Window()
        started = time.perf_counter()
        stop = StopSignals()
        try:
            with stop:
                tick = time.perf_counter()
                for lr, hr in loader:
                    used_lr = self.optimizer.param_groups[0]["lr"]
                    result = self.step(lr, hr, stop=stop.requested)
                    self.iteration += 1
                    self.scheduler.step()
                    if result.stepped:
                        self.nonfinite = 0
                        if self.ema is not None:
                            self.ema.update(self.net)
                    else:
                        self._skipped(result.loss)
                    now = time.perf_counter()
                    window.add(result, now - tick, used_lr)
                    bar.update(1)
                    it = self.iteration
                    if it % cfg.log.every == 0 or it == total:
                        bar.set_postfix(loss=f"{window.loss():.4f}", lr=f"{window.lr:.2e}", refresh=False)
                        self._log_train(window, time.perf_counter() - started, bar.disable)
                        window = _Window()
                    if cfg.val.every and (it % cfg.val.every == 0 or it == total):
                        self._validate()
                    if it % cfg.train.checkpoint_every == 0 or it == total or result.stop:
                        self._checkpoint()
                    if result.stop:
                        break
                    tick = time.perf_counter()
        except KeyboardInterrupt:  # a second signal: at once, without a checkpoint
            raise TrainingInterrupted(self.paths.root, self.iteration, stop.signum, self._committed) from None
        finally:
            bar.close()
        if self.main and self.iteration == total:  # finished (a stop breaks off earlier)
            self.say(self._summary())
        self._plots()
        _barrier(self.world_size)
        if self.iteration < total:
            raise TrainingInterrupted(self.paths.root, self.iteration, stop.signum, self._committed)

    def _skipped(self, loss: float) -> None:
        self.nonfinite += 1
        limit = self.cfg.train.max_nonfinite
        message = (f"iteration {self.iteration}: non-finite loss or gradient (loss {loss}); step skipped "
                   f"({self.nonfinite} in a row, limit {limit})")
        if self.main:
            warnings.warn(message, RuntimeWarning, stacklevel=2)
            self.log.write({"type": "event", "iteration": self.iteration, "message": message})
        if self.nonfinite >= limit:
            latest = self.paths.latest_checkpoint()
            where = f"last checkpoint: iteration {latest[0]}" if latest else "no checkpoint yet"
            raise TrainingError(f"training diverged: {self.nonfinite} non-finite losses in a row at iteration "
                                f"{self.iteration} ({where}); try a lower optim.lr, train.grad_clip, or fp32")

    def _log_train(self, window: "_Window", elapsed: float, print_line: bool) -> None:
        if not self.main:
            return
        record = {"type": "train", "iteration": self.iteration, "epoch": round(self.epoch, 4),
                  "loss": window.loss(), "lr": window.lr,
                  "it_per_s": window.rate(), "elapsed_s": round(elapsed, 3), "skipped": window.skipped}
        self.log.write(record)
        if print_line:
            self.say(f"[{self.iteration}/{self.cfg.train.iterations}] epoch {self.epoch:.2f} "
                     f"loss {record['loss']:.5f} lr {record['lr']:.2e} {record['it_per_s']:.2f} it/s")

    def _validate(self) -> None:
        if not self.main or self.validator is None:
            return
        model = self.ema.module if self.ema is not None else self.net
        scores = self.validator(model)
        best = scores["psnr"] > self.best_psnr
        if best:
            self.best_psnr, self.best_iteration = scores["psnr"], self.iteration
        metrics = {"set": self.cfg.val.set, "scale": self.cfg.model.scale, **scores, "iteration": self.iteration,
                   "ema": self.ema is not None}
        self.log.write({"type": "val", "iteration": self.iteration, "epoch": round(self.epoch, 4),
                        "set": self.cfg.val.set, **scores, "best": best})
        self.say(f"[{self.iteration}] {self.cfg.val.set} x{self.cfg.model.scale}: PSNR {scores['psnr']:.3f} dB, "
                 f"SSIM {scores['ssim']:.4f}" + (" (best)" if best else f" (best {self.best_psnr:.3f} at "
                                                                         f"{self.best_iteration})"))
        self.last_metrics = metrics
        if best:
            save_weights(model, self.paths.best, overwrite=True, **self._weights_meta(metrics))
        if self.cfg.log.plots:
            self._plots()

    def _checkpoint(self) -> None:
        if self.main:
            self.log.sync()  # the records up to the checkpoint, durable before it is committed
            save_checkpoint(self.paths, self.iteration, model=self.net,
                            ema=self.ema.module if self.ema is not None else None, state=self._state(),
                            weights_meta=self._weights_meta(self.last_metrics),
                            keep=self.cfg.train.keep_checkpoints)
        self._committed = self.iteration

    def _plots(self) -> None:
        if self.main and self.cfg.log.plots and (self.paths.root / "log.jsonl").is_file():
            plot_runs([self.paths.root], self.paths.plots, overwrite=True)

    def _summary(self) -> str:
        best = (f"; best {self.cfg.val.set} PSNR {self.best_psnr:.3f} dB at iteration {self.best_iteration} "
                f"({self.paths.best})" if math.isfinite(self.best_psnr) else "")
        return f"done: {self.paths.root} (latest weights {self.paths.latest}){best}"


class _Window:
    """Losses and step times since the last log record."""

    def __init__(self):
        self.losses: list[float] = []
        self.seconds = 0.0
        self.steps = 0
        self.skipped = 0
        self.lr = math.nan  # learning rate of the last iteration

    def add(self, result: StepResult, seconds: float, lr: float) -> None:
        self.steps += 1
        self.lr = lr
        self.seconds += seconds
        if result.stepped:
            self.losses.append(result.loss)
        else:
            self.skipped += 1

    def loss(self) -> float:
        return float(np.mean(self.losses)) if self.losses else math.nan

    def rate(self) -> float:
        return round(self.steps / self.seconds, 4) if self.seconds > 0 else math.nan


# --------------------------------------------------------------------------- distributed


def _init_distributed(device_spec: str) -> tuple[int, int, int, bool]:
    """``(rank, world size, local rank, whether this call created the process group)``."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    created = False
    if world > 1 and not dist.is_initialized():
        use_nccl = torch.cuda.is_available() and not device_spec.startswith(("cpu", "mps"))
        dist.init_process_group(backend="nccl" if use_nccl else "gloo")
        created = True
    if dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
    else:
        rank, world = 0, 1
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    return rank, world, local_rank, created


def _barrier(world_size: int) -> None:
    if world_size > 1 and dist.is_initialized():
        dist.barrier()
