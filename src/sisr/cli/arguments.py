"""Argument types and helpers shared by several sub-commands."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path


def tile(value: str) -> int | str:
    """``--tile``: a number of LR pixels >= 1, or ``auto``."""
    if value == "auto":
        return value
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of LR pixels or 'auto', got '{value}'") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"tile must be >= 1, got {n}")
    return n


def command_line(command: str, args: argparse.Namespace, *, comma: tuple[str, ...] = (),
                 repeat: tuple[str, ...] = ()) -> str:
    """The ``sisr COMMAND`` line equivalent to ``args`` (every option given or defaulted).

    Lists are written ``--opt a b``, or ``--opt a,b`` for keys in ``comma``, or
    ``--opt a --opt b`` for keys in ``repeat``. Only for commands without positionals.
    """
    parts = ["sisr", command]
    for key, value in vars(args).items():
        if value is None or value is False or value == []:
            continue
        flag = "--" + key.replace("_", "-")
        if value is True:
            parts.append(flag)
        elif isinstance(value, (list, tuple)):
            if key in comma:
                parts += [flag, ",".join(map(str, value))]
            elif key in repeat:
                for v in value:
                    parts += [flag, str(v)]
            else:
                parts += [flag, *map(str, value)]
        else:
            parts += [flag, str(value)]
    return shlex.join(parts)


def plan_outputs(inputs: list[str], output: Path, suffix: str) -> tuple[list[tuple[Path, Path]], list[str]]:
    """``(source, destination)`` pairs for the inputs, and one-line errors for inputs that cannot be used."""
    from ..data.io import find_images

    jobs: list[tuple[Path, Path]] = []
    errors: list[str] = []
    single_file = len(inputs) == 1 and Path(inputs[0]).is_file() and output.suffix.lower() == ".png"
    for item in map(Path, inputs):
        if item.is_dir():
            found = find_images(item)
            if not found:
                errors.append(f"{item}: no image files in this folder")
            for src in found:
                rel = src.relative_to(item)
                jobs.append((src, output / rel.parent / f"{rel.stem}{suffix}.png"))
        elif item.is_file():
            jobs.append((item, output if single_file else output / f"{item.stem}{suffix}.png"))
        else:
            errors.append(f"{item}: no such file or folder")
    seen: dict[Path, Path] = {}
    unique = []
    for src, dst in jobs:
        key = dst.resolve()
        if key == src.resolve():
            errors.append(f"{src}: the output would replace the input (choose another -o or a --suffix)")
        elif key in seen:
            errors.append(f"{src}: output {dst} is also the output of {seen[key]} (use separate runs or a --suffix)")
        else:
            seen[key] = src
            unique.append((src, dst))
    return unique, errors
