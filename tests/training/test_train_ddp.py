"""DistributedDataParallel: two CPU processes (gloo) launched by torch.distributed.run."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
import yaml
from testing_utils import tiny_train_config, write_noise_images

import sisr
from sisr.weights import load_weights

WORKER = """
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from sisr.training.config import load_config
from sisr.training.trainer import Trainer

cfg, run = load_config(sys.argv[1]), Path(sys.argv[2])
trainer = Trainer(cfg, run)  # creates the gloo process group from torchrun's environment
rank, world = trainer.rank, trainer.world_size
trainer.fit()
torch.save({"rank": rank, "world": world, "weights": trainer.net.state_dict(), "iteration": trainer.iteration,
            "stop_reason": trainer.stop_reason}, run.parent / f"rank{rank}.pt")
"""


pytestmark = pytest.mark.usefixtures("one_thread")  # as torchrun sets OMP_NUM_THREADS=1 for its workers


def test_two_process_ddp_matches_a_single_process_run(tmp_path):
    write_noise_images(tmp_path / "train", 4, (36, 40, 3))
    cfg = tiny_train_config(tmp_path, optim={"lr": 1e-3},
                            train={"iterations": 8, "batch_size": 8, "checkpoint_every": 4})
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(worker), str(cfg_path), str(tmp_path / "ddp" / "run")],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]

    ranks = [torch.load(tmp_path / "ddp" / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert [(r["rank"], r["world"]) for r in ranks] == [(0, 2), (1, 2)]
    for key, value in ranks[0]["weights"].items():
        assert torch.equal(value, ranks[1]["weights"][key]), f"ranks disagree on {key}"
    saved, _ = load_weights(tmp_path / "ddp" / "run" / "latest.safetensors")  # written by rank 0 only
    for key, value in saved.items():
        assert torch.equal(value, ranks[0]["weights"][key])
    records = [json.loads(line) for line in (tmp_path / "ddp" / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in records if r["type"] == "train"] == [2, 4, 6, 8]  # one process logs

    # each process saw half of every global batch of 8: together they trained as one process does
    from sisr.training.trainer import train

    single = train(cfg, run_dir=tmp_path / "single")
    reference, _ = load_weights(single / "latest.safetensors")
    for key, value in reference.items():
        torch.testing.assert_close(ranks[0]["weights"][key], value, rtol=0, atol=1e-5, msg=key)
    torch.manual_seed(1)  # the run's seed: its initial weights
    initial = sisr.create_model("edsr-baseline", scale=2, n_resblocks=1, n_feats=8).state_dict()
    assert max(float((reference[k] - initial[k]).abs().max()) for k in reference) > 1e-3  # it did train


def test_a_stop_condition_ends_every_process_at_the_same_iteration(tmp_path):
    write_noise_images(tmp_path / "train", 4, (36, 40, 3))
    cfg = tiny_train_config(tmp_path, train={"iterations": 8, "batch_size": 4, "checkpoint_every": 8,
                                             "time_limit_s": 1e-6}, log={"every": 8})
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(worker), str(cfg_path), str(tmp_path / "ddp" / "run")],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [torch.load(tmp_path / "ddp" / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    # each process asks after iteration 1; the request travels with iteration 2's reduction, read 2 later
    assert [r["iteration"] for r in ranks] == [4, 4]
    assert all(r["stop_reason"] == "time limit of 1e-06 s (train.time_limit_s)" for r in ranks)
    pointer = json.loads((tmp_path / "ddp" / "run" / "checkpoints" / "latest.json").read_text())
    assert pointer["iteration"] == 4
    for key, value in ranks[0]["weights"].items():
        assert torch.equal(value, ranks[1]["weights"][key]), key


RECORDING_WORKER = """
import json, sys
from pathlib import Path

import torch

from sisr.data.training import PatchDataset
from sisr.training.config import load_config
from sisr.training.trainer import Trainer

seen = []
real = PatchDataset.__getitem__
PatchDataset.__getitem__ = lambda self, i: (seen.append(int(i)), real(self, i))[1]  # data.workers=0: this process

cfg, run, tag = load_config(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
trainer = Trainer(cfg, run)
shared = trainer.shared  # this process's share, prepared before the process group (None: one process)
trainer.fit()
record = {"rank": trainer.rank, "world": trainer.world_size, "iteration": trainer.iteration, "samples": seen,
          "share": None if shared is None else {"names": [p.name for p in shared.pairs], "made": shared.made,
                                                "cached": shared.cached},
          "full_pass_made": trainer.parts.data.result.made}
(run.parent / f"{tag}-rank{trainer.rank}.json").write_text(json.dumps(record))
"""


def _launch(tmp_path, cfg: dict, tag: str, processes: int) -> tuple[list[dict], str]:
    cfg_path = tmp_path / f"{tag}.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    worker = tmp_path / "recording_worker.py"
    worker.write_text(RECORDING_WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]
    launcher = launcher if processes > 1 else []
    proc = subprocess.run([sys.executable, *launcher, str(worker), str(cfg_path), str(tmp_path / "ddp" / "run"), tag],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [json.loads((tmp_path / "ddp" / f"{tag}-rank{r}.json").read_text()) for r in range(processes)]
    assert [(r["rank"], r["world"]) for r in records] == [(r, processes) for r in range(processes)]
    return records, proc.stderr


def test_ddp_prepares_in_shares_before_the_group_and_resumes_2_1_2_in_the_same_global_order(tmp_path):
    write_noise_images(tmp_path / "train", 4, (36, 40, 3))
    batch = 4

    def cfg(iterations):
        return tiny_train_config(tmp_path, optim={"lr": 1e-3},
                                 train={"iterations": iterations, "batch_size": batch, "checkpoint_every": 4})

    first, err = _launch(tmp_path, cfg(4), "a", 2)  # unprepared: each process of the node decodes its share
    assert [r["share"] for r in first] == [{"names": ["t0.png", "t2.png"], "made": 2, "cached": 0},
                                           {"names": ["t1.png", "t3.png"], "made": 2, "cached": 0}]
    assert [r["full_pass_made"] for r in first] == [0, 0]  # after the group started, everything was cached
    assert "process group: gloo, 2 processes, timeout 1800 s (train.dist_timeout_s" in err
    second, _ = _launch(tmp_path, cfg(8), "b", 1)  # resumed by one process
    third, err = _launch(tmp_path, cfg(12), "c", 2)  # and by two again, on a prepared set: nothing decoded
    assert [(r["share"]["made"], r["share"]["cached"], r["full_pass_made"]) for r in third] == [(0, 2, 0), (0, 2, 0)]
    assert "resuming" in err and "all cached already" in err

    # the global sample order goes on across world sizes: each phase takes the next samples, split by rank
    for records, (start, stop) in ((first, (0, 4)), (second, (4, 8)), (third, (8, 12))):
        assert sorted(i for r in records for i in r["samples"]) == list(range(start * batch, stop * batch))
        assert all(r["iteration"] == stop for r in records)
    per_rank = batch // 2
    assert third[1]["samples"][:per_rank] == list(range(8 * batch + per_rank, 8 * batch + batch))  # rank 1's half

    from sisr.training.trainer import train

    single = train(cfg(12), run_dir=tmp_path / "single")  # uninterrupted, one process
    reference, _ = load_weights(single / "latest.safetensors")
    resumed, _ = load_weights(tmp_path / "ddp" / "run" / "latest.safetensors")
    for key, value in reference.items():
        torch.testing.assert_close(resumed[key], value, rtol=0, atol=1e-5, msg=key)
