"""sisr weights files: safetensors with JSON metadata.

A sisr weights file holds a model's ``state_dict`` (names as in the model, which
are the authors' names where official code exists) and metadata describing
how to rebuild it. Safetensors metadata is a flat ``str -> str`` map; every
value here is stored JSON-encoded so that numbers, lists and dicts survive:

``format``   ``"sisr-weights"`` (format marker, version 1)
``model``    registry name, e.g. ``"defian-s"``
``scale``    integer upscaling factor
``hparams``  constructor arguments beyond the registry defaults, e.g. ``{"n_feats": 32}``
anything else the writer adds (``training``, ``metrics``, ``command``, ...).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

import torch

from ..errors import WeightsError
from ..utils.fs import atomic_path

FORMAT = "sisr-weights"
FORMAT_VERSION = 1


def save_weights(
    state: torch.nn.Module | Mapping[str, torch.Tensor],
    path: str | os.PathLike,
    *,
    model: str,
    scale: int,
    hparams: Mapping[str, Any] | None = None,
    metadata: Mapping[str, Any] | None = None,
    dtype: torch.dtype | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a state dict (or a module's) to a safetensors file with metadata.

    ``dtype`` (e.g. ``torch.float16``) converts floating-point tensors for
    smaller files; loading casts back to the model's dtype. The file is written
    atomically and an existing file is kept unless ``overwrite``.
    """
    from safetensors.torch import save_file

    sd = state.state_dict() if isinstance(state, torch.nn.Module) else state
    tensors = {}
    for name, t in sd.items():
        t = t.detach().to("cpu")
        if dtype is not None and t.is_floating_point():
            t = t.to(dtype)
        tensors[name] = t.contiguous().clone()
    meta: dict[str, Any] = dict(metadata or {})
    meta.update(format=FORMAT, format_version=FORMAT_VERSION, model=model, scale=int(scale),
                hparams=dict(hparams or {}))
    encoded = {k: json.dumps(v, sort_keys=True) for k, v in meta.items()}
    with atomic_path(path, overwrite=overwrite) as tmp:
        save_file(tensors, str(tmp), metadata=encoded)
    return Path(path)


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """Return the decoded metadata of a safetensors file (empty dict if none)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such weights file")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = f.metadata() or {}
    except Exception as exc:  # safetensors raises several types for bad headers
        raise WeightsError(f"{path}: not a readable safetensors file ({exc})") from None
    out: dict[str, Any] = {}
    for k, v in raw.items():
        try:
            out[k] = json.loads(v)
        except (TypeError, ValueError):
            out[k] = v
    return out


def load_weights(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a safetensors file; return ``(state_dict, metadata)``."""
    from safetensors.torch import load_file

    meta = read_metadata(path)
    try:
        sd = load_file(str(path))
    except Exception as exc:
        raise WeightsError(f"{path}: cannot read tensors ({exc})") from None
    return sd, meta


# The model handle, importable from here too: sisr.weights.resolve(...) -> LoadedModel. Loaded on first use
# (those modules import this one for the file format above).
_LAZY = {"resolve": "loading", "load_model": "loading", "default_model": "loading", "LoadedModel": "handle",
         "WeightsSource": "handle", "identify": "handle"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module '{__name__}' has no attribute '{name}'")
