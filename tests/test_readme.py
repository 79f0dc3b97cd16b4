"""The README's first two commands are what CI runs and what users paste."""

from __future__ import annotations

import re

from testing_utils import REPO


def readme_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    return [m.group(1).strip() for m in re.finditer(r"^    (python3 -m venv .+)$", text, re.M)][:2]


def test_readme_opens_with_main_job_and_test_commands():
    main, tests = readme_commands()
    assert main.endswith("sisr demo")
    assert "pytest" in tests
    for cmd in (main, tests):
        assert "torch==2.13.0" in cmd  # never an unpinned torch: that pulls a multi-GB CUDA build


def test_ci_runs_the_readme_test_command():
    _, tests = readme_commands()
    ci = (REPO / ".ci" / "run").read_text()
    assert tests in ci.splitlines()
