"""Peak memory of a block of code, above what was in use when it began.

``with PeakMemory(device, what="the first forward") as mem: model(x)`` leaves in ``mem``:
``bytes`` (the peak growth, None where not measured), ``method`` (one line saying how it was
measured), and the process totals ``baseline_bytes`` / ``peak_bytes`` it was derived from.

* CUDA: ``torch.cuda.max_memory_allocated`` after the block minus ``memory_allocated`` before it
  (peak statistics reset at the start; the device is synchronised on both sides). Activations and
  workspaces, not the caching allocator's reserve.
* CPU, ``cpu="auto"``: on Linux the high-water mark ``VmHWM`` is reset to the current RSS (``5`` to
  ``/proc/self/clear_refs``) and the peak is ``VmHWM`` after minus ``VmRSS`` before. Where that is not
  possible, falls back to ``cpu="maxrss"``.
* CPU, ``cpu="maxrss"``: growth of ``getrusage`` ``ru_maxrss`` over the block (KiB on Linux, bytes on
  macOS); a lower bound, since an earlier, higher peak of the process hides a lower one here.
* CPU, ``cpu="current"``: ``ru_maxrss`` after the block minus the RSS before it (``/proc/self/statm``;
  ``ru_maxrss`` where there is no ``/proc``): for a fresh process whose peak is the block.
* Other devices (MPS): not measured (``bytes`` None).
"""

from __future__ import annotations

import os
import resource
import sys
from typing import Any

import torch

from .device import synchronize

MAXRSS_UNIT = 1 if sys.platform == "darwin" else 1024  # bytes per ru_maxrss unit
CPU_MODES = ("auto", "maxrss", "current")


def maxrss_bytes() -> int:
    """The process's peak resident set size so far (``getrusage`` ``ru_maxrss``), in bytes."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * MAXRSS_UNIT


def current_rss_bytes() -> int | None:
    """The process's resident set size now (``/proc/self/statm``), or None without ``/proc``."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def proc_status_kib(key: str) -> int | None:
    """A ``kB`` field of ``/proc/self/status`` (``VmRSS``, ``VmHWM``...), or None."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def reset_peak_rss() -> bool:
    """Reset ``VmHWM`` to the current RSS (Linux >= 4.0); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return proc_status_kib("VmHWM") is not None


class PeakMemory:
    """Context manager measuring the peak memory growth of its block on ``device`` (module doc)."""

    def __init__(self, device: str | torch.device = "cpu", *, cpu: str = "auto", what: str = "the call"):
        if cpu not in CPU_MODES:
            raise ValueError(f"cpu={cpu!r}: expected one of {', '.join(CPU_MODES)}")
        self.device = torch.device(device)
        self.cpu, self.what = cpu, what
        self.bytes: int | None = None
        self.baseline_bytes: int | None = None
        self.peak_bytes: int | None = None
        self.method = ""
        self._mode = ""

    def __enter__(self) -> PeakMemory:
        dev = self.device
        if dev.type == "cuda":
            self._mode = "cuda"
            synchronize(dev)
            self.baseline_bytes = torch.cuda.memory_allocated(dev)
            torch.cuda.reset_peak_memory_stats(dev)
        elif dev.type == "cpu":
            if self.cpu == "auto" and reset_peak_rss():
                self._mode = "hwm"
                self.baseline_bytes = (proc_status_kib("VmRSS") or 0) * 1024
            elif self.cpu == "current":
                self._mode = "current"
                current = current_rss_bytes()
                self.baseline_bytes = maxrss_bytes() if current is None else current
            else:
                self._mode = "maxrss"
                self.baseline_bytes = maxrss_bytes()
        else:
            self._mode = "none"
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> bool:
        if exc_type is not None:
            return False
        what, base = self.what, self.baseline_bytes
        if self._mode == "cuda":
            synchronize(self.device)
            self.peak_bytes = torch.cuda.max_memory_allocated(self.device)
            self.bytes = self.peak_bytes - base
            self.method = f"CUDA allocator: max_memory_allocated during {what} minus the allocation before it"
        elif self._mode == "hwm":
            self.peak_bytes = (proc_status_kib("VmHWM") or 0) * 1024
            self.bytes = max(0, self.peak_bytes - base)
            self.method = f"CPU RSS: VmHWM after {what} minus VmRSS before it (VmHWM reset via clear_refs)"
        elif self._mode == "maxrss":
            self.peak_bytes = maxrss_bytes()
            self.bytes = max(0, self.peak_bytes - base)
            self.method = f"CPU RSS: growth of getrusage ru_maxrss over {what} (a lower bound)"
        elif self._mode == "current":
            self.peak_bytes = maxrss_bytes()
            self.bytes = max(0, self.peak_bytes - base)
            self.method = f"CPU RSS: getrusage ru_maxrss after {what} minus the RSS before it"
        else:
            synchronize(self.device)
            self.method = f"not measured on {self.device.type}"
        return False
