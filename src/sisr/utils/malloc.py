"""Keep freed memory for reuse (glibc): every CLI command calls :func:`keep_freed_memory` first.

glibc returns freed blocks above its (adaptive) mmap threshold to the OS and trims the heap top,
so a network that allocates a fresh 8 MiB feature map per layer page-faults all of it in again,
layer after layer. Serving blocks up to 32 MiB from the heap and trimming only above 1 GiB made
DeFiAN-S x2 on a 256x256 image 1.26x faster on one CPU core (docs/performance.md); the process
keeps its peak heap until it exits. Nothing is changed when the user set a ``MALLOC_*`` variable,
preloads another allocator (jemalloc, tcmalloc), or the C library is not glibc.
"""

from __future__ import annotations

import ctypes
import os
import sys

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
MMAP_THRESHOLD = 32 << 20  # glibc's largest accepted value on 64-bit
TRIM_THRESHOLD = 1 << 30
TOP_PAD = 64 << 20


def keep_freed_memory() -> bool:
    """Set glibc's mmap/trim thresholds (see the module docstring); True when they were set."""
    if not sys.platform.startswith("linux") or os.environ.get("SISR_MALLOC") == "default":
        return False
    if any(k.startswith("MALLOC_") for k in os.environ) or any(
            name in os.environ.get("LD_PRELOAD", "") for name in ("jemalloc", "tcmalloc", "mimalloc")):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
                and mallopt(M_TOP_PAD, TOP_PAD))
