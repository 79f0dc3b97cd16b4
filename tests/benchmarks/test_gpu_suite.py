"""The prepared GPU commands (benchmarks/gpu_suite.py, scripts/gpu_train_defian_s.py) in their CPU dry runs, and
``scripts/cpu_weights.py adopt`` on the training dry run's candidates.

They run as the device machine runs them (a fresh process, ``PYTHONPATH=src``, one thread), on tiny
generated data, so that neither can rot while no GPU is lent.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch

from testing_utils import REPO, write_noise_images

from sisr.models import create_model, has_parameters, list_models
from sisr.weights import load_weights, save_weights

SUITE = REPO / "benchmarks" / "gpu_suite.py"
TRAIN = REPO / "scripts" / "gpu_train_defian_s.py"
CPU_WEIGHTS = REPO / "scripts" / "cpu_weights.py"


def run(script: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    return subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, env=env,
                          timeout=300, check=False)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """T91/HR (3 noise images, 96x96), BSD200/HR (4, 48x48; the last 2 validate) and Set5/HR (2 images, 48x48):
    enough for x2, x3 and x4."""
    root = tmp_path_factory.mktemp("datasets")
    write_noise_images(root / "T91" / "HR", 3, (96, 96, 3))
    write_noise_images(root / "BSD200" / "HR", 4, (48, 48, 3), seed=2)
    write_noise_images(root / "Set5" / "HR", 2, (48, 48, 3), seed=1)
    return root


VAL = "BSD200:3-4"


@pytest.fixture(scope="module")
def init_dir(tmp_path_factory) -> Path:
    """Random DeFiAN-S weights in the shipped files' names, with a Set5 figure in their metadata."""
    root = tmp_path_factory.mktemp("init")
    for scale in (2, 3):
        torch.manual_seed(scale)
        save_weights(create_model("defian-s", scale=scale), root / f"defian-s_x{scale}.safetensors", model="defian-s",
                     scale=scale, hparams={}, metadata={"metrics": {"Set5": {"psnr_y": 5.0}}})
    return root


def test_suite_dry_run_measures_every_section(tmp_path, data):
    out = tmp_path / "suite"
    proc = run(SUITE, "--dry-run", "--out", str(out), "--data", str(data))
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    sections = results["sections"]
    assert list(sections) == ["peak", "csnln", "table7", "inference", "train", "loader"]
    assert {s["status"] for s in sections.values()} == {"ok"}, {k: s.get("error") for k, s in sections.items()}
    peak = sections["peak"]["result"]
    assert peak["fp32"] > 0 and peak["bf16"] > 0 and peak["copy_bytes_per_s"] > 0
    csnln = sections["csnln"]["result"]
    assert set(csnln["paths"]) == {"reference fp32", "fast fp32", "fast bf16"}
    assert csnln["max_abs_diff_fast_vs_reference_fp32"] < 1e-4  # the two paths compute the same network
    assert csnln["paths"]["fast fp32"]["fraction_of_matmul_peak"] > 0
    trainable = [m for m in list_models() if has_parameters(m)]
    table7 = sections["table7"]["result"]  # CRAN's Table 7 as the cran-table7 experiment (tiny networks)
    assert [r["label"] for r in table7["rows"]] == ["EDSR", "RCAN", "CSNLN", "CRAN"]
    assert all(r["ours"]["macs"] > 0 and r["ours"]["runtime_s"] > 0 for r in table7["rows"])
    inference = {r["model"]: r for r in sections["inference"]["result"]["rows"]}
    assert sorted(inference) == sorted(list_models())
    assert all(r["chosen"]["speedup"] > 0 for r in inference.values())
    assert "speedup_vs_eager" in inference["edsr-baseline"]["compiled"]["optimised"]  # the compile path ran
    train = sections["train"]["result"]
    assert sorted(r["model"] for r in train["rows"]) == sorted(trainable)
    assert all(r["speedup"] > 0 for r in train["rows"])
    assert [x["model"] for x in train["loss_check"]] == ["defian-s", "edsr-baseline"]
    assert all(isinstance(x["within_target"], bool) for x in train["loss_check"])
    loader = sections["loader"]["result"]  # is a training step loader-bound? per model, the fastest correct setting
    assert loader["loader"][0]["per_worker_samples_per_s"] > 0 and loader["loader"][0]["workers"]["1"] > 0
    models = {m["model"]: m for m in loader["models"]}
    assert sorted(models) == sorted(r["model"] for r in train["rows"])
    checked = {x["model"]: x["within_target"] for x in train["loss_check"]}
    speedups = {r["model"]: r.get("speedup", 0) for r in train["rows"]}
    for name, m in models.items():
        assert m["loader_bound"] == (m["workers_needed"] is None) and m["workers_estimate"] >= 1
        faster = checked.get(name) is True and speedups[name] > 1  # bf16 only once its loss agrees with fp32
        assert m["setting"] == ("bf16+channels_last" if faster else "fp32"), (name, m, checked.get(name))
    assert "| loader-bound |" in (out / "results.md").read_text()
    md = (out / "results.md").read_text()
    assert "dry run" in md and all(f"## {name} (ok" in md for name in sections)
    again = run(SUITE, "--dry-run", "--out", str(out), "--sections", "peak")  # never silently replaced
    assert again.returncode == 2 and "results.json" in again.stderr


