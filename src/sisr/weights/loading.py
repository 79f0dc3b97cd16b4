"""Build a network with its weights, ready for inference.

``load_model("rcan", scale=2, weights="rcan_x2.safetensors")``, ``load_model("my_run/best.safetensors")``,
``load_model("RCAN_BIX2.pt")`` (an official checkpoint, recognised from its keys and shapes) or
``load_model("defian-s", scale=4)`` (shipped pretrained weights).

A weights file is either a sisr safetensors file (metadata says model, scale and
hyper-parameters) or an official checkpoint (``.pt``/``.pth``, or a
safetensors file without sisr metadata), read safely by
:mod:`sisr.weights.official`. Keys always match the network exactly.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..errors import WeightsError
from ..models import create_model, get_info, has_parameters
from ..models.registry import is_model_name as _is_registry_name, list_models
from ..utils.device import resolve_device
from . import FORMAT, load_weights, read_metadata
from .official import is_safetensors, load_official, load_strict
from .pretrained import available_pretrained, missing_weights_error, pretrained_path

__all__ = ["load_model", "pretrained_path", "available_pretrained", "is_model_name"]


def is_model_name(name: str | os.PathLike) -> bool:
    """True if ``name`` is a registry name (case-insensitive)."""
    return _is_registry_name(str(name))


def load_model(name_or_path: str | os.PathLike, scale: int | None = None, *,
               weights: str | os.PathLike | None = None,
               device: str | torch.device = "cpu") -> torch.nn.Module:
    """A network in eval mode on ``device`` with weights loaded (strict key matching).

    ``name_or_path``: a registry name (weights from ``weights`` or the shipped
    ones; models without parameters need none) or a weights file. ``scale``
    defaults to the file's scale, or to the model's first scale for a name.
    ``device``: ``"auto"``, ``"cpu"``, ``"cuda[:i]"`` or ``"mps"``.
    """
    dev = resolve_device(device)
    key = str(name_or_path)
    if not is_model_name(key):
        if weights is not None:
            raise WeightsError(f"'{key}' is not a model name ({', '.join(list_models())}), and weights= was given too")
        return _load_file(Path(key), scale).to(dev).eval()
    info = get_info(key)
    if weights is not None:
        return _load_file(Path(weights), scale, expect=info.name).to(dev).eval()
    scale = int(scale) if scale is not None else info.scales[0]
    info.check_scale(scale)
    path = pretrained_path(info.name, scale)
    if path is not None:
        return _load_file(path, scale, expect=info.name).to(dev).eval()
    if has_parameters(info.name):
        raise missing_weights_error(info.name, scale)
    return create_model(info.name, scale=scale).to(dev).eval()


def _load_file(path: Path, scale: int | None, expect: str | None = None) -> torch.nn.Module:
    if not path.is_file():
        if path.suffix == "" and os.sep not in str(path):
            raise WeightsError(f"unknown model '{path}' and no such weights file; models: {', '.join(list_models())}")
        raise WeightsError(f"{path}: no such weights file")
    if is_safetensors(path) and read_metadata(path).get("format") == FORMAT:
        return _load_sisr(path, scale, expect)
    model, found = load_official(path, model=expect, scale=scale)
    model.sisr_weights = {"path": str(path), "source": "official checkpoint", "model": found.model,
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
