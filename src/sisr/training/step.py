"""The optimisation step and what surrounds it: learning-rate schedule, optimizer, EMA of the
weights, stop on SIGINT/SIGTERM (used by :mod:`sisr.training.trainer` and the benchmarks)."""

from __future__ import annotations

import bisect
import contextlib
import copy
import math
import signal
import threading
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F

from ..inference.network import PRECISIONS
from .config import Config, ScheduleConfig


def lr_factor(schedule: ScheduleConfig, iteration: int) -> float:
    """Learning-rate multiplier after ``iteration`` completed iterations."""
    if schedule.step is not None:
        decays = iteration // schedule.step
    else:
        decays = bisect.bisect_right(schedule.milestones, iteration)
    return schedule.gamma ** decays


def make_optimizer(cfg: Config, params) -> torch.optim.Optimizer:
    kind = torch.optim.AdamW if cfg.optim.name == "adamw" else torch.optim.Adam
    return kind(params, lr=cfg.optim.lr, betas=tuple(cfg.optim.betas), eps=cfg.optim.eps,
                weight_decay=cfg.optim.weight_decay)


class EMA:
    """Exponential moving average of a module's parameters (buffers are copied)."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.module = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        ema_params = [p for p in self.module.parameters()]
        params = [p.detach() for p in model.parameters()]
        weight = 1.0 - self.decay
        foreach_lerp = getattr(torch, "_foreach_lerp_", None)  # private but fast (one kernel on GPU)
        if foreach_lerp is not None:
            foreach_lerp(ema_params, params, weight)
        else:  # the same arithmetic, one tensor at a time
            for ema_p, p in zip(ema_params, params):
                ema_p.lerp_(p, weight)
        for ema_buf, buf in zip(self.module.buffers(), model.buffers()):
            ema_buf.copy_(buf)


@dataclass
class StepResult:
    loss: float  # global mean over processes; NaN/inf when the step was skipped
    stepped: bool
    stop: bool  # a process asked to stop (signal) - agreed by all processes


class TrainStep:
    """One optimisation step (shared with ``benchmarks/train_throughput.py``)."""

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, *, device: torch.device,
                 precision: str = "fp32", loss: str = "l1", grad_clip: float | None = None,
                 channels_last: bool = False, world_size: int = 1):
        self.model, self.optimizer, self.device = model, optimizer, device
        self.dtype = PRECISIONS[precision]
        self.loss_fn = F.l1_loss if loss == "l1" else F.mse_loss
        self.grad_clip, self.world_size = grad_clip, world_size
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
        self.params = [p for group in optimizer.param_groups for p in group["params"]]

    def autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def __call__(self, lr: torch.Tensor, hr: torch.Tensor, stop: bool = False) -> StepResult:
        lr = lr.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)
        hr = hr.to(self.device, non_blocking=True)
        with self.autocast():
            sr = self.model(lr)
        loss = self.loss_fn(sr.float(), hr)
        shared = torch.stack([loss.detach().float(), torch.tensor(float(stop), device=loss.device)])
        if self.world_size > 1:
            dist.all_reduce(shared)
            shared[0] /= self.world_size
        value, stop = (float(v) for v in shared.tolist())
        # every process runs backward (DDP reduces gradients inside it), then all skip or all step
        (self.scaler.scale(loss) if self.scaler else loss).backward()
        stepped = math.isfinite(value)
        if stepped:
            if self.grad_clip is not None:
                if self.scaler:
                    self.scaler.unscale_(self.optimizer)
                norm = torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip)
                stepped = self.scaler is not None or bool(torch.isfinite(norm))
            if self.scaler:
                self.scaler.step(self.optimizer)
                self.scaler.update()
            elif stepped:
                self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return StepResult(value, stepped, stop > 0)


class StopSignals:
    """Turn SIGINT/SIGTERM into a request to stop after the current iteration (twice: at once)."""

    def __init__(self):
        self.requested = False
        self.signum: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested, self.signum = True, signum

    def __exit__(self, *exc):
        for sig, handler in self._old.items():
            signal.signal(sig, handler)
