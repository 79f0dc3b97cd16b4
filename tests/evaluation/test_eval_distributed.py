"""``sisr eval`` under torchrun: two CPU processes (gloo) share the images and rank 0 writes what one process
would have written."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from testing_utils import write_noise_images

pytestmark = [pytest.mark.slow, pytest.mark.subprocess]


@pytest.fixture
def data_root(tmp_path):
    root = tmp_path / "data"
    write_noise_images(root / "SetA" / "HR", 5, (26, 30, 3), seed=1)
    write_noise_images(root / "SetB" / "HR", 2, (24, 36, 3), seed=2)
    return root


def sisr_eval(*args: str, nproc: int = 1) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launch = ([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc), "-m"]
              if nproc > 1 else [sys.executable, "-m"])
    proc = subprocess.run([*launch, "sisr", "eval", "--model", "bicubic", *args], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc


def scores(folder) -> list[tuple]:
    data = json.loads((folder / "results.json").read_text())
    return [(s["dataset"], s["scale"], s["lr"], [(i["name"], i["psnr_y"], i["ssim_y"], i["psnr_rgb"])
                                                for i in s["images"]]) for s in data["results"]]


def test_two_processes_score_as_one(data_root, tmp_path):
    common = ["--data-root", str(data_root), "--datasets", "SetA", "SetB", "--scales", "2", "3"]
    sisr_eval(*common, "-o", str(tmp_path / "one"))
    proc = sisr_eval(*common, "-o", str(tmp_path / "two"), nproc=2)
    assert scores(tmp_path / "two") == scores(tmp_path / "one")  # every image, in file order, same figures
    protocol = json.loads((tmp_path / "two" / "results.json").read_text())["protocol"]
    assert protocol["processes"] == {"world_size": 2, "images_per_rank": [7, 7]}  # 14 images: 7 each, not 14
    assert "rank 1 of 2: scored its share" in proc.stdout
    assert proc.stdout.count("results written to") == 1  # rank 0 alone writes


def test_a_paper_table_under_torchrun(data_root, tmp_path):
    common = ["--data-root", str(data_root), "--datasets", "SetA", "--scales", "2", "3", "--self-ensemble", "both"]
    sisr_eval(*common, "-o", str(tmp_path / "one"))
    sisr_eval(*common, "-o", str(tmp_path / "two"), nproc=2)
    for name in ("table.md", "table.csv"):
        assert (tmp_path / "two" / name).read_text() == (tmp_path / "one" / name).read_text()
    assert scores(tmp_path / "two" / "x3-plus") == scores(tmp_path / "one" / "x3-plus")
