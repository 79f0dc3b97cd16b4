"""Shared CLI helpers."""

from __future__ import annotations

import argparse
import shlex

import pytest

from sisr.cli.arguments import command_line, tile


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
