"""Official checkpoints: safe loading, architecture detection, conversion.

The authors release PyTorch pickles (``.pt`` / ``.pth``) in several containers:
a plain ``state_dict`` (EDSR, RCAN, CSNLN), ``{"epoch", "state_dict"}``
(DeFiAN), ``{"params", "params_ema"}`` (BasicSR), ``{"model"}`` or ``{"net"}``;
keys may carry DataParallel's ``module.`` prefix. Files are read with
``torch.load(weights_only=True, map_location="cpu")``, which only rebuilds
tensors and plain containers: a file holding any other Python object is
refused, never unpickled. A safetensors file without sisr metadata is read as
a plain ``state_dict`` too.

The architecture, scale and width/depth are recognised from the state_dict by
each registry entry's ``ModelInfo.official.detect`` (declared next to the model's
code); keys must then match the network exactly (``strict=True``).
"""

from __future__ import annotations

import os
import pickle
import pickletools
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch

from ..errors import WeightsError
from ..utils.fs import sha256_file  # noqa: F401  (re-exported: sisr.weights.official.sha256_file)

# container keys, in order of preference (EMA weights before raw ones)
CONTAINER_KEYS = ("params_ema", "params", "state_dict", "model", "net")


@dataclass(frozen=True)
class Detection:
    """What a state_dict was recognised as."""

    model: str
    scale: int
    hparams: Mapping[str, Any] = field(default_factory=dict)


def is_safetensors(path: str | os.PathLike) -> bool:
    """True if the file starts like a safetensors file (8-byte header length, then a JSON object)."""
    try:
        with open(path, "rb") as f:
            head = f.read(9)
        size = os.path.getsize(path)
    except OSError:
        return False
    if len(head) < 9:
        return False
    n = int.from_bytes(head[:8], "little")
    return 2 <= n <= size - 8 and head[8:9] == b"{"


def read_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The state_dict inside an official checkpoint (unwrapped, ``module.`` stripped)."""
    path = Path(path)
    if path.is_dir():
        raise WeightsError(f"{path}: is a folder, not a weights file")
    if not path.is_file():
        raise WeightsError(f"{path}: no such file")
    if is_safetensors(path):
        from safetensors.torch import load_file

        try:
            return unwrap_state_dict(load_file(str(path)), path)
        except WeightsError:
            raise
        except Exception as exc:
            raise WeightsError(f"{path}: not a readable safetensors file ({exc})") from None
    with open(path, "rb") as f:
        head = f.read(64)
    if head[:2] != b"PK" and not _is_torch_legacy(head):  # torch.save writes a zip archive (or a legacy pickle)
        _refuse_other_format(path, head)
    if head[:2] == b"PK" and not zipfile.is_zipfile(path):
        raise WeightsError(f"{path}: truncated or damaged PyTorch checkpoint (the zip archive is incomplete; "
                           f"download or copy it again)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        what = f" ({found.group(1)})" if found else ""
        raise WeightsError(
            f"{path}: refused: the file contains Python objects other than tensors{what}; "
            f"sisr never unpickles arbitrary objects (save a plain state_dict instead)"
        ) from None
    except (OSError, EOFError) as exc:
        raise WeightsError(f"{path}: truncated or damaged PyTorch checkpoint ({type(exc).__name__}: "
                           f"{getattr(exc, 'strerror', None) or exc})") from None
    except Exception as exc:  # damaged archive, wrong magic number...
        lines = str(exc).strip().splitlines()
        reason = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
        raise WeightsError(f"{path}: not a readable PyTorch checkpoint ({reason})") from None
    return unwrap_state_dict(obj, path)


_TORCH_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # the number torch.save's legacy format pickles first


def _is_torch_legacy(head: bytes) -> bool:
    """True when ``head`` starts like torch.save's legacy (non-zip) format: a pickle of its magic number."""
    try:
        for opcode, arg, _ in pickletools.genops(head):
            if opcode.name not in ("PROTO", "FRAME"):
                return opcode.name in ("LONG1", "LONG4") and arg == _TORCH_LEGACY_MAGIC
    except Exception:  # noqa: BLE001 - not a pickle, or cut off in its first opcodes
        return False
    return False


