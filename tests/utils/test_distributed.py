"""sisr.utils.distributed: object gathers outside, inside and across process groups."""

from __future__ import annotations

import torch.distributed as dist

from sisr.utils import distributed


def test_gather_objects_without_a_group_is_the_object():
    assert distributed.gather_objects({"a": 1}) == [{"a": 1}]


def test_the_side_group_of_a_destroyed_default_group_is_not_reused(tmp_path, monkeypatch):
    """Under NCCL objects travel through a gloo side group; a new default group gets a new one."""
    monkeypatch.setattr(dist, "get_backend", lambda *a, **k: "nccl")  # the side-group path, on a CPU
    for attempt in range(2):
        dist.init_process_group("gloo", init_method=f"file://{tmp_path / f'store{attempt}'}", rank=0, world_size=1)
        try:
            assert distributed.gather_objects(attempt) == [attempt]
            assert distributed._OBJECT_GROUP["gloo"][0] is dist.group.WORLD
        finally:
            dist.destroy_process_group()
