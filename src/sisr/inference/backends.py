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
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ..errors import ConfigError
from .export import (CHECK_SHAPES, INSTALL_HINT, ExportError, OutputExistsError, _label, _onnxruntime, _root_message,
                     compare_outputs, export_onnx)

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
    spec = getattr(model, "sisr_spec", None)
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
    """``(path, exists)`` of the cached package or graph ``backend`` uses for ``model``; None if it uses none."""
    if backend == "onnxruntime" or (backend == "compile" and device.type == "cpu"):
        path = _cache_entry(model, backend)[1]
        return path, path.exists()
    return None


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
    """The cached AOTInductor package of ``model`` (built now when missing), loaded once per module."""
    key, path = _cache_entry(model, "compile")
    loaded = model.__dict__.get("_sisr_aoti")
    if loaded is not None and loaded[0] == key:
        return loaded[1]
    if not path.exists():
        _build_package(model, path)
    try:
        fn = _load_package(path)
    except Exception as exc:  # noqa: BLE001 - a corrupt or foreign package: say which file
        raise ConfigError(f"{path}: cannot load the compiled package ({_root_message(exc)}); delete it to rebuild") from None
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


def _build_package(model: nn.Module, path: Path) -> None:
    import torch._inductor  # noqa: F401 - private API, imported only when asked for

    label = _label(model)
    path.parent.mkdir(parents=True, exist_ok=True)
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
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".part.pt2", dir=path.parent)
        os.close(fd)
        try:
            torch._inductor.aoti_compile_and_package(program, package_path=tmp, inductor_configs={"freezing": True})
            fn = _load_package(Path(tmp))  # checked at other sizes: a size baked into the graph must not pass
            compare_outputs(lambda x: fn(x).numpy(), model, CHECK_SHAPES, torch.device("cpu"),
                            torch.Generator().manual_seed(0), COMPILE_TOLERANCE, label, what="the compiled package")
            os.replace(tmp, path)  # another process may have built the same key meanwhile: same content
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
    except ConfigError:
        raise
    except ExportError as exc:
        raise ConfigError(f"{exc}; use --backend eager") from None
    except Exception as exc:  # noqa: BLE001 - export and inductor raise many types; report the root in one line
        raise ConfigError(f"{label}: cannot be compiled with dynamic input sizes ({_root_message(exc)}); "
                          f"use --backend eager") from None
    finally:
        model.train(was_training)


def _onnx_session(model: nn.Module) -> Callable:
    """An ONNX Runtime session on the cached export of ``model`` (exported and checked now when missing)."""
    ort = _onnxruntime()
    key, path = _cache_entry(model, "onnxruntime")
    loaded = model.__dict__.get("_sisr_onnx")
    if loaded is not None and loaded[0] == key and loaded[2] == torch.get_num_threads():
        return loaded[1]
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(OutputExistsError):  # another process exported the same key first
            export_onnx(model, path, verify=True)
    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, torch.get_num_threads())
    options.inter_op_num_threads = 1
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001
        raise ConfigError(f"{path}: onnxruntime cannot load it ({_root_message(exc)}); delete it to re-export") from None
    name = session.get_inputs()[0].name

    def fn(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run(None, {name: x.detach().contiguous().numpy()})[0])

    object.__setattr__(model, "_sisr_onnx", (key, fn, torch.get_num_threads()))
    return fn
