"""What a training run is made of, built from a config in one place (the trainer, benchmarks and scripts).

    parts = build_training_parts(cfg, torch.device("cuda"))
    step = parts.make_step()                       # TrainStep: forward, loss, backward, optimizer
    pairs = parts.data.prepare()                   # decode and cache the training images (once)
    for lr, hr in parts.data.loader(pairs, start=0):
        result = step(lr, hr); parts.scheduler.step()

``parts.model`` is the network on the device (channels-last when chosen), ``parts.optimizer`` Adam/AdamW,
``parts.schedule`` the learning-rate :class:`~sisr.training.step.Schedule` driving ``parts.scheduler``,
``parts.loss`` the loss function of ``train.loss``, ``parts.data`` the :class:`TrainingData` (training
images and the validation set, resolved but not decoded), ``parts.compile`` / ``parts.channels_last`` the
resolved ``train.compile`` / ``train.channels_last``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..errors import ConfigError, ModelError
from ..models import create_model, get_info
from .config import Config
from .losses import get_loss
from .step import Schedule, TrainStep, make_optimizer

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
                    and parameters >= AUTO_COMPILE_MIN_PARAMETERS
                    and get_info(cfg.model.name).capabilities.cpu_train_compile)
    channels_last = cfg.train.channels_last
    if channels_last is None:
        channels_last = device.type == "cpu" and not compile_
    return bool(compile_), bool(channels_last)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class TrainingData:
    """The training images of ``data.*`` and the validation set of ``val.*``: resolved (files listed, test
    sets refused, a validation slice held out of training) when built; decoded by :meth:`prepare`.

    With validation off (``val.every=0``, ``val.at_start=false``) a ``val.set`` that cannot be found is
    ignored (a recipe's DIV2K:801-810 when training on other images); one that is found is still held out,
    so the training images do not depend on whether validation runs."""

    def __init__(self, cfg: Config):
        from ..data.splits import ValSetError, resolve_val_set

        self.cfg = cfg
        self.validation = None
        self.result = None  # the CacheResult of the last prepare()
        if cfg.val.set is not None:
            try:
                self.validation = resolve_val_set(cfg.val.set, sources=cfg.data.hr, data_root=cfg.data.root,
                                                  val_root=cfg.val.root)
            except ValSetError as exc:
                if cfg.val.every or cfg.val.at_start:
                    raise ConfigError(f"val.set: {exc}") from None

    def images(self) -> list[tuple[Path, Path]]:
        """``(file, source folder)`` of every training image, the validation slice left out."""
        from ..data.splits import ValSetError, check_overlap
        from ..data.training import find_hr_images

        data = self.cfg.data
        found = find_hr_images(data.hr, data.root, allow_test_sets=data.allow_test_sets)
        if self.validation is None:
            return found
        held = self.validation.held_out
        kept = [(f, src) for f, src in found if f.resolve() not in held] if held else found
        try:
            check_overlap(self.validation, [f for f, _ in kept])
        except ValSetError as exc:
            raise ConfigError(f"val.set: {exc}") from None
        return kept

    def prepare(self, report: bool = True, workers: int | None = None) -> list[Any]:
        """Decode and cache the training pairs; the images cached already are only checked; each unusable
        image warned (``report``). ``workers``: preparation processes (None: every core, see
        :func:`sisr.data.training.cache_images`). ``self.result`` is the :class:`CacheResult`."""
        from ..data.training import usable_pairs

        self.result = self.prepare_share(workers=workers, progress=report)
        return usable_pairs(self.result, self.cfg.data.hr, report)

    def prepare_share(self, share: tuple[int, int] = (0, 1), *, workers: int | None = None,
                      progress: bool = True) -> Any:
        """Decode and cache images ``i, i+n, ...`` of ``share=(i, n)`` (one of ``n`` processes preparing side by
        side); a :class:`sisr.data.training.CacheResult`, without warnings or errors for unusable images (the
        full :meth:`prepare` reports them)."""
        from ..data.training import cache_images

        data = self.cfg.data
        return cache_images(self.images(), self.cfg.model.scale, data.patch_size, root=data.root, lr_dir=data.lr,
                            degradation=data.degradation, noise_level=data.noise_level, cache_dir=data.cache_dir,
                            progress=progress, workers=workers, share=share)

    def held_out(self) -> int:
        return len(self.validation.held_out) if self.validation is not None else 0

    def dataset(self, pairs) -> Any:
        from ..data.training import PatchDataset

        cfg = self.cfg
        return PatchDataset(pairs, cfg.model.scale, cfg.data.patch_size, seed=cfg.train.seed,
                            augment=cfg.data.augment, integer=True,  # made float on the device by the step
                            samples_per_epoch=cfg.data.iterations_per_epoch * cfg.train.batch_size)

    def loader(self, pairs, start: int = 0, *, rank: int = 0, world_size: int = 1, pin_memory: bool = False):
        """Batches (this process's share) of iterations ``start + 1 .. train.iterations``."""
        from ..data.training import make_loader

        cfg = self.cfg
        return make_loader(self.dataset(pairs), start, cfg.train.iterations, cfg.train.batch_size, rank=rank,
                           world_size=world_size, workers=cfg.data.workers, pin_memory=pin_memory)


def prepare_training_data(cfg: Config, *, workers: int | None = None, progress: bool = True) -> tuple[Any, list]:
    """Decode and cache the training images of ``cfg`` at its scale (``sisr prepare``, ``sisr train
    --prepare-only``): ``(CacheResult, usable pairs)``; unusable images warned, none usable an error."""
    data = TrainingData(cfg)
    pairs = data.prepare(report=progress, workers=workers)
    return data.result, pairs


@dataclass
class TrainingParts:
    cfg: Config
    device: torch.device
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    schedule: Schedule
    scheduler: torch.optim.lr_scheduler.LambdaLR
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    data: TrainingData | None
    compile: bool
    channels_last: bool

    def make_step(self, forward: torch.nn.Module | None = None, *, world_size: int = 1, ddp: Any = None) -> TrainStep:
        """The optimisation step of this config; ``forward`` defaults to the model (compiled when chosen)."""
        if forward is None:
            forward = torch.compile(self.model) if self.compile else self.model
        train = self.cfg.train
        return TrainStep(forward, self.optimizer, device=self.device, precision=train.precision, loss=self.loss,
                         grad_clip=train.grad_clip, channels_last=self.channels_last, world_size=world_size,
                         accumulate=train.accumulate, ddp=ddp)


def build_training_parts(cfg: Config, device: torch.device | str, *, data: bool = True) -> TrainingParts:
    """Model (seeded by ``train.seed``), optimizer, schedule, loss and (``data=True``) the training data."""
    device = torch.device(device)
    seed_everything(cfg.train.seed)  # the same initial weights everywhere (DDP also broadcasts rank 0's)
    try:
        net = create_model(cfg.model.name, scale=cfg.model.scale, **cfg.model.hparams)
    except ModelError as exc:
        raise ConfigError(f"model.hparams: {exc}") from None
    if not any(p.requires_grad for p in net.parameters()):
        raise ConfigError(f"model.name: '{cfg.model.name}' has no trainable parameters")
    net.to(device)
    compile_, channels_last = resolve_cpu_path(cfg, device, sum(p.numel() for p in net.parameters()))
    if channels_last:
        net.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(cfg, [p for p in net.parameters() if p.requires_grad])
    schedule = Schedule.from_config(cfg.schedule)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    return TrainingParts(cfg, device, net, optimizer, schedule, scheduler, get_loss(cfg.train.loss),
                         TrainingData(cfg) if data else None, compile_, channels_last)
