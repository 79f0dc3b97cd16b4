"""Training engine: ``sisr.train(config) -> run_dir``.

``train("defian-s")``, ``train("my.yaml", ["optim.lr=2e-4"], run_dir="runs/a")`` or
``train(Config(...))``. The loop is iteration-based:

* parts: :func:`sisr.training.parts.build_training_parts` (model, optimizer, schedule, loss, data);
* data: :mod:`sisr.data.training` (cached patch pairs, sampling a pure function of the seed
  and the sample index; ``train.batch_size`` is the global batch, split over DDP processes and,
  with ``train.accumulate``, into micro-batches); a validation slice (``val.set=DIV2K:801-810``)
  is held out of training, a test set refused (:mod:`sisr.data.splits`);
* step: forward under autocast (``train.precision`` bf16, or fp16 with a GradScaler), the loss of
  ``train.loss`` in fp32 (:mod:`sisr.training.losses`), backward, optional gradient-norm clipping
  (``train.grad_clip``), Adam; the learning rate follows ``parts.schedule``; a non-finite loss skips the
  step (warned and logged); ``train.max_nonfinite`` in a row stop the run; an optional EMA of the
  weights (``train.ema``) is what gets validated and saved as ``best``. The step's values are read
  two iterations later (no host wait per step);
* every ``log.every`` iterations a log record (JSONL, CSV, TensorBoard), every ``val.every`` a
  validation (Y PSNR/SSIM in the papers' convention on ``val.set`` at the run's scale), every
  ``train.checkpoint_every`` a crash-safe checkpoint (:mod:`sisr.training.checkpoint`), PNG curves
  in ``plots/``, the environment in ``env.json``;
* callbacks (:mod:`sisr.training.callbacks`): hooks at each step, validation, and stop conditions
  (``train.time_limit_s``) that end the run cleanly with a checkpoint;
* nothing is written to the run directory before the run can start (config, model.init,
  validation set and training data all checked and loaded);
* an existing run directory whose checkpoint was trained with the same config (up to the keys in
  ``config.RESUME_SAFE``) and the same training images (fingerprint) is resumed from its last
  checkpoint (the newest complete one when ``latest.json`` is missing): the weights after resuming
  equal those of an uninterrupted run (CPU, bitwise); ``--resume`` never starts afresh. Ctrl-C /
  SIGTERM stop after the current iteration with a checkpoint and raise :class:`TrainingInterrupted`;
* under ``torchrun`` (``WORLD_SIZE`` > 1) each process of a node first prepares its share of the
  training images, then the process group starts (timeout ``train.dist_timeout_s``) and the model is
  wrapped in DistributedDataParallel (NCCL on CUDA, gloo on CPU; BatchNorm becomes SyncBatchNorm on
  CUDA); rank 0 logs, validates and checkpoints; on CUDA batches reach the GPU through a prefetcher;
* at the end, the selected weights are scored once on the test sets (:mod:`sisr.training.scoring`).
"""

from __future__ import annotations

import collections
import math
import os
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
from ..utils.distributed import init_from_env
from ..utils.fs import atomic_write_text, check_output_dir
from ..weights import save_weights
from .callbacks import Callback, TimeLimit
from .config import Config, describe_changes, load_config, normalised, read_yaml, resume_conflicts
from .checkpoint import (RunPaths, capture_rng, clean_run_dir, commit, fingerprint_mismatch, load_checkpoint,
                         publish_latest, restore_rng, save_checkpoint, training_set_fingerprint)
from .log import RunLog, plot_runs, summary_writer_class, truncate_logs
from .prefetch import prefetch
from .scoring import find_test_sets, score_run, scored_at
from .parts import (AUTO_COMPILE_MIN_ITERATIONS, AUTO_COMPILE_MIN_PARAMETERS, build_training_parts,  # noqa: F401
                    resolve_cpu_path)
