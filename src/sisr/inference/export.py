"""ONNX export with dynamic batch, height and width, checked against PyTorch.

``export_onnx(model, "edsr_x2.onnx")`` writes a graph with input ``lr`` (float32 RGB in [0, 1],
``(N, 3, H, W)``) and output ``sr`` (``(N, 3, sH, sW)``, not clamped), the network's own
convention. The graph is made by ``torch.onnx.export(dynamo=True)`` (needs ``onnx`` and
``onnxscript``) from a trace at one input size, then checked before anything is written:

* the input's batch, height and width must be symbolic in the graph (the exporter silently fixes
  them when the forward depends on the input size in a way it cannot express);
* the opset must be the one asked for (the exporter silently falls back when it cannot convert);
* with ``onnxruntime`` installed, the graph is run at two input sizes other than the trace size
  (odd sizes, batch 2) and its output must match PyTorch within ``tolerance``; otherwise nothing is
  written.

Models that cannot be exported correctly are declared below with the reason, and refused up front.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import io
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch

from ..errors import SisrError
from ..utils.fs import OutputExistsError, atomic_write_bytes
from ..weights.handle import identify, is_channels_last, set_channels_last
from ..weights.loading import is_model_name

__all__ = ["ExportError", "OnnxExport", "export_onnx", "onnx_unsupported_reason", "onnx_notes",
           "require_onnx", "onnxruntime_available", "INPUT_NAME", "OUTPUT_NAME", "TRACE_SHAPE", "CHECK_SHAPES"]

INPUT_NAME = "lr"
OUTPUT_NAME = "sr"
TRACE_SHAPE = (1, 3, 20, 24)  # the example input torch.onnx traces with
CHECK_SHAPES = ((2, 3, 17, 13), (1, 3, 9, 30))  # verification inputs: other sizes, odd sizes, batch 2
DEFAULT_TOLERANCE = 1e-4  # max |ONNX - PyTorch| on outputs in [0, 1]
INSTALL_HINT = "pip install 'sisr[onnx]'"


class ExportError(SisrError):
    """A model cannot be exported, or the exported graph does not reproduce it."""


@dataclass(frozen=True)
class OnnxExport:
    """What :func:`export_onnx` wrote and how it was checked."""

    path: Path
    opset: int
    size_bytes: int
    verified: bool  # run with onnxruntime and compared with PyTorch
    max_abs_diff: float | None  # over CHECK_SHAPES; None when not verified
    checked_shapes: tuple[tuple[int, ...], ...]
    notes: str = ""


def onnx_unsupported_reason(name: str) -> str | None:
    """Why registry model ``name`` cannot be exported to ONNX, or None if it can."""
    from ..models import get_info

    return get_info(name).capabilities.onnx_unsupported if is_model_name(name) else None


def onnx_notes(name: str) -> str:
    """Known limits of the exported graph of registry model ``name`` ('' if none)."""
    from ..models import get_info

    return get_info(name).capabilities.onnx_notes if is_model_name(name) else ""


def _import(name: str):
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def require_onnx() -> None:
    """Raise ``ExportError`` naming what is missing when ONNX export cannot run here."""
    missing = [name for name in ("onnx", "onnxscript") if _import(name) is None]
    if missing:
        raise ExportError(f"ONNX export needs the package{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
                          f"(cannot be imported); install with: {INSTALL_HINT}")
    params = inspect.signature(torch.onnx.export).parameters
    if "dynamo" not in params or "dynamic_shapes" not in params:
        raise ExportError(f"ONNX export needs torch.onnx.export(dynamo=True, dynamic_shapes=...), which "
                          f"torch {torch.__version__} lacks; upgrade torch")


def _onnxruntime():
    """The onnxruntime module, or None when it is not installed."""
    return _import("onnxruntime")


def onnxruntime_available() -> bool:
    """True when exports can be checked against PyTorch (onnxruntime importable)."""
    return _onnxruntime() is not None


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence torch.onnx's log lines, the graph dumps torch.export prints on failure, and the
    deprecation chatter of the exporter's dependencies (failures are reported by the exception)."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "onnxscript", "onnx_ir")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    sink = io.StringIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            for category in (FutureWarning, DeprecationWarning):
                warnings.filterwarnings("ignore", category=category, module=r"(torch|onnx|onnxscript|onnx_ir|copyreg)")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def _root_message(exc: BaseException) -> str:
    """First line of the innermost cause of an exporter exception, shortened."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    text = lines[0] if lines else ""
    text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def _label(model: torch.nn.Module) -> str:
    spec = identify(model).spec
    return f"{spec.name} x{spec.scale}" if spec is not None else type(model).__name__


