"""How a network is called: device, memory layout, autocast precision, backend (backends.py), out-of-memory errors."""

from __future__ import annotations

import contextlib
import threading
import warnings
from typing import Callable

import torch
from torch import nn

from ..errors import ConfigError, SisrError
from ..utils.device import is_out_of_memory, release_cached_memory
from ..weights.handle import identify, is_channels_last, module_device, set_channels_last
from .options import RunOptions

PRECISIONS: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class InferenceOutOfMemory(SisrError):
    """The network does not fit in memory at the requested size."""


class Runner:
    """Calls the network: moves the input to its device, autocast, fp32 result on the input's device.

    Inputs go in the module's own memory layout (fixed when it was loaded, see ``sisr.weights.resolve``);
    the module is not converted per call, so one module can serve concurrent calls. Two requests convert
    it once, in place (under a lock): ``options.channels_last`` (to channels_last), and the backends that
    export the network (``onnxruntime``; ``compile`` on the CPU), which trace it in the contiguous layout.
    """

    def __init__(self, model: nn.Module, device: torch.device, options: RunOptions | None = None,
                 pixels: int | None = None):
        from .backends import prepare

        options = options or RunOptions()
        self.eager = model
        self.device = device
        self.dtype = check_precision(model, options.precision, device)
        exported = options.backend == "onnxruntime" or (options.backend == "compile" and device.type == "cpu")
        layout = False if exported else (True if options.channels_last else None)  # export traces NCHW weights
        if layout is not None and is_channels_last(model) != layout:
            with _LAYOUT_LOCK:
                set_channels_last(model, layout)
        own = is_channels_last(model)
        prepared = prepare(model, options.backend, device, self.dtype, own, False, pixels)
        self.fn = prepared.fn
        if prepared.fn is model:  # eager: the module's layout, whatever prepare would have converted to
            self.channels_last, self.backend = own, "eager (channels_last)" if own else "eager"
        else:
            self.channels_last, self.backend = prepared.channels_last, prepared.name
        self.warned = False  # the reduced-precision fallback warns once per run

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


_LAYOUT_LOCK = threading.Lock()


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
    return module_device(model, fallback)


def model_name(model: nn.Module) -> str | None:
    spec = identify(model).spec
    return None if spec is None else spec.name


def model_info(model: nn.Module):
    return identify(model).info


def check_run(model: nn.Module, options: RunOptions, device: torch.device) -> torch.dtype | None:
    """What a run with ``options`` needs of this network and device (precision, backend), checked before any
    work: the autocast dtype, or a one-line ``ConfigError``."""
    from .backends import check

    dtype = check_precision(model, options.precision, device)
    check(options.backend, device, dtype)
    return dtype


def check_precision(model: nn.Module, precision: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype for ``precision``; ``ConfigError`` if the model or the device does not support it."""
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision '{precision}'; use {', '.join(PRECISIONS)}")
    info = model_info(model)
    if info is not None and precision not in info.capabilities.precisions:
        raise ConfigError(f"model '{info.name}' does not support {precision} for inference (supported: "
                          f"{', '.join(info.capabilities.precisions)}; reduced precision is offered only where a "
                          f"test with trained weights showed it safe)")
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

