"""Training data: discovery, LR sources, cache, patch alignment, augmentation, determinism, sharding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sisr.data import io as sisr_io
from sisr.data.degrade import degrade
from sisr.data.io import read_image, write_image
from sisr.data.training import (
    IterationSampler,
    PatchDataset,
    TrainingDataError,
    TrainingDataWarning,
    find_hr_images,
    make_loader,
    prepare_pairs,
)


def _random(rng, h, w, c=3, dtype=np.uint8):
    top = 65535 if dtype == np.uint16 else 255
    return rng.integers(0, top + 1, size=(h, w, c) if c else (h, w)).astype(dtype)


def _pair_folder(tmp_path, scale, sizes, seed=0):
    """EDSR layout where every HR is the LR with each pixel repeated s x s (nearest upscaling)."""
    rng = np.random.default_rng(seed)
    for i, (h, w) in enumerate(sizes):
        lr = _random(rng, h, w)
        hr = np.repeat(np.repeat(lr, scale, axis=0), scale, axis=1)
        extra = rng.integers(0, 256, size=(scale - 1, hr.shape[1], 3), dtype=np.uint8)  # rows a modcrop removes
        write_image(tmp_path / "set" / "HR" / f"im{i}.png", np.concatenate([hr, extra]))
        write_image(tmp_path / "set" / "LR_bicubic" / f"X{scale}" / f"im{i}x{scale}.png", lr)
    return tmp_path / "set"


@pytest.mark.parametrize("scale", [2, 3])
def test_lr_and_hr_patches_are_aligned_under_every_augmentation(tmp_path, scale):
    root = _pair_folder(tmp_path, scale, [(20, 23), (17, 30), (25, 19)])
    pairs = prepare_pairs([root], scale, 8, lr_dir="auto", cache_dir=tmp_path / "cache")
    assert [p.name for p in pairs] == ["im0.png", "im1.png", "im2.png"]
    ds = PatchDataset(pairs, scale, 8, seed=3)
    seen_flips = set()
    for i in range(64):
        lr, hr = ds[i]
        assert lr.shape == (3, 8, 8) and hr.shape == (3, 8 * scale, 8 * scale)
        assert lr.dtype == torch.float32 and 0 <= float(lr.min()) and float(lr.max()) <= 1
        torch.testing.assert_close(hr, lr.repeat_interleave(scale, 1).repeat_interleave(scale, 2), rtol=0, atol=0)
        seen_flips.add(ds.sample(i)[3])
    assert len(seen_flips) == 8  # all 8 flip/transpose combinations occur


def test_patch_is_the_lr_window_at_y_x_and_hr_window_at_sy_sx(tmp_path):
    root = _pair_folder(tmp_path, 2, [(21, 26)])
    pairs = prepare_pairs([root / "HR"], 2, 6, lr_dir=root / "LR_bicubic", cache_dir=tmp_path / "cache")
    lr_full = read_image(root / "LR_bicubic" / "X2" / "im0x2.png")
    hr_full = read_image(root / "HR" / "im0.png")
    ds = PatchDataset(pairs, 2, 6, seed=0, augment=False)
    for i in range(10):
        _, y, x, flips = ds.sample(i)
        assert flips == (False, False, False)
        lr, hr = ds[i]
        expect_lr = torch.from_numpy(lr_full[y:y + 6, x:x + 6].transpose(2, 0, 1).astype(np.float32) / 255)
        expect_hr = torch.from_numpy(hr_full[2 * y:2 * y + 12, 2 * x:2 * x + 12].transpose(2, 0, 1).astype(np.float32) / 255)
        torch.testing.assert_close(lr, expect_lr, rtol=0, atol=0)
        torch.testing.assert_close(hr, expect_hr, rtol=0, atol=0)


def test_sampling_is_a_function_of_seed_and_index_and_visits_every_image_per_round(tmp_path):
    root = _pair_folder(tmp_path, 2, [(12, 12)] * 5)
    pairs = prepare_pairs([root], 2, 4, lr_dir="auto", cache_dir=tmp_path / "cache")
    a, b = PatchDataset(pairs, 2, 4, seed=7), PatchDataset(pairs, 2, 4, seed=7)
    order = [3, 0, 9, 4, 1, 12, 2]  # any order, any index
    for i in order:
        for x, y in zip(a[i], b[i]):
            assert torch.equal(x, y)
    for rnd in range(3):
        assert sorted(a.sample(rnd * 5 + j)[0] for j in range(5)) == [0, 1, 2, 3, 4]
    other = PatchDataset(pairs, 2, 4, seed=8)
    assert [a.sample(i)[:3] for i in range(10)] != [other.sample(i)[:3] for i in range(10)]
    assert len(PatchDataset(pairs, 2, 4, samples_per_epoch=160)) == 160


def test_iteration_sampler_splits_each_global_batch_over_processes():
    single = list(IterationSampler(3, 6, 8))
    assert single == list(range(24, 48))
    shards = [list(IterationSampler(3, 6, 8, rank=r, world_size=4)) for r in range(4)]
    merged = [i for it in range(3) for r in range(4) for i in shards[r][it * 2:(it + 1) * 2]]
    assert merged == single
    with pytest.raises(TrainingDataError, match="not divisible"):
        IterationSampler(0, 1, 6, world_size=4)


def test_loader_batches_do_not_depend_on_workers_or_resume_point(tmp_path):
    root = _pair_folder(tmp_path, 2, [(14, 15), (16, 13), (12, 18)])
    pairs = prepare_pairs([root], 2, 5, lr_dir="auto", cache_dir=tmp_path / "cache")
    ds = PatchDataset(pairs, 2, 5, seed=1)
    whole = list(make_loader(ds, 0, 6, 4, workers=0))
    with_workers = list(make_loader(ds, 0, 6, 4, workers=2))
    resumed = list(make_loader(ds, 3, 6, 4, workers=0))
    assert len(whole) == 6
    for (l1, h1), (l2, h2) in zip(whole, with_workers):
        assert torch.equal(l1, l2) and torch.equal(h1, h2)
    for (l1, h1), (l2, h2) in zip(whole[3:], resumed):
        assert torch.equal(l1, l2) and torch.equal(h1, h2)


def test_on_the_fly_lr_is_made_once_and_cached(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    hr = _random(rng, 31, 29)
    write_image(tmp_path / "imgs" / "a.png", hr)
    write_image(tmp_path / "imgs" / "sub" / "b.png", _random(rng, 24, 40))
    cache = tmp_path / "cache"
    pairs = prepare_pairs([tmp_path / "imgs"], 2, 8, cache_dir=cache)
    assert [p.name for p in pairs] == ["a.png", "sub/b.png"]
    np.testing.assert_array_equal(np.load(pairs[0].lr_npy), degrade(hr, 2, "BI"))
    np.testing.assert_array_equal(np.load(pairs[0].hr_npy), hr)  # the whole image: shared by every scale
    assert pairs[0].lr_size == (15, 14)

    def no_decoding(path):
        raise AssertionError(f"decoded {path} again")

    monkeypatch.setattr(sisr_io, "read_image", no_decoding)
    again = prepare_pairs([tmp_path / "imgs"], 2, 8, cache_dir=cache)
    assert [(p.hr_npy, p.lr_npy) for p in again] == [(p.hr_npy, p.lr_npy) for p in pairs]
    x3 = prepare_pairs([tmp_path / "imgs"], 3, 8, cache_dir=cache)  # HR cached once per image, not per scale
    assert [p.hr_npy for p in x3] == [p.hr_npy for p in pairs]
    assert x3[0].lr_npy != pairs[0].lr_npy and x3[0].lr_size == (10, 9)
    assert len(list(cache.rglob("*.npy"))) == 2 + 2 * 2


def test_degradations_bd_and_dn_with_fixed_noise(tmp_path):
    rng = np.random.default_rng(1)
    hr = _random(rng, 36, 36)
    write_image(tmp_path / "imgs" / "a.png", hr)
    lrs = {}
    for mode in ("BI", "BD", "DN"):
        (pair,) = prepare_pairs([tmp_path / "imgs"], 3, 6, degradation=mode, cache_dir=tmp_path / "cache")
        lrs[mode] = np.load(pair.lr_npy)
    np.testing.assert_array_equal(lrs["BD"], degrade(hr, 3, "BD"))
    assert not np.array_equal(lrs["BI"], lrs["DN"])
    (dn_other_cache,) = prepare_pairs([tmp_path / "imgs"], 3, 6, degradation="DN", cache_dir=tmp_path / "c2")
    np.testing.assert_array_equal(np.load(dn_other_cache.lr_npy), lrs["DN"])  # fixed per image
    (dn_15,) = prepare_pairs([tmp_path / "imgs"], 3, 6, degradation="DN", noise_level=15, cache_dir=tmp_path / "cache")
    assert not np.array_equal(np.load(dn_15.lr_npy), lrs["DN"])


def test_bad_images_are_reported_by_name_and_skipped(tmp_path):
    rng = np.random.default_rng(2)
    write_image(tmp_path / "imgs" / "good.png", _random(rng, 30, 30))
    write_image(tmp_path / "imgs" / "small.png", _random(rng, 10, 30))
    (tmp_path / "imgs" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.warns(TrainingDataWarning) as record:
        pairs = prepare_pairs([tmp_path / "imgs"], 2, 8, cache_dir=tmp_path / "cache")
    assert [p.name for p in pairs] == ["good.png"]
    messages = [str(w.message) for w in record]
    assert len(messages) == 2
    assert any("broken.png" in m for m in messages)
    assert any("small.png" in m and "smaller than a 8x8 patch" in m for m in messages)
    with pytest.warns(TrainingDataWarning), pytest.raises(TrainingDataError, match="no usable training images.*3 skipped"):
        prepare_pairs([tmp_path / "imgs"], 2, 16, cache_dir=tmp_path / "cache")


def test_prepared_lr_problems_skip_the_image(tmp_path):
    root = _pair_folder(tmp_path, 2, [(12, 12), (12, 12), (12, 12)])
    (root / "LR_bicubic" / "X2" / "im1x2.png").unlink()
    write_image(root / "LR_bicubic" / "X2" / "im2x2.png", np.zeros((5, 6, 3), np.uint8), overwrite=True)
    with pytest.warns(TrainingDataWarning) as record:
        pairs = prepare_pairs([root], 2, 4, lr_dir="auto", cache_dir=tmp_path / "cache")
    assert [p.name for p in pairs] == ["im0.png"]
    text = " ".join(str(w.message) for w in record)
    assert "im1.png: no LR file" in text and "im2x2.png: LR is 6x5, expected 12x12" in text
    with pytest.raises(TrainingDataError, match="LR_BD/X2: no prepared LR folder"):
        prepare_pairs([root], 2, 4, lr_dir="auto", degradation="BD", cache_dir=tmp_path / "cache")


def test_layouts_div2k_and_edsr_use_only_the_training_hr(tmp_path):
    rng = np.random.default_rng(3)
    for name in ("0001", "0002"):
        write_image(tmp_path / "DIV2K" / "DIV2K_train_HR" / f"{name}.png", _random(rng, 20, 20))
    write_image(tmp_path / "DIV2K" / "DIV2K_valid_HR" / "0801.png", _random(rng, 20, 20))
    write_image(tmp_path / "DIV2K" / "DIV2K_train_LR_bicubic" / "X2" / "0001x2.png", _random(rng, 10, 10))
    found = find_hr_images(["DIV2K"], root=tmp_path)
    assert [p.name for p, _ in found] == ["0001.png", "0002.png"]
    root = _pair_folder(tmp_path, 2, [(10, 10)])
    assert [p.name for p, _ in find_hr_images([root])] == ["im0.png"]  # not the LR files
    with pytest.raises(TrainingDataError, match="no such training image folder"):
        find_hr_images(["nowhere"], root=tmp_path)


def test_benchmark_test_sets_are_refused(tmp_path):
    rng = np.random.default_rng(4)
    write_image(tmp_path / "Set14" / "HR" / "a.png", _random(rng, 20, 20))
    with pytest.raises(TrainingDataError, match="inside the benchmark test set 'Set14'"):
        find_hr_images([tmp_path / "Set14"])
    assert len(find_hr_images([tmp_path / "Set14"], allow_test_sets=True)) == 1


def test_gray_and_16_bit_images(tmp_path):
    rng = np.random.default_rng(5)
    gray = _random(rng, 16, 16, c=0)
    deep = _random(rng, 16, 16, dtype=np.uint16)
    write_image(tmp_path / "g" / "gray.png", gray)
    write_image(tmp_path / "d" / "deep.png", deep)
    (pg,) = prepare_pairs([tmp_path / "g"], 2, 8, cache_dir=tmp_path / "cache")
    lr, hr = PatchDataset([pg], 2, 8, augment=False)[0]
    assert hr.shape == (3, 16, 16) and torch.equal(hr[0], hr[1]) and torch.equal(hr[0], hr[2])
    (pd,) = prepare_pairs([tmp_path / "d"], 2, 8, cache_dir=tmp_path / "cache")
    lr, hr = PatchDataset([pd], 2, 8, augment=False)[0]
    torch.testing.assert_close(hr, torch.from_numpy(deep.transpose(2, 0, 1).astype(np.float32) / 65535))


def test_t91_is_usable_training_data(datasets_root, tmp_path):
    pairs = prepare_pairs([datasets_root / "T91"], 2, 24, cache_dir=tmp_path / "cache")
    assert len(pairs) == 91
    lr, hr = PatchDataset(pairs, 2, 24, seed=0)[5]
    assert lr.shape == (3, 24, 24) and hr.shape == (3, 48, 48)


def test_reads_the_layout_written_by_sisr_degrade(tmp_path):
    from sisr.data.prepare import prepare_dataset

    rng = np.random.default_rng(6)
    write_image(tmp_path / "src" / "a.png", _random(rng, 33, 30))
    write_image(tmp_path / "src" / "sub" / "b.png", _random(rng, 24, 27))
    prepare_dataset(tmp_path / "src", tmp_path / "prepared", 3, "DN", seed=0, progress=False)
    pairs = prepare_pairs([tmp_path / "prepared"], 3, 6, lr_dir="auto", degradation="DN", cache_dir=tmp_path / "c")
    assert [p.name for p in pairs] == ["a.png", "sub/b.png"]
    np.testing.assert_array_equal(np.load(pairs[1].lr_npy),
                                  read_image(tmp_path / "prepared" / "LR_DN" / "X3" / "sub" / "bx3.png"))


def test_a_cache_entry_changed_in_place_is_rebuilt(tmp_path, monkeypatch):
    from sisr.data import training as training_module

    rng = np.random.default_rng(0)
    hr = _random(rng, 24, 28)
    write_image(tmp_path / "imgs" / "a.png", hr)
    cache = tmp_path / "cache"
    (pair,) = prepare_pairs([tmp_path / "imgs"], 2, 8, cache_dir=cache)
    expected = np.load(pair.lr_npy)
    size = pair.lr_npy.stat().st_size
    np.save(pair.lr_npy, np.zeros_like(expected))  # same size, valid .npy, other pixels
    assert pair.lr_npy.stat().st_size == size
    monkeypatch.setattr(training_module, "_VERIFIED", set())  # as a new process
    with pytest.warns(TrainingDataWarning, match=r"training cache entry .*\.npy changed since it was written; "
                                                 r"rebuilding it"):
        (again,) = prepare_pairs([tmp_path / "imgs"], 2, 8, cache_dir=cache)
    np.testing.assert_array_equal(np.load(again.lr_npy), expected)
    lr, _ = PatchDataset([again], 2, 8, augment=False)[0]
    assert lr.max() > 0
    touched = again.lr_npy.stat().st_mtime_ns
    import os
    os.utime(again.lr_npy, ns=(touched + 10**9, touched + 10**9))  # a new time, the same content: kept
    monkeypatch.setattr(training_module, "_VERIFIED", set())
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        prepare_pairs([tmp_path / "imgs"], 2, 8, cache_dir=cache)


def test_patches_map_each_cache_file_once_per_process(tmp_path, monkeypatch):
    import pickle

    from sisr.data import training as training_module

    folder = _pair_folder(tmp_path, 2, [(20, 22), (24, 18)])
    pairs = prepare_pairs([folder / "HR"], 2, 8, lr_dir=folder / "LR_bicubic", cache_dir=tmp_path / "cache")
    opened = []
    real = training_module.map_npy
    monkeypatch.setattr(training_module, "map_npy", lambda path: opened.append(path) or real(path))
    ds = PatchDataset(pairs, 2, 8, seed=3)
    first = [ds[i] for i in range(40)]
    assert sorted(map(str, opened)) == sorted(str(p) for pair in pairs for p in (pair.lr_npy, pair.hr_npy))
    copy = pickle.loads(pickle.dumps(ds))  # a spawned worker maps the files itself
    assert copy._maps == {}
    for (l1, h1), (l2, h2) in zip(first, (copy[i] for i in range(40))):
        assert torch.equal(l1, l2) and torch.equal(h1, h2)
    assert not np.asarray(ds.arrays(0)[0]).flags.writeable


def test_the_data_loader_benchmark_runs_and_writes_its_table(tmp_path):
    import json
    import os
    import subprocess
    import sys

    from testing_utils import REPO

    out = tmp_path / "loader.json"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "data_loader.py"), "--images", "1", "--size",
                           "240x200", "--batches", "1", "--rounds", "1", "--json", str(out)],
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    assert [r["scale"] for r in rows] == [2, 3, 4]
    assert all(r[k]["samples_per_cpu_s"] > 0 for r in rows for k in ("float", "integer"))
    assert "| x4 | 48 (192) |" in proc.stdout
