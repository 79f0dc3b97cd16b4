"""A tiny EDSR trained on T91 for a few hundred iterations learns: its PSNR on held-out BSD200 images rises clearly;
the selected weights are then scored on Set5 (the run's results table)."""

from __future__ import annotations

import json

import pytest

from sisr.training.trainer import train


pytestmark = pytest.mark.usefixtures("one_thread")


def test_tiny_edsr_on_t91_improves_validation_psnr(datasets_root, tmp_path):
    cfg = {
        "model": {"name": "edsr-baseline", "scale": 2, "hparams": {"n_resblocks": 2, "n_feats": 16}},
        "data": {"hr": [str(datasets_root / "T91")], "patch_size": 24, "workers": 1,
                 "cache_dir": str(tmp_path / "cache")},
        "val": {"set": "BSD200:190-199", "root": str(datasets_root), "every": 300, "at_start": True},
        "optim": {"lr": 1e-3},
        "train": {"iterations": 300, "batch_size": 16, "checkpoint_every": 300, "device": "cpu", "test_sets": ["Set5"]},
        "log": {"every": 50},
    }
    run = train(cfg, run_dir=tmp_path / "run")
    vals = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    vals = [r for r in vals if r["type"] == "val"]
    assert [r["iteration"] for r in vals] == [0, 300]
    start, end = vals
    assert end["psnr"] > start["psnr"] + 10, (start, end)
    assert end["ssim"] > start["ssim"] + 0.3, (start, end)
    (score,) = json.loads((run / "results.json").read_text())["scores"]
    assert (score["dataset"], score["scale"], score["images"]) == ("Set5", 2, 5)
    assert score["psnr_y"] > 25 and score["ssim_y"] > 0.8, score  # a network that learned, on real test images
