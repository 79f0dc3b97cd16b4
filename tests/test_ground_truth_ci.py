"""Under CI=true a missing ../shared fails the ground-truth suites instead of skipping them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SUITES = ["tests/models/test_parity.py", "tests/metrics/test_metrics.py::test_matlab_scores"]


@pytest.mark.subprocess
@pytest.mark.parametrize("ci", ["true", ""])
def test_ground_truth_suites_fail_under_ci_without_shared(ci, tmp_path):
    env = {**os.environ, "CI": ci, "SISR_SHARED": str(tmp_path / "absent"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *SUITES], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=300)
    summary = proc.stdout.strip().splitlines()[-1]
    if ci:
        assert proc.returncode == 1 and "2 error" in summary and "skipped" not in summary, summary  # fixture failures
    else:
        assert proc.returncode == 0 and "2 skipped" in summary and "failed" not in summary, summary
