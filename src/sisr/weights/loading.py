"""The one place a model source becomes a network with its weights: :func:`resolve` (and :func:`load_model`).

``resolve("rcan", 2, weights="rcan_x2.safetensors")``, ``resolve("my_run/best.safetensors")``,
``resolve("RCAN_BIX2.pt")`` (an official checkpoint, recognised from its keys and shapes),
``resolve("defian-s", 4)`` (shipped pretrained weights), ``resolve(None, 3)`` (the default model),
``resolve(module)`` or ``resolve(loaded)`` each return a :class:`~sisr.weights.handle.LoadedModel`;
``load_model`` returns its module.

A weights file is either a sisr safetensors file (metadata says model, scale and
hyper-parameters) or an official checkpoint (``.pt``/``.pth``, or a
safetensors file without sisr metadata), read safely by
:mod:`sisr.weights.official`. Keys always match the network exactly.

One error type per mistake, whatever the entry point (``resolve``, ``load_model``, ``sisr.upscale``,
``evaluate``, ``make_report`` and the commands): an unknown model name, a scale that is not a whole
number or that the model or module does not have: ``ModelError``; a missing, unreadable or unfitting
weights file, or no shipped weights: ``WeightsError``; weights given twice or with a module: ``ConfigError``.
"""

from __future__ import annotations

import dataclasses
import numbers
import os
import warnings
from pathlib import Path
from typing import Callable, Union

import torch
from torch import nn

from ..errors import ConfigError, ModelError, WeightsError
from ..models import create_model, get_info, has_parameters
from ..models.registry import is_model_name as _is_registry_name, list_models
from ..utils.device import resolve_device
from . import FORMAT, load_weights, read_metadata
from .handle import OFFICIAL, LoadedModel, identify, set_channels_last
from .official import is_safetensors, load_official, load_strict
from .pretrained import available_pretrained, missing_weights_error, pretrained_path

__all__ = ["resolve", "load_model", "default_model", "pretrained_path", "available_pretrained", "is_model_name"]

DEFAULT_MODEL = "defian-s"
FALLBACK_MODEL = "bicubic"

Source = Union[str, os.PathLike, nn.Module, LoadedModel, None]


def is_model_name(name: str | os.PathLike) -> bool:
    """True if ``name`` is a registry name (case-insensitive)."""
    return _is_registry_name(str(name))


def default_model(scale: int) -> tuple[str, str | None]:
    """The model used when none is named, and a notice when it is the fallback.

    ``defian-s`` when its shipped weights exist for ``scale``; otherwise ``bicubic``. A scale neither
    has is a ``ModelError`` naming the default model (not the fallback the user never chose).
    """
    get_info(DEFAULT_MODEL).check_scale(scale)
    if pretrained_path(DEFAULT_MODEL, scale) is not None:
        return DEFAULT_MODEL, None
    return FALLBACK_MODEL, (f"no shipped weights for {DEFAULT_MODEL} x{scale}: using bicubic interpolation "
                            f"(choose a network with --model/--weights)")


def resolve(source: Source = None, scale: int | None = None, *, weights: str | os.PathLike | None = None,
            device: str | torch.device = "auto", notify: Callable[[str], None] | None = None,
            channels_last: bool | None = None) -> LoadedModel:
    """The network for ``source``, in eval mode, as a :class:`LoadedModel`.

    ``source``: a registry name (weights from ``weights``, else the shipped ones; models without
    parameters need none), a weights file, ``None`` (``weights`` alone, else the default model of
    :func:`default_model`, whose notice goes to ``notify``, default a ``UserWarning``), an ``nn.Module`` or
    a ``LoadedModel``. ``scale`` defaults to the file's, else the model's first scale (2 for the
    default model); it must be a whole number the model has. ``device``: ``"auto"`` (a given module
    stays where it is; a loaded one goes to CUDA, MPS or the CPU), ``"cpu"``, ``"cuda[:i]"``, ``"mps"``.

    Memory layout is fixed here, once: a network this call loads is put in channels_last on the CPU
    (the faster layout there for inputs of 64x64 and more, docs/performance.md) and left contiguous
    elsewhere; ``channels_last=True``/``False`` chooses. A given module keeps its layout.
    """
    scale = whole_scale(scale)
    if isinstance(source, (LoadedModel, nn.Module)):
        return _given(source, scale, weights, device)
    dev = resolve_device(device)
    module = _load(source, scale, weights, notify).to(dev).eval()
    set_channels_last(module, dev.type == "cpu" if channels_last is None else bool(channels_last))
    return identify(module)