def test_suite_records_failed_sections_and_keeps_to_the_budget(tmp_path):
    out = tmp_path / "suite"
    proc = run(SUITE, "--dry-run", "--out", str(out), "--data", str(tmp_path / "nothing"), "--budget-s", "0.001",
               "--sections", "inference", "train", "peak", "--models", "defian-s", "edsr")
    assert proc.returncode == 1, proc.stderr[-3000:]
    sections = json.loads((out / "results.json").read_text())["sections"]
    assert sections["inference"]["status"] == "ok"
    skipped = sections["inference"]["result"]["skipped_budget"]  # past its share: the models left are skipped
    assert "edsr" in skipped and {s.split()[0] for s in skipped} <= {"defian-s", "edsr", "edsr-baseline"}
    assert sections["train"]["status"] == "failed"
    assert sections["train"]["error"].startswith("ConfigError: --data") and "T91/HR" in sections["train"]["error"]
    assert sections["peak"]["status"] == "ok"  # after the failed one
    assert "failed: ConfigError" in (out / "results.md").read_text()


@pytest.fixture(scope="module")
def train_dry_run(tmp_path_factory, data, init_dir) -> Path:
    """The --out folder of the training dry run at x2 and x3."""
    root = tmp_path_factory.mktemp("train")
    proc = run(TRAIN, "--dry-run", "--data", str(data), "--init-dir", str(init_dir), "--out", str(root / "out"),
               "--work", str(root / "work"), "--scales", "2", "3", "--val-set", VAL)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root / "out"


def test_train_dry_run_writes_candidates_archives_and_results(train_dry_run):
    out = train_dry_run
    assert sorted(p.name for p in out.iterdir()) == ["defian-s-x2.tar", "defian-s-x3.tar", "defian-s_x2.safetensors",
                                                     "defian-s_x3.safetensors", "results.json"]
    results = json.loads((out / "results.json").read_text())
    for scale in (2, 3):
        phase = results["phases"][str(scale)]
        assert phase["status"] == "ok" and phase["stopped_by"] == "iterations" and phase["iterations"] == 3
        assert phase["init_set5_psnr_y_metadata"] == 5.0 and phase["val"][0]["iteration"] == 0
        state, meta = load_weights(out / f"defian-s_x{scale}.safetensors")
        assert meta["model"] == "defian-s" and meta["scale"] == scale and meta["storage"]["dtype"] == "float16"
        assert meta["training"]["iterations"] == 3 and meta["training"]["precision"] == "bf16"
        assert meta["metrics"][VAL]["psnr_y"] == phase["candidate"]["val_psnr_y"] and "Set5" not in meta["metrics"]
        with tarfile.open(out / f"defian-s-x{scale}.tar") as tar:
            names = tar.getnames()
        assert f"defian-s-x{scale}/checkpoints/000000003/state.pt" in names
        assert f"defian-s-x{scale}/log.jsonl" in names and not any(n.endswith("best.safetensors") for n in names)
        assert (out / f"defian-s-x{scale}.tar").stat().st_size < 16 * 2**20


