"""Batches copied to the GPU ahead of use (the idea of BasicSR's ``CUDAPrefetcher``).

``prefetch(loader, device)`` is what the trainer iterates. On CUDA, a :class:`CUDAPrefetcher` issues the
copy of batch ``k + 1`` (from the DataLoader's pinned memory, ``non_blocking``) on a side stream before
batch ``k`` is handed out, so the copy overlaps the training step; the step's stream waits for the copy
before using the tensors, and ``record_stream`` keeps the allocator from reusing their memory while it
may still be read. On any other device nothing is copied ahead: ``prefetch`` returns the loader itself
(the step moves each batch).
"""

from __future__ import annotations

from typing import Iterable, Iterator

import torch


class CUDAPrefetcher:
    """Iterate ``loader``'s batches (tuples or lists of tensors) as tensors already on ``device`` (CUDA)."""

    def __init__(self, loader: Iterable, device: torch.device):
        if device.type != "cuda":
            raise ValueError(f"CUDAPrefetcher needs a CUDA device, got {device}")
        self.loader, self.device = loader, device

    def __len__(self) -> int:
        return len(self.loader)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        stream = torch.cuda.Stream(self.device)
        batches = iter(self.loader)
        ahead = self._load(batches, stream)
        while ahead is not None:
            current = torch.cuda.current_stream(self.device)
            current.wait_stream(stream)  # the copy of this batch is done before the step reads it
            for tensor in ahead:
                tensor.record_stream(current)  # made on the side stream, used on this one
            batch, ahead = ahead, self._load(batches, stream)
            yield batch

    def _load(self, batches: Iterator, stream: torch.cuda.Stream) -> tuple[torch.Tensor, ...] | None:
        try:
            batch = next(batches)
        except StopIteration:
            return None
        with torch.cuda.stream(stream):
            return tuple(t.to(self.device, non_blocking=True) for t in batch)


def prefetch(loader: Iterable, device: torch.device) -> Iterable:
    """A :class:`CUDAPrefetcher` of ``loader`` on CUDA; elsewhere ``loader`` itself."""
    return CUDAPrefetcher(loader, device) if device.type == "cuda" else loader
