"""Inference backends: how the network's forward is executed (eager, compiled package, ONNX Runtime).

``backend``:

* ``"eager"``: the module as it is (``channels_last=True``: in channels_last memory format).
* ``"auto"`` (default): eager, in channels_last memory format on the CPU for inputs (or tiles)
  of at least 64x64 pixels (faster for every convolutional model measured, docs/performance.md),
  NCHW elsewhere. It never compiles:
  a cold compile costs 30 s or more, more than a typical job saves. ``run`` converts the
  module for the call and back afterwards (the caller's module keeps its layout).
* ``"compile"``: on the CPU an AOTInductor package (``torch.export`` with dynamic batch, height
  and width, inductor freezing), built once per network, weights and torch version, checked against
  eager at two other input sizes (a size baked into the graph is an error, not a wrong output) and
  cached in ``<cache>/compiled/<key>.pt2``; later runs load it in milliseconds. On a GPU ``torch.compile``.
* ``"onnxruntime"``: the graph of :func:`sisr.inference.export.export_onnx` (checked against
  PyTorch when exported), cached in ``<cache>/onnx/<key>.onnx``, run by ONNX Runtime on the CPU
  (optional extra ``sisr[onnx]``).

``compile`` and ``onnxruntime`` run float32 graphs; reduced precision needs ``eager`` or ``auto``.
``<cache>`` is ``$SISR_CACHE_DIR``, else ``$XDG_CACHE_HOME/sisr``, else ``~/.cache/sisr``. The key
hashes the model's class, the source files of its modules, its spec and every tensor of its state,
the torch version and the backend, so changed weights or code never reuse a stale package.

A package runs native code when it is loaded, so the cache is trusted as ssh trusts its keys: the
cache folder and its ``compiled``/``onnx`` folder (made with mode 0700) and every entry must be owned
by the user (or root) and not writable by group or others, else a one-line ``ConfigError``. Each
entry has a record ``<key>.json`` (key, backend, SHA-256 and size of the artefact, model, torch),
written atomically once the artefact has passed its check against eager; an artefact is loaded only
when its digest matches its record, otherwise (a foreign, corrupt or half-written file) it is built
again, under a lock so that concurrent runs build it once. A recorded entry that no longer loads is
rebuilt once.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import os
import secrets
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ..errors import ConfigError
from ..utils.fs import file_lock, fsync_dir, fsync_file, sha256_file
from ..weights.handle import identify
from .export import (CHECK_SHAPES, INSTALL_HINT, ExportError, _label, _onnxruntime, _root_message, compare_outputs,
                     export_onnx)

BACKENDS = ("auto", "eager", "compile", "onnxruntime")
_MAX_SIDE = 16384


@dataclass
class Backend:
    """A prepared forward: ``fn(x)`` on ``device``, whether inputs go in channels_last, and what ran."""

    fn: Callable[[torch.Tensor], torch.Tensor]
    channels_last: bool
    name: str


def cache_dir() -> Path:
    """Where compiled packages and ONNX graphs are kept between runs."""
    if os.environ.get("SISR_CACHE_DIR"):
        return Path(os.environ["SISR_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "sisr"


def model_key(model: nn.Module, kind: str) -> str:
    """sha256 (hex, 24 digits) of the network's class, source files, spec, state tensors, torch version, ``kind``."""
    h = hashlib.sha256()
    spec = identify(model).spec
    h.update(f"{kind}|{torch.__version__}|{type(model).__module__}.{type(model).__qualname__}|".encode())
    if spec is not None:
        h.update(repr((spec.name, spec.scale, sorted(dict(spec.hparams).items()))).encode())
    for source in sorted({inspect.getsourcefile(type(m)) or "" for m in model.modules()}):
        if source and os.path.isfile(source):  # the code that builds the graph: a changed model file rebuilds
            h.update(Path(source).read_bytes())
    for name, tensor in model.state_dict(keep_vars=False).items():
        t = tensor.detach().to("cpu").contiguous()
        h.update(f"|{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        if t.numel():
            h.update(t.view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:24]


COMPILE_TOLERANCE = 1e-3  # max |package - eager| on outputs in [0, 1] when a package is built (1/4 grey level)
AUTO_CHANNELS_LAST_MIN_PIXELS = 64 * 64  # below, channels_last measured no faster (break-even ~48x48)


def prepare(model: nn.Module, backend: str, device: torch.device, dtype: torch.dtype | None,
            channels_last: bool = False, compile: bool = False, pixels: int | None = None) -> Backend:
    """The forward ``run`` uses for ``backend`` (see the module docstring); errors are one line."""
    backend = check(backend, device, dtype, compile)
    if backend in ("compile", "onnxruntime"):
        if backend == "onnxruntime":
            return Backend(_onnx_session(model), False, "onnxruntime")
        if device.type == "cpu":
            return Backend(_aoti_package(model), False, "compile (AOTInductor package)")
        return Backend(_torch_compiled(model), channels_last, "compile (torch.compile)")
    if (backend == "auto" and device.type == "cpu" and _has_convolutions(model)
            and (pixels is None or pixels >= AUTO_CHANNELS_LAST_MIN_PIXELS)):
        channels_last = True
    return Backend(model, channels_last, "eager (channels_last)" if channels_last else "eager")


def check(backend: str, device: torch.device, dtype: torch.dtype | None, compile: bool = False) -> str:
    """The backend that will run (``compile=True`` turns auto/eager into compile); ``ConfigError`` if it cannot."""
    if backend not in BACKENDS:
        raise ConfigError(f"unknown backend '{backend}'; use {', '.join(BACKENDS)}")
    if compile and backend in ("auto", "eager"):
        backend = "compile"
    if backend in ("compile", "onnxruntime") and dtype is not None:
        raise ConfigError(f"backend {backend} runs float32 graphs; use --backend eager or auto for reduced precision")
    if backend == "onnxruntime":
        if device.type != "cpu":
            raise ConfigError("backend onnxruntime runs on the CPU; use --device cpu or another backend")
        if _onnxruntime() is None:
            raise ConfigError(f"backend onnxruntime needs the package onnxruntime; install with: {INSTALL_HINT}")
    return backend


_CACHED = {"compile": ("aoti", "compiled", ".pt2"), "onnxruntime": ("onnx", "onnx", ".onnx")}


def _cache_entry(model: nn.Module, backend: str) -> tuple[str, Path]:
    """``(key, path)`` of the cached package (``compile``) or graph (``onnxruntime``) of ``model``."""
    kind, folder, suffix = _CACHED[backend]
    key = model_key(model, kind)
    return key, cache_dir() / folder / f"{key}{suffix}"


def cached_file(model: nn.Module, backend: str, device: torch.device) -> tuple[Path, bool] | None:
    """``(path, usable)`` of the cached package or graph ``backend`` uses for ``model``; None if it uses none.

    ``usable``: present and matching its record (else it will be built); ``ConfigError`` for a cache
    that is not private (see the module docstring).
    """
    if backend == "onnxruntime" or (backend == "compile" and device.type == "cpu"):
        key, path = _cache_entry(model, backend)
        return path, _private_folders(path, create=False) and _recorded_digest(path, key) is not None
    return None


# ----------------------------------------------------------------------------- the cache's rules

_FIX = "set SISR_CACHE_DIR to a private folder, or use --backend eager"


def _file_owner(path: Path, st: os.stat_result) -> int:
    """The owner's uid (a seam: tests run as root and simulate other owners here)."""
    return st.st_uid


def _trust_problem(path: Path, st: os.stat_result) -> str | None:
    """Why ``path`` must not be trusted with code (as ssh judges its keys), or None."""
    if not hasattr(os, "geteuid"):  # no POSIX owners (Windows)
        return None
    owner = _file_owner(path, st)
    if owner not in (os.geteuid(), 0):
        return f"is owned by another user (uid {owner})"
    if st.st_mode & 0o022:
        return "is writable by group or others"
    return None


def _private_folders(path: Path, create: bool) -> bool:
    """Check the cache folder and ``path``'s folder in it (made with mode 0700 when ``create``); False if missing."""
    for folder in (cache_dir(), path.parent):
        try:
            st = os.stat(folder)
        except FileNotFoundError:
            if not create:
                return False
            try:
                os.makedirs(folder, mode=0o700, exist_ok=True)
                st = os.stat(folder)
            except OSError as exc:
                raise ConfigError(f"cache folder {folder}: cannot create it ({exc.strerror or exc}); {_FIX}") from None
        except OSError as exc:
            raise ConfigError(f"cache folder {folder}: cannot use it ({exc.strerror or exc}); {_FIX}") from None
        problem = "is not a folder" if not stat.S_ISDIR(st.st_mode) else _trust_problem(folder, st)
        if problem:
            raise ConfigError(f"cache folder {folder}: {problem}; sisr loads no compiled code from it: "
                              f"chmod go-w it, or {_FIX}")
    return True


def _record_path(path: Path) -> Path:
    return path.with_suffix(".json")


_VERIFIED: dict[tuple, str] = {}  # (path, key, stat of artefact and record) -> digest checked in this process


def _recorded_digest(path: Path, key: str, data: bytes | None = None) -> str | None:
    """The SHA-256 of the artefact at ``path`` when it matches its record for ``key`` (of ``data`` when given:
    the bytes that will be loaded), None when missing or not matching; ``ConfigError`` for untrusted files."""
    stats = []
    for file in (path, _record_path(path)):
        try:
            st = os.lstat(file)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ConfigError(f"{file}: cannot read this cache entry ({exc.strerror or exc}); {_FIX}") from None
        problem = "is not a regular file" if not stat.S_ISREG(st.st_mode) else _trust_problem(file, st)
        if problem:
            raise ConfigError(f"{file}: cache entry {problem}; sisr does not load it: remove it (it is rebuilt), "
                              f"or {_FIX}")
        stats.append((st.st_ino, st.st_size, st.st_mtime_ns))
    memo = (str(path), key, *stats)
    if data is None and memo in _VERIFIED:
        return _VERIFIED[memo]
    try:
        record = json.loads(_record_path(path).read_text(encoding="utf-8"))
        digest = hashlib.sha256(data).hexdigest() if data is not None else sha256_file(path)
    except (OSError, ValueError):
        return None
    if not (isinstance(record, dict) and record.get("key") == key and record.get("sha256") == digest):
        return None
    _VERIFIED[memo] = digest
    return digest


def _write_private(path: Path, data: bytes) -> None:
    """Write ``path`` atomically and durably with mode 0600."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.part")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        fsync_file(tmp)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _install(model: nn.Module, backend: str, key: str, path: Path, build: Callable[[nn.Module, Path], None]) -> None:
    """Build the artefact into a staging file, then move it to ``path`` and write its record."""
    staging = path.with_name(f".{path.stem}.{secrets.token_hex(4)}.part{path.suffix}")
    try:
        build(model, staging)  # the builder checks the artefact against eager and raises when it differs
        os.chmod(staging, 0o600)
        record = {"key": key, "backend": backend, "sha256": sha256_file(staging), "size": staging.stat().st_size,
                  "model": _label(model), "class": f"{type(model).__module__}.{type(model).__qualname__}",
                  "torch": torch.__version__}
        fsync_file(staging)
        os.replace(staging, path)
        _write_private(_record_path(path), (json.dumps(record, indent=1, sort_keys=True) + "\n").encode())
    finally:
        with contextlib.suppress(FileNotFoundError):
            staging.unlink()


def _cached(model: nn.Module, backend: str, key: str, path: Path, build: Callable[[nn.Module, Path], None],
            rebuild: bool = False) -> bool:
    """Make the artefact ``path`` of ``model`` match its record for ``key`` (built now if not); True if built."""
    if not rebuild and _private_folders(path, create=False) and _recorded_digest(path, key) is not None:
        return False
    _private_folders(path, create=True)
    try:
        with file_lock(path.with_suffix(".lock")):
            if rebuild or _recorded_digest(path, key) is None:  # another process may have built it meanwhile
                _install(model, backend, key, path, build)
                return True
    except OSError as exc:  # includes sisr's OutputError for the lock file
        raise ConfigError(f"cache folder {path.parent}: cannot write in it ({getattr(exc, 'strerror', None) or exc}); "
                          f"{_FIX}") from None
    return False


def _load_cached(model: nn.Module, backend: str, key: str, path: Path, build: Callable[[nn.Module, Path], None],
                 load: Callable[[Path], Callable], what: str) -> Callable:
    """Load ``model``'s cached artefact; one that matches its record but no longer loads is rebuilt once."""
    built = _cached(model, backend, key, path, build)
    try:
        return load(path)
    except Exception as exc:  # noqa: BLE001 - loaders raise many types
        if built:
            raise ConfigError(f"{path}: cannot load the {what} ({_root_message(exc)}); use --backend eager") from None
    _cached(model, backend, key, path, build, rebuild=True)
    try:
        return load(path)
    except Exception as exc:  # noqa: BLE001
        raise ConfigError(f"{path}: cannot load the {what} ({_root_message(exc)}) even after rebuilding it; "
                          f"use --backend eager") from None


def _has_convolutions(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.conv._ConvNd) for m in model.modules())


