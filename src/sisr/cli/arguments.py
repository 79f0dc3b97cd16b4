"""Argument types and helpers shared by several sub-commands."""

from __future__ import annotations

import argparse
import shlex


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