def test_train_stops_on_the_clock_and_halves_the_lr(tmp_path, data, init_dir):
    out = tmp_path / "out"
    proc = run(TRAIN, "--dry-run", "--data", str(data), "--init-dir", str(init_dir), "--out", str(out),
               "--scales", "2", "--minutes", "0.5", "--set", "train.iterations=100000", "--val-set", VAL)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert not Path(results["work"]).exists()  # its own temporary run folders are removed
    phase = results["phases"]["2"]
    assert phase["stopped_by"] == "time" and 0 < phase["iterations"] < 100000
    milestones = phase["lr_milestones"]
    assert milestones == sorted(milestones) and all(0 < m <= phase["iterations"] for m in milestones)
    assert phase["candidate"]["source"] in ("best", "latest")


def test_train_never_writes_into_the_shipped_weights_folder(tmp_path, data, init_dir):
    from sisr.weights.pretrained import PRETRAINED_DIR

    target = PRETRAINED_DIR / "gpu-run"
    proc = run(TRAIN, "--dry-run", "--data", str(data), "--init-dir", str(init_dir), "--out", str(target))
    assert proc.returncode == 2 and "inside the shipped weights folder" in proc.stderr
    assert not target.exists()
    out = tmp_path / "out"  # a wrong --set fails before anything runs
    proc = run(TRAIN, "--dry-run", "--data", str(data), "--init-dir", str(init_dir), "--out", str(out),
               "--scales", "2", "--set", "train.no_such_key=1")
    assert proc.returncode == 2 and "train.no_such_key" in proc.stderr and not (out / "results.json").exists()


def test_adopt_replaces_a_shipped_file_only_when_the_validation_set_improves(tmp_path, data, train_dry_run):
    sets = tmp_path / "data"  # the validation slice, and the test sets a packaged file is scored on
    sets.mkdir()
    for name in ("BSD200", "Set5"):
        (sets / name).symlink_to(data / name)
    for name in ("Set14", "B100"):
        write_noise_images(sets / name / "HR", 2, (48, 48, 3), seed=3)
    dest = tmp_path / "dest"
    dest.mkdir()
    shipped_x2 = (train_dry_run / "defian-s_x2.safetensors").read_bytes()
    (dest / "defian-s_x2.safetensors").write_bytes(shipped_x2)  # the same weights: no gain; x3: nothing shipped
    proc = run(CPU_WEIGHTS, "adopt", str(train_dry_run), "--dest", str(dest), "--data", str(sets), "--val-set", VAL)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "+0.000 dB" in proc.stdout and "not replaced" in proc.stdout
    assert (dest / "defian-s_x2.safetensors").read_bytes() == shipped_x2
    assert sorted(p.name for p in dest.iterdir()) == ["defian-s_x2.safetensors", "defian-s_x3.safetensors"]
    _, meta = load_weights(dest / "defian-s_x3.safetensors")  # the test sets scored after the choice, not chosen on
    selection = meta["selection"]
    assert selection["set"] == VAL and selection["psnr_shipped"] is None and selection["iteration"] == 3
    assert selection["psnr"] > 0 and selection["test_sets_used_for_selection"] is False
    assert {"Set5", "Set14", "B100", "Set5+", "Set14+", "B100+", VAL} <= set(meta["metrics"])
    assert meta["training"]["iterations"] == 3 and meta["storage"]["dtype"] == "float16"
    assert meta["training"]["run"] == str(train_dry_run / "defian-s_x3.safetensors")
    assert json.loads(proc.stdout.strip().splitlines()[-1])["history_row"]["scale"] == 3


