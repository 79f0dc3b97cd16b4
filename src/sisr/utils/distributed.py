"""The process group of a ``torchrun`` launch, shared by training and evaluation: created from the launcher's
environment (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``) with an explicit timeout,
and a gather of Python objects that works whatever the group's backend."""

from __future__ import annotations

import datetime
import os
from typing import Any

import torch
import torch.distributed as dist

__all__ = ["init_from_env", "rank_and_world", "gather_objects"]

_OBJECT_GROUP: dict[str, Any] = {}  # "gloo": (default group, its gloo side group for object gathers under NCCL)


def init_from_env(device_spec: str, timeout_s: float = 1800.0) -> tuple[int, int, int, bool]:
    """``(rank, world size, local rank, whether this call created the process group)``. Under a launcher
    (``WORLD_SIZE`` > 1) a group not yet made is created (NCCL for CUDA devices, else gloo) with the explicit
    timeout ``timeout_s`` (NCCL's default is 10 minutes)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    created = False
    if world > 1 and not dist.is_initialized():
        use_nccl = torch.cuda.is_available() and not device_spec.startswith(("cpu", "mps"))
        dist.init_process_group(backend="nccl" if use_nccl else "gloo", timeout=datetime.timedelta(seconds=timeout_s))
        created = True
    rank, world = rank_and_world()
    return rank, world, int(os.environ.get("LOCAL_RANK", rank)), created


def rank_and_world() -> tuple[int, int]:
    """This process's rank and the group's size; ``(0, 1)`` without a process group."""
    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj`` (picklable), in rank order, on every rank; ``[obj]`` without a process group."""
    if not dist.is_initialized():
        return [obj]
    group = None
    if dist.get_backend() != "gloo":  # NCCL gathers objects only through CUDA tensors: use a CPU group
        world, cached = dist.group.WORLD, _OBJECT_GROUP.get("gloo")
        if cached is None or cached[0] is not world:  # made for this default group (not one destroyed since)
            cached = _OBJECT_GROUP["gloo"] = (world, dist.new_group(backend="gloo"))
        group = cached[1]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj, group=group)
    return out
