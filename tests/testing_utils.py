"""Helpers importable from any test module (tests/ is on pytest's pythonpath)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def shared_root() -> Path | None:
    """../shared beside the checkout (or $SISR_SHARED), None when absent."""
    env = os.environ.get("SISR_SHARED")
    path = Path(env) if env else REPO.parent / "shared"
    return path if path.is_dir() else None


def ground_truth_cases(cases: list, what: str) -> list:
    """Parameters of a ground-truth test; when ../shared lacks ``what``: one case that skips locally and
    fails under CI=true (where ../shared is always present), so the suite never vanishes unnoticed."""
    import pytest

    if cases:
        return cases
    if os.environ.get("CI") == "true":
        return [pytest.param(None, id="missing")]  # the test fails: its `shared` fixture, or require_case
    return [pytest.param(None, id="missing", marks=pytest.mark.skip(reason=f"{what} not found (set SISR_SHARED)"))]


def require_case(case, what: str) -> None:
    """In a ground-truth test: fail (CI) on the stand-in case of :func:`ground_truth_cases`."""
    import pytest

    if case is None:
        pytest.fail(f"{what} not found under CI=true (../shared is required there)")


def write_noise_images(folder: Path, count: int, shape: tuple[int, ...], seed: int = 0) -> Path:
    """``count`` uniform-noise uint8 PNGs ``t<i>.png`` in ``folder``; returns the folder."""
    from sisr.data.io import write_image

    rng = np.random.default_rng(seed)
    for i in range(count):
        write_image(folder / f"t{i}.png", rng.integers(0, 256, shape, dtype=np.uint8))
    return folder


def tiny_train_config(root: Path, **sections: dict) -> dict:
    """A training config for a 1-block EDSR-baseline on ``root/train`` (CPU, seconds); each keyword
    (``train={...}``, ...) updates that section's keys."""
    cfg = {
        "model": {"name": "edsr-baseline", "scale": 2, "hparams": {"n_resblocks": 1, "n_feats": 8}},
        "data": {"hr": [str(root / "train")], "patch_size": 8, "workers": 0, "cache_dir": str(root / "cache")},
        "val": {"every": 0},
        "train": {"iterations": 4, "batch_size": 2, "checkpoint_every": 2, "device": "cpu"},
        "log": {"every": 2},
    }
    for section, values in sections.items():
        cfg[section] = {**cfg.get(section, {}), **values}
    return cfg
