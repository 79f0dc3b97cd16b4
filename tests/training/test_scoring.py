"""At the end of a run the selected weights are scored once on the test sets found in the data roots, into the run
folder's results.json / results.md, and never used for selection."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
from testing_utils import tiny_train_config, write_noise_images

from sisr.errors import ConfigError
from sisr.evaluation.protocol import evaluate
from sisr.training.trainer import train

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_noise_images(root / "train", 4, (32, 36, 3))
    write_noise_images(root / "BSD200" / "HR", 4, (24, 28, 3), seed=1)
    write_noise_images(root / "Set5" / "HR", 2, (24, 20, 3), seed=2)  # beside the training folder: found
    return root


def _cfg(root, **sections):
    cfg = tiny_train_config(root, optim={"lr": 1e-3}, train={"iterations": 4, "batch_size": 2, "checkpoint_every": 2},
                            val={"set": "BSD200:3-4", "root": str(root), "every": 2})
    for section, values in sections.items():
        cfg[section] = {**cfg.get(section, {}), **values}
    return cfg


def test_the_selected_weights_are_scored_once_on_the_test_sets_at_the_end(data, tmp_path, capsys):
    run = train(_cfg(data), run_dir=tmp_path / "run")
    record = json.loads((run / "results.json").read_text())
    assert record["weights"] == "best.safetensors" and record["iteration"] == 4
    assert record["selected_by"].startswith("best PSNR on the validation set BSD200:3-4 (iteration ")
    (row,) = record["scores"]
    assert (row["dataset"], row["scale"], row["images"]) == ("Set5", 2, 2)
    independent = evaluate(str(run / "best.safetensors"), data_root=data, datasets=["Set5"], scales=[2],
                           progress=False).get("Set5", 2)
    assert (row["psnr_y"], row["ssim_y"]) == (independent.psnr_y, independent.ssim_y)
    assert "| Set5 | x2 | " in (run / "results.md").read_text()
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert {r["set"] for r in log if r["type"] == "val"} == {"BSD200:3-4"}  # selection saw only the held-out set
    err = capsys.readouterr().err
    assert "test sets, scored once at the end and never used for selection: Set5" in err
    assert "test sets x2 (PSNR/SSIM on Y; best.safetensors, not used for selection): Set5 " in err

    stamp = (run / "results.json").stat().st_mtime_ns
    train(_cfg(data), run_dir=run)  # already trained and scored: once
    assert (run / "results.json").stat().st_mtime_ns == stamp
    train(_cfg(data, train={"iterations": 6}), run_dir=run)  # extended: the new end is scored
    assert json.loads((run / "results.json").read_text())["iteration"] == 6


def test_test_sets_can_be_named_or_skipped_and_a_missing_one_is_refused_before_anything_is_written(data, tmp_path):
    skipped = train(_cfg(data, train={"test_sets": []}), run_dir=tmp_path / "none")
    assert not (skipped / "results.json").exists() and (skipped / "best.safetensors").is_file()
    final = train(_cfg(data, val={"set": None, "every": 0}), run_dir=tmp_path / "final")  # no validation
    assert json.loads((final / "results.json").read_text())["selected_by"] == "the final weights (no validation set)"
    with pytest.raises(ConfigError, match=r"^train.test_sets: no Urban100/HR in the data roots \("):
        train(_cfg(data, train={"test_sets": ["Set5", "Urban100"]}), run_dir=tmp_path / "missing")
    assert not (tmp_path / "missing").exists()


def test_training_imports_evaluation_in_one_place_deferred():
    src = Path(__file__).resolve().parents[2] / "src" / "sisr" / "training"
    found = {}
    for path in src.glob("*.py"):
        tree = ast.parse(path.read_text())
        top = {id(n) for n in tree.body}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and "evaluation" in (node.module or ""):
                found.setdefault(path.name, []).append("module level" if id(node) in top else "deferred")
    assert found == {"scoring.py": ["deferred"]}
