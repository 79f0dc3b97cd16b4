"""How a network is called: its device, autocast precision, backend (backends.py), and out-of-memory errors."""

from __future__ import annotations

import contextlib
import warnings
from typing import Callable

import torch
from torch import nn

from ..errors import ConfigError, SisrError
from ..utils.device import is_out_of_memory, release_cached_memory

PRECISIONS: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class InferenceOutOfMemory(SisrError):
    """The network does not fit in memory at the requested size."""


class Runner:
    """Calls the network: moves the input to its device, autocast, fp32 result on the input's device."""

    def __init__(self, model: nn.Module, device: torch.device, dtype: torch.dtype | None,
                 channels_last: bool = False, compile: bool = False, backend: str = "eager",
                 pixels: int | None = None):
        from .backends import prepare

        self.eager = model
        self.device = device
        self.dtype = dtype
        prepared = prepare(model, backend, device, dtype, channels_last, compile, pixels)
        self.fn = prepared.fn
        self.channels_last = prepared.channels_last
        self.backend = prepared.name
        self.warned = False  # the reduced-precision fallback warns once per run
        self._restore_layout = False
        if self.channels_last and self.fn is model:
            self._restore_layout = _conv_weights_contiguous(model)
            model.to(memory_format=torch.channels_last)  # values unchanged; undone by close()

    def close(self) -> None:
        """Give the module back in the memory layout it came in."""
        if self._restore_layout:
            self.eager.to(memory_format=torch.contiguous_format)
            self._restore_layout = False

    @property
    def precision_name(self) -> str:
        return next((k for k, v in PRECISIONS.items() if v == self.dtype), str(self.dtype))

    def autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def __call__(self, x: torch.Tensor, fn: Callable | None = None) -> torch.Tensor:
        arg, src = x, x.device
        x = x.to(self.device)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with self.autocast():
            y = (fn or self.fn)(x)
        if self.dtype is not None and not output_is_sound(x, y):
            if not self.warned:
                warnings.warn(f"{self.precision_name} gave a non-finite or collapsed output: that piece (and any "
                              f"later one that fails the same check) is recomputed in fp32", UserWarning, stacklevel=2)
                self.warned = True
            y = self.eager(x)
        y = y.float().to(src)
        if y.untyped_storage().data_ptr() == arg.untyped_storage().data_ptr():
            y = y.clone()  # a network that returns its input: results are written in place later
        return y


def _conv_weights_contiguous(model: nn.Module) -> bool:
    return all(p.is_contiguous() for p in model.parameters() if p.ndim == 4)


def output_is_sound(x: torch.Tensor, y: torch.Tensor) -> bool:
    """False when ``y`` has a NaN/inf, or is constant (e.g. all zero) while the input ``x`` is not."""
    if not bool(torch.isfinite(y).all()):
        return False
    if y.numel() == 0 or x.numel() == 0:
        return True
    x_varies = bool(x.amax() > x.amin())
    return not (x_varies and bool(y.amax() == y.amin()))


def model_device(model: nn.Module, fallback: torch.device | str = "cpu") -> torch.device:
    """Device of the network's first parameter or buffer; ``fallback`` for networks with neither."""
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device(fallback)


def model_name(model: nn.Module) -> str | None:
    spec = getattr(model, "sisr_spec", None)
    return getattr(spec, "name", None)


def model_info(model: nn.Module):
    name = model_name(model)
    if name is None:
        return None
    from ..models import get_info

    return get_info(name)


def check_precision(model: nn.Module, precision: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype for ``precision``; ``ConfigError`` if the model or the device does not support it."""
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision '{precision}'; use {', '.join(PRECISIONS)}")
    info = model_info(model)
    if info is not None and precision not in info.precisions:
        raise ConfigError(f"model '{info.name}' does not support {precision} for inference (supported: "
                          f"{', '.join(info.precisions)}; reduced precision is offered only where a test with trained "
                          f"weights showed it safe)")
    if precision == "fp16" and device.type == "cpu":
        raise ConfigError("fp16 is not supported on the CPU (use bf16 or fp32, or a GPU)")
    return PRECISIONS[precision]


def call_checked(runner: Runner, x: torch.Tensor, what: str, fn: Callable | None = None) -> torch.Tensor:
    """Run the network; an allocation failure becomes a one-line ``InferenceOutOfMemory``."""
    try:
        return runner(x, fn)
    except Exception as exc:  # noqa: BLE001 - re-raised unless it is an allocation failure
        if not is_out_of_memory(exc):
            raise
        release_cached_memory(runner.device)
        raise InferenceOutOfMemory(
            f"out of memory on {runner.device} with {what} (input {x.shape[-2]}x{x.shape[-1]}); "
            f"use --tile auto or a smaller --tile") from None

