"""Atomic, non-clobbering file output.

Outputs are written to a temporary file in the destination folder and moved
into place only when complete, so an interrupted job never leaves a truncated
file behind. Existing files are kept unless ``overwrite=True``.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

from ..errors import SisrError


class OutputExistsError(SisrError, FileExistsError):
    """The destination exists and overwriting was not asked for."""


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path; on success it is moved to ``path``.

    The temporary file lives in the destination folder (same file system), so
    the final move is atomic. Without ``overwrite`` the move is done with a
    hard link, which fails instead of replacing a file created meanwhile.
    """
    path = Path(path)
    if not overwrite and path.exists():
        raise OutputExistsError(f"{path}: already exists (use overwrite to replace it)")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp creates 0600; give the usual mode
    try:
        yield tmp_path
        if overwrite:
            os.replace(tmp_path, path)
        else:
            try:
                os.link(tmp_path, path)
            except FileExistsError:
                raise OutputExistsError(f"{path}: already exists (use overwrite to replace it)") from None
            except OSError:  # file systems without hard links
                if path.exists():
                    raise OutputExistsError(f"{path}: already exists (use overwrite to replace it)") from None
                os.replace(tmp_path, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()


def check_outputs(folder: str | os.PathLike, names, overwrite: bool = False) -> None:
    """``OutputExistsError`` for the first of ``folder/name`` that exists, unless ``overwrite``.

    Call it before slow work and before writing a set of files, so that nothing is half-written.
    """
    if overwrite:
        return
    for name in names:
        if (Path(folder) / name).exists():
            raise OutputExistsError(f"{Path(folder) / name}: already exists (use --overwrite to replace it)")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes, overwrite: bool = False) -> Path:
    """Write ``data`` to ``path`` atomically; return the path."""
    with atomic_path(path, overwrite=overwrite) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str, overwrite: bool = False) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically; return the path."""
    return atomic_write_bytes(path, text.encode("utf-8"), overwrite=overwrite)
