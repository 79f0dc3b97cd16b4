"""Model registry: names -> builders, per-scale defaults, variants and metadata.

Each model module declares its entries as ``MODELS = [ModelInfo(...), ...]`` next to the network code;
this module only lists those modules and imports them when a model is first asked for. There is no global
mutable state: ``create_model`` builds a fresh network every call.

An entry's metadata comes in parts (:class:`ModelInfo`): the entry itself (name, builder, scales,
defaults, named variants), :class:`Reference` (what it reproduces and how closely), :class:`Capabilities`
(what the network can do at run time) and :class:`OfficialFormat` (the authors' checkpoints, if any).
A variant is a named set of hyper-parameters declared with the entry (options its docs describe, not
ablation cells, which live in experiment definitions) and addressed as ``"name:variant"`` wherever a
model name is (``create_model("cran:paper-form")``, ``get_info``, ``list_models(variants=True)``).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import inspect
import math
import numbers
import re
import types
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch

from ..errors import ModelError

# Modules under sisr.models whose ``MODELS`` lists are the registry, in display order. A model file
# declares its entries (and variants) next to its network code; nothing else lists model names.
MODEL_MODULES: tuple[str, ...] = ("bicubic", "edsr", "rcan", "csnln", "defian", "cran", "eacrn")

VARIANT_SEPARATOR = ":"
_VARIANT_NAME = re.compile(r"[a-z0-9][a-z0-9-]*")


@functools.lru_cache(maxsize=None)
def _entries() -> Mapping[str, "ModelInfo"]:
    """Every declared entry, by name (each model module imported once)."""
    entries: dict[str, ModelInfo] = {}
    for module_name in MODEL_MODULES:
        module = importlib.import_module(f"{__package__}.{module_name}")
        for info in module.MODELS:
            if info.name in entries:
                raise RuntimeError(f"model '{info.name}' is declared twice (sisr.models.{module_name})")
            entries[info.name] = info
    return types.MappingProxyType(entries)


# Tiling behaviour: how splitting an image into overlapping tiles changes the output.
TILING_LOCAL = "local"  # output depends on a bounded neighbourhood: tiles with enough overlap match exactly
TILING_GLOBAL_STATS = "global-stats"  # global pooling statistics (channel attention...): tiles differ slightly
TILING_GLOBAL_ATTENTION = "global-attention"  # attention over the whole image: tiling changes the result


@dataclass(frozen=True)
class Reference:
    """What an entry reproduces, and the parameter counts that check how closely."""

    paper: str
    code: str | None = None  # authors' repository@commit, None when built from the paper
    params: Mapping[int, int] = field(default_factory=dict)  # scale -> parameter count to reach
    params_source: str = ""  # where those counts come from
    params_tolerance: float = 0.0  # relative; 0 = must match to the unit


@dataclass(frozen=True)
class Capabilities:
    """What the network can do at run time (read by inference, training and export)."""

    tiling: str = TILING_LOCAL
    input_size: str = "any H, W >= 1"
    precisions: tuple[str, ...] = ("fp32",)  # inference: only what a test with trained weights showed safe
    train_precisions: tuple[str, ...] = ("fp32",)  # mixed-precision training the architecture allows
    cpu_train_compile: bool = True  # train.compile=auto may compile it on the CPU (measured faster)
    onnx_unsupported: str | None = None  # why ONNX export cannot reproduce the model (None: it can)
    onnx_notes: str = ""  # known limits of the exported graph


@dataclass(frozen=True)
class OfficialFormat:
    """The authors' released checkpoints: how to recognise them and how their networks are called."""

    detect: Callable[[Mapping[str, torch.Tensor]], dict | None]  # state_dict -> {"scale": s, **hparams} or None
    convention: str  # the official network's input/output convention, recorded in converted files


class _Alias:
    """A former flat field of ModelInfo, read-only: kept so users' scripts written against the flat names keep
    working. Reads ``info.<part>.<field>`` (``missing`` when the part is None)."""

    def __init__(self, part: str, name: str, missing: Any = None):
        self.part, self.name, self.missing = part, name, missing
        self.__doc__ = f"Alias of ``{part}.{name}`` (the former flat field, kept for scripts)."

    def __get__(self, info: Any, owner: type | None = None) -> Any:
        if info is None:
            return self
        part = getattr(info, self.part)
        return self.missing if part is None else getattr(part, self.name)


