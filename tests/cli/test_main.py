"""The CLI entry point: --threads on every command, the OpenMP wait policy, one-line OS errors."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from sisr.cli import COMMANDS, main


def test_threads_option_sets_torch_threads(monkeypatch, capsys):
    seen = []
    monkeypatch.setattr(torch, "set_num_threads", seen.append)
    assert main(["models", "--threads", "1"]) == 0
    assert seen == [1]


def test_threads_must_be_positive(capsys):
    with pytest.raises(SystemExit) as info:
        main(["models", "--threads", "0"])
    assert info.value.code == 2 and "expected a positive integer, got '0'" in capsys.readouterr().err


@pytest.mark.parametrize("name", [n for n in COMMANDS if n != "profile"])
def test_every_command_takes_threads(name, capsys):
    with pytest.raises(SystemExit):
        main([name, "--help"])
    assert "--threads N" in capsys.readouterr().out


def test_passive_wait_policy_is_set_before_torch_loads_unless_the_user_chose():
    code = ("import os, sys; from sisr.cli import main; main(['models']); "
            "print('torch-before' if 'torch' in sys.modules else '', os.environ['OMP_WAIT_POLICY'], file=sys.stderr)")
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stderr.strip().endswith("PASSIVE")
    env["OMP_WAIT_POLICY"] = "ACTIVE"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stderr.strip().endswith("ACTIVE")
    import sisr.cli  # noqa: F401  (the import itself must not load torch)
    probe = subprocess.run([sys.executable, "-c", "import sys, sisr.cli; print('torch' in sys.modules)"],
                           capture_output=True, text=True, check=True)
    assert probe.stdout.strip() == "False"


def test_os_errors_are_one_line(monkeypatch, capsys):
    import sisr.cli.models as models

    def broken(args):
        raise PermissionError(13, "Permission denied", "/root/x")

    monkeypatch.setattr(models, "run", broken)
    assert main(["models"]) == 1
    err = capsys.readouterr().err
    assert err == "sisr models: error: /root/x: Permission denied\n"
