"""Shared test fixtures.

The external ground truth lives in ../shared (datasets, MATLAB and parity
fixtures). Tests that need it use the ``shared`` fixture and are skipped, with
the reason, when it is absent. ``SISR_SHARED`` points elsewhere.
"""

from __future__ import annotations

import os

# Idle OpenMP workers spin by default; with 2 cores that slows tests ~7x.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# in-process CLI calls must not retune this process's allocator (RSS-based memory tests); tests/utils/test_malloc.py
# checks the tuning in a child process
os.environ.setdefault("SISR_MALLOC", "default")

import atexit  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402

# Compiled packages and ONNX graphs go to a per-session folder (inherited by CLI subprocesses), never ~/.cache.
os.environ["SISR_CACHE_DIR"] = tempfile.mkdtemp(prefix="sisr-test-cache-")
atexit.register(shutil.rmtree, os.environ["SISR_CACHE_DIR"], True)

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from testing_utils import shared_root  # noqa: E402


@pytest.fixture(scope="session")
def shared() -> Path:
    root = shared_root()
    if root is None:
        if os.environ.get("CI") == "true":  # CI always has ../shared: its absence is a failure there
            pytest.fail("../shared (datasets and fixtures) not found under CI=true")
        pytest.skip("../shared (datasets and fixtures) not found; set SISR_SHARED")
    return root


@pytest.fixture(scope="session")
def datasets_root(shared) -> Path:
    return shared / "datasets"


@pytest.fixture(scope="session")
def fixtures_root(shared) -> Path:
    return shared / "fixtures"


@pytest.fixture(autouse=True)
def _torch_threads():
    # CI has 2 cores; keep tests deterministic and avoid oversubscription.
    torch.set_num_threads(2)
    yield


@pytest.fixture()
def one_thread(_torch_threads):
    """One torch thread: tiny networks run faster and do not stall on an oversubscribed machine."""
    torch.set_num_threads(1)
    yield
