"""sisr: single-image super-resolution.

Public API (imported lazily, so ``import sisr`` stays fast)::

    sisr.create_model(name, scale=s, **overrides)   # a network from the registry
    sisr.list_models()
    sisr.load_model(name_or_path, scale=s)          # network with weights, ready for inference
    sisr.resolve(source, scale=s)                   # the same as a LoadedModel (module, spec, weights, device)
    sisr.upscale(image, model=..., scale=...)       # numpy image or path in, numpy image out
    sisr.upscale_files(inputs, out_dir, model)      # files and folders, skip-if-done, parallel
    sisr.RunOptions(tile="auto", ...)               # inference options, one checked object
    sisr.tune_process()                             # the command line's OpenMP and allocator tuning
    sisr.imresize(img, scale)                       # MATLAB-exact bicubic
    sisr.degrade(hr, scale, mode="BI"|"BD"|"DN")
    sisr.read_image(path), sisr.write_image(path, img)
    sisr.psnr(sr, hr, shave=s), sisr.ssim(sr, hr, shave=s)
    sisr.evaluate(...), sisr.evaluate_images(...), sisr.train(...), sisr.profile(...)
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

__version__ = "0.1.0"

_API = {
    "create_model": "sisr.models",
    "list_models": "sisr.models",
    "get_info": "sisr.models",
    "count_parameters": "sisr.models",
    "load_model": "sisr.weights.loading",
    "resolve": "sisr.weights.loading",
    "LoadedModel": "sisr.weights.handle",
    "RunOptions": "sisr.inference.options",
    "upscale": "sisr.inference.images",
    "upscale_files": "sisr.inference.batch",
    "imresize": "sisr.data.resize",
    "degrade": "sisr.data.degrade",
    "read_image": "sisr.data.io",
    "write_image": "sisr.data.io",
    "psnr": "sisr.metrics",
    "ssim": "sisr.metrics",
    "evaluate": "sisr.evaluation.protocol",
    "evaluate_images": "sisr.evaluation.protocol",
    "train": "sisr.training.trainer",
    "profile": "sisr.evaluation.profile",
}

__all__ = ["__version__", "tune_process", *_API]

OMP_SPIN_COUNT = "10000"  # libgomp spins this long before it sleeps (its default with no policy set: 300000)


def tune_process(*, openmp: bool = True, allocator: bool = True) -> dict[str, bool]:
    """Tune this process as the ``sisr`` command does; returns what was applied, by name.

    * ``openmp``: ``OMP_WAIT_POLICY=PASSIVE`` and ``GOMP_SPINCOUNT=10000`` unless you set
      ``OMP_WAIT_POLICY`` yourself (then nothing is changed): idle OpenMP threads spin briefly, then
      sleep, instead of spinning for milliseconds on cores other work wants (docs/performance.md,
      "OpenMP waiting"). OpenMP reads these when torch is imported, so this **must run before
      ``import torch``** (anywhere in the process); after it, nothing is changed and ``False`` is reported.
    * ``allocator``: glibc keeps freed memory for reuse (:func:`sisr.utils.malloc.keep_freed_memory`;
      1.26x for DeFiAN-S on one core). It can be called at any time and affects later allocations; it
      does nothing when ``SISR_MALLOC=default``, a ``MALLOC_*`` variable or a preloaded allocator is
      set, or the C library is not glibc.

    Not covered, because they are choices rather than tuning: torch's thread count
    (``torch.set_num_threads``, changeable at any time; the command's ``--threads``) and
    ``torch.set_num_interop_threads`` (only before torch's first parallel work).
    """
    applied = {"openmp": False, "allocator": False}
    if openmp and "torch" not in sys.modules and "OMP_WAIT_POLICY" not in os.environ:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"  # LLVM/Intel OpenMP (macOS wheels): sleep at once
        os.environ.setdefault("GOMP_SPINCOUNT", OMP_SPIN_COUNT)  # libgomp (Linux wheels): spin briefly first
        applied["openmp"] = True
    if allocator:
        from .utils.malloc import keep_freed_memory

        applied["allocator"] = keep_freed_memory()
    return applied


def __getattr__(name: str) -> Any:
    if name in _API:
        value = getattr(importlib.import_module(_API[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'sisr' has no attribute '{name}'")


def __dir__() -> list[str]:
    return sorted(__all__)
