"""Dataset preparation (``prepare_dataset``) and the ``sisr degrade`` command."""

from __future__ import annotations

import numpy as np
import pytest

from sisr.cli import main
from sisr.data.degrade import degrade
from sisr.data.io import read_image, write_image
from sisr.data.prepare import prepare_dataset
from sisr.errors import ConfigError, ImageError

RNG = np.random.default_rng(11)


def _hr_folder(root):
    """HR folder with nested, odd-sized, gray and 16-bit images; returns {relative name: array}."""
    images = {
        "a.png": RNG.integers(0, 256, (13, 17, 3), dtype=np.uint8),
        "sub/b.png": RNG.integers(0, 256, (12, 9, 1), dtype=np.uint8),
        "sub/deeper/c.png": RNG.integers(0, 65536, (10, 11, 4), dtype=np.uint16),
    }
    for rel, img in images.items():
        write_image(root / rel, img)
    return images


def test_layout_names_and_contents(tmp_path):
    hr_dir, out = tmp_path / "hr", tmp_path / "out"
    images = _hr_folder(hr_dir)
    result = prepare_dataset(hr_dir, out, 2, "BI", progress=False)
    assert sorted(p.as_posix() for p in result.written) == sorted(images)
    assert not result.failed and not result.skipped
    for rel, img in images.items():
        stem = rel[: -len(".png")]
        hr = read_image(out / "HR" / f"{stem}.png")
        lr = read_image(out / "LR_bicubic" / "X2" / f"{stem}x2.png")
        assert hr.shape == img.shape[:2] + (3,)  # not cropped; gray -> RGB, alpha dropped
        assert hr.dtype == lr.dtype == img.dtype
        np.testing.assert_array_equal(hr[..., 0], img[..., 0])
        np.testing.assert_array_equal(lr, degrade(img, 2, "BI"))
        assert lr.shape == (img.shape[0] // 2, img.shape[1] // 2, 3)


@pytest.mark.parametrize("mode,folder", [("BD", "LR_BD"), ("DN", "LR_DN")])
def test_other_modes_use_their_folders(tmp_path, mode, folder):
    hr_dir = tmp_path / "hr"
    img = RNG.integers(0, 256, (12, 12, 3), dtype=np.uint8)
    write_image(hr_dir / "x.png", img)
    prepare_dataset(hr_dir, tmp_path / "out", 3, mode, seed=4, progress=False)
    lr = read_image(tmp_path / "out" / folder / "X3" / "xx3.png")
    np.testing.assert_array_equal(lr, degrade(img, 3, mode, seed=4))


def test_resume_skips_finished_files_and_redoes_missing_ones(tmp_path):
    hr_dir, out = tmp_path / "hr", tmp_path / "out"
    _hr_folder(hr_dir)
    prepare_dataset(hr_dir, out, 4, "DN", seed=0, progress=False)
    lr_path = out / "LR_DN" / "X4" / "ax4.png"
    before = read_image(lr_path)
    hr_mtime = (out / "HR" / "a.png").stat().st_mtime_ns
    again = prepare_dataset(hr_dir, out, 4, "DN", seed=0, progress=False)
    assert len(again.skipped) == 3 and not again.written
    lr_path.unlink()
    resumed = prepare_dataset(hr_dir, out, 4, "DN", seed=0, progress=False)
    assert [p.as_posix() for p in resumed.written] == ["a.png"] and len(resumed.skipped) == 2
    np.testing.assert_array_equal(read_image(lr_path), before)  # the same seed gives the same noise
    assert (out / "HR" / "a.png").stat().st_mtime_ns == hr_mtime  # the HR file was kept


def test_bad_files_are_reported_and_skipped(tmp_path, capsys):
    hr_dir, out = tmp_path / "hr", tmp_path / "out"
    _hr_folder(hr_dir)
    data = (hr_dir / "a.png").read_bytes()
    (hr_dir / "broken.png").write_bytes(data[: len(data) // 2])
    write_image(hr_dir / "tiny.png", np.zeros((1, 5, 3), np.uint8))
    write_image(hr_dir / "dup.png", np.zeros((8, 8, 3), np.uint8))
    (hr_dir / "dup.jpg").write_bytes((hr_dir / "dup.png").read_bytes())  # same output name
    result = prepare_dataset(hr_dir, out, 2, progress=False)
    failed = {p.as_posix(): reason for p, reason in result.failed}
    assert set(failed) == {"broken.png", "tiny.png", "dup.png"}
    assert "truncated" in failed["broken.png"] and "smaller than the scale" in failed["tiny.png"]
    assert "same output name" in failed["dup.png"]
    assert all("\n" not in r and str(hr_dir) in r for r in failed.values())
    assert len(result.written) == 4

    code = main(["degrade", "--scale", "2", str(hr_dir), str(tmp_path / "out2")])
    captured = capsys.readouterr()
    assert code == 1
    assert "broken.png" in captured.err and "4 written, 0 already done, 3 failed" in captured.out


def test_output_inside_the_input_folder_is_not_read_back(tmp_path):
    hr_dir = tmp_path / "hr"
    write_image(hr_dir / "x.png", np.zeros((8, 8, 3), np.uint8))
    prepare_dataset(hr_dir, hr_dir / "prepared", 2, progress=False)
    second = prepare_dataset(hr_dir, hr_dir / "prepared", 2, progress=False)
    assert [p.as_posix() for p in second.skipped] == ["x.png"] and not second.failed


def test_invalid_mode_or_scale_fails_before_any_output(tmp_path):
    write_image(tmp_path / "hr" / "x.png", np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ConfigError, match="unknown degradation"):
        prepare_dataset(tmp_path / "hr", tmp_path / "out", 2, "XX", progress=False)
    with pytest.raises(ConfigError, match="integer >= 2"):
        prepare_dataset(tmp_path / "hr", tmp_path / "out", 1, progress=False)
    assert not (tmp_path / "out").exists()


def test_empty_or_missing_input_folder_is_an_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageError, match="no image files"):
        prepare_dataset(tmp_path / "empty", tmp_path / "out", 2, progress=False)
    with pytest.raises(ImageError, match="not a folder"):
        prepare_dataset(tmp_path / "missing", tmp_path / "out", 2, progress=False)
    assert main(["degrade", "--scale", "2", str(tmp_path / "missing"), str(tmp_path / "out")]) == 1


def test_cli_reproduces_the_set5_lr_files(datasets_root, tmp_path, capsys):
    code = main(["degrade", "--mode", "bi", "--scale", "3", str(datasets_root / "Set5" / "HR"), str(tmp_path)])
    assert code == 0 and "5 written" in capsys.readouterr().out
    for lr_path in sorted((datasets_root / "Set5" / "LR_bicubic" / "X3").glob("*.png")):
        np.testing.assert_array_equal(read_image(tmp_path / "LR_bicubic" / "X3" / lr_path.name), read_image(lr_path))
        name = lr_path.name.replace("x3.png", ".png")
        np.testing.assert_array_equal(read_image(tmp_path / "HR" / name),
                                      read_image(datasets_root / "Set5" / "HR" / name))


def test_cli_rejects_bad_options(tmp_path, capsys):
    assert main(["degrade", "--scale", "1", str(tmp_path), str(tmp_path / "o")]) == 1
    assert "scale must be an integer >= 2, got 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["degrade", "--mode", "XY", "--scale", "2", str(tmp_path), str(tmp_path / "o")])


def test_degradation_options_are_checked_and_only_those_of_the_mode_count(tmp_path, capsys):
    """sigma 0 or a NaN noise level wrote all-black LR files with exit 0; an option the mode ignores was silently
    accepted (and recorded, so a rerun without it was refused)."""
    hr_dir, out = tmp_path / "hr", tmp_path / "out"
    _hr_folder(hr_dir)
    for bad, match in ((["--mode", "BD", "--blur-sigma", "0"], "blur sigma must be a number in (0, 50]"),
                       (["--mode", "BD", "--blur-sigma", "1e6"], "blur sigma"),
                       (["--mode", "DN", "--noise-level", "nan"], "noise level must be a finite number >= 0"),
                       (["--mode", "DN", "--noise-level", "-5"], "noise level"),
                       (["--mode", "BI", "--noise-level", "5"], "--noise-level does not apply to --mode BI (only DN)"),
                       (["--mode", "BD", "--border", "replicate"], "--border does not apply to --mode BD"),
                       (["--seed", "1"], "--seed does not apply to --mode BI")):
        assert main(["degrade", str(hr_dir), str(out), "--scale", "2", *bad]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and match in err, (bad, err)
    assert not out.exists()
    with pytest.raises(ConfigError, match="blur sigma"):
        degrade(np.zeros((8, 8, 3), np.uint8), 2, "BD", blur_sigma=-1)
    prepare_dataset(hr_dir, out, 2, "BI", seed=1, progress=False)  # Python: the seed BI ignores is not recorded
    assert main(["degrade", str(hr_dir), str(out), "--scale", "2"]) == 0
    assert "0 written, 3 already done" in capsys.readouterr().out


def test_other_options_are_refused_before_anything_is_written(tmp_path, capsys):
    hr_dir, out = tmp_path / "hr", tmp_path / "out"
    _hr_folder(hr_dir)
    assert main(["degrade", str(hr_dir), str(out), "--scale", "2", "--mode", "DN", "--seed", "1"]) == 0
    lr_path = out / "LR_DN" / "X2" / "ax2.png"
    first = read_image(lr_path)
    capsys.readouterr()
    assert main(["degrade", str(hr_dir), str(out), "--scale", "2", "--mode", "DN", "--seed", "2"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "seed (1 then, 2 now)" in err and "--overwrite" in err
    np.testing.assert_array_equal(read_image(lr_path), first)
    assert main(["degrade", str(hr_dir), str(out), "--scale", "2", "--mode", "DN", "--seed", "2", "--overwrite"]) == 0
    assert "replaced 3 existing file(s)" in capsys.readouterr().out
    np.testing.assert_array_equal(read_image(lr_path), degrade(read_image(hr_dir / "a.png"), 2, "DN", seed=2))
    # the same options again: provably done, skipped
    assert main(["degrade", str(hr_dir), str(out), "--scale", "2", "--mode", "DN", "--seed", "2"]) == 0
    assert "0 written, 3 already done" in capsys.readouterr().out


@pytest.mark.parametrize("change", ["source", "output", "unrecorded", "noise"])
def test_outputs_that_do_not_provably_match_are_refused(tmp_path, change):
    hr_dir, out = tmp_path / "hr", tmp_path / "out"
    images = _hr_folder(hr_dir)
    prepare_dataset(hr_dir, out, 2, "DN", seed=0, progress=False)
    lr_path = out / "LR_DN" / "X2" / "ax2.png"
    if change == "source":
        write_image(hr_dir / "a.png", 255 - images["a.png"], overwrite=True)
        expected = "made from another source image"
    elif change == "output":
        write_image(lr_path, np.zeros_like(read_image(lr_path)), overwrite=True)
        expected = "changed since it was made"
    elif change == "unrecorded":
        (out / ".sisr-degrade.json").unlink()
        expected = "not recorded as made by sisr degrade"
    else:
        expected = "noise_level (30.0 then, 10.0 now)"
    with pytest.raises(ConfigError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        prepare_dataset(hr_dir, out, 2, "DN", seed=0, noise_level=10.0 if change == "noise" else 30.0, progress=False)


def test_hr_folder_as_output_is_a_clear_error(tmp_path, capsys):
    hr_dir = tmp_path / "dgself"
    write_image(hr_dir / "x.png", np.zeros((8, 8, 3), np.uint8))
    assert main(["degrade", "--scale", "2", str(hr_dir), str(hr_dir)]) == 1
    assert "is (or contains) the HR folder" in capsys.readouterr().err


def test_bad_output_location_is_one_line_before_work(tmp_path, capsys):
    hr_dir = tmp_path / "hr"
    write_image(hr_dir / "x.png", np.zeros((8, 8, 3), np.uint8))
    (tmp_path / "afile").write_text("x")
    for bad in (tmp_path / "afile", tmp_path / "afile" / "sub", "/proc/sisr-degrade"):
        assert main(["degrade", "--scale", "2", str(hr_dir), str(bad)]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and str(bad) in err, err


# ----------------------------------------------------------------------------- concurrency, manifest, workers

def test_concurrent_runs_into_one_folder_both_succeed(tmp_path, monkeypatch):
    """x2 and x3 at once into one folder: both finish, and the manifest records every file of both."""
    import json
    import threading
    import time

    from sisr.data import prepare
    from sisr.utils.fs import sha256_file

    hr_dir, out = tmp_path / "hr", tmp_path / "out"
    for i in range(12):
        write_image(hr_dir / f"i{i:02d}.png", RNG.integers(0, 256, (12, 12, 3), dtype=np.uint8))
    real = prepare.write_image

    def slow_write(*args, **kwargs):  # widen the window in which the two runs interleave
        time.sleep(0.02)
        return real(*args, **kwargs)

    monkeypatch.setattr(prepare, "write_image", slow_write)
    barrier, results = threading.Barrier(2), {}

    def degrade_run(scale):  # each run holds the lock through its own file descriptor, as a process would
        barrier.wait()
        try:
            result = prepare_dataset(hr_dir, out, scale, progress=False, workers=1)
            results[scale] = (len(result.written), [reason for _, reason in result.failed])
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            results[scale] = (-1, [f"{type(exc).__name__}: {exc}"])

    threads = [threading.Thread(target=degrade_run, args=(s,)) for s in (2, 3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert results == {2: (12, []), 3: (12, [])}
    files = json.loads((out / ".sisr-degrade.json").read_text())["files"]
    pngs = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert len(pngs) == 36 and sorted(files) == pngs
    assert all(files[name]["sha256"] == sha256_file(out / name) for name in pngs)
    for scale in (2, 3):  # and a rerun of either finds everything done
        again = prepare_dataset(hr_dir, out, scale, progress=False)
        assert len(again.skipped) == 12 and not again.written and not again.failed


@pytest.mark.parametrize("content,problem", [
    ({"version": 1, "files": {"HR/x.png": "abc"}}, "entry 'HR/x.png' is a string, not an object"),
    ({"version": 1, "files": {"HR/x.png": {"sha256": 3, "source_sha256": "a"}}}, "entry 'HR/x.png' lacks a string 'sha256'"),
    ({"version": 1, "files": []}, "'files' is an array, not an object"),
    ({"version": 7, "files": {}}, "version 7, expected 1"),
    (["x"], "an array, not an object"),
    ("{not json", "not JSON"),
])
def test_a_malformed_manifest_is_one_line(tmp_path, capsys, content, problem):
    import json

    hr_dir, out = tmp_path / "hr", tmp_path / "out"
    write_image(hr_dir / "x.png", np.zeros((8, 8, 3), np.uint8))
    assert main(["degrade", "--scale", "2", str(hr_dir), str(out)]) == 0
    manifest = out / ".sisr-degrade.json"
    manifest.write_text(content if isinstance(content, str) else json.dumps(content))
    capsys.readouterr()
    assert main(["degrade", "--scale", "2", str(hr_dir), str(out)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(manifest) in err and "not a valid sisr degrade manifest" in err, err
    assert problem in err, err


def test_workers_give_byte_identical_outputs(tmp_path, capsys):
    hr_dir = tmp_path / "hr"
    images = _hr_folder(hr_dir)
    for i in range(3):
        write_image(hr_dir / f"more{i}.png", RNG.integers(0, 256, (15, 14, 3), dtype=np.uint8))
    outs = {n: tmp_path / f"out{n}" for n in (1, 2)}
    for n, out in outs.items():
        assert main(["degrade", "--scale", "3", "--mode", "DN", "--seed", "5", "--workers", str(n),
                     str(hr_dir), str(out)]) == 0
        assert f"{len(images) + 3} written, 0 already done, 0 failed" in capsys.readouterr().out
    names = sorted(p.relative_to(outs[1]).as_posix() for p in outs[1].rglob("*") if p.is_file() and "lock" not in p.name)
    assert len(names) == 2 * (len(images) + 3) + 1  # HR + LR per image, and the manifest
    assert names == sorted(p.relative_to(outs[2]).as_posix() for p in outs[2].rglob("*")
                           if p.is_file() and "lock" not in p.name)
    for name in names:
        assert (outs[1] / name).read_bytes() == (outs[2] / name).read_bytes(), name
    assert main(["degrade", "--scale", "3", "--workers", "0", str(hr_dir), str(outs[1])]) == 1
    assert "--workers must be an integer >= 1, got 0" in capsys.readouterr().err
