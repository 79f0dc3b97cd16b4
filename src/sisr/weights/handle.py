"""A network and what it is: :class:`LoadedModel` (module, spec, ``ModelInfo``, weights provenance, device).

:func:`sisr.weights.loading.resolve` returns one for every kind of model source. :func:`identify` builds one
for a module from the attributes sisr leaves on it (``sisr_spec``, set by ``create_model``; ``sisr_weights``,
set when weights are loaded): it is the only place those attributes are read, so code that needs a
network's name, scale or weights file asks a ``LoadedModel``.

Memory layout: :func:`set_channels_last` converts a module once (``resolve`` does it when it loads one);
:func:`is_channels_last` tells the layout a module is in, so its inputs can be given in the same one.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from ..models.registry import ModelInfo, ModelSpec, get_info
from ..utils.fs import sha256_file

__all__ = ["LoadedModel", "WeightsSource", "identify", "is_channels_last", "set_channels_last"]

SHIPPED, SISR_FILE, OFFICIAL = "shipped weights", "sisr weights file", "official checkpoint"
NO_PARAMETERS, UNRECORDED = "no parameters", "not recorded"


@dataclass(frozen=True)
class WeightsSource:
    """Where a network's weights came from: ``path`` (None when there is no file), ``source`` (one of
    ``"shipped weights"``, ``"sisr weights file"``, ``"official checkpoint"``, ``"no parameters"``,
    ``"not recorded"``: a module whose weights sisr did not load) and the file's metadata."""

    path: Path | None = None
    source: str = UNRECORDED
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @functools.cached_property
    def sha256(self) -> str | None:
        """Hex SHA-256 of the weights file (read once, on first use); None without a file."""
        return None if self.path is None else sha256_file(self.path)

    def record(self) -> dict[str, str] | None:
        """``{"name": file name, "sha256": ...}`` for provenance records; None without a file."""
        return None if self.path is None else {"name": self.path.name, "sha256": self.sha256}


@dataclass(frozen=True, eq=False)
class LoadedModel:
    """A network ready for inference with what it is and where its weights came from.

    ``spec`` and ``info`` are None for a module sisr did not build (then ``name`` is its class name and
    ``scale`` None). ``device`` is where its parameters are (the CPU for a network without any).
    """

    module: nn.Module
    spec: ModelSpec | None
    info: ModelInfo | None
    weights: WeightsSource
    device: torch.device

    @property
    def name(self) -> str:
        return self.spec.name if self.spec is not None else type(self.module).__name__

    @property
    def scale(self) -> int | None:
        return int(self.spec.scale) if self.spec is not None else None

    def describe(self) -> str:
        """``"defian-s x2"`` (the class name alone for a foreign module)."""
        return self.name if self.scale is None else f"{self.name} x{self.scale}"


def identify(module: nn.Module) -> LoadedModel:
    """The :class:`LoadedModel` of a module, from the attributes ``create_model`` and the loaders set."""
    spec = getattr(module, "sisr_spec", None)
    spec = spec if isinstance(spec, ModelSpec) else None
    info = get_info(spec.name) if spec is not None else None
    return LoadedModel(module, spec, info, _weights_source(module), module_device(module))


def _weights_source(module: nn.Module) -> WeightsSource:
    record = getattr(module, "sisr_weights", None)
    if isinstance(record, Mapping) and record.get("path"):
        path = Path(record["path"])
        meta = {k: v for k, v in record.items() if k != "path"}
        if record.get("source") == OFFICIAL:
            return WeightsSource(path, OFFICIAL, meta)
        from .pretrained import PRETRAINED_DIR

        shipped = path.resolve().parent == PRETRAINED_DIR.resolve()
        return WeightsSource(path, SHIPPED if shipped else SISR_FILE, meta)
    if not any(True for _ in module.parameters()):
        return WeightsSource(None, NO_PARAMETERS)
    return WeightsSource()


def module_device(module: nn.Module, fallback: torch.device | str = "cpu") -> torch.device:
    """Device of the module's first parameter or buffer; ``fallback`` for modules with neither."""
    for t in module.parameters():
        return t.device
    for t in module.buffers():
        return t.device
    return torch.device(fallback)


def _conv_weights(module: nn.Module) -> list[torch.Tensor]:
    return [p for p in module.parameters() if p.ndim == 4]


def is_channels_last(module: nn.Module) -> bool:
    """Whether the module's 4-D weights are in channels_last memory format (False without any; a module whose
    kernels are all 1x1 or single-channel, which are in both formats at once, counts as contiguous)."""
    weights = _conv_weights(module)
    return (all(w.is_contiguous(memory_format=torch.channels_last) for w in weights)
            and any(not w.is_contiguous() for w in weights))


def set_channels_last(module: nn.Module, channels_last: bool) -> nn.Module:
    """Put the module's weights in channels_last (or the default contiguous) memory format, in place.

    Values are unchanged. Call it once, when the module is loaded: converting a module that other threads
    are running is not safe. A module without 4-D weights is left alone.
    """
    if _conv_weights(module) and is_channels_last(module) != channels_last:
        module.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    return module
