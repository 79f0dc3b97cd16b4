"""Batches copied to the GPU ahead of use (CUDAPrefetcher); on the CPU the loader is iterated as it is."""

from __future__ import annotations

import pytest
import torch
from testing_utils import tiny_train_config, write_noise_images

from sisr.training import trainer as trainer_module
from sisr.training.prefetch import CUDAPrefetcher, prefetch

pytestmark = pytest.mark.usefixtures("one_thread")


def _batches(count=3):
    gen = torch.Generator().manual_seed(0)
    return [(torch.randint(0, 256, (2, 3, 4, 4), dtype=torch.uint8, generator=gen),
             torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8, generator=gen)) for _ in range(count)]


def test_on_the_cpu_nothing_is_copied_ahead():
    loader = _batches()
    assert prefetch(loader, torch.device("cpu")) is loader
    with pytest.raises(ValueError, match="needs a CUDA device"):
        CUDAPrefetcher(loader, torch.device("cpu"))


def test_the_trainer_iterates_its_batches_through_prefetch(tmp_path, monkeypatch):
    write_noise_images(tmp_path / "train", 2, (24, 24, 3))
    seen = []

    def recording(loader, device):
        seen.append(device)
        return prefetch(loader, device)

    monkeypatch.setattr(trainer_module, "prefetch", recording)
    trainer_module.train(tiny_train_config(tmp_path, train={"iterations": 2}), run_dir=tmp_path / "run")
    assert seen == [torch.device("cpu")]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the CUDA path needs a GPU")
def test_on_cuda_the_batches_arrive_on_the_gpu_unchanged():
    device = torch.device("cuda", torch.cuda.current_device())
    batches = [tuple(t.pin_memory() for t in batch) for batch in _batches(5)]
    out = list(CUDAPrefetcher(batches, device))
    assert len(out) == len(batches) == len(CUDAPrefetcher(batches, device))
    for got, want in zip(out, batches):
        assert all(g.device == device and torch.equal(g.cpu(), w) for g, w in zip(got, want))
    assert isinstance(prefetch(batches, device), CUDAPrefetcher)