def test_the_fastest_correct_setting_needs_an_agreeing_loss_check(monkeypatch):
    import importlib.util

    monkeypatch.syspath_prepend(str(SUITE.parent))  # the benchmarks import each other (common.py) from their folder
    spec = importlib.util.spec_from_file_location("gpu_suite_module", SUITE)
    suite = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(suite)
    row = {"model": "m", "columns": {"fp32": {"samples_per_s": 100.0}, "optimised": {"samples_per_s": 250.0}}}
    agreed = suite.fastest_correct(row, {"m": {"within_target": True}})
    assert (agreed["setting"], agreed["samples_per_s"]) == ("bf16+channels_last", 250.0)
    assert agreed["faster_unchecked"] is None
    for checks in ({}, {"m": {"within_target": False}}, {"m": {"error": "no data"}}):
        chosen = suite.fastest_correct(row, checks)
        assert (chosen["setting"], chosen["faster_unchecked"]) == ("fp32", "bf16+channels_last")
    slower = {"model": "m", "columns": {"fp32": {"samples_per_s": 100.0}, "optimised": {"samples_per_s": 50.0}}}
    assert suite.fastest_correct(slower, {"m": {"within_target": True}})["setting"] == "fp32"
    assert suite.fastest_correct({"model": "m", "columns": {"fp32": {"error": "x"}}}, {}) is None


def test_harvest_compares_a_run_with_the_file_shipped_now_on_the_runs_own_validation_set(tmp_path, data, init_dir):
    """``cpu_weights.py harvest``: a sisr train run continuing the shipped file is compared with the file in --dest at
    that moment, validated on the run's val.set; after a harvest replaced it, the same run gains nothing."""
    sets = tmp_path / "data"
    sets.mkdir()
    for name in ("T91", "BSD200", "Set5"):
        (sets / name).symlink_to(data / name)
    for name in ("Set14", "B100"):
        write_noise_images(sets / name / "HR", 2, (48, 48, 3), seed=3)
    dest, rundir = tmp_path / "dest", tmp_path / "harvest-run"
    dest.mkdir()
    (dest / "defian-s_x2.safetensors").write_bytes((init_dir / "defian-s_x2.safetensors").read_bytes())
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    train = subprocess.run(
        [sys.executable, "-m", "sisr", "train", "--config", "defian-s", "--run-dir", str(rundir), "--threads", "1",
         "model.scale=2", f"model.init={dest / 'defian-s_x2.safetensors'}", f"data.root={sets}", "data.hr=[T91, BSD200]",
         f"val.root={sets}", f"val.set={VAL}", "val.every=2", "val.at_start=true", "train.iterations=4",
         "train.batch_size=2", "data.patch_size=16", "data.workers=0", "train.checkpoint_every=2", "log.every=1"],
        capture_output=True, text=True, env=env, timeout=300, check=False)
    assert train.returncode == 0, train.stderr[-3000:]
    with open(rundir / "val.csv", newline="") as f:  # iteration 0: the shipped file, validated by the trainer
        at_start = next(float(r["psnr"]) for r in csv.DictReader(f) if r["iteration"] == "0")

    def harvest(*extra: str) -> tuple[float, float]:
        proc = run(CPU_WEIGHTS, "harvest", "--run", str(rundir), "--dest", str(dest), "--data", str(sets), *extra)
        assert proc.returncode == 0, proc.stderr[-3000:]
        line = next(x for x in proc.stdout.splitlines() if "(the file shipped now)" in x)
        assert line.startswith(f"harvest-run: {VAL} "), line
        return float(line.split()[2]), float(line.split("(")[2].split()[0])  # shipped now, gain

    shipped, _ = harvest("--dry-run")
    assert abs(shipped - at_start) < 1e-3
    harvest("--min-gain", "-100")  # replace whatever the gain (no process to stop)
    selection = load_weights(dest / "defian-s_x2.safetensors")[1]["selection"]
    assert selection["set"] == VAL and abs(selection["psnr_shipped"] - at_start) < 1e-3
    again, gain = harvest("--dry-run")  # compared with what was just shipped, not with the run's iteration 0
    assert abs(again - selection["psnr"]) < 0.01 and abs(gain) < 0.01