def _torch_compiled(model: nn.Module) -> Callable:
    """``torch.compile(model)``, made once and kept on the module (outside its sub-modules and state_dict)."""
    fn = model.__dict__.get("_sisr_compiled")
    if fn is None:
        fn = torch.compile(model)
        object.__setattr__(model, "_sisr_compiled", fn)
    return fn


def _aoti_package(model: nn.Module) -> Callable:
    """The cached AOTInductor package of ``model`` (built now when missing or not matching), loaded once per module."""
    key, path = _cache_entry(model, "compile")
    loaded = model.__dict__.get("_sisr_aoti")
    if loaded is not None and loaded[0] == key:
        return loaded[1]
    fn = _load_cached(model, "compile", key, path, _build_package, _load_package, "compiled package")
    object.__setattr__(model, "_sisr_aoti", (key, fn))
    return fn


def _load_package(path: Path) -> Callable[[torch.Tensor], torch.Tensor]:
    """The package's one-tensor forward, through torch's C++ loader when this torch has it.

    ``torch._inductor.aoti_load_package`` wraps the same loader but imports inductor first (2.2 s of a
    warm ``sisr upscale --backend compile``); our packages take one tensor and return one.
    """
    loader_class = getattr(getattr(torch._C, "_aoti", None), "AOTIModelPackageLoader", None)
    if loader_class is None:
        return torch._inductor.aoti_load_package(str(path))
    loader = loader_class(str(path), "model", False, 1, -1)  # model name, single-threaded, runners, device
    return lambda x: loader.run([x])[0]


