"""sisr: single-image super-resolution.

Public API (imported lazily, so ``import sisr`` stays fast)::

    sisr.create_model(name, scale=s, **overrides)   # a network from the registry
    sisr.list_models()
    sisr.load_model(name_or_path, scale=s)          # network with weights, ready for inference
    sisr.upscale(image, model=..., scale=...)       # numpy image or path in, numpy image out
    sisr.imresize(img, scale)                       # MATLAB-exact bicubic
    sisr.degrade(hr, scale, mode="BI"|"BD"|"DN")
    sisr.read_image(path), sisr.write_image(path, img)
    sisr.psnr(sr, hr, shave=s), sisr.ssim(sr, hr, shave=s)
    sisr.evaluate(...), sisr.train(...), sisr.profile(...)
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_API = {
    "create_model": "sisr.models",
    "list_models": "sisr.models",
    "get_info": "sisr.models",
    "count_parameters": "sisr.models",
    "load_model": "sisr.weights.loading",
    "upscale": "sisr.inference.images",
    "imresize": "sisr.data.resize",
    "degrade": "sisr.data.degrade",
    "read_image": "sisr.data.io",
    "write_image": "sisr.data.io",
    "psnr": "sisr.metrics",
    "ssim": "sisr.metrics",
    "evaluate": "sisr.evaluation.protocol",
    "train": "sisr.training.trainer",
    "profile": "sisr.evaluation.profile",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    if name in _API:
        value = getattr(importlib.import_module(_API[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'sisr' has no attribute '{name}'")


def __dir__() -> list[str]:
    return sorted(__all__)
