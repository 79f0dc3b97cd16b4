"""Argument types and helpers shared by several sub-commands."""

from __future__ import annotations

import argparse
import os
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


EXTENSIONS = {"png": ".png", "jpg": ".jpg", "webp": ".webp", "tiff": ".tif", "same": None}


def check_suffix(suffix: str) -> str:
    """``--suffix``: a plain part of a file name (no folder separators, no ``..``)."""
    from ..errors import ConfigError

    if "/" in suffix or "\\" in suffix or os.sep in suffix or ".." in suffix or "\0" in suffix:
        raise ConfigError(f"--suffix '{suffix}': must be a plain name part (no '/', '\\' or '..')")
    return suffix


def plan_outputs(inputs: list[str], output: Path, suffix: str, *, ext: str = "png",
                 has_suffix_option: bool = False) -> tuple[list[tuple[Path, Path]], list[str]]:
    """``(source, destination)`` pairs for the inputs, and one-line errors for inputs that cannot be used.

    One input file and an output with an image extension (``OUTPUT_FORMATS``) that is not an existing
    folder: that file. Otherwise OUTPUT is a folder (checked first: one ``ConfigError`` naming it);
    names there take ``ext`` (``same``: the input's, PNG for formats that cannot be written). An output
    named like an image file is never turned into a folder. ``has_suffix_option``: the command has
    ``--suffix``, so hints may suggest it.
    """
    from ..data.io import IMAGE_EXTENSIONS, OUTPUT_FORMATS, find_images
    from ..errors import ConfigError

    check_suffix(suffix)
    if ext not in EXTENSIONS:
        raise ConfigError(f"--ext '{ext}': choose one of {', '.join(EXTENSIONS)}")
    if output.suffix.lower() in IMAGE_EXTENSIONS - set(OUTPUT_FORMATS) and not output.is_dir():
        raise ConfigError(f"{output}: cannot write {output.suffix} files (use {', '.join(sorted(OUTPUT_FORMATS))})")
    names_file = output.suffix.lower() in OUTPUT_FORMATS and not output.is_dir()
    single_file = len(inputs) == 1 and Path(inputs[0]).is_file() and names_file
    if single_file:
        check_output_file(output)
    elif names_file:
        raise ConfigError(f"{output}: names a {output.suffix} file, but "
                          f"{'a folder' if len(inputs) == 1 else f'{len(inputs)} inputs'} need an output folder")
    else:
        check_output_dir(output)

    def name(src: Path, stem: str) -> str:
        out_ext = EXTENSIONS[ext] or (src.suffix.lower() if src.suffix.lower() in OUTPUT_FORMATS else ".png")
        return f"{stem}{suffix}{out_ext}"

    jobs: list[tuple[Path, Path]] = []
    errors: list[str] = []
    for item in map(Path, inputs):
        if item.is_dir():
            found = find_images(item)
            if not found:
                errors.append(f"{item}: no image files in this folder")
            for src in found:
                rel = src.relative_to(item)
                jobs.append((src, output / rel.parent / name(src, rel.stem)))
        elif item.is_file():
            jobs.append((item, output if single_file else output / name(item, item.stem)))
        else:
            errors.append(f"{item}: no such file or folder")
    seen: dict[Path, Path] = {}
    unique = []
    for src, dst in jobs:
        key = dst.resolve()
        if key == src.resolve():
            hint = "choose another -o or a --suffix" if has_suffix_option else "choose another -o"
            errors.append(f"{src}: the output would replace the input ({hint})")
        elif key in seen:
            other = seen[key]
            hint = ("use --ext same, separate runs or another -o for one of them"
                    if ext != "same" and other.suffix.lower() != src.suffix.lower() else
                    "use separate runs or another -o for one of them")
            errors.append(f"{src}: output {dst} is also the output of {other} ({hint})")
        else:
            seen[key] = src
            unique.append((src, dst))
    return unique, errors


def _writable(folder: Path) -> bool:
    """Whether a file can be created in ``folder`` (tried: ``os.access`` says yes to root on /proc)."""
    if not os.access(folder, os.W_OK | os.X_OK):
        return False
    probe = folder / f".sisr-write-test-{os.getpid()}"
    try:
        os.close(os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        return True
    except OSError:
        return False
    try:
        os.unlink(probe)
    except OSError:
        pass
    return True


def check_output_dir(path: str | os.PathLike, *, must_exist: bool = False) -> Path:
    """Check that ``path`` is, or can be created as, a writable folder; one-line ``ConfigError`` if not.

    Call it before any slow work. A missing folder is fine (it will be made with
    its parents) unless ``must_exist``; an existing file on the way, a folder
    that cannot be written, or a missing folder when ``must_exist`` are errors.
    """
    from ..errors import ConfigError

    path = Path(path) if str(path) else Path(".")
    if path.exists():
        if not path.is_dir():
            raise ConfigError(f"{path}: exists and is not a folder (an output folder is needed here)")
        if not _writable(path):
            raise ConfigError(f"{path}: output folder is not writable")
        return path
    if must_exist:
        raise ConfigError(f"{path}: no such folder")
    ancestor = path.absolute().parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ConfigError(f"{path}: cannot be created: {ancestor} is a file, not a folder")
    if not _writable(ancestor):
        raise ConfigError(f"{path}: cannot be created: {ancestor} is not writable")
    return path


def check_output_file(path: str | os.PathLike) -> Path:
    """Check that ``path`` can be written as a file: not a folder, its folder writable or creatable."""
    from ..errors import ConfigError

    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path}: is a folder, but an output file name is needed here")
    check_output_dir(path.parent)
    return path