def _pickle_protocol(path: Path, max_opcodes: int = 1_000_000) -> int | None:
    """The protocol of the pickle in ``path`` (read as opcodes, never unpickled), None if it is not one."""
    protocol = 0
    try:
        with open(path, "rb") as f:
            for count, (opcode, arg, _) in enumerate(pickletools.genops(f)):
                protocol = arg if opcode.name == "PROTO" else max(protocol, opcode.proto)
                if opcode.name == "STOP" or count >= max_opcodes:
                    return protocol
    except Exception:  # noqa: BLE001 - genops raises ValueError and others on bytes that are not a pickle
        return None
    return None


def _refuse_other_format(path: Path, head: bytes) -> None:
    """``WeightsError`` for a file that is neither of torch.save's formats, saying what it is."""
    protocol = _pickle_protocol(path)
    if protocol is not None:
        raise WeightsError(f"{path}: refused: a plain Python pickle (protocol {protocol}), not written by torch.save; "
                           f"sisr never unpickles arbitrary objects (save the state_dict with torch.save)")
    if head[:1] == b"\x80":
        raise WeightsError(f"{path}: not a PyTorch checkpoint (a damaged pickle, or one not written by torch.save)")
    raise WeightsError(f"{path}: not a PyTorch checkpoint (neither a zip archive nor a pickle)")


def unwrap_state_dict(obj: Any, source: str | os.PathLike = "checkpoint") -> dict[str, torch.Tensor]:
    """Find the tensors of a checkpoint container; strip a ``module.`` prefix."""
    for _ in range(4):  # containers nest at most a few levels
        if isinstance(obj, Mapping) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            break
        if not isinstance(obj, Mapping):
            raise WeightsError(f"{source}: holds a {type(obj).__name__}, not a state_dict")
        key = next((k for k in CONTAINER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if key is None:
            keys = ", ".join(map(str, list(obj)[:8])) or "none"
            raise WeightsError(
                f"{source}: no state_dict found (top-level keys: {keys}; expected tensors or one of "
                f"{', '.join(CONTAINER_KEYS)})"
            )
        obj = obj[key]
    else:
        raise WeightsError(f"{source}: no state_dict found within {len(CONTAINER_KEYS)} nested containers")
    sd = {str(k): v for k, v in obj.items()}
    if all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


def _candidates(only: str | None):
    from ..models.registry import get_info, list_models

    names = [only.lower()] if only else list_models()
    infos = []
    for name in names:
        try:
            infos.append(get_info(name))
        except ModuleNotFoundError as exc:  # a model module not present in this installation
            if not (exc.name or "").startswith("sisr.models"):
                raise
    return infos


def describe_state_dict(sd: Mapping[str, torch.Tensor]) -> str:
    """A short description for error messages: tensor count and leading key prefixes."""
    prefixes: list[str] = []
    for k in sd:
        p = k.split(".", 1)[0]
        if p not in prefixes:
            prefixes.append(p)
    shown = ", ".join(prefixes[:6]) + (", ..." if len(prefixes) > 6 else "")
    return f"{len(sd)} tensors, key prefixes: {shown or 'none'}"


def detect(sd: Mapping[str, torch.Tensor], *, model: str | None = None,
           source: str | os.PathLike = "checkpoint") -> Detection:
    """Recognise the registry model, scale and hyper-parameters of an official state_dict.

    ``model`` restricts detection to one registry entry. Raises ``WeightsError``
    with what was recognised and which detectors were tried when nothing (or
    more than one model) matches.
    """
    tried, failed, found = [], [], []
    for info in _candidates(model):
        if info.official is None:
            continue
        tried.append(info.name)
        try:
            result = info.official.detect(sd)
        except Exception as exc:  # a detector choking on an unusual layout is a "no"
            failed.append(f"{info.name}: {type(exc).__name__}")
            continue
        if result:
            hp = dict(result)
            found.append(Detection(info.name, int(hp.pop("scale")), hp))
    if len(found) == 1:
        return found[0]
    if len(found) > 1:
        names = ", ".join(f"{d.model} x{d.scale}" for d in found)
        raise WeightsError(f"{source}: matches several models ({names}); choose one with --model NAME")
    if model and not tried:
        raise WeightsError(f"{source}: model '{model}' cannot read official checkpoints (no official layout declared)")
    what = f"not a checkpoint of '{model}'" if model else "not a checkpoint of a known model"
    extra = f"; detector errors: {'; '.join(failed)}" if failed else ""
    raise WeightsError(f"{source}: {what} ({describe_state_dict(sd)}; tried: {', '.join(tried) or 'none'}{extra})")


def build_from_state_dict(sd: Mapping[str, torch.Tensor], detection: Detection,
                          source: str | os.PathLike = "checkpoint") -> torch.nn.Module:
    """Build the detected network and load ``sd`` with strict key matching."""
    from ..models import create_model

    net = create_model(detection.model, scale=detection.scale, **detection.hparams)
    load_strict(net, sd, f"{source}: does not fit {detection.model} x{detection.scale}")
    return net


def load_strict(net: torch.nn.Module, sd: Mapping[str, torch.Tensor], context: str) -> None:
    """``load_state_dict(strict=True)`` with a one-line error naming missing/unexpected keys and shapes."""
    own = net.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    shapes = [f"{k} {tuple(sd[k].shape)} vs {tuple(own[k].shape)}" for k in own
              if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)]
    problems = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shapes)):
        if items:
            problems.append(f"{len(items)} {label} ({', '.join(items[:3])}{', ...' if len(items) > 3 else ''})")
    if problems:
        raise WeightsError(f"{context}: {'; '.join(problems)}")
    net.load_state_dict(sd, strict=True)