@dataclass(frozen=True)
class ModelInfo:
    """What sisr knows about one registry entry.

    ``build(scale=s, **hparams)`` returns an ``nn.Module`` mapping RGB in [0, 1]
    of shape (N, 3, H, W) to RGB in [0, 1] of shape (N, 3, sH, sW).
    """

    name: str
    title: str
    build: Callable[..., torch.nn.Module]
    scales: tuple[int, ...]
    reference: Reference
    defaults: Mapping[str, Any] = field(default_factory=dict)
    scale_defaults: Mapping[int, Mapping[str, Any]] = field(default_factory=dict)
    tiny: Mapping[str, Any] = field(default_factory=dict)  # a few-channel configuration for tests
    # named hyper-parameter sets, addressed as "name:variant" (options the model's docs describe)
    variants: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    capabilities: Capabilities = field(default_factory=Capabilities)
    official: OfficialFormat | None = None  # None: no official checkpoints to read
    notes: str = ""

    # The former flat fields, read-only (aliases kept for users' scripts; sisr's own code reads the parts).
    paper = _Alias("reference", "paper")
    code = _Alias("reference", "code")
    reference_params = _Alias("reference", "params")
    reference_source = _Alias("reference", "params_source")
    params_tolerance = _Alias("reference", "params_tolerance")
    tiling = _Alias("capabilities", "tiling")
    input_size = _Alias("capabilities", "input_size")
    precisions = _Alias("capabilities", "precisions")
    train_precisions = _Alias("capabilities", "train_precisions")
    cpu_train_compile = _Alias("capabilities", "cpu_train_compile")
    onnx_unsupported = _Alias("capabilities", "onnx_unsupported")
    onnx_notes = _Alias("capabilities", "onnx_notes")
    from_official = _Alias("official", "detect")
    official_convention = _Alias("official", "convention", missing="")

    def __post_init__(self) -> None:
        """A declaration mistake in a model file fails when the registry is read, not when a variant is used."""
        valid = self.hparam_names()
        for variant, hparams in self.variants.items():
            if not _VARIANT_NAME.fullmatch(variant):
                raise ValueError(f"model '{self.name}': variant name {variant!r} must be lower-case letters, "
                                 f"digits and '-'")
            unknown = sorted(set(hparams) - valid)
            if not hparams or unknown:
                raise ValueError(f"model '{self.name}': variant '{variant}' sets no hyper-parameter or "
                                 f"unknown ones ({', '.join(unknown)})")
            self._check_values(hparams)

    def variant(self, variant: str) -> "ModelInfo":
        """The entry with variant ``variant``'s hyper-parameters as its defaults (``ModelError`` if none such).

        The variant's values win over the per-scale defaults; its capabilities are the entry's; it has no
        reference counts (those are the entry's) and reads no official checkpoints (detection gives the
        entry and the hyper-parameters).
        """
        if variant not in self.variants:
            raise ModelError(f"model '{self.name}' has no variant '{variant}'; variants: "
                             f"{', '.join(self.variants) or 'none'}")
        hparams = self.variants[variant]
        described = ", ".join(f"{k}={v!r}" for k, v in hparams.items())
        return dataclasses.replace(
            self, name=f"{self.name}{VARIANT_SEPARATOR}{variant}", title=f"{self.title}; variant: {described}",
            defaults={**self.defaults, **hparams},
            scale_defaults={s: _without(d, hparams) for s, d in self.scale_defaults.items()},
            tiny=_without(self.tiny, hparams),
            variants={}, official=None, reference=dataclasses.replace(self.reference, params={}, params_source=""),
        )

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


def _without(values: Mapping[str, Any], keys: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if k not in keys}


@dataclass(frozen=True)
class ModelSpec:
    """How a network instance was built: enough to rebuild it."""

    name: str
    scale: int
    hparams: Mapping[str, Any]

    def asdict(self) -> dict[str, Any]:
        return {"model": self.name, "scale": self.scale, "hparams": dict(self.hparams)}


def get_info(name: str) -> ModelInfo:
    """Metadata of a registry entry or of one of its variants (``"name:variant"``); ``ModelError`` for
    unknown names and variants."""
    entries = _entries()
    base, sep, variant = str(name).lower().partition(VARIANT_SEPARATOR)
    if base not in entries:
        raise ModelError(f"unknown model '{base if sep else name}'; available: {', '.join(entries)}")
    return entries[base].variant(variant) if sep else entries[base]


def is_model_name(name: object) -> bool:
    """Whether ``name`` (any case) is a registry name or ``"name:variant"`` of a declared variant."""
    if not isinstance(name, str):
        return False
    base, sep, variant = name.lower().partition(VARIANT_SEPARATOR)
    info = _entries().get(base)
    return info is not None and (not sep or variant in info.variants)


def list_models(variants: bool = False) -> list[str]:
    """Registry names, in a stable order; with ``variants``, each entry's ``"name:variant"`` names after it."""
    return [info.name for info in model_infos(variants)]


def model_infos(variants: bool = False) -> list[ModelInfo]:
    """Every entry's :class:`ModelInfo`, in registry order; with ``variants``, each variant's after its entry."""
    infos = []
    for info in _entries().values():
        infos.append(info)
        if variants:
            infos.extend(info.variant(v) for v in info.variants)
    return infos


def create_model(name: str, scale: int = 2, **overrides: Any) -> torch.nn.Module:
    """Build a fresh network ``name`` (an entry or ``"name:variant"``) for upscaling factor ``scale``.

    Keyword arguments override the registry defaults and the variant's values (unknown names are an
    error). The returned module carries ``sisr_spec`` (a :class:`ModelSpec`: the name as given, in
    lower case, the scale and every hyper-parameter).
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