def load_model(name_or_path: str | os.PathLike, scale: int | None = None, *,
               weights: str | os.PathLike | None = None,
               device: str | torch.device = "cpu") -> torch.nn.Module:
    """``resolve(name_or_path, scale, weights=weights, device=device).module``: a network in eval mode
    on ``device`` (``"auto"``, ``"cpu"``, ``"cuda[:i]"`` or ``"mps"``) with its weights loaded."""
    return resolve(name_or_path, scale, weights=weights, device=device).module


def whole_scale(scale) -> int | None:
    """``scale`` as an int (None stays None); ``ModelError`` unless it is a whole number >= 1."""
    if scale is None:
        return None
    whole = isinstance(scale, numbers.Integral) or (isinstance(scale, float) and scale.is_integer())
    if isinstance(scale, bool) or not whole or scale < 1:
        raise ModelError(f"scale must be a whole number >= 1 (2, 3, 4, ...), got {scale!r}")
    return int(scale)


def _given(source: LoadedModel | nn.Module, scale: int | None, weights, device) -> LoadedModel:
    """A module or LoadedModel as given: scale checked, moved when ``device`` is not ``"auto"``."""
    if weights is not None:
        raise ConfigError("weights= applies to a model name or a weights file, not to a module")
    loaded = source if isinstance(source, LoadedModel) else identify(source)
    if scale is not None and loaded.scale is not None and scale != loaded.scale:
        raise ModelError(f"the module ({loaded.name}) upscales x{loaded.scale}, not x{scale}")
    loaded.module.eval()
    if str(device) == "auto":
        return loaded
    dev = resolve_device(device)
    if dev != loaded.device:
        loaded.module.to(dev)
        loaded = dataclasses.replace(loaded, device=dev)  # keeps the weights record (and its hash once made)
    return loaded


def _load(source: str | os.PathLike | None, scale: int | None, weights, notify) -> nn.Module:
    if source is None and weights is None:
        name, notice = default_model(scale or 2)
        if notice:
            (notify or (lambda m: warnings.warn(m, UserWarning, stacklevel=4)))(notice)
        return _load_name(name, scale or 2, None)
    if source is None:
        return _load_file(Path(weights), scale)
    key = os.fspath(source) if isinstance(source, os.PathLike) else source
    if not isinstance(key, str):
        raise ModelError(f"a model is a registry name, a weights file or a module, not {type(source).__name__}")
    if is_model_name(key):
        return _load_name(key, scale, weights)
    if weights is not None and Path(key).is_file():
        raise ConfigError(f"weights are given twice: '{key}' is a weights file and weights='{weights}'")
    return _load_file(Path(key), scale)


def _load_name(name: str, scale: int | None, weights) -> nn.Module:
    info = get_info(name)
    if weights is not None:
        return _load_file(Path(weights), scale, expect=info.name)
    scale = scale if scale is not None else info.scales[0]
    info.check_scale(scale)
    path = pretrained_path(info.name, scale)
    if path is not None:
        return _load_file(path, scale, expect=info.name)
    if has_parameters(info.name):
        raise missing_weights_error(info.name, scale)
    return create_model(info.name, scale=scale)


def _load_file(path: Path, scale: int | None, expect: str | None = None) -> torch.nn.Module:
    if not path.is_file() and not path.is_dir():  # a folder is named as one by read_checkpoint
        if path.suffix == "" and os.sep not in str(path) and "/" not in str(path):
            raise ModelError(f"unknown model '{path}' and no such weights file; models: {', '.join(list_models())}")
        raise WeightsError(f"{path}: no such weights file")
    if is_safetensors(path) and read_metadata(path).get("format") == FORMAT:
        return _load_sisr(path, scale, expect)
    model, found = load_official(path, model=expect, scale=scale)
    model.sisr_weights = {"path": str(path), "source": OFFICIAL, "model": found.model,
                          "scale": found.scale, "hparams": dict(found.hparams)}
    return model


def _load_sisr(path: Path, scale: int | None, expect: str | None) -> torch.nn.Module:
    sd, meta = load_weights(path)
    name, file_scale = meta.get("model"), meta.get("scale")
    if name is None or file_scale is None:
        raise WeightsError(f"{path}: sisr metadata lacks 'model' or 'scale'")
    if expect is not None and name != expect:
        raise WeightsError(f"{path}: holds weights for '{name}', not '{expect}'")
    if scale is not None and int(file_scale) != int(scale):
        raise WeightsError(f"{path}: holds {name} weights for x{file_scale}, not x{int(scale)}")
    model = create_model(name, scale=int(file_scale), **meta.get("hparams", {}))
    load_strict(model, sd, f"{path}: does not fit {name} x{file_scale}")
    model.sisr_weights = {"path": str(path), **meta}
    return model