def load_official(path: str | os.PathLike, *, model: str | None = None,
                  scale: int | None = None) -> tuple[torch.nn.Module, Detection]:
    """Network (on CPU, eval mode) built from an official checkpoint, and what it was recognised as."""
    sd = read_checkpoint(path)
    found = detect(sd, model=model, source=path)
    if scale is not None and int(scale) != found.scale:
        raise WeightsError(f"{path}: holds {found.model} weights for x{found.scale}, not x{int(scale)}")
    net = build_from_state_dict(sd, found, source=path)
    return net.eval(), found


def convert_official(src: str | os.PathLike, dst: str | os.PathLike, *, model: str | None = None,
                     overwrite: bool = False) -> tuple[Path, Detection]:
    """Official checkpoint -> sisr safetensors with metadata; returns the output path and the detection."""
    from ..models import get_info
    from . import save_weights

    src, dst = Path(src), Path(dst)
    if dst.suffix != ".safetensors":
        raise WeightsError(f"{dst}: the output must be a .safetensors file")
    if dst.resolve() == src.resolve() or (dst.exists() and src.exists() and os.path.samefile(src, dst)):
        raise WeightsError(f"{dst}: is the checkpoint being converted; write the output to another file")
    if is_safetensors(src):
        from . import FORMAT, read_metadata

        if read_metadata(src).get("format") == FORMAT:
            raise WeightsError(f"{src}: already a sisr weights file; nothing to convert")
    if dst.exists() and not overwrite:
        raise WeightsError(f"{dst}: already exists (use --overwrite to replace it)")
    net, found = load_official(src, model=model)
    info = get_info(found.model)
    save_weights(
        net, dst, model=found.model, scale=found.scale, hparams=found.hparams, overwrite=overwrite,
        metadata={
            "source_file": src.name,
            "source_sha256": sha256_file(src),
            "official_convention": info.official.convention,
            "converted_by": "sisr convert",
        },
    )
    return dst, found
