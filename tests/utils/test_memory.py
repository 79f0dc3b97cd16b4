"""sisr.utils.memory.PeakMemory: what each method counts, and what it cannot see."""

from __future__ import annotations

import mmap

import pytest
import torch

from sisr.utils.memory import PeakMemory, current_rss_bytes, maxrss_bytes, reset_peak_rss

MIB = 2**20
PAGE = mmap.PAGESIZE


def _touch(mib: int) -> None:
    """Make ``mib`` MiB resident and give them back: an anonymous mapping, one write per page (not numpy,
    whose large arrays may come from free space in the heap of a long test process, already resident)."""
    block = mmap.mmap(-1, mib * MIB)
    for offset in range(0, mib * MIB, PAGE):
        block[offset] = 1
    block.close()


@pytest.mark.skipif(not reset_peak_rss(), reason="needs /proc/self/clear_refs (Linux)")
def test_cpu_auto_resets_the_high_water_mark():
    _touch(160)  # an earlier, higher peak of the process...
    with PeakMemory("cpu", what="the block") as mem:
        _touch(64)
    # ...does not hide this one: VmHWM was reset at the start
    assert 60 * MIB <= mem.bytes < 100 * MIB
    assert mem.bytes == mem.peak_bytes - mem.baseline_bytes
    assert mem.method == "CPU RSS: VmHWM after the block minus VmRSS before it (VmHWM reset via clear_refs)"


def test_cpu_maxrss_is_a_lower_bound():
    current = current_rss_bytes()
    if current is None:
        pytest.skip("needs /proc/self/statm")
    headroom = max(0, maxrss_bytes() - current) // MIB
    with PeakMemory("cpu", cpu="maxrss") as mem:
        _touch(headroom + 64)  # beyond the process's earlier peak
    assert mem.bytes >= 32 * MIB
    assert mem.peak_bytes == mem.baseline_bytes + mem.bytes
    assert mem.method == "CPU RSS: growth of getrusage ru_maxrss over the call (a lower bound)"
    with PeakMemory("cpu", cpu="maxrss") as mem:
        _touch(48)  # below the peak just reached: invisible to ru_maxrss
    assert mem.bytes == 0


def test_cpu_current_counts_from_the_rss_before():
    if current_rss_bytes() is None:
        pytest.skip("needs /proc/self/statm")
    with PeakMemory("cpu", cpu="current") as mem:
        pass
    # nothing allocated, yet the process's earlier peak counts: the mode is for fresh processes
    assert mem.peak_bytes == maxrss_bytes() >= mem.baseline_bytes - MIB  # ru_maxrss may lag the RSS by a few pages
    assert mem.bytes == mem.peak_bytes - mem.baseline_bytes


def test_other_devices_are_not_measured_and_errors_pass_through():
    with PeakMemory("meta") as mem:
        torch.empty(1 << 20, device="meta")
    assert mem.bytes is None and mem.method == "not measured on meta"
    with pytest.raises(ZeroDivisionError):
        with PeakMemory("cpu") as mem:
            1 / 0
    assert mem.bytes is None and mem.method == ""
    with pytest.raises(ValueError, match="cpu='vmhwm'"):
        PeakMemory("cpu", cpu="vmhwm")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_allocator_peak_above_what_was_allocated():
    kept = torch.empty(16 * MIB, dtype=torch.uint8, device="cuda")
    with PeakMemory("cuda", what="the block") as mem:
        t = torch.empty(8 * MIB, dtype=torch.uint8, device="cuda")
        del t
    assert mem.bytes == 8 * MIB
    assert mem.baseline_bytes >= kept.numel()
    assert mem.method == "CUDA allocator: max_memory_allocated during the block minus the allocation before it"