def _contiguous(model: torch.nn.Module) -> torch.nn.Module:
    """The model in the contiguous layout torch.export needs: a copy when it is channels_last (as loaded on the
    CPU), so the caller's module keeps its layout."""
    if not is_channels_last(model):
        return model
    import copy

    return set_channels_last(copy.deepcopy(model), False)


def _check_float32(model: torch.nn.Module, label: str) -> torch.device:
    tensors = list(model.parameters()) + list(model.buffers())
    other = sorted({str(t.dtype) for t in tensors if t.is_floating_point() and t.dtype != torch.float32})
    if other:
        raise ExportError(f"{label}: export needs a float32 network, it holds {', '.join(other)} tensors")
    return tensors[0].device if tensors else torch.device("cpu")


def _graph_opset(proto) -> int:
    return next(int(o.version) for o in proto.opset_import if o.domain in ("", "ai.onnx"))


def _input_dims(proto) -> list[int | str]:
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    return [d.dim_param or d.dim_value for d in dims]


def _random(shape: Sequence[int], generator: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.rand(*shape, generator=generator).to(device)


def compare_outputs(fn: Callable[[torch.Tensor], np.ndarray], model: torch.nn.Module,
                    shapes: Sequence[Sequence[int]], device: torch.device, generator: torch.Generator,
                    tolerance: float, label: str, what: str = "the exported graph") -> float:
    """Max |fn(x) - model(x)| over random inputs of ``shapes``; ``ExportError`` when a run fails, gives
    another shape or exceeds ``tolerance``. ``what`` names ``fn`` in the messages."""
    worst = 0.0
    for shape in shapes:
        x = _random(shape, generator, device)
        size = "x".join(map(str, shape))
        with torch.no_grad():
            ref = model(x).float().cpu().numpy()
            try:
                out = fn(x)
            except Exception as exc:  # onnxruntime and compiled packages raise their own exception types
                raise ExportError(f"{label}: {what} does not run on a {size} input "
                                  f"({_root_message(exc)}); nothing written") from None
        if out.shape != ref.shape:
            raise ExportError(f"{label}: {what} gives shape {'x'.join(map(str, out.shape))} on a {size} "
                              f"input, PyTorch {'x'.join(map(str, ref.shape))}; nothing written")
        diff = np.abs(out.astype(np.float64) - ref.astype(np.float64))
        same_nan = np.isnan(out) & np.isnan(ref)
        diff[same_nan] = 0.0
        diff[np.isnan(diff)] = np.inf
        err = float(diff.max()) if diff.size else 0.0
        if not err <= tolerance:
            raise ExportError(f"{label}: {what} differs from PyTorch by {err:.3g} (> {tolerance:g}) on a "
                              f"{size} input; nothing written")
        worst = max(worst, err)
    return worst


def _verify(ort, data: bytes, model: torch.nn.Module, device: torch.device, generator: torch.Generator,
            tolerance: float, label: str) -> float:
    """Max |graph - PyTorch| of the serialized graph ``data`` run by onnxruntime over ``CHECK_SHAPES``."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, torch.get_num_threads())
    options.log_severity_level = 4  # run failures are reported by the ExportError, not logged
    try:
        session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ExportError(f"{label}: onnxruntime cannot load the exported graph ({_root_message(exc)}); "
                          f"nothing written") from None
    return compare_outputs(lambda x: session.run([OUTPUT_NAME], {INPUT_NAME: x.cpu().numpy()})[0],
                           model, CHECK_SHAPES, device, generator, tolerance, label)


def export_onnx(model: torch.nn.Module, path: str | os.PathLike, *, opset: int | None = None,
                overwrite: bool = False, verify: bool | None = None, tolerance: float = DEFAULT_TOLERANCE,
                allow_unsupported: bool = False) -> OnnxExport:
    """Export ``model`` to the ONNX file ``path`` with dynamic batch, height and width.

    ``opset``: the ONNX opset (default: torch.onnx's). ``verify``: None checks the graph with
    onnxruntime when it is installed (warns otherwise), True requires onnxruntime, False skips
    the numerical check. ``allow_unsupported`` tries models whose ``ModelInfo.onnx_unsupported`` is set
    anyway (the result is still checked). The network is exported in eval mode, in float32,
    on its device; its training mode is restored afterwards. Nothing is written unless every
    check passes; an existing ``path`` is an error unless ``overwrite``.
    """
    path = Path(path)
    label = _label(model)
    if path.suffix.lower() != ".onnx":
        raise ExportError(f"{path}: the output must be an .onnx file")
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path}: already exists (use --overwrite to replace it)")
    spec = identify(model).spec
    name = spec.name if spec is not None else None
    reason = onnx_unsupported_reason(name) if name else None
    if reason and not allow_unsupported:
        raise ExportError(f"{name} cannot be exported to ONNX with a dynamic input size: {reason}")
    if opset is not None and int(opset) < 1:
        raise ExportError(f"opset must be a positive integer, got {opset}")
    require_onnx()
    ort = _onnxruntime() if verify is not False else None
    if verify is True and ort is None:
        raise ExportError(f"verification needs the package onnxruntime, not installed; install with: {INSTALL_HINT}")
    device = _check_float32(model, label)
    model = _contiguous(model)

    was_training = model.training
    model.eval()
    try:
        generator = torch.Generator().manual_seed(0)
        example = _random(TRACE_SHAPE, generator, device)
        dim = torch.export.Dim
        dynamic = ({0: dim("batch"), 2: dim("height"), 3: dim("width")},)
        try:
            with _quiet_exporter(), torch.no_grad():
                program = torch.onnx.export(model, (example,), dynamo=True, dynamic_shapes=dynamic,
                                            input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                                            opset_version=None if opset is None else int(opset), verbose=False)
        except Exception as exc:  # the exporter raises many types; report the root cause in one line
            raise ExportError(f"{label}: torch.onnx could not export it ({_root_message(exc)})") from None
        proto = program.model_proto
        got = _graph_opset(proto)
        if opset is not None and got != int(opset):
            hint = "a lower one" if int(opset) > got else "the default opset or a higher one"
            raise ExportError(f"{label}: torch.onnx could not produce opset {opset} (it gave {got}); use {hint}")
        dims = _input_dims(proto)
        if len(dims) != 4 or not all(isinstance(dims[i], str) and dims[i] for i in (0, 2, 3)):
            fixed = "x".join(str(d) for d in dims)
            raise ExportError(f"{label}: the exported graph only accepts inputs of shape {fixed} (the forward "
                              f"depends on the input size in a way the exporter cannot express); nothing written")
        if proto.ByteSize() >= 2**31:
            raise ExportError(f"{label}: the graph with its weights exceeds ONNX's 2 GiB single-file limit")
        data = proto.SerializeToString()

        max_diff = None
        if ort is not None:
            max_diff = _verify(ort, data, model, device, generator, tolerance, label)
        elif verify is None:
            warnings.warn(f"{path}: not checked against PyTorch (onnxruntime is not installed; {INSTALL_HINT})",
                          stacklevel=2)
    finally:
        model.train(was_training)

    atomic_write_bytes(path, data, overwrite=overwrite)
    return OnnxExport(path=path, opset=got, size_bytes=len(data), verified=max_diff is not None,
                      max_abs_diff=max_diff, checked_shapes=CHECK_SHAPES if max_diff is not None else (),
                      notes=onnx_notes(name) if name else "")
