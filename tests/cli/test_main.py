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
    assert main(["experiment", "list", "--threads", "2"]) == 0  # after a sub-command too
    assert main(["experiment", "--threads", "3", "list"]) == 0 and main(["experiment", "list"]) == 0
    assert seen == [1, 2, 3]


def test_threads_must_be_positive(capsys):
    with pytest.raises(SystemExit) as info:
        main(["models", "--threads", "0"])
    assert info.value.code == 2 and "expected a positive integer, got '0'" in capsys.readouterr().err


@pytest.mark.parametrize("name", [n for n in COMMANDS if n != "profile"])
def test_every_command_takes_threads(name, capsys):
    with pytest.raises(SystemExit):
        main([name, "--help"])
    assert "--threads N" in capsys.readouterr().out


def test_wait_policy_is_set_before_torch_loads_unless_the_user_chose():
    code = ("import os, sys; from sisr.cli import main; main(['models']); "
            "print(os.environ['OMP_WAIT_POLICY'], os.environ.get('GOMP_SPINCOUNT'), file=sys.stderr)")
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stderr.split()[-2:] == ["PASSIVE", "10000"]  # sleeps after a short spin
    out = subprocess.run([sys.executable, "-c", code], env=dict(env, GOMP_SPINCOUNT="7"), capture_output=True,
                         text=True, check=True)
    assert out.stderr.split()[-2:] == ["PASSIVE", "7"]
    out = subprocess.run([sys.executable, "-c", code], env=dict(env, OMP_WAIT_POLICY="ACTIVE"), capture_output=True,
                         text=True, check=True)
    assert out.stderr.split()[-2:] == ["ACTIVE", "None"]
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


def test_console_entry_freezes_what_the_imports_made_and_collects_after():
    """`sisr` (entry): no cycle collection while torch loads, its objects frozen, the collector back on."""
    code = ("import gc, sys; from sisr.cli import main; rc = main(['models'], freeze_imports=True); "
            "print(rc, gc.isenabled(), gc.get_freeze_count())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    rc, enabled, frozen = out.stdout.split()[-3:]
    assert (rc, enabled) == ("0", "True") and int(frozen) > 100_000  # torch alone makes ~165,000
    out = subprocess.run([sys.executable, "-m", "sisr", "models"], capture_output=True, text=True)
    assert out.returncode == 0 and "defian-s" in out.stdout


def test_plot_does_not_load_torch():
    """The console entry imports torch before run() for every command but plot, which needs none."""
    code = ("import sys; from sisr.cli import main; main(['plot', 'nowhere'], freeze_imports=True); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "False", out.stderr


def test_threads_beyond_the_machine_are_one_line(capsys):
    import pytest

    from sisr.cli import max_threads

    for bad in (str(max_threads() + 1), "99999999999"):
        with pytest.raises(SystemExit) as exit_:
            main(["models", "--threads", bad])
        assert exit_.value.code == 2
        err = capsys.readouterr().err
        assert f"at most {max_threads()}" in err and "Traceback" not in err


def test_warnings_reach_users_as_one_line_without_source_lines(capsys, monkeypatch):
    import warnings

    import sisr.cli.models as models

    def run(args):
        warnings.warn("something to know", UserWarning)
        return 0

    monkeypatch.setattr(models, "run", run)
    assert main(["models"]) == 0
    err = capsys.readouterr().err
    assert err == "sisr models: warning (UserWarning): something to know\n"


@pytest.mark.parametrize("argv", [["upscale", "", "-o", "out"], ["upscale", "a.png", "-o", ""],
                                  ["resize", "", "-o", "r", "--scale", "2"], ["degrade", "", "d", "--scale", "2"],
                                  ["experiment", "run", "cran-table1", "-o", " "]])
def test_an_empty_path_is_refused_not_taken_as_the_current_folder(argv, capsys, tmp_path, monkeypatch):
    """`sisr upscale "$IN" -o out` with IN unset upscaled every image under the current folder, exit 0."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2 and "an empty path (an unset shell variable?)" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
