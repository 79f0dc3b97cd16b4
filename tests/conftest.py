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


# Markers for a quick local run (`pytest -m "not slow"`); CI runs everything. A module listed here is marked
# as a whole; single tests may carry the markers themselves. Measured with --durations on 2 cores.
SLOW_MODULES = {
    "inference/test_export.py", "inference/test_backends.py", "training/test_train_ddp.py",
    "weights/test_pretrained.py", "serve/test_live.py", "serve/test_browser.py", "training/test_train.py",
    "training/test_train_t91.py", "benchmarks/test_gpu_suite.py", "benchmarks/test_benchmarks.py",
    "experiments/test_experiments.py", "training/test_run_dir.py", "test_ground_truth_ci.py",
    "models/test_registry.py", "models/test_defian_variants.py", "inference/test_batch.py", "models/test_cran.py",
    "models/test_csnln.py", "models/test_eacrn_variants.py", "models/test_csnln_variants.py",
    "data/test_format_matrix.py", "models/test_parity.py", "training/test_prepare.py", "test_readme.py",
    "data/test_prepare.py", "cli/test_upscale_outputs.py", "cli/test_upscale_cli.py", "evaluation/test_report.py",
    "inference/test_api_properties.py", "data/test_io_properties.py", "serve/test_api.py", "serve/test_faults.py",
    "cli/test_demo_cli.py", "evaluation/test_profile.py", "evaluation/test_evaluate.py", "cli/test_eval_cli.py",
}
SUBPROCESS_MODULES = {"training/test_train_ddp.py", "test_ground_truth_ci.py", "serve/test_live.py",
                      "benchmarks/test_gpu_suite.py", "utils/test_malloc.py", "cli/test_main.py"}
BROWSER_TESTS = {"evaluation/test_report.py::test_chromium_renders_the_page"}


def pytest_collection_modifyitems(config, items):
    root = Path(__file__).resolve().parent
    for item in items:
        module = Path(str(item.fspath)).resolve().relative_to(root).as_posix()
        if module in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)
        if module in SUBPROCESS_MODULES:
            item.add_marker(pytest.mark.subprocess)
        if f"{module}::{item.name}" in BROWSER_TESTS:
            item.add_marker(pytest.mark.browser)
