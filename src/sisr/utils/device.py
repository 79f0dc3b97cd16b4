"""Devices: name resolution, descriptive names, free memory and out-of-memory detection.

``resolve_device("auto")`` picks CUDA, then Apple MPS, then the CPU;
``"cpu"``, ``"cuda"``, ``"cuda:1"`` and ``"mps"`` are checked and give a
one-line ``DeviceError`` when the device is not there.
"""

from __future__ import annotations

import os
import platform

import torch

from ..errors import ConfigError


class DeviceError(ConfigError):
    """A device was asked for that this machine does not have."""


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def resolve_device(spec: str | torch.device | None = "auto") -> torch.device:
    """``torch.device`` for ``"auto"`` (cuda > mps > cpu), ``"cpu"``, ``"cuda[:i]"`` or ``"mps"``."""
    if isinstance(spec, torch.device):
        spec = str(spec)
    name = (spec or "auto").strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise DeviceError(f"unknown device '{spec}'; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cpu":
        return device
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"device '{spec}': CUDA is not available on this machine "
                              f"(torch {torch.__version__}); use --device cpu or auto")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise DeviceError(f"device '{spec}': this machine has {count} CUDA device(s) (cuda:0..cuda:{count - 1})")
        return device
    if device.type == "mps":
        if not _mps_available():
            raise DeviceError(f"device '{spec}': Apple MPS is not available on this machine; use --device cpu or auto")
        return device
    raise DeviceError(f"unsupported device '{spec}'; use auto, cpu, cuda, cuda:N or mps")


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else ``platform.processor()`` or the machine type."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: torch.device) -> str:
    """``"cuda:0 (NVIDIA H200)"``, or ``"cpu (<CPU model>, <n> threads)"`` off CUDA: for results files."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"{device} ({cpu_name()}, {torch.get_num_threads()} threads)"


def free_memory(device: torch.device) -> int:
    """Bytes that can still be allocated on ``device`` (an estimate on CPU and MPS)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        # memory cached by torch's allocator is free for torch too
        return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    if device.type == "mps":
        return int(torch.mps.recommended_max_memory() - torch.mps.driver_allocated_memory())
    return _cpu_available_memory()


def _cpu_available_memory() -> int:
    """The smaller of the system's available memory and what the cgroup limit still allows."""
    system = _system_available_memory()
    cgroup = _cgroup_available_memory()
    return system if cgroup is None else min(system, cgroup)


def _system_available_memory() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 4 << 30  # unknown platform: assume 4 GiB


CGROUP_FILES = (  # (limit, usage): cgroup v2, then v1
    ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
    ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"),
)
_NO_LIMIT = 1 << 60  # cgroup v1 reports "no limit" as a huge number


def _read_int(path: str) -> int | None:
    try:
        with open(path) as f:
            text = f.read().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None  # "max" (v2: no limit) -> None


def _cgroup_available_memory(files=CGROUP_FILES) -> int | None:
    """Bytes the process's memory cgroup still allows (limit - usage), or None without a limit."""
    for limit_file, usage_file in files:
        limit = _read_int(limit_file)
        if limit is None or limit >= _NO_LIMIT:
            continue
        usage = _read_int(usage_file) or 0
        return max(limit - usage, 0)
    return None


_OOM_MARKERS = ("out of memory", "can't allocate memory", "cannot allocate memory", "not enough memory",
                "defaultcpuallocator", "failed to allocate")


def is_out_of_memory(exc: BaseException) -> bool:
    """True for CUDA/MPS out-of-memory errors and CPU allocation failures."""
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    if isinstance(exc, (RuntimeError, MemoryError)):
        text = str(exc).lower()
        return isinstance(exc, MemoryError) or any(m in text for m in _OOM_MARKERS)
    return False


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (no-op on the CPU); for timing."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def release_cached_memory(device: torch.device) -> None:
    """Give cached blocks back after an out-of-memory error, so a retry sees them."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif device.type == "mps":
        torch.mps.empty_cache()