from .step import (EMA, StepResult, StopSignals, TrainStep, load_optimizer_state, lr_factor,  # noqa: F401
                   make_optimizer, set_tf32)

RESULT_LAG = 2  # iterations between a step and the reading of its values (the device runs ahead)


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
          run_dir: str | os.PathLike | None = None, resume: bool = False,
          callbacks: Sequence[Callback] = ()) -> Path:
    """Train (or resume) a model; return the run directory.

    ``config``: a Config, a mapping, a YAML file or a shipped recipe name; ``None`` with
    ``resume=True`` takes the config saved in ``run_dir``. ``resume=True`` requires an existing
    run with a checkpoint; without it an existing run with the same config is resumed too.
    ``callbacks``: :class:`sisr.training.callbacks.Callback` objects.
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
    trainer = Trainer(cfg, root, resume=resume, callbacks=callbacks)
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
    """Y PSNR/SSIM (papers' convention, shave = scale) of a network on a validation set.

    ``validation``: a resolved ``val.set`` (:func:`sisr.data.splits.resolve_val_set`); without it ``set_name``
    is resolved under ``root``. A benchmark-layout set uses its LR files when present; a folder or a slice
    has its LR made from the mod-cropped HR (``sisr.data.degrade``, the training's fixed-per-image noise for DN).
    """

    def __init__(self, set_name: str, scale: int, *, root: str | None = None, degradation: str = "BI",
                 noise_level: float = 30.0, tile: int | None = None, device: torch.device, validation=None):
        from ..data.splits import ValSetError, resolve_val_set

        if validation is None:
            try:
                validation = resolve_val_set(set_name, val_root=root)
            except ValSetError as exc:
                raise ConfigError(f"val.set: {exc}") from None
        self.set_name, self.scale, self.tile, self.device = set_name, scale, tile, device
        if validation.bench_root is not None:
            self.items, self.source = _benchmark_items(validation.bench_root, validation.name, scale, degradation,
                                                       noise_level)
        else:
            self.items = [_file_item(path, scale, degradation, noise_level) for path in validation.files]
            self.source = (f"{validation.label}: {len(self.items)} images of {validation.source} x{scale} "
                           f"{degradation} (LR made by sisr.data.degrade)")

    def __call__(self, model: torch.nn.Module) -> dict[str, float]:
        from ..metrics import psnr_y_batch, ssim_y_batch
        from ..inference.forward import run

        psnrs, ssims = [], []
        for _, lr, hr in self.items:  # run() evaluates in eval mode and restores the mode
            sr = run(model, lr[None].to(self.device), tile=self.tile).float().cpu()
            psnrs.append(float(psnr_y_batch(sr, hr[None], shave=self.scale)[0]))
            ssims.append(float(ssim_y_batch(sr, hr[None], shave=self.scale)[0]))
        return {"psnr": float(np.mean(psnrs)), "ssim": float(np.mean(ssims))}


def _benchmark_items(root: Path, name: str, scale: int, degradation: str, noise_level: float):
    from ..data.benchmark import BenchmarkSet, DatasetError
    from ..data.io import image_to_tensor
    from ..data.training import made_lr

    try:
        bench, made = BenchmarkSet(root, name, scale, degradation=degradation, check_border=False), False
    except DatasetError:
        if degradation == "BI":
            raise
        bench, made = BenchmarkSet(root, name, scale, lr_source="resize", check_border=False), True
    items = []
    for item in bench:
        lr = item.lr
        if made:  # no prepared BD/DN files: degrade the HR as the training data is
            lr = made_lr(item.hr, scale, degradation, noise_level, item.hr_path.name)
        items.append((item.name, image_to_tensor(lr), image_to_tensor(item.hr)))
    source = f"{root / name} x{scale} {degradation}" + (" (LR made by sisr.data.degrade)" if made else "")
    return items, source


def _file_item(path: Path, scale: int, degradation: str, noise_level: float):
    from ..data.degrade import modcrop, to_rgb
    from ..data.io import image_to_tensor, read_image
    from ..data.training import made_lr
    from ..metrics import ssim_size_problem

    hr = to_rgb(read_image(path))
    h, w = (n - n % scale for n in hr.shape[:2])  # modcropped; validation shaves a scale-wide border
    if problem := ssim_size_problem(h, w, scale):  # before training, not at the first validation (updates lost)
        raise ConfigError(f"val.set: {path}: {hr.shape[1]}x{hr.shape[0]} is too small to validate at x{scale} "
                          f"({problem})")
    hr = np.ascontiguousarray(modcrop(hr, scale))
    lr = made_lr(hr, scale, degradation, noise_level, path.name)
    return path.stem, image_to_tensor(lr), image_to_tensor(hr)


# --------------------------------------------------------------------------- the trainer


class Trainer:
    """Holds the state of one run; ``fit()`` trains to ``train.iterations`` (or until a callback stops it)."""

    def __init__(self, cfg: Config, run_dir: str | os.PathLike, *, resume: bool = False,
                 callbacks: Sequence[Callback] = ()):
        self.cfg = cfg
        self.paths = RunPaths(run_dir)
        self.shared = prepare_own_share(cfg)  # under torchrun: before the process group, so no rank waits on it
        self.rank, self.world_size, local_rank, self._own_group = init_from_env(cfg.train.device,
                                                                                cfg.train.dist_timeout_s)
        self.main = self.rank == 0
        if self._own_group and self.main:
            self.say(f"process group: {dist.get_backend()}, {self.world_size} processes, timeout "
                     f"{cfg.train.dist_timeout_s:g} s (train.dist_timeout_s: its start, barriers and collectives, "
                     f"e.g. while rank 0 validates or checkpoints)")
        _check_batch(cfg, self.world_size)
        self.device = resolve_device(cfg.train.device, local_rank)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
            torch.backends.cudnn.benchmark = True
            set_tf32(cfg.train.tf32)
        checkpoint = self._inspect_run_dir(resume)  # reads only: nothing is written before fit() starts
        if self.main:
            summary_writer_class(cfg.log.tensorboard)  # log.tensorboard=true without the package: now
        self.log: RunLog | None = None
        self.fingerprint: dict[str, Any] | None = None  # of the training images, set by _loader
        self._saved_fingerprint: dict[str, Any] | None = None
        self._committed = checkpoint[0] if checkpoint else None
        self.callbacks = list(callbacks) + ([TimeLimit(cfg.train.time_limit_s)] if cfg.train.time_limit_s else [])
        self.stop_reason: str | None = None  # why a callback ended the run early
        self.test_sets = find_test_sets(cfg)  # scored once at the end by rank 0; a missing named set: an error now
        self._build(checkpoint)

    def _build(self, checkpoint: tuple[int, Path] | None) -> None:
        cfg = self.cfg
        self.parts = build_training_parts(cfg, self.device)
        self.net, self.optimizer = self.parts.model, self.parts.optimizer
        self.schedule, self.scheduler = self.parts.schedule, self.parts.scheduler
        if cfg.model.init and checkpoint is None:
            count, left = load_init(self.net, cfg.model.init)
            self.say(f"initialised {count} tensors from {cfg.model.init}"
                     + (f"; {len(left)} left at their initial values ({', '.join(left[:4])}"
                        f"{', ...' if len(left) > 4 else ''})" if left else ""))
        if cfg.train.compile is None and self.parts.compile:
            self.say("train.compile=auto: torch.compile on (a CPU run of >= "
                     f"{AUTO_COMPILE_MIN_ITERATIONS} iterations); the first step compiles (15 s to 3.5 min)")
        self.ema = EMA(self.net, cfg.train.ema) if cfg.train.ema and self.main else None
        self.iteration, self.best_psnr, self.best_iteration, self.nonfinite = 0, -math.inf, None, 0
        self.last_metrics: dict[str, Any] | None = None
        scaler_state = self._restore(checkpoint) if checkpoint is not None else None
        forward, ddp = self._forward()
        self.step = self.parts.make_step(forward, world_size=self.world_size, ddp=ddp)
        if self.step.scaler is not None and scaler_state:
            self.step.scaler.load_state_dict(scaler_state)
        self.net.train()
        self.validator = self._make_validator()

    def _forward(self) -> tuple[torch.nn.Module | None, Any]:
        """``(forward, ddp)``: the module the step calls (DDP and/or compiled; None: the plain model, compiled
        when chosen) and the DDP wrapper (its ``no_sync`` for gradient accumulation)."""
        if self.world_size == 1:
            return None, None
        from torch.nn.parallel import DistributedDataParallel

        forward = self.net
        if self.device.type == "cuda":
            forward = torch.nn.SyncBatchNorm.convert_sync_batchnorm(forward)
        ddp = DistributedDataParallel(forward, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        return (torch.compile(ddp) if self.parts.compile else ddp), ddp

    def _make_validator(self) -> Validator | None:
        cfg = self.cfg
        if not self.main or not (cfg.val.every or cfg.val.at_start):
            return None
        validation = self.parts.data.validation
        if validation is None:
            self.say("no validation set (val.set): nothing is validated and no best.safetensors is written; "
                     "name held-out images, e.g. val.set=DIV2K:801-810")
            return None
        return Validator(cfg.val.set, cfg.model.scale, root=cfg.val.root, degradation=cfg.data.degradation,
                         noise_level=cfg.data.noise_level, tile=cfg.val.tile, device=self.device,
                         validation=validation)

    # ---- run directory and resume

    def _inspect_run_dir(self, resume: bool) -> tuple[int, Path] | None:
        """Check the run directory; the checkpoint to resume from, if any. Writes nothing.

        A sisr run directory without any complete checkpoint (a run that failed to start or stopped before
        its first checkpoint) counts as empty and is started afresh, unless ``resume`` asks for a checkpoint.
        """
        paths = self.paths
        if self.main:  # an unwritable or impossible run directory: now, not after the data is loaded
            check_output_dir(paths.root)
        _barrier(self.world_size)
        existing = paths.config.is_file()
        occupied = paths.root.exists() and any(paths.root.iterdir())
        checkpoint = paths.latest_checkpoint() if existing else None
        recovered = existing and checkpoint is None and not paths.pointer.exists()
        if recovered:  # the commit record is gone: the newest checkpoint whose files all read
            checkpoint = paths.newest_complete_checkpoint()
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
            if resume:
                raise TrainingError(f"{paths.root}: no checkpoint to resume ({paths.pointer.name} missing and no "
                                    f"complete checkpoint folder); nothing was changed")
            return None
        if recovered:
            self.say(f"{paths.pointer} is missing: resuming from the newest complete checkpoint "
                     f"(iteration {checkpoint[0]})")
            self._recovered = checkpoint
        self._loaded = load_checkpoint(checkpoint[1])
        self._check_resume_config(checkpoint[0], self._loaded[2].get("config") or read_yaml(paths.config))
        return checkpoint

    def _check_resume_config(self, iteration: int, saved: Mapping[str, Any]) -> None:
        """The config must equal the one the checkpoint was trained with, up to ``RESUME_SAFE`` keys."""
        old, new = normalised(saved), self.cfg.to_dict()
        conflicts = resume_conflicts(old, new)
        if conflicts:
            raise TrainingError(f"{self.paths.root}: holds a run with a different config "
                                f"({describe_changes(old, new, conflicts)}; checkpoint of iteration {iteration}); "
                                f"these change the weights: restore them, or choose another run directory (--run-dir)")

    def _open_run_dir(self) -> None:
        """Write the config and env.json, drop what an interrupted run left after its checkpoint, open the logs."""
        cfg, paths = self.cfg, self.paths
        if self.main:
            if self._existing and self._committed is None:
                self.say(f"{paths.root}: no checkpoint yet; starting the run afresh")
                paths.best.unlink(missing_ok=True)  # validated weights of the abandoned start
            paths.root.mkdir(parents=True, exist_ok=True)
            if not self._existing or read_yaml(paths.config) != cfg.to_dict():
                atomic_write_text(paths.config, cfg.to_yaml(), overwrite=True)
            if self._existing:
                self._tidy_run_dir()
                truncate_logs(paths.root, self._committed or 0)
            _write_environment(paths.root / "env.json", self.world_size)
            purge = None if not self._existing else (self._committed + 1 if self._committed is not None else 0)
            self.log = RunLog(paths.root, cfg.log.tensorboard, purge_step=purge)
        _barrier(self.world_size)

    def _tidy_run_dir(self) -> None:
        """Re-commit a recovered checkpoint, remove what an interrupted write left, republish ``latest``."""
        recovered = getattr(self, "_recovered", None)
        if recovered is not None:
            commit(self.paths, *recovered)
            self._recovered = None
        clean_run_dir(self.paths, self._committed, self.cfg.train.keep_checkpoints)
        if self._committed is not None:
            publish_latest(self.paths, self.paths.latest_checkpoint()[1])

    def _restore(self, checkpoint: tuple[int, Path]) -> dict[str, Any] | None:
        """Load the checkpoint read by ``_inspect_run_dir``; return the grad scaler's state."""
        iteration, folder = checkpoint
        model_sd, ema_sd, state = self._loaded
        self._loaded = None
        self.net.load_state_dict(model_sd, strict=True)
        load_optimizer_state(self.optimizer, state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.ema is not None:
            if ema_sd is None:
                raise TrainingError(f"{folder}: no EMA weights to resume train.ema from")
            self.ema.module.load_state_dict(ema_sd, strict=True)
        restore_rng(state["rng"])
        if state["data"]["seed"] != self.cfg.train.seed or state["data"]["batch_size"] != self.cfg.train.batch_size:
            raise TrainingError(f"{folder}: data order of another seed or batch size")
        self._saved_fingerprint = state["data"].get("fingerprint")
        self.iteration = int(state["iteration"])
        self.best_psnr = state["best"]["psnr"] if state["best"]["psnr"] is not None else -math.inf
        self.best_iteration = state["best"]["iteration"]
        self.nonfinite = int(state["nonfinite"])
        self.say(f"resuming {self.paths.root} from iteration {self.iteration}")
        return state.get("scaler")

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
        cfg, data = self.cfg, self.parts.data
        if self.world_size > 1 and self.shared is None:  # a process group of the caller's: the shares now
            self.shared = data.prepare_share(local_share(), workers=_share_workers(), progress=self.main)
            _barrier(self.world_size)
        with warnings.catch_warnings():
            if not self.main:
                warnings.simplefilter("ignore")
            pairs = data.prepare(report=self.main, workers=_share_workers() if self.world_size > 1 else None)
        if self.main:
            held = f"; {data.held_out()} held out for validation ({cfg.val.set})" if data.held_out() else ""
            made = data.result.made + (self.shared.made if self.shared is not None else 0)
            self.say(f"training data: {len(pairs)} images from {', '.join(cfg.data.hr)} "
                     f"(LR: {cfg.data.lr or 'made on the fly, ' + cfg.data.degradation}){held}; "
                     + (f"{made} decoded by this process now" if made else "all cached already"))
        self._check_fingerprint(training_set_fingerprint(pairs))
        loader = data.loader(pairs, self.iteration, rank=self.rank, world_size=self.world_size,
                             pin_memory=self.device.type == "cuda")
        return prefetch(loader, self.device)

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
                                f"({problem}); data.hr, data.root and val.set must name the same images to resume")

    # ---- the loop

    def fit(self) -> Path:
        cfg = self.cfg
        try:
            if self.iteration >= cfg.train.iterations:
                self.say(f"{self.paths.root}: already trained to iteration {self.iteration}")
                if self.main:  # finish what an interruption after the last commit left undone
                    self._tidy_run_dir()
                self._plots()
                self._score_test_sets()
                return self.paths.root
            loader = self._loader()
            if self.test_sets and self.main:
                self.say("test sets, scored once at the end and never used for selection: "
                         + ", ".join(f"{name} ({root})" for name, root in self.test_sets))
            self._open_run_dir()
            if cfg.val.at_start and self.iteration == 0:
                self._validate()
            self._loop(loader)
            self._score_test_sets()
            return self.paths.root
        finally:
            if self.log is not None:
                self.log.close()
            if self._own_group and dist.is_initialized():
                dist.destroy_process_group()

    def _loop(self, loader) -> None:
        total = self.cfg.train.iterations
        bar = tqdm(total=total, initial=self.iteration, unit="it", dynamic_ncols=True, smoothing=0.05,
                   disable=None if self.main else True, desc=f"{self.cfg.model.name} x{self.cfg.model.scale}")
        self._window, self._pending, self._bar = _Window(), collections.deque(), bar
        self._started = time.perf_counter()
        signals = StopSignals()
        for callback in self.callbacks:
            callback.on_fit_start(self)
        try:
            with signals:
                self._tick = time.perf_counter()
                for lr, hr in loader:
                    if self._iterate(lr, hr, signals):
                        break
        except KeyboardInterrupt:  # a second signal: at once, without a checkpoint
            raise TrainingInterrupted(self.paths.root, self.iteration, signals.signum, self._committed) from None
        finally:
            bar.close()
        self._finish(signals)

    def _iterate(self, lr: torch.Tensor, hr: torch.Tensor, signals: StopSignals) -> bool:
        """One iteration and what falls due after it; True when the run stops here."""
        cfg = self.cfg
        used_lr = self.optimizer.param_groups[0]["lr"]
        result = self.step(lr, hr, stop=signals.requested, finish=self.stop_reason is not None)
        self.iteration += 1
        if self.ema is not None:
            self.ema.update(self.net)
        for callback in self.callbacks:
            callback.on_step_end(self, result)
        self.scheduler.step()
        self._pending.append((self.iteration, used_lr, result, time.perf_counter() - self._tick))
        self._bar.update(1)
        if self.stop_reason is None:
            self.stop_reason = next((r for c in self.callbacks if (r := c.should_stop(self))), None)
        it, total = self.iteration, cfg.train.iterations
        due = {"log": it % cfg.log.every == 0 or it == total,
               "val": bool(cfg.val.every) and (it % cfg.val.every == 0 or it == total),
               "checkpoint": it % cfg.train.checkpoint_every == 0 or it == total}
        local = self.world_size == 1 and (signals.requested or self.stop_reason is not None)
        interrupt, finish = self._read_results(everything=any(due.values()) or local)
        if self.world_size == 1:  # this process's own requests, at once
            interrupt, finish = signals.requested, self.stop_reason is not None
        elif interrupt or finish:  # all processes see the agreed request at the same iteration
            self._read_results(everything=True)
        if interrupt:
            self.stop_reason = None
        elif finish and self.stop_reason is None:
            self.stop_reason = "a stop request of another process"
        stopping = interrupt or finish
        if (due["log"] or stopping) and self._window.steps:
            self._log_train()
        if due["val"] or (finish and self.validator is not None and cfg.val.every):
            self._validate()
        if due["checkpoint"] or stopping:
            self._checkpoint()
        self._tick = time.perf_counter()
        return stopping

    def _read_results(self, everything: bool) -> tuple[bool, bool]:
        """Account the steps whose values are due (all with ``everything``); the agreed stop requests seen."""
        interrupt = finish = False
        while self._pending and (everything or len(self._pending) > RESULT_LAG):
            iteration, used_lr, result, seconds = self._pending.popleft()
            self._window.add(result, seconds, used_lr)
            if result.stepped:
                self.nonfinite = 0
            else:
                self._skipped(iteration, result.loss)
            interrupt, finish = interrupt or result.stop, finish or result.finish
        return interrupt, finish

    def _finish(self, signals: StopSignals) -> None:
        total = self.cfg.train.iterations
        if self.main and self.iteration == total:
            self.say(self._summary())
        elif self.main and self.stop_reason is not None:
            self.say(f"stopped at iteration {self.iteration} ({self.stop_reason}; checkpoint saved); continue with: "
                     f"sisr train --resume --run-dir {self.paths.root}")
        for callback in self.callbacks:
            callback.on_fit_end(self)
        self._plots()
        _barrier(self.world_size)
        if self.iteration < total and self.stop_reason is None:
            raise TrainingInterrupted(self.paths.root, self.iteration, signals.signum, self._committed)

    def _skipped(self, iteration: int, loss: float) -> None:
        self.nonfinite += 1
        limit = self.cfg.train.max_nonfinite
        message = (f"iteration {iteration}: non-finite loss or gradient (loss {loss}); step skipped "
                   f"({self.nonfinite} in a row, limit {limit})")
        if self.main:
            warnings.warn(message, RuntimeWarning, stacklevel=2)
            self.log.write({"type": "event", "iteration": iteration, "message": message})
        if self.nonfinite >= limit:
            latest = self._committed
            where = f"last checkpoint: iteration {latest}" if latest is not None else "no checkpoint yet"
            raise TrainingError(f"training diverged: {self.nonfinite} non-finite losses in a row at iteration "
                                f"{iteration} ({where}); try a lower optim.lr, train.grad_clip, or fp32")

    def _log_train(self) -> None:
        window, self._window = self._window, _Window()
        self._bar.set_postfix(loss=f"{window.loss():.4f}", lr=f"{window.lr:.2e}", refresh=False)
        if not self.main:
            return
        record = {"type": "train", "iteration": self.iteration, "epoch": round(self.epoch, 4),
                  "loss": window.loss(), "lr": window.lr, "it_per_s": window.rate(),
                  "elapsed_s": round(time.perf_counter() - self._started, 3), "skipped": window.skipped}
        self.log.write(record)
        if self._bar.disable:
            self.say(f"[{self.iteration}/{self.cfg.train.iterations}] epoch {self.epoch:.2f} "
                     f"loss {record['loss']:.5f} lr {record['lr']:.2e} {record['it_per_s']:.2f} it/s")

    def _validate(self) -> None:
        if not self.main or self.validator is None or getattr(self, "_validated_at", None) == self.iteration:
            return
        self._validated_at = self.iteration
        model = self.ema.module if self.ema is not None else self.net
        scores = self.validator(model)
        best = scores["psnr"] > self.best_psnr
        if best:
            self.best_psnr, self.best_iteration = scores["psnr"], self.iteration
        metrics = {"set": self.cfg.val.set, "scale": self.cfg.model.scale, **scores, "iteration": self.iteration,
                   "ema": self.ema is not None}
        self.log.write({"type": "val", "iteration": self.iteration, "epoch": round(self.epoch, 4),
                        "set": self.cfg.val.set, **scores, "best": best})
        so_far = (f"best {self.best_psnr:.3f} at {self.best_iteration}" if math.isfinite(self.best_psnr)
                  else "no finite score yet")
        self.say(f"[{self.iteration}] {self.cfg.val.set} x{self.cfg.model.scale}: PSNR {scores['psnr']:.3f} dB, "
                 f"SSIM {scores['ssim']:.4f}" + (" (best)" if best else f" ({so_far})"))
        self.last_metrics = metrics
        if best:
            save_weights(model, self.paths.best, overwrite=True, **self._weights_meta(metrics))
        for callback in self.callbacks:
            callback.on_validation(self, {**metrics, "best": best})
        if self.cfg.log.plots:
            self._plots()

    def _score_test_sets(self) -> None:
        """At the end of the run (rank 0, after the others are done): the selected weights on the test sets,
        once (:mod:`sisr.training.scoring`); a failure is a warning, the trained weights stay as they are."""
        if not self.main or not self.test_sets or self.iteration < self.cfg.train.iterations:
            return
        if scored_at(self.paths.root) == self.iteration:
            return
        best = ({"set": self.cfg.val.set, "iteration": self.best_iteration} if math.isfinite(self.best_psnr)
                else None)
        try:
            record = score_run(self.cfg, self.paths.root, self.test_sets, self.device, iteration=self.iteration,
                               best=best)
        except SisrError as exc:
            warnings.warn(f"the test sets were not scored ({exc}); score {self.paths.root} with sisr eval",
                          RuntimeWarning, stacklevel=2)
            return
        scores = ", ".join(f"{r['dataset']} {r['psnr_y']:.2f}/{r['ssim_y']:.4f}" for r in record["scores"])
        self.say(f"test sets x{self.cfg.model.scale} (PSNR/SSIM on Y; {record['weights']}, not used for selection): "
                 f"{scores} -> {self.paths.root / 'results.md'}")

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


def _check_batch(cfg: Config, world_size: int) -> None:
    batch, parts = cfg.train.batch_size, cfg.train.accumulate
    if batch % world_size:
        raise ConfigError(f"train.batch_size: {batch} is not divisible by the {world_size} processes")
    if (batch // world_size) % parts:
        raise ConfigError(f"train.accumulate: {parts} micro-batches do not divide the {batch // world_size} "
                          f"samples of each of the {world_size} processes")


def _write_environment(path: Path, world_size: int) -> None:
    """``env.json``: this session's environment; earlier sessions of the run kept under ``earlier``."""
    import json

    from ..utils.environment import environment

    earlier: list[Any] = []
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
        earlier = [*old.pop("earlier", []), old]
    except (OSError, ValueError, AttributeError):
        pass
    record = {**environment(world_size), "earlier": earlier}
    atomic_write_text(path, json.dumps(record, indent=2) + "\n", overwrite=True)


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


def local_share() -> tuple[int, int]:
    """``(LOCAL_RANK, LOCAL_WORLD_SIZE)``: this process's share of the preparation on its node (every node
    prepares the whole set: its cache may be a local disk)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return int(os.environ.get("LOCAL_RANK", "0")), int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))


def _share_workers() -> int:
    """Preparation processes of one of the node's training processes: its share of the cores."""
    from ..data.prepare import available_cpus

    return max(1, available_cpus() // local_share()[1])


def prepare_own_share(cfg: Config):
    """Under torchrun (``WORLD_SIZE`` > 1, no process group yet): decode and cache this process's share of the
    training images (every ``LOCAL_WORLD_SIZE``-th, from ``LOCAL_RANK``) with its share of the cores, before
    the process group exists; its start then waits for the slowest share (``train.dist_timeout_s``), and on
    a prepared set nothing is decoded. Returns the :class:`sisr.data.training.CacheResult`, or None when not
    under torchrun or a group exists already (the trainer then prepares the shares inside it)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return None
    from .parts import TrainingData

    share = local_share()
    started = time.perf_counter()
    result = TrainingData(cfg).prepare_share(share, workers=_share_workers(), progress=share[0] == 0)
    if os.environ.get("RANK", "0") == "0":
        tqdm.write(f"training data, before the process group: this process's share ({share[0] + 1} of {share[1]} "
                   f"on this node): {result.made} decoded, {result.cached} cached already "
                   f"({time.perf_counter() - started:.1f} s)", file=sys.stderr)
    return result


def _barrier(world_size: int) -> None:
    if world_size > 1 and dist.is_initialized():
        dist.barrier()
