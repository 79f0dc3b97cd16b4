"""The optimisation step and what surrounds it: learning-rate schedule, optimizer, EMA of the
weights, TF32, stop on SIGINT/SIGTERM (used by :mod:`sisr.training.trainer` and the benchmarks).

A step never waits for the device: the loss, whether the step was taken and the stop flag stay on
the device (copied to the host without blocking) until the trainer reads them a few iterations
later. A non-finite loss (or gradient norm, with clipping) is skipped on the device by the fused
Adam's ``found_inf`` (no weight, moment or step-count change); an optimizer without it, and fp16
(its GradScaler), decide on the host, which waits for the step.
"""

from __future__ import annotations

import bisect
import contextlib
import copy
import signal
import threading
from typing import Any, Callable

import torch
import torch.distributed as dist

from ..data.training import to_unit
from ..inference.network import PRECISIONS
from .config import Config, ScheduleConfig
from .losses import get_loss


class Schedule:
    """Learning-rate multiplier ``gamma ** d(k)`` after ``k`` iterations, ``d(k)`` the decays passed: ``k // step``,
    or the number of milestones <= ``k``. It is the ``LambdaLR``'s function; torch saves and restores the
    attributes of such an object with the scheduler, so milestones added during a run
    (:meth:`add_milestone`) are part of the checkpoint."""

    def __init__(self, step: int | None = None, milestones=(), gamma: float = 0.5):
        self.step = None if step is None else int(step)
        self.milestones = sorted(int(m) for m in milestones)
        self.gamma = float(gamma)

    @classmethod
    def from_config(cls, schedule: ScheduleConfig) -> "Schedule":
        return cls(schedule.step, schedule.milestones, schedule.gamma)

    def factor(self, iteration: int) -> float:
        if self.step is not None:
            decays = iteration // self.step
        else:
            decays = bisect.bisect_right(self.milestones, iteration)
        return self.gamma ** decays

    __call__ = factor

    def add_milestone(self, iteration: int) -> None:
        """Decay the rate from iteration ``iteration + 1`` on (a milestones schedule: ``schedule.step=null``)."""
        if self.step is not None:
            raise ValueError("a schedule with schedule.step has no milestones; set schedule.step=null")
        bisect.insort(self.milestones, int(iteration))


def lr_factor(schedule: ScheduleConfig, iteration: int) -> float:
    """Learning-rate multiplier after ``iteration`` completed iterations."""
    return Schedule.from_config(schedule).factor(iteration)


def make_optimizer(cfg: Config, params) -> torch.optim.Optimizer:
    """Adam or AdamW; the fused implementation where torch has it for the parameters' device (it skips a
    non-finite step on the device), else torch's default."""
    kind = torch.optim.AdamW if cfg.optim.name == "adamw" else torch.optim.Adam
    params = list(params)
    options = dict(lr=cfg.optim.lr, betas=tuple(cfg.optim.betas), eps=cfg.optim.eps,
                   weight_decay=cfg.optim.weight_decay)
    try:
        return kind(params, fused=True, **options)
    except (RuntimeError, TypeError, ValueError):  # no fused kernels for this device or torch
        return kind(params, **options)


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """Load a saved optimizer state into ``optimizer`` keeping its own implementation (fused or not), so that
    the state of another one (an earlier version's, or another device's) loads too."""
    keys = ("fused", "foreach", "capturable")
    groups = [{**saved, **{k: own[k] for k in keys if k in own}}
              for saved, own in zip(state["param_groups"], optimizer.param_groups)]
    optimizer.load_state_dict({**state, "param_groups": groups})


def set_tf32(enabled: bool) -> None:
    """TF32 for float32 matmuls and cuDNN convolutions on CUDA (Ampere and later; ignored elsewhere)."""
    precision = "tf32" if enabled else "ieee"
    matmul = torch.backends.cuda.matmul
    if hasattr(matmul, "fp32_precision"):  # torch >= 2.9 (mixing it with allow_tf32 is an error)
        matmul.fp32_precision = precision
        torch.backends.cudnn.conv.fp32_precision = precision
    else:
        matmul.allow_tf32 = enabled
        torch.backends.cudnn.allow_tf32 = enabled


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


