"""Build a network with its weights, ready for inference.

``load_model("rcan", scale=2, weights="rcan_x2.safetensors")``, ``load_model("my_run/best.safetensors")``
or ``load_model("defian-s", scale=4)`` (shipped pretrained weights).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..errors import WeightsError
from ..models import count_parameters, create_model, get_info
from ..models.registry import MODULES
from ..weights import load_weights

PRETRAINED_DIR = Path(__file__).resolve().parents[1] / "pretrained"


def pretrained_path(name: str, scale: int) -> Path | None:
    """Shipped weights for a registry model and scale, or None."""
    path = PRETRAINED_DIR / f"{name}_x{scale}.safetensors"
    return path if path.is_file() else None


def load_model(name_or_path: str | os.PathLike, scale: int | None = None, *,
               weights: str | os.PathLike | None = None, device: str | torch.device = "cpu") -> torch.nn.Module:
    """A network in eval mode with weights loaded (strict key matching)."""
    key = str(name_or_path)
    if key.lower() not in MODULES:
        return _load_file(Path(key), scale, device)
    info = get_info(key)
    scale = scale if scale is not None else info.scales[0]
    info.check_scale(scale)
    if weights is not None:
        return _load_file(Path(weights), scale, device, expect=info.name)
    model = create_model(info.name, scale=scale)
    if count_parameters(model) == 0:
        return model.to(device).eval()
    path = pretrained_path(info.name, scale)
    if path is None:
        raise WeightsError(
            f"no pretrained weights for {info.name} x{scale}; train them with "
            f"'sisr train --config <recipe>' or convert official ones with 'sisr convert', then pass --weights FILE"
        )
    return _load_file(path, scale, device, expect=info.name)


def _load_file(path: Path, scale: int | None, device, expect: str | None = None) -> torch.nn.Module:
    if not path.is_file():
        raise WeightsError(f"{path}: no such weights file (and not a model name: {', '.join(MODULES)})")
    sd, meta = load_weights(path)
    name, file_scale = meta.get("model"), meta.get("scale")
    if name is None or file_scale is None:
        raise WeightsError(f"{path}: no sisr metadata (model, scale); convert official checkpoints with 'sisr convert'")
    if expect is not None and name != expect:
        raise WeightsError(f"{path}: holds weights for '{name}', not '{expect}'")
    if scale is not None and int(file_scale) != int(scale):
        raise WeightsError(f"{path}: weights are for x{file_scale}, not x{scale}")
    model = create_model(name, scale=int(file_scale), **meta.get("hparams", {}))
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        raise WeightsError(f"{path}: does not fit {name} x{file_scale}: {' '.join(first[:2])}") from None
    model.sisr_weights = {"path": str(path), **meta}
    return model.to(device).eval()
