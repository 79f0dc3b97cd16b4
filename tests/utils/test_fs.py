"""Atomic, durable output: modes, fsync order, failures that leave the old file and no temporary."""

from __future__ import annotations

import os
import stat

import pytest
import torch

from sisr.errors import SisrError
from sisr.utils import fs
from sisr.utils.fs import OutputError, OutputExistsError, atomic_path, atomic_write_bytes, atomic_write_text


def _mode(p) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


def _leftovers(folder) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.endswith(".part")]


def test_mode_follows_umask_without_touching_it(tmp_path, monkeypatch):
    old = os.umask(0o027)
    try:
        def no_umask(_mask):
            raise AssertionError("os.umask must not be called (it races with other threads)")

        monkeypatch.setattr(os, "umask", no_umask)
        atomic_write_text(tmp_path / "a.txt", "x")
    finally:
        monkeypatch.undo()
        os.umask(old)
    assert _mode(tmp_path / "a.txt") == 0o640


def test_weights_file_has_the_usual_mode(tmp_path):
    from sisr.weights import save_weights

    old = os.umask(0o022)
    try:
        save_weights({"w": torch.zeros(2)}, tmp_path / "w.safetensors", model="edsr-baseline", scale=2)
    finally:
        os.umask(old)
    assert _mode(tmp_path / "w.safetensors") == 0o644


def test_file_is_synced_before_it_appears_and_folder_after(tmp_path, monkeypatch):
    events = []
    real_fsync, real_link, real_replace = os.fsync, os.link, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}"))),
                                                 real_fsync(fd)))
    monkeypatch.setattr(os, "link", lambda a, b: (events.append(("link", str(b))), real_link(a, b)))
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append(("replace", str(b))), real_replace(a, b)))
    atomic_write_bytes(tmp_path / "new.bin", b"1")
    atomic_write_bytes(tmp_path / "new.bin", b"2", overwrite=True)
    kinds = [(k, os.path.basename(p)) for k, p in events]
    assert kinds[0][0] == "fsync" and kinds[0][1].endswith(".part")
    assert kinds[1] == ("link", "new.bin")
    assert kinds[2] == ("fsync", tmp_path.name)
    assert kinds[3][0] == "fsync" and kinds[3][1].endswith(".part")
    assert kinds[4] == ("replace", "new.bin")
    assert kinds[5] == ("fsync", tmp_path.name)


def test_failure_while_writing_keeps_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "keep.txt"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_path(target, overwrite=True) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert target.read_text() == "old" and _leftovers(tmp_path) == []


def test_failure_in_fsync_keeps_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "keep.txt"
    atomic_write_text(target, "old")

    def failing_fsync(fd):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OutputError, match="keep.txt: cannot write: Input/output error"):
        atomic_write_text(target, "new", overwrite=True)
    assert target.read_text() == "old" and _leftovers(tmp_path) == []


def test_existing_output_is_kept(tmp_path):
    atomic_write_text(tmp_path / "a.txt", "old")
    with pytest.raises(OutputExistsError, match=r"a.txt: already exists \(use --overwrite"):
        atomic_write_text(tmp_path / "a.txt", "new")
    assert (tmp_path / "a.txt").read_text() == "old"


@pytest.mark.parametrize("where", ["file-as-folder", "proc"])
def test_bad_locations_are_one_line_sisr_errors(tmp_path, where):
    if where == "file-as-folder":
        (tmp_path / "afile").write_text("x")
        target = tmp_path / "afile" / "sub" / "out.txt"
    else:
        target = "/proc/sisr-no-such/out.txt"
    with pytest.raises(SisrError) as info:
        atomic_write_text(target, "x")
    assert isinstance(info.value, OutputError) and "\n" not in str(info.value) and str(target) in str(info.value)


def test_fsync_dir_tolerates_unopenable_folders(tmp_path):
    fs.fsync_dir(tmp_path / "missing")  # no exception


@pytest.mark.parametrize("text, expected", [
    ("edsr-baseline", "edsr-baseline"), ("Set 5/head (x4)", "Set_5_head_x4"), ("..hidden.", "hidden"),
    ("__a__", "a"), ("v1.2_b", "v1.2_b"), ("///", "x"), ("", "x"),
])
def test_slug_is_a_plain_file_name_part(text, expected):
    assert fs.slug(text) == expected
    assert fs.slug("***", fallback="model") == "model"
