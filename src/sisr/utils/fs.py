"""Atomic, durable, non-clobbering file output.

Outputs are written to a temporary file in the destination folder, flushed to
disk (``fsync`` of the file, then of its folder once it is in place) and moved
into place only when complete, so neither an interrupted job nor a host crash
leaves a truncated file under the final name. Existing files are kept unless
``overwrite=True``. File-system failures become one-line ``OutputError``s
naming the path.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
from pathlib import Path
from typing import Iterator

from ..errors import ConfigError, SisrError


class OutputExistsError(SisrError, FileExistsError):
    """The destination exists and overwriting was not asked for."""


class OutputError(SisrError, OSError):
    """An output cannot be written (folder missing or not a folder, permissions, disk full...)."""


def _exists_message(path: Path) -> str:
    return f"{path}: already exists (use --overwrite to replace it)"


def _os_message(path: Path, exc: OSError) -> str:
    return f"{path}: cannot write: {exc.strerror or exc}"


def fsync_dir(folder: str | os.PathLike) -> None:
    """Make a rename or link in ``folder`` durable (no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_file(path: str | os.PathLike) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _create_temp(folder: Path, name: str) -> Path:
    """A new empty file beside the destination, mode 0666 less the umask (as ``open`` would give)."""
    for _ in range(100):
        tmp = folder / f".{name}.{secrets.token_hex(4)}.part"
        try:
            os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            return tmp
        except FileExistsError:
            continue
    raise OutputError(f"{folder / name}: cannot create a temporary file")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path; on success it is flushed to disk and moved to ``path``.

    The temporary file lives in the destination folder (same file system), so
    the final move is atomic. Without ``overwrite`` the move is done with a
    hard link, which fails instead of replacing a file created meanwhile.
    """
    path = Path(path)
    if not overwrite and path.exists():
        raise OutputExistsError(_exists_message(path))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp_path = _create_temp(path.parent, path.name)
    except OSError as exc:
        if isinstance(exc, SisrError):
            raise
        raise OutputError(_os_message(path, exc)) from None
    mode = os.stat(tmp_path).st_mode & 0o7777
    try:
        yield tmp_path
        try:
            if os.stat(tmp_path).st_mode & 0o7777 != mode:  # a writer that replaced the file (safetensors: 0600)
                os.chmod(tmp_path, mode)
            fsync_file(tmp_path)
            if overwrite:
                os.replace(tmp_path, path)
            else:
                try:
                    os.link(tmp_path, path)
                except FileExistsError:
                    raise OutputExistsError(_exists_message(path)) from None
                except OSError:  # file systems without hard links
                    if path.exists():
                        raise OutputExistsError(_exists_message(path)) from None
                    os.replace(tmp_path, path)
            fsync_dir(path.parent)
        except OSError as exc:
            if isinstance(exc, SisrError):
                raise
            raise OutputError(_os_message(path, exc)) from None
    finally:
        with contextlib.suppress(OSError):
            tmp_path.unlink()


def check_outputs(folder: str | os.PathLike, names, overwrite: bool = False) -> None:
    """``OutputExistsError`` for the first of ``folder/name`` that exists, unless ``overwrite``.

    Call it before slow work and before writing a set of files, so that nothing is half-written.
    """
    if overwrite:
        return
    for name in names:
        if (Path(folder) / name).exists():
            raise OutputExistsError(_exists_message(Path(folder) / name))


def slug(text: str, fallback: str = "x") -> str:
    """``text`` as a file-name part: runs of characters other than ``A-Za-z0-9._-`` become ``_``,
    leading and trailing ``.``/``_`` are dropped; ``fallback`` when nothing is left."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or fallback


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's content, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def atomic_write_bytes(path: str | os.PathLike, data: bytes, overwrite: bool = False) -> Path:
    """Write ``data`` to ``path`` atomically and durably; return the path."""
    with atomic_path(path, overwrite=overwrite) as tmp:
        try:
            tmp.write_bytes(data)
        except OSError as exc:
            raise OutputError(_os_message(Path(path), exc)) from None
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str, overwrite: bool = False) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically and durably; return the path."""
    return atomic_write_bytes(path, text.encode("utf-8"), overwrite=overwrite)


try:
    import fcntl
except ImportError:  # no advisory locks (Windows): concurrent writers are not coordinated
    fcntl = None


@contextlib.contextmanager
def file_lock(path: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive advisory lock (``flock``) on ``path``, created if missing, inside the block.

    Processes, and threads that each enter the block, holding the same lock file run one at a time;
    the lock is released when the block ends (or the process dies). ``OutputError`` if it cannot be made.
    """
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise OutputError(f"{path}: cannot create the lock file: {exc.strerror or exc}") from None
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def move_into_place(tmp: str | os.PathLike, path: str | os.PathLike, overwrite: bool = False) -> None:
    """Move the complete file ``tmp`` (in ``path``'s folder) to ``path`` durably.

    Without ``overwrite`` an existing ``path`` (also one created meanwhile: the move is a hard link) is an
    ``OutputExistsError``; other failures are one-line ``OutputError``s.
    """
    tmp, path = Path(tmp), Path(path)
    try:
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise OutputExistsError(_exists_message(path)) from None
            except OSError:  # file systems without hard links
                if path.exists():
                    raise OutputExistsError(_exists_message(path)) from None
                os.replace(tmp, path)
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        fsync_dir(path.parent)
    except OSError as exc:
        if isinstance(exc, SisrError):
            raise
        raise OutputError(_os_message(path, exc)) from None


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
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path}: is a folder, but an output file name is needed here")
    check_output_dir(path.parent)
    return path
