"""sisr.utils.device: descriptive device names for results files."""

from __future__ import annotations

import pytest
import torch

from sisr.utils.device import cpu_name, device_name


def test_cpu_device_name_gives_the_cpu_model_and_threads(monkeypatch):
    monkeypatch.setattr(torch, "get_num_threads", lambda: 3)
    name = cpu_name()
    assert name and "\n" not in name
    assert device_name(torch.device("cpu")) == f"cpu ({name}, 3 threads)"


def test_cpu_name_without_proc_falls_back_to_platform(monkeypatch):
    import builtins
    import platform

    real_open = builtins.open

    def no_cpuinfo(path, *args, **kwargs):
        if str(path) == "/proc/cpuinfo":
            raise FileNotFoundError(path)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", no_cpuinfo)
    monkeypatch.setattr(platform, "processor", lambda: "")
    monkeypatch.setattr(platform, "machine", lambda: "riscv64")
    assert cpu_name() == "riscv64"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_device_name():
    dev = torch.device("cuda:0")
    assert device_name(dev) == f"cuda:0 ({torch.cuda.get_device_name(dev)})"
