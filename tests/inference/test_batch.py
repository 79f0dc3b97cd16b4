"""sisr.inference.batch: jobs, skip-if-done with pixel fingerprints, workers, progress, races; sisr.tune_process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import numpy as np
import pytest
import torch

import sisr
from sisr.data.io import read_image, read_image_info, write_image
from sisr.errors import ConfigError
from sisr.inference.batch import OutputOptions, pixel_digest, plan_jobs, upscale_files
from sisr.inference.options import RunOptions


def _img(h, w, c=3, dtype=np.uint8, seed=0):
    return np.random.default_rng(seed).integers(0, np.iinfo(dtype).max + 1, (h, w, c), dtype=dtype)


def test_folders_become_jobs_and_the_result_says_what_happened(tmp_path):
    src = tmp_path / "in"
    write_image(src / "a.png", _img(5, 6))
    write_image(src / "sub" / "b.png", _img(4, 3, 4, seed=1))
    (src / "broken.png").write_text("no PNG")
    events, notes = [], []
    result = upscale_files([src], tmp_path / "out", "bicubic", 3, progress=events.append, notify=notes.append)
    assert sorted(j.output.relative_to(tmp_path / "out").as_posix() for j in result.done) == ["a.png", "sub/b.png"]
    assert not result.skipped and not result.ok and result.failed[0][0] == src / "broken.png"
    assert str(src / "broken.png") in result.failed[0][1] and "\n" not in result.failed[0][1]
    assert events[0].kind == "start" and events[0].total == 3 and "bicubic x3 on cpu, 3 image(s)" in events[0].message
    assert sorted(e.position for e in events[1:]) == [1, 2, 3] and all(e.total == 3 for e in events[1:])
    again = upscale_files(str(src), tmp_path / "out", "bicubic", 3)  # one path is one input
    assert sorted(again.skipped) == sorted(result.done) and not again.done
    np.testing.assert_array_equal(read_image(tmp_path / "out" / "a.png"),
                                  sisr.upscale(read_image(src / "a.png"), "bicubic", 3))


def test_whole_job_errors_raise_before_anything_is_written(tmp_path):
    write_image(tmp_path / "in" / "a.png", _img(4, 4))
    with pytest.raises(ConfigError, match="--quality must be 1..100"):
        OutputOptions(quality=0)
    for kwargs, error in [({"model": "edsr2"}, "unknown model 'edsr2'"),
                          ({"model": "bicubic", "options": RunOptions(precision="fp16")}, "fp16 is not supported"),
                          ({"model": torch.nn.Upsample(scale_factor=2)}, "needs a network of known scale")]:
        with pytest.raises(sisr.errors.SisrError, match=error):
            upscale_files([tmp_path / "in"], tmp_path / "out", **{"model": "bicubic", **kwargs})
    with pytest.raises(ConfigError, match="--color must be one of keep, srgb"):
        OutputOptions(color="p3")
    assert not (tmp_path / "out").exists()


def test_output_size_is_checked_before_the_network_runs(tmp_path):
    net = sisr.create_model("bicubic", scale=2)
    widths = []
    net.register_forward_pre_hook(lambda m, a: widths.append(a[0].shape[-1]))
    write_image(tmp_path / "in" / "wide.png", _img(2, 8200))
    write_image(tmp_path / "in" / "ok.png", _img(3, 4))
    result = upscale_files([tmp_path / "in"], tmp_path / "out", net, output_options=OutputOptions(ext="webp"))
    assert [j.source.name for j in result.done] == ["ok.png"]
    assert "16400x4 cannot be written as WEBP" in result.failed[0][1] and 8200 not in widths


@pytest.mark.parametrize("ext", ["png", "jpg", "webp", "tiff"])
def test_the_recorded_fingerprint_is_that_of_the_decoded_output(tmp_path, ext):
    if ext == "tiff":
        pytest.importorskip("tifffile")
    src = tmp_path / "in"
    forms = {"gray": _img(5, 4, 1), "gray_alpha": _img(5, 4, 2, seed=1), "rgb": _img(5, 4, 3, seed=2),
             "rgba": _img(5, 4, 4, seed=3), "gray16": _img(5, 4, 1, np.uint16, seed=4),
             "rgb16": _img(5, 4, 3, np.uint16, seed=5), "rgba16": _img(5, 4, 4, np.uint16, seed=6)}
    for name, img in forms.items():
        if not (ext == "jpg" and img.shape[2] in (2, 4)):  # JPEG holds no alpha
            write_image(src / f"{name}.png", img)
    for lossless in ((False, True) if ext == "webp" else (False,)):
        out = tmp_path / f"out-{lossless}"
        result = upscale_files([src], out, "bicubic", 2, output_options=OutputOptions(ext=ext, lossless=lossless))
        assert result.ok and len(result.done) == len(list(src.iterdir()))
        for job in result.done:
            record = json.loads(read_image_info(job.output).provenance)
            pixels = read_image(job.output)
            assert record["output"] == {"size": [pixels.shape[1], pixels.shape[0]],
                                        "pixels_sha256": pixel_digest(pixels)}
        assert len(upscale_files([src], out, "bicubic", 2, output_options=OutputOptions(ext=ext, lossless=lossless))
                   .skipped) == len(result.done)


def test_two_identical_jobs_racing_for_one_output_both_succeed(tmp_path):
    net = sisr.create_model("bicubic", scale=2)
    both_checked = threading.Barrier(2, timeout=30)
    net.register_forward_pre_hook(lambda m, a: None if both_checked.wait() >= 0 else None)  # both past their checks
    write_image(tmp_path / "a.png", _img(6, 6))
    results = [None, None]

    def job(k):
        results[k] = upscale_files([tmp_path / "a.png"], tmp_path / "out", net, workers=1)

    threads = [threading.Thread(target=job, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r.ok for r in results)
    assert sorted((len(r.done), len(r.skipped)) for r in results) == [(0, 1), (1, 0)]


def test_plan_jobs_leaves_out_an_output_folder_inside_an_input_folder(tmp_path):
    write_image(tmp_path / "a.png", _img(3, 3))
    write_image(tmp_path / "big" / "a.png", _img(6, 6))  # a previous run's output
    jobs, errors = plan_jobs([tmp_path], tmp_path / "big")
    assert jobs == [(tmp_path / "a.png", tmp_path / "big" / "a.png")] and not errors
    jobs, _ = plan_jobs([tmp_path], tmp_path / "other")
    assert len(jobs) == 2  # elsewhere, the folder is an input like any other
    jobs, errors = plan_jobs([tmp_path / "big"], tmp_path / "big", "_x2")  # was "no image files in this folder"
    assert not jobs and errors == [f"{tmp_path / 'big'}: is the output folder, whose files are never read as inputs; "
                                   f"choose another -o"]
    jobs, errors = plan_jobs([tmp_path / "big"], tmp_path)
    assert not jobs and "is inside the output folder" in errors[0]
    jobs, errors = plan_jobs([tmp_path / "a.png", tmp_path / "a.png", tmp_path], tmp_path / "o")
    assert jobs == [(tmp_path / "a.png", tmp_path / "o" / "a.png"), (tmp_path / "big" / "a.png",
                                                                     tmp_path / "o" / "big" / "a.png")] and not errors


def test_workers_run_images_side_by_side_and_restore_the_thread_count(tmp_path):
    for k in range(3):
        write_image(tmp_path / "in" / f"{k}.png", _img(8, 8, seed=k))
    seen = []
    net = sisr.create_model("bicubic", scale=2)
    net.register_forward_pre_hook(lambda m, a: seen.append(torch.get_num_threads()))
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        result = upscale_files([tmp_path / "in"], tmp_path / "out", net)
        assert len(result.done) == 3 and seen == [1, 1, 1] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_tune_process_sets_the_openmp_policy_only_before_torch_loads():
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    code = ("import os, sys, sisr; r = sisr.tune_process(allocator=False); import torch; "
            "print(r['openmp'], os.environ.get('OMP_WAIT_POLICY'), os.environ.get('GOMP_SPINCOUNT'), "
            "sisr.tune_process(allocator=False)['openmp'])")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "PASSIVE", "10000", "False"]
    out = subprocess.run([sys.executable, "-c", "import torch, sisr; print(sisr.tune_process(allocator=False))"],
                         env=env, capture_output=True, text=True, check=True)
    assert "'openmp': False" in out.stdout


def test_transparency_into_jpeg_fails_before_the_network_and_names_the_output(tmp_path):
    net = sisr.create_model("bicubic", scale=2)
    calls = []
    net.register_forward_pre_hook(lambda m, a: calls.append(1) and None)
    write_image(tmp_path / "in" / "icon.png", _img(4, 4, 4))
    result = upscale_files([tmp_path / "in"], tmp_path / "out", net, output_options=OutputOptions(ext="jpg"))
    assert result.failed == [(tmp_path / "in" / "icon.png",
                              f"{tmp_path / 'out' / 'icon.jpg'}: JPEG cannot hold transparency (use .png, .webp or .tif)")]
    assert not calls


def test_an_exported_backend_gets_a_loaded_channels_last_module_ready_once(tmp_path):
    pytest.importorskip("onnxruntime")
    from sisr.weights import save_weights

    torch.manual_seed(0)
    model = sisr.create_model("edsr-baseline", scale=2, **sisr.get_info("edsr-baseline").tiny)
    weights = save_weights(model, tmp_path / "w.safetensors", model="edsr-baseline", scale=2,
                           hparams=model.sisr_spec.hparams)
    net = sisr.load_model(weights)  # channels_last on the CPU
    for k in range(2):
        write_image(tmp_path / "in" / f"{k}.png", _img(9, 8, seed=k))
    notes = []
    result = upscale_files([tmp_path / "in"], tmp_path / "out", net, options=RunOptions(backend="onnxruntime"),
                           notify=notes.append)
    assert result.ok and len(result.done) == 2 and any("building the onnxruntime backend" in n for n in notes)
    for job in result.done:
        reference = sisr.upscale(read_image(job.source), model).astype(int)
        assert np.abs(read_image(job.output).astype(int) - reference).max() <= 1


def test_shards_split_a_folder_deterministically(tmp_path, monkeypatch):
    from sisr.cli import main
    from testing_utils import write_noise_images

    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    src = write_noise_images(tmp_path / "in", 5, (6, 7, 3))
    made = []
    for i in (1, 2):
        out = tmp_path / f"out{i}"
        assert main(["upscale", str(src), "-o", str(out), "--model", "bicubic", "--shard", f"{i}/2"]) == 0
        made.append({p.name for p in out.iterdir()})
    assert made[0].isdisjoint(made[1]) and len(made[0] | made[1]) == 5 and len(made[0]) == 3
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")  # under torchrun the rank picks the shard
    assert main(["upscale", str(src), "-o", str(tmp_path / "r"), "--model", "bicubic"]) == 0
    assert {p.name for p in (tmp_path / "r").iterdir()} == made[1]


def test_a_bad_shard_is_a_usage_error(tmp_path, capsys):
    import pytest

    from sisr.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["upscale", str(tmp_path), "-o", str(tmp_path / "o"), "--shard", "3/2"])
    assert exit_.value.code == 2 and "1 <= I <= N" in capsys.readouterr().err


def test_a_linked_sub_folder_is_noted_not_followed(tmp_path, capsys):
    from sisr.cli import main
    from testing_utils import write_noise_images

    src = write_noise_images(tmp_path / "in", 1, (6, 7, 3))
    write_noise_images(tmp_path / "elsewhere", 1, (6, 7, 3))
    (src / "linked").symlink_to(tmp_path / "elsewhere")
    (src / ".hidden").mkdir()
    (src / ".hidden" / "link").symlink_to(tmp_path / "elsewhere")  # skipped with its hidden folder
    assert main(["upscale", str(src), "-o", str(tmp_path / "out"), "--model", "bicubic"]) == 0
    err = capsys.readouterr().err
    assert "linked: a symbolic link to a folder, not followed" in err and ".hidden" not in err
    assert not (tmp_path / "out" / "linked").exists()