def _build_package(model: nn.Module, dest: Path) -> None:
    """Compile ``model`` into the AOTInductor package ``dest``, checked against eager at other input sizes."""
    import torch._inductor  # noqa: F401 - private API, imported only when asked for

    label = _label(model)
    example = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    dim = torch.export.Dim
    dynamic = ({0: dim("batch", min=1, max=1024), 2: dim("height", min=2, max=_MAX_SIDE),
                3: dim("width", min=2, max=_MAX_SIDE)},)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch-internal deprecations, not the user's concern
            program = torch.export.export(model, (example,), dynamic_shapes=dynamic)
        torch._inductor.aoti_compile_and_package(program, package_path=str(dest), inductor_configs={"freezing": True})
        fn = _load_package(dest)  # checked at other sizes: a size baked into the graph must not pass
        compare_outputs(lambda x: fn(x).numpy(), model, CHECK_SHAPES, torch.device("cpu"),
                        torch.Generator().manual_seed(0), COMPILE_TOLERANCE, label, what="the compiled package")
    except ConfigError:
        raise
    except ExportError as exc:
        raise ConfigError(f"{exc}; use --backend eager") from None
    except Exception as exc:  # noqa: BLE001 - export and inductor raise many types; report the root in one line
        raise ConfigError(f"{label}: cannot be compiled with dynamic input sizes ({_root_message(exc)}); "
                          f"use --backend eager") from None
    finally:
        model.train(was_training)


