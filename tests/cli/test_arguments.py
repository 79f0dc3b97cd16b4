"""Shared CLI helpers."""

from __future__ import annotations

import argparse
import os
import shlex

import pytest

from sisr.cli.arguments import check_output_dir, check_output_file, command_line, tile
from sisr.errors import ConfigError


def test_command_line_round_trips_through_the_parser():
    p = argparse.ArgumentParser()
    p.add_argument("--models", type=lambda s: s.split(","))
    p.add_argument("--scales", type=int, nargs="+")
    p.add_argument("--weights", action="append", default=[])
    p.add_argument("--self-ensemble", action="store_true")
    p.add_argument("--out", default="a b")
    args = p.parse_args(["--models", "edsr,rcan", "--scales", "2", "3", "--weights", "x=1", "--weights", "y=2"])
    line = command_line("eval", args, comma=("models",), repeat=("weights",))
    assert line.startswith("sisr eval ")
    assert vars(p.parse_args(shlex.split(line)[2:])) == vars(args)


def test_tile_argument():
    assert tile("auto") == "auto" and tile("64") == 64
    for bad in ("0", "x"):
        with pytest.raises(argparse.ArgumentTypeError):
            tile(bad)


def test_check_output_dir_accepts_existing_and_creatable_folders(tmp_path):
    assert check_output_dir(tmp_path) == tmp_path
    assert check_output_dir(tmp_path / "a" / "b") == tmp_path / "a" / "b"
    assert not (tmp_path / "a").exists()  # checked, not made
    with pytest.raises(ConfigError, match="no such folder"):
        check_output_dir(tmp_path / "missing", must_exist=True)


def test_check_output_dir_refuses_files_and_unwritable_places(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(ConfigError, match="afile: exists and is not a folder"):
        check_output_dir(afile)
    with pytest.raises(ConfigError, match="is a file, not a folder"):
        check_output_dir(afile / "sub")
    if os.path.isdir("/proc/self"):  # refused even to root
        with pytest.raises(ConfigError, match="/proc/x"):
            check_output_dir("/proc/x")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        if not os.access(locked, os.W_OK):  # root writes anywhere
            with pytest.raises(ConfigError, match="not writable"):
                check_output_dir(locked)
            with pytest.raises(ConfigError, match="not writable"):
                check_output_dir(locked / "new")
    finally:
        locked.chmod(0o700)


def test_check_output_file(tmp_path):
    assert check_output_file(tmp_path / "new" / "x.png") == tmp_path / "new" / "x.png"
    with pytest.raises(ConfigError, match="is a folder"):
        check_output_file(tmp_path)
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ConfigError, match="afile"):
        check_output_file(tmp_path / "afile" / "x.png")


def test_run_options_are_built_from_arguments_in_one_place():
    from sisr.cli.arguments import run_options
    from sisr.inference.options import RunOptions

    args = argparse.Namespace(tile=64, tile_overlap=None, chop=False, self_ensemble=True, precision="fp32",
                              backend="auto", compile=False, quality=90)
    assert run_options(args) == RunOptions(tile=64, self_ensemble=True)
    assert run_options(args, progress=True).progress
    assert run_options(argparse.Namespace(backend="eager", compile=True)).backend == "compile"  # the alias
    with pytest.raises(ConfigError, match="--compile means --backend compile, not --backend onnxruntime"):
        run_options(argparse.Namespace(backend="onnxruntime", compile=True))
    with pytest.raises(ConfigError, match="--tile 40 must be at least twice"):
        run_options(argparse.Namespace(tile=40))