class StepResult:
    """One step's ``loss`` (global mean over processes; NaN/inf when skipped), ``stepped``, ``stop`` (a process
    was interrupted) and ``finish`` (a process asked to end the run cleanly), both agreed by all processes. The
    values are copied to the host without blocking; reading one waits for that copy (:meth:`ready`: done)."""

    def __init__(self, values: torch.Tensor, event: Any = None):
        self._values, self._event, self._host = values, event, None

    def ready(self) -> bool:
        return self._event is None or self._event.query()

    def _read(self) -> list[float]:
        if self._host is None:
            if self._event is not None:
                self._event.synchronize()
            self._host = self._values.tolist()
        return self._host

    @property
    def loss(self) -> float:
        return self._read()[0]

    @property
    def stepped(self) -> bool:
        return self._read()[1] > 0

    @property
    def stop(self) -> bool:
        return self._read()[2] > 0

    @property
    def finish(self) -> bool:
        return self._read()[3] > 0


class TrainStep:
    """One optimisation step (shared with ``benchmarks/train_throughput.py``).

    ``accumulate=K`` splits the batch into K equal micro-batches whose gradients add up to those of the whole
    batch (each loss divided by K; under DDP the gradients are reduced once, after the last); BatchNorm sees
    micro-batches. ``ddp``: the DistributedDataParallel module inside ``model`` (its ``no_sync``).
    """

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, *, device: torch.device,
                 precision: str = "fp32", loss: str | Callable = "l1", grad_clip: float | None = None,
                 channels_last: bool = False, world_size: int = 1, accumulate: int = 1, ddp: Any = None):
        self.model, self.optimizer, self.device = model, optimizer, device
        self.dtype = PRECISIONS[precision]
        self.loss_fn = get_loss(loss) if isinstance(loss, str) else loss
        self.grad_clip, self.world_size, self.accumulate, self.ddp = grad_clip, world_size, int(accumulate), ddp
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
        self.params = [p for group in optimizer.param_groups for p in group["params"]]
        self.device_skip = self.scaler is None and getattr(optimizer, "_step_supports_amp_scaling", False)

    def autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def __call__(self, lr: torch.Tensor, hr: torch.Tensor, stop: bool = False, finish: bool = False) -> StepResult:
        """``stop``: this process was interrupted; ``finish``: it asks to end cleanly (shared with the others)."""
        loss = self._forward_backward(lr, hr)
        shared = torch.stack([loss, loss.new_full((), float(stop)), loss.new_full((), float(finish))])
        if self.world_size > 1:
            dist.all_reduce(shared)
            shared[0] /= self.world_size
        bad = ~torch.isfinite(shared[0])
        if self.grad_clip is not None:
            if self.scaler:
                self.scaler.unscale_(self.optimizer)
            norm = torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip)
            if self.scaler is None:  # fp16: the scaler finds non-finite gradients itself
                bad = bad | ~torch.isfinite(norm)
        self._optimizer_step(bad)
        self.optimizer.zero_grad(set_to_none=True)
        return self._result(torch.stack([shared[0], (~bad).float(), shared[1], shared[2]]))

    def _forward_backward(self, lr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        """The batch's mean loss (detached, fp32) after the backward of each micro-batch."""
        total = None
        pairs = list(zip(lr.chunk(self.accumulate), hr.chunk(self.accumulate)))
        for i, (lr_part, hr_part) in enumerate(pairs):
            last = i == len(pairs) - 1
            with self.ddp.no_sync() if self.ddp is not None and not last else contextlib.nullcontext():
                lr_part = to_unit(lr_part.to(self.device, non_blocking=True)).contiguous(memory_format=self.memory_format)
                hr_part = to_unit(hr_part.to(self.device, non_blocking=True))
                with self.autocast():
                    sr = self.model(lr_part)
                loss = self.loss_fn(sr.float(), hr_part) / len(pairs)
                # every process runs backward (DDP reduces gradients inside it), then all skip or all step
                (self.scaler.scale(loss) if self.scaler else loss).backward()
            total = loss.detach().float() if total is None else total + loss.detach().float()
        return total

    def _optimizer_step(self, bad: torch.Tensor) -> None:
        if self.device_skip:  # skipped inside the fused kernel when found_inf is 1: no host wait
            self.optimizer.found_inf = bad.float()
            try:
                self.optimizer.step()
            finally:
                del self.optimizer.found_inf
        elif not bool(bad):  # waits for the device
            if self.scaler:
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                self.optimizer.step()

    def _result(self, values: torch.Tensor) -> StepResult:
        if values.device.type != "cuda":
            return StepResult(values)
        host = torch.empty(values.shape, dtype=values.dtype, pin_memory=True)
        host.copy_(values, non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        return StepResult(host, event)


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
