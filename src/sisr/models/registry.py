"""Model registry: names -> builders, per-scale defaults and metadata.

Each model module declares its entries as ``MODELS = [ModelInfo(...), ...]``
next to the network code; this module only maps registry names to modules and
imports a module when one of its models is asked for. There is no global
mutable state: ``create_model`` builds a fresh network every call.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import math
import numbers
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch

from ..errors import ModelError

# Modules under sisr.models whose ``MODELS`` lists are the registry, in display order. A model file
# declares its entries (and variants) next to its network code; nothing else lists model names.
MODEL_MODULES: tuple[str, ...] = ("bicubic", "edsr", "rcan", "csnln", "defian", "cran", "eacrn")


@functools.lru_cache(maxsize=None)
def _entries() -> dict[str, "ModelInfo"]:
    """Every declared entry, by name (each model module imported once)."""
    entries: dict[str, ModelInfo] = {}
    for module_name in MODEL_MODULES:
        module = importlib.import_module(f"{__package__}.{module_name}")
        for info in module.MODELS:
            if info.name in entries:
                raise RuntimeError(f"model '{info.name}' is declared twice (sisr.models.{module_name})")
            entries[info.name] = info
    return entries


# Tiling behaviour: how splitting an image into overlapping tiles changes the output.
TILING_LOCAL = "local"  # output depends on a bounded neighbourhood: tiles with enough overlap match exactly
TILING_GLOBAL_STATS = "global-stats"  # global pooling statistics (channel attention...): tiles differ slightly
TILING_GLOBAL_ATTENTION = "global-attention"  # attention over the whole image: tiling changes the result


@dataclass(frozen=True)
class ModelInfo:
    """What sisr knows about one registry entry.

    ``build(scale=s, **hparams)`` returns an ``nn.Module`` mapping RGB in [0, 1]
    of shape (N, 3, H, W) to RGB in [0, 1] of shape (N, 3, sH, sW).
    """

    name: str
    title: str
    paper: str
    build: Callable[..., torch.nn.Module]
    scales: tuple[int, ...]
    defaults: Mapping[str, Any] = field(default_factory=dict)
    scale_defaults: Mapping[int, Mapping[str, Any]] = field(default_factory=dict)
    tiny: Mapping[str, Any] = field(default_factory=dict)  # a few-channel configuration for tests
    code: str | None = None  # authors' repository@commit, None when built from the paper
    reference_params: Mapping[int, int] = field(default_factory=dict)  # scale -> count to reach
    reference_source: str = ""
    params_tolerance: float = 0.0  # relative; 0 = must match to the unit
    tiling: str = TILING_LOCAL
    input_size: str = "any H, W >= 1"
    precisions: tuple[str, ...] = ("fp32",)  # inference: only what a test with trained weights showed safe
    train_precisions: tuple[str, ...] = ("fp32",)  # mixed-precision training the architecture allows
    cpu_train_compile: bool = True  # train.compile=auto may compile it on the CPU (measured faster)
    # official checkpoint support: state_dict -> {"scale": s, **hparams} if it is this model's layout
    from_official: Callable[[Mapping[str, torch.Tensor]], dict | None] | None = None
    official_convention: str = ""
    notes: str = ""
    onnx_unsupported: str | None = None  # why ONNX export cannot reproduce the model (None: it can)
    onnx_notes: str = ""  # known limits of the exported graph

    def hparams(self, scale: int, **overrides: Any) -> dict[str, Any]:
        """Resolved constructor arguments (defaults, then per-scale, then overrides)."""
        self.check_scale(scale)
        valid = self.hparam_names()
        unknown = sorted(set(overrides) - valid)
        if unknown:
            raise ModelError(
                f"model '{self.name}' has no hyper-parameter {', '.join(map(repr, unknown))}; "
                f"valid: {', '.join(sorted(valid)) or 'none'}"
            )
        self._check_values(overrides)
        return {**self.defaults, **self.scale_defaults.get(scale, {}), **overrides}

    def _check_values(self, overrides: Mapping[str, Any]) -> None:
        """Types from the builder's annotations: int a non-negative integer, float a finite number, bool a bool."""
        params = inspect.signature(self.build).parameters
        for key, value in overrides.items():
            kind = str(params[key].annotation)
            if kind == "int" and not (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
                need = "a non-negative integer"
            elif kind == "float" and not (isinstance(value, (int, float)) and not isinstance(value, bool)
                                          and math.isfinite(value)):
                need = "a finite number"
            elif kind == "bool" and not isinstance(value, bool):
                need = "true or false"
            else:
                continue
            raise ModelError(f"model '{self.name}': {key} must be {need}, got {value!r}")

    def hparam_names(self) -> set[str]:
        params = inspect.signature(self.build).parameters
        return {n for n, p in params.items() if n != "scale" and p.kind is not p.VAR_KEYWORD}

    def check_scale(self, scale: int) -> None:
        if scale not in self.scales:
            raise ModelError(
                f"model '{self.name}' supports scales {', '.join(map(str, self.scales))}; got {scale}"
            )


@dataclass(frozen=True)
class ModelSpec:
    """How a network instance was built: enough to rebuild it."""

    name: str
    scale: int
    hparams: Mapping[str, Any]

    def asdict(self) -> dict[str, Any]:
        return {"model": self.name, "scale": self.scale, "hparams": dict(self.hparams)}


def get_info(name: str) -> ModelInfo:
    """Metadata of a registry entry; ``ModelError`` for unknown names."""
    entries = _entries()
    key = str(name).lower()
    if key not in entries:
        raise ModelError(f"unknown model '{name}'; available: {', '.join(entries)}")
    return entries[key]


def is_model_name(name: object) -> bool:
    """Whether ``name`` (any case) is a registry name."""
    return isinstance(name, str) and name.lower() in _entries()


def list_models() -> list[str]:
    """Registry names, in a stable order."""
    return list(_entries())


def model_infos() -> list[ModelInfo]:
    return list(_entries().values())


def create_model(name: str, scale: int = 2, **overrides: Any) -> torch.nn.Module:
    """Build a fresh network ``name`` for upscaling factor ``scale``.

    Keyword arguments override the registry defaults (unknown names are an
    error). The returned module carries ``sisr_spec`` (a :class:`ModelSpec`).
    """
    info = get_info(name)
    if isinstance(scale, bool) or not (isinstance(scale, numbers.Integral)
                                       or (isinstance(scale, float) and scale.is_integer())):
        raise ModelError(f"model '{info.name}': scale must be an integer ({', '.join(map(str, info.scales))}); "
                         f"got {scale!r}")
    hp = info.hparams(int(scale), **overrides)
    with warnings.catch_warnings():  # a 0 size warns from torch's init; refused below with the reason
        warnings.filterwarnings("ignore", message="Initializing zero-element tensors")
        model = info.build(scale=int(scale), **hp)
    empty = [n for n, p in model.named_parameters() if p.numel() == 0]
    if empty:
        zeros = ", ".join(f"{k}=0" for k, v in overrides.items() if v == 0 and not isinstance(v, bool)) or "a size of 0"
        raise ModelError(f"model '{info.name}': {zeros} gives empty layers ({empty[0]}); sizes must be positive")
    model.sisr_spec = ModelSpec(info.name, int(scale), hp)
    return model


def count_parameters(model: torch.nn.Module) -> int:
    """All parameters, trainable or frozen (the convention of the papers' counts)."""
    return sum(p.numel() for p in model.parameters())


def has_parameters(name: str) -> bool:
    """Whether registry model ``name`` has parameters (weights to load or train); checked on its tiny configuration."""
    info = get_info(name)
    return count_parameters(create_model(info.name, scale=info.scales[0], **info.tiny)) > 0
