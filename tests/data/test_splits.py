"""Validation sets that are not test sets: slices of training sources held out, folders, test sets refused."""

from __future__ import annotations

import numpy as np
import pytest

from sisr.data.io import write_image
from sisr.data.splits import ValSetError, check_overlap, parse_val_set, resolve_val_set, slice_images


def _images(folder, names):
    rng = np.random.default_rng(0)
    for name in names:
        write_image(folder / name, rng.integers(0, 256, size=(12, 14, 3), dtype=np.uint8))


def test_parse_slices_and_refuse_test_sets():
    spec = parse_val_set("DIV2K:801-810")
    assert (spec.name, spec.first, spec.last) == ("DIV2K", 801, 810)
    assert parse_val_set("C:/data/val").first is None  # a path with a colon is a folder
    for bad, match in [("Set5", "benchmark test set 'Set5'"), ("b100:1-5", "test set 'b100'"),
                       ("x/Manga109/HR", "test set 'Manga109'"), ("BSD200:0-3", "1 <= FIRST <= LAST"),
                       ("BSD200:9-3", "1 <= FIRST <= LAST"), ("", "expected a folder")]:
        with pytest.raises(ValSetError, match=match):
            parse_val_set(bad)


def test_a_slice_of_a_training_source_counts_its_sorted_images(tmp_path):
    _images(tmp_path / "BSD200" / "HR", [f"{i:03d}.png" for i in range(1, 13)])
    val = resolve_val_set("BSD200:11-12", sources=["BSD200"], data_root=tmp_path)
    assert [p.name for p in val.files] == ["011.png", "012.png"]
    assert val.held_out == {p.resolve() for p in val.files}
    same = resolve_val_set("BSD200:11-12", sources=[str(tmp_path / "BSD200" / "HR")])  # the source as a path
    assert same.files == val.files
    by_root = resolve_val_set("BSD200:1-1", val_root=tmp_path)  # not a training source: under the roots
    assert [p.name for p in by_root.files] == ["001.png"]
    with pytest.raises(ValSetError, match=r"'BSD200:11-13': .*BSD200 has 12 images \(1-12\)"):
        resolve_val_set("BSD200:11-13", sources=["BSD200"], data_root=tmp_path)
    with pytest.raises(ValSetError, match="no training source or folder 'DIV2K'"):
        resolve_val_set("DIV2K:1-2", sources=["BSD200"], data_root=tmp_path, val_root=tmp_path)


def test_div2k_counts_train_then_valid_images(tmp_path):
    _images(tmp_path / "DIV2K" / "DIV2K_train_HR", ["0001.png", "0002.png", "0003.png"])
    _images(tmp_path / "DIV2K" / "DIV2K_valid_HR", ["0004.png", "0005.png"])
    assert [p.name for p in slice_images(tmp_path / "DIV2K")] == ["0001.png", "0002.png", "0003.png", "0004.png",
                                                                    "0005.png"]
    val = resolve_val_set("DIV2K:4-5", sources=["DIV2K"], data_root=tmp_path)
    assert [p.parent.name for p in val.files] == ["DIV2K_valid_HR"] * 2


def test_a_folder_set_must_not_overlap_the_training_images_and_test_sets_are_refused_by_path(tmp_path):
    _images(tmp_path / "train", ["a.png", "b.png"])
    _images(tmp_path / "bench" / "Mine" / "HR", ["v.png"])
    bench = resolve_val_set("Mine", val_root=tmp_path / "bench")
    assert bench.bench_root == tmp_path / "bench" and bench.files is None
    folder = resolve_val_set(str(tmp_path / "train"))
    assert [p.name for p in folder.files] == ["a.png", "b.png"] and not folder.held_out
    with pytest.raises(ValSetError, match=r"2 validation image\(s\) are also training images .*a.png"):
        check_overlap(folder, sorted((tmp_path / "train").iterdir()))
    check_overlap(folder, [])
    _images(tmp_path / "Set14" / "mine", ["x.png"])
    with pytest.raises(ValSetError, match="benchmark test set 'Set14'"):
        resolve_val_set("mine", val_root=tmp_path / "Set14")
