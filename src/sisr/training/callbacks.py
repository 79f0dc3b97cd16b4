"""Extension points of :meth:`sisr.training.trainer.Trainer.fit`: callbacks instead of patches.

    class Decay(Callback):                         # halve the rate once, after a wall-clock minute
        def on_step_end(self, trainer, result):
            if not self.done and time.monotonic() - self.start > 60:
                trainer.schedule.add_milestone(trainer.iteration)
                self.done = True

    Trainer(cfg, run_dir, callbacks=[Decay(), TimeLimit(600)]).fit()

Every process of a DDP run calls its callbacks (``trainer.main`` is rank 0, which logs and validates).
``on_step_end`` runs after the optimizer step and the EMA, before the schedule computes the next
iteration's rate (a milestone added there takes effect at the next iteration); its ``result`` holds
device values (reading ``result.loss`` waits for the step: the trainer's own records do not).
``should_stop`` returning a reason ends the run cleanly after that iteration: validation (when
enabled), a checkpoint, ``fit()`` returns and ``trainer.stop_reason`` says why; under DDP the
processes agree on the request within two iterations. ``train.time_limit_s`` is :class:`TimeLimit`.
"""

from __future__ import annotations

import time
from typing import Any, Mapping

Trainer = Any  # sisr.training.trainer.Trainer (not imported: the trainer imports this module)
StepResult = Any  # sisr.training.step.StepResult


class Callback:
    """Override the hooks you need; the defaults do nothing."""

    def on_fit_start(self, trainer: Trainer) -> None:
        """Before the first iteration of this session (after resuming, data loaded, run folder open)."""

    def on_step_end(self, trainer: Trainer, result: StepResult) -> None:
        """After iteration ``trainer.iteration`` (see the module docstring)."""

    def on_validation(self, trainer: Trainer, metrics: Mapping[str, Any]) -> None:
        """After a validation on rank 0: ``metrics`` has set, scale, psnr, ssim, iteration, ema, best."""

    def should_stop(self, trainer: Trainer) -> str | None:
        """A reason to end the run cleanly after this iteration, or None."""
        return None

    def on_fit_end(self, trainer: Trainer) -> None:
        """After the last iteration of this session (completed, or stopped by ``should_stop``)."""


class TimeLimit(Callback):
    """Stop cleanly once ``seconds`` of training have passed in this session (``train.time_limit_s``)."""

    def __init__(self, seconds: float):
        self.seconds = float(seconds)
        self.started: float | None = None

    def on_fit_start(self, trainer: Trainer) -> None:
        self.started = time.monotonic()

    def should_stop(self, trainer: Trainer) -> str | None:
        if self.started is not None and time.monotonic() - self.started >= self.seconds:
            return f"time limit of {self.seconds:g} s (train.time_limit_s)"
        return None
