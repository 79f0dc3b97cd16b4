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
