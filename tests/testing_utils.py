"""Helpers importable from any test module (tests/ is on pytest's pythonpath)."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def shared_root() -> Path | None:
    """../shared beside the checkout (or $SISR_SHARED), None when absent."""
    env = os.environ.get("SISR_SHARED")
    path = Path(env) if env else REPO.parent / "shared"
    return path if path.is_dir() else None
