"""glibc allocator tuning of the CLI: applied on glibc Linux, left alone when the user chose otherwise."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from sisr.utils.malloc import keep_freed_memory


@pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_applied_on_glibc():
    # in a child process: the thresholds would change how every later test's memory is measured
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k not in ("SISR_MALLOC", "LD_PRELOAD")}
    code = "from sisr.utils.malloc import keep_freed_memory; print(keep_freed_memory())"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"


@pytest.mark.parametrize("env", [{"SISR_MALLOC": "default"}, {"MALLOC_ARENA_MAX": "2"},
                                 {"LD_PRELOAD": "/usr/lib/libjemalloc.so.2"}])
def test_left_alone_when_the_user_chose(monkeypatch, env):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert keep_freed_memory() is False
