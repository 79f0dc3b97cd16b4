"""Pretrained weights shipped inside the package.

Files live in ``src/sisr/pretrained/<model>_x<scale>.safetensors`` (sisr weights
files with metadata). No trained weights are shipped yet; a later release adds
them, and every function here simply reports what is there.
"""

from __future__ import annotations

import re
from pathlib import Path

from ..errors import WeightsError

PRETRAINED_DIR = Path(__file__).resolve().parents[1] / "pretrained"
_NAME = re.compile(r"^(?P<model>[a-z0-9-]+)_x(?P<scale>\d+)\.safetensors$")


def pretrained_path(name: str, scale: int) -> Path | None:
    """Shipped weights for a registry model and scale, or None."""
    path = PRETRAINED_DIR / f"{name.lower()}_x{int(scale)}.safetensors"
    return path if path.is_file() else None


def available_pretrained() -> list[tuple[str, int, Path]]:
    """``(model, scale, path)`` of every shipped weights file of a registry model, sorted."""
    from ..models.registry import MODULES

    found = []
    if PRETRAINED_DIR.is_dir():
        for path in PRETRAINED_DIR.iterdir():
            m = _NAME.match(path.name)
            if m and m["model"] in MODULES and path.is_file():
                found.append((m["model"], int(m["scale"]), path))
    order = list(MODULES)
    return sorted(found, key=lambda t: (order.index(t[0]), t[1]))


def missing_weights_error(name: str, scale: int) -> WeightsError:
    """The error for a model/scale without shipped weights: says how to get some."""
    return WeightsError(
        f"no pretrained weights shipped for {name} x{scale}; train them with 'sisr train --config <recipe.yaml>' "
        f"or import the authors' checkpoint with 'sisr convert CHECKPOINT.pt {name}_x{scale}.safetensors', "
        f"then pass --weights FILE (Python: weights=FILE)"
    )


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
    import torch

    from ..engine.loading import load_model
    from . import load_weights, save_weights

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
