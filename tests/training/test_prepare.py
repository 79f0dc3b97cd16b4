"""Preparation of the training data once, in parallel, before training: `sisr prepare`, `sisr train --prepare-only`,
shares of the images for the processes of a node, idempotent and resumable."""

from __future__ import annotations

import pytest
import yaml
from testing_utils import tiny_train_config, write_noise_images

from sisr.cli import main
from sisr.data.training import cache_images, find_hr_images

pytestmark = pytest.mark.usefixtures("one_thread")


def _entries(cache):
    return {p.relative_to(cache): p.read_bytes() for p in sorted(cache.rglob("*.npy"))}


def test_sisr_prepare_caches_every_scale_with_a_pool_once_and_resumes(tmp_path, capsys):
    write_noise_images(tmp_path / "train", 4, (30, 36, 3))
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(tiny_train_config(tmp_path)))
    assert main(["prepare", "--config", str(cfg), "--scales", "2", "3", "--workers", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("x2: 4 training images ready (4 decoded now by 2 processes, 0 cached already, 0 skipped)")
    assert out[1].startswith("x3: 4 training images ready (4 decoded now by 2 processes, 0 cached already, 0 skipped)")
    assert f"GiB in {tmp_path / 'cache'}" in out[0]
    made = _entries(tmp_path / "cache")
    assert len(made) == 4 + 4 + 4  # the HR once per image, the LR once per scale

    assert main(["prepare", "--config", str(cfg), "--scales", "2", "3"]) == 0  # idempotent: nothing decoded
    assert [line.split(" in ")[0] for line in capsys.readouterr().out.splitlines()] == [
        "x2: 4 training images ready (0 decoded now, 4 cached already, 0 skipped)",
        "x3: 4 training images ready (0 decoded now, 4 cached already, 0 skipped)"]

    images = find_hr_images([tmp_path / "train"])
    x3 = cache_images(images, 3, 8, cache_dir=tmp_path / "cache", workers=1, progress=False)
    x3.pairs[1].lr_npy.unlink()  # as if the preparation had been killed before writing it
    assert main(["train", "--config", str(cfg), "model.scale=3", "--prepare-only"]) == 0
    assert "x3: 4 training images ready (1 decoded now, 3 cached already, 0 skipped)" in capsys.readouterr().out
    assert _entries(tmp_path / "cache") == made and not (tmp_path / "runs").exists()

    for scale in (2, 3):  # the pool wrote what one process writes, byte for byte
        serial = cache_images(images, scale, 8, cache_dir=tmp_path / "serial", workers=1, progress=False)
        assert serial.made == 4
    assert _entries(tmp_path / "serial") == made


def test_shares_are_disjoint_and_cover_the_images(tmp_path):
    write_noise_images(tmp_path / "train", 5, (20, 20, 3))
    images = find_hr_images([tmp_path / "train"])
    shares = [cache_images(images, 2, 4, cache_dir=tmp_path / "cache", share=(i, 2), workers=1, progress=False)
              for i in (0, 1)]
    names = [[p.name for p in s.pairs] for s in shares]
    assert names == [["t0.png", "t2.png", "t4.png"], ["t1.png", "t3.png"]]
    assert [(s.made, s.cached, s.others) for s in shares] == [(3, 0, 2), (2, 0, 3)]
    whole = cache_images(images, 2, 4, cache_dir=tmp_path / "cache", workers=1, progress=False)
    assert (whole.made, whole.cached, len(whole.pairs)) == (0, 5, 5)


def test_prepare_errors_are_one_line(tmp_path, capsys):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(tiny_train_config(tmp_path)))
    assert main(["prepare", "--config", str(cfg)]) == 1
    assert capsys.readouterr().err.strip().endswith("train: no such training image folder or file")
    write_noise_images(tmp_path / "train", 1, (20, 20, 3))
    assert main(["prepare", "--config", str(cfg), "--workers", "0"]) == 1
    assert capsys.readouterr().err == "sisr prepare: error: --workers must be at least 1, got 0\n"
    assert main(["prepare", "--config", str(cfg), "--scales", "5"]) == 1
    assert "error: --scales 5: model 'edsr-baseline' supports scales" in capsys.readouterr().err  # not the file
