"""Pretrained weights shipped inside the package.

Files live in ``src/sisr/pretrained/<model>_x<scale>.safetensors`` (sisr weights
files with metadata). Shipped today: ``defian-s`` at x2, x3 and x4, trained on
the CPU (docs/results.md); every function here simply reports what is there.
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
    from ..models.registry import is_model_name, list_models

    found = []
    if PRETRAINED_DIR.is_dir():
        for path in PRETRAINED_DIR.iterdir():
            m = _NAME.match(path.name)
            if m and is_model_name(m["model"]) and path.is_file():
                found.append((m["model"], int(m["scale"]), path))
    order = list_models()
    return sorted(found, key=lambda t: (order.index(t[0]), t[1]))


def missing_weights_error(name: str, scale: int) -> WeightsError:
    """The error for a model/scale without shipped weights: says how to get some."""
    return WeightsError(
        f"no pretrained weights shipped for {name} x{scale}; train them with 'sisr train --config <recipe.yaml>' "
        f"or import the authors' checkpoint with 'sisr convert CHECKPOINT.pt {name}_x{scale}.safetensors', "
        f"then pass --weights FILE (Python: weights=FILE)"
    )
