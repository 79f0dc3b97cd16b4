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


def run_options(args: argparse.Namespace, **changes):
    """The :class:`~sisr.inference.options.RunOptions` of a command's arguments: the one place command-line
    arguments become inference options (each option the command has, by its field name). ``--compile`` is
    ``--backend compile`` (mapped here only)."""
    import dataclasses

    from ..errors import ConfigError
    from ..inference.options import RunOptions

    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(RunOptions) if hasattr(args, f.name)}
    values = {**values, **changes}
    for name, (needs, flag, needed) in DEPENDENT_OPTIONS.items():  # given without the option they tune: an error
        if values.get(name) not in (None, False) and not values.get(needs):
            raise ConfigError(f"{flag} applies only with {needed}")
    values = {k: v for k, v in values.items() if not (k in DEPENDENT_OPTIONS and v is None)}  # None: the default
    if getattr(args, "compile", False):
        if values.get("backend", "auto") not in ("auto", "eager", "compile"):
            raise ConfigError(f"--compile means --backend compile, not --backend {values['backend']}; give one of them")
        values["backend"] = "compile"
    return RunOptions(**values)


DEPENDENT_OPTIONS = {"tile_overlap": ("tile", "--tile-overlap", "--tile"), "chop_shave": ("chop", "--chop-shave", "--chop"),
                     "chop_min_size": ("chop", "--chop-min-size", "--chop"),
                     "chop_round_to_scale": ("chop", "--chop-round-to-scale", "--chop")}


# Planning outputs lives in the library (sisr.inference.batch); these names stay importable from here, loaded on
# first use (that module imports torch).
_FROM_BATCH = {"EXTENSIONS": "EXTENSIONS", "check_suffix": "check_suffix", "plan_outputs": "plan_jobs"}


from ..utils.fs import check_output_dir, check_output_file  # noqa: E402 - torch-free: every command checks outputs


def __getattr__(name: str):
    if name in _FROM_BATCH:
        from ..inference import batch

        return getattr(batch, _FROM_BATCH[name])
    raise AttributeError(f"module '{__name__}' has no attribute '{name}'")


def one_line_warnings(prog: str = "sisr train"):
    """``warnings.showwarning`` printing a warning as one line for the user (``<prog>: warning: ...``), without
    the source file and line; torch's and other libraries' warnings keep their category name."""
    def show(message, category, filename, lineno, file=None, line=None) -> None:
        import sys

        text = str(message).strip().splitlines()[0] if str(message).strip() else category.__name__
        own = category.__module__.startswith("sisr") or "sisr" in str(filename).replace("\\", "/").split("/")
        label = "warning" if own else f"warning ({category.__name__})"
        try:
            print(f"{prog}: {label}: {text}", file=file or sys.stderr)
        except (OSError, ValueError):  # a closed stream: as Python's own showwarning, say nothing
            pass

    return show
