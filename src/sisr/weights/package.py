"""Package a trained sisr weights file as the shipped pretrained weights (float16 after an output check)."""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import WeightsError
from . import load_weights, save_weights
from .loading import load_model
from .pretrained import PRETRAINED_DIR


def package_pretrained(source: str | Path, *, metadata: dict | None = None, half: bool = True,
                       dest_dir: str | Path | None = None, overwrite: bool = False,
                       check_size: int = 48, tolerance: float = 1 / 255) -> Path:
    """Copy a trained sisr weights file into the package as ``<model>_x<scale>.safetensors``.

    ``metadata`` is merged over the source's (training data, iterations, measured
    PSNR/SSIM, command; dictionaries one level deep). With ``half`` the floating-point tensors are stored as
    float16, after checking on a fixed random image (``check_size`` pixels square)
    that the fp16-stored network's output stays within ``tolerance`` of the
    original's; otherwise a ``WeightsError`` is raised and nothing is written.
    """
    source = Path(source)
    sd, meta = load_weights(source)
    name, scale = meta.get("model"), meta.get("scale")
    if name is None or scale is None:
        raise WeightsError(f"{source}: not a sisr weights file (no 'model'/'scale' metadata)")
    dest = Path(dest_dir or PRETRAINED_DIR) / f"{name}_x{int(scale)}.safetensors"
    extra = {k: v for k, v in meta.items() if k not in ("format", "format_version", "model", "scale", "hparams")}
    for key, value in (metadata or {}).items():  # dicts are merged one level deep (keeps training.config)
        old = extra.get(key)
        extra[key] = {**old, **value} if isinstance(old, dict) and isinstance(value, dict) else value
    if half:
        net = load_model(source)
        x = torch.rand(1, 3, check_size, check_size, generator=torch.Generator().manual_seed(0))
        halved = {k: (v.half().float() if v.is_floating_point() else v) for k, v in sd.items()}
        with torch.inference_mode():
            ref = net(x).clamp(0, 1)
            net.load_state_dict(halved)
            diff = (net(x).clamp(0, 1) - ref).abs().max().item()
        if diff > tolerance:
            raise WeightsError(f"{source}: float16 storage changes the output by {diff * 255:.2f}/255 "
                               f"(limit {tolerance * 255:.2f}/255); package with half=False")
        extra["storage"] = {"dtype": "float16", "max_output_change_vs_fp32": diff}
    return save_weights(sd, dest, model=name, scale=int(scale), hparams=meta.get("hparams", {}), metadata=extra,
                        dtype=torch.float16 if half else None, overwrite=overwrite)