def _export_graph(model: nn.Module, dest: Path) -> None:
    """Export ``model`` to the ONNX file ``dest``, checked against PyTorch with onnxruntime."""
    try:
        export_onnx(model, dest, verify=True)
    except ExportError as exc:
        raise ConfigError(f"{exc}; use --backend eager") from None


def _onnx_session(model: nn.Module) -> Callable:
    """An ONNX Runtime session on the cached export of ``model`` (exported and checked now when missing)."""
    key, path = _cache_entry(model, "onnxruntime")
    loaded = model.__dict__.get("_sisr_onnx")
    if loaded is not None and loaded[0] == key and loaded[2] == torch.get_num_threads():
        return loaded[1]
    session = _load_cached(model, "onnxruntime", key, path, _export_graph, lambda p: _ort_session(p, key),
                           "ONNX graph")
    name = session.get_inputs()[0].name

    def fn(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run(None, {name: x.detach().contiguous().numpy()})[0])

    object.__setattr__(model, "_sisr_onnx", (key, fn, torch.get_num_threads()))
    return fn


def _ort_session(path: Path, key: str):
    """A session on the bytes of ``path``, checked against its record once read (nothing read twice)."""
    ort = _onnxruntime()
    data = path.read_bytes()
    if _recorded_digest(path, key, data) is None:
        raise RuntimeError("the graph changed after it was checked")
    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, torch.get_num_threads())
    options.inter_op_num_threads = 1
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
