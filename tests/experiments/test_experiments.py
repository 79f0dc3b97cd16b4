"""sisr.experiments: every table's cells build and run; every experiment runs tiny end to end and resumes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import sisr
from sisr.cli import main
from sisr.errors import ConfigError
from sisr.experiments import ExperimentOptions, get_experiment, list_experiments, run_experiment, write_table
from sisr.experiments.definitions import parse
from sisr.experiments.table import agreement, collect, spearman, table_rows

EXPERIMENTS = [e.name for e in list_experiments()]
ABLATIONS = [e.name for e in list_experiments() if e.kind == "ablation"]


def _images(folder, n, size, seed):
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        smooth = np.kron(rng.random((size // 4, size // 4, 3)), np.ones((4, 4, 1)))  # learnable, not noise
        Image.fromarray((smooth * 255).astype(np.uint8)).save(folder / f"im{i}.png")


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    """Stand-ins for the training, validation and test sets: a few 64x64 images each (LR made by resize)."""
    root = tmp_path_factory.mktemp("data")
    for seed, name in enumerate(("Train", "Val", "Set5", "Set14", "B100")):
        _images(root / name / "HR", 1 if name != "Train" else 3, 64, seed)
    return root


def _options(root, **kw):
    return ExperimentOptions(tiny=True, iterations=2, device="cpu", data_root=str(root), train_sets=("Train",),
                             val_set="Val", **kw)


def test_list_json_lists_every_cell(capsys):
    assert main(["experiment", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [e["name"] for e in listed] == EXPERIMENTS
    for e in listed:
        if e["kind"] == "ablation":
            assert e["variants"] and all({"label", "model", "scale", "hparams", "paper"} <= set(v) for v in e["variants"])


@pytest.mark.parametrize("name", ABLATIONS)
def test_every_cell_builds_and_trains_a_step(name, one_thread):
    """Every variant at its tiny size: forward and backward on a small input, finite values."""
    exp = get_experiment(name)
    for v in exp.variants:
        net = sisr.create_model(v.model, scale=exp.scale, **v.tiny_hparams(exp.hparams if v.model == exp.model else {}))
        x = torch.rand(1, 3, 12, 12, requires_grad=False)
        y = net(x)
        assert y.shape == (1, 3, 12 * exp.scale, 12 * exp.scale), v.label
        y.mean().backward()
        assert torch.isfinite(y).all(), v.label
        assert any(p.grad is not None for p in net.parameters()), v.label


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_runs_tiny_and_prints_its_table(name, tiny_root, tmp_path, capsys, one_thread):
    out, kind = tmp_path / "out", get_experiment(name).kind
    args = ["experiment", "run", name, "-o", str(out), "--tiny", "--device", "cpu"]
    args += {"ablation": ["--iterations", "5", "--data-root", str(tiny_root), "--train-sets", "Train", "--val-set",
                          "Val"], "evaluation": ["--data-root", str(tiny_root)], "complexity": []}[kind]
    assert main(args) == 0
    assert main(["experiment", "table", str(out)]) == 0
    text = capsys.readouterr().out
    exp = get_experiment(name)
    labels = [v.label for v in exp.variants] or [r.label for r in exp.rows]
    assert all(f"| {label} |" in text for label in labels)
    for fmt in ("md", "csv", "json", "tex"):
        assert (out / f"table.{fmt}").is_file()
    if exp.kind == "ablation":
        results = [json.loads(p.read_text()) for p in (out / "runs").glob("*/result.json")]
        assert len(results) == len(exp.variants)
        assert all(np.isfinite(r["scores"][exp.datasets[0]]["psnr"]) for r in results)


def test_a_killed_run_resumes_without_repeating_finished_variants(tiny_root, tmp_path, one_thread):
    exp, out = get_experiment("equal-budget"), tmp_path / "out"
    options = _options(tiny_root)

    def stop_at_second(line):
        if line.startswith("[2/") and line.endswith("training (" + str(out / "runs" / "02-cran-s1") + ")"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_experiment(exp, out, options, progress=stop_at_second)
    first = out / "runs" / "01-rcan-s1" / "result.json"
    stamp = first.stat().st_mtime_ns
    assert not (out / "runs" / "02-cran-s1" / "result.json").exists()
    lines = []
    run_experiment(exp, out, options, progress=lines.append)
    assert first.stat().st_mtime_ns == stamp and lines[0] == "[1/7] rcan seed 1: done"
    assert sum("training" in line for line in lines) == len(exp.variants) - 1
    with pytest.raises(ConfigError, match="other options"):
        run_experiment(exp, out, _options(tiny_root, seeds=2))


def test_seeds_give_a_spread_and_the_ordering_is_judged_against_it():
    rows = [{"label": "a", "paper": {"psnr": {"S": 30.0}}, "results": [{"scores": {"S": {"psnr": p}}} for p in (29.0, 29.2)]},
            {"label": "b", "paper": {"psnr": {"S": 31.0}}, "results": [{"scores": {"S": {"psnr": p}}} for p in (29.9, 30.0)]},
            {"label": "c", "paper": {"psnr": {"S": 32.0}}, "results": [{"scores": {"S": {"psnr": p}}} for p in (29.8, 30.3)]}]
    a = agreement(rows, "S")
    assert a["spread_known"] and a["variants"] == 3
    # a<b beyond noise (0.85 > 0.2), a<c beyond (0.95 > 0.5), b<c within (0.1 < 0.5)
    assert (a["agree_beyond_noise"], a["agree_within_noise"], a["disagree_beyond_noise"]) == (2, 1, 0)
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, 3], [1, 3, 2]) == pytest.approx(0.5)


def test_bad_definitions_are_one_line_errors():
    with pytest.raises(ConfigError, match="kind must be"):
        parse({"name": "x", "kind": "other", "paper": "p"}, "x.yaml")
    with pytest.raises(ConfigError, match="no hyper-parameter"):
        parse({"name": "x", "kind": "ablation", "paper": "p", "model": "edsr", "variants": [
            {"label": "a", "hparams": {"bogus": 1}}]}, "x.yaml")
    with pytest.raises(ConfigError, match="differs from the file name"):
        parse({"name": "y", "kind": "ablation", "paper": "p", "model": "edsr", "variants": []}, "x.yaml")
    with pytest.raises(ConfigError, match="unknown experiment"):
        get_experiment("no-such-table")


def test_the_header_names_the_set_that_stood_in_for_the_papers_validation_set():
    def data(measured_on: str) -> dict:
        score = {"psnr": 29.0, "set": measured_on, "validation": True}
        return {"kind": "ablation", "datasets": ["DIV2K:801-810"],
                "rows": [{"label": "a", "params": 1000, "paper": {}, "results": [{"scores": {"DIV2K:801-810": score}}]}]}

    assert table_rows(data("BSD200:190-199"))[0][3] == "DIV2K:801-810 ours (on BSD200:190-199)"
    assert table_rows(data("DIV2K:801-810"))[0][3] == "DIV2K:801-810 ours"


def test_a_complexity_table_counts_the_papers_networks_and_resumes(tmp_path):
    """DeFiAN Tables I-II: DeFiAN's networks at full size reproduce the printed #Params to the print's 0.1 K and
    its #FLOPs (Multi-Adds, 480x360 output) within 1 %; a rerun keeps the rows already written."""
    out, lines = tmp_path / "out", []
    run_experiment("defian-complexity", out, ExperimentOptions(device="cpu"), progress=lines.append)
    rows = {(r["label"], r["scale"]): r for r in collect(out)["rows"]}
    for (label, scale), r in rows.items():
        assert r["ours"]["lr_hw"] == [round(360 / scale), round(480 / scale)]
        if label.startswith("DeFiAN"):
            assert abs(r["ours"]["parameters"] / 1e3 - r["paper"]["params_k"]) <= 0.05, (label, scale)
            assert abs(r["ours"]["macs"] / 1e9 / r["paper"]["flops_g"] - 1) < 0.01, (label, scale)
    assert len(rows) == 12 and not any("done" in line for line in lines)
    stamp = next((out / "complexity").glob("*.json")).stat().st_mtime_ns
    run_experiment("defian-complexity", out, ExperimentOptions(device="cpu"), progress=(again := []).append)
    assert all(line.endswith(": done") for line in again) and len(again) == 12
    assert next((out / "complexity").glob("*.json")).stat().st_mtime_ns == stamp


def test_a_counts_only_complexity_run_is_measured_by_a_later_run(tmp_path):
    """--counts-only skips memory/time (CSNLN's reference path takes hours on a CPU); a rerun without it measures
    exactly the rows that lack them, keeping their counts; the table prints "-" for what was not measured."""
    out, lines = tmp_path / "out", []
    run_experiment("cran-table7", out, ExperimentOptions(tiny=True, device="cpu", counts_only=True), progress=lines.append)
    rows = collect(out)["rows"]
    assert rows and all("parameters" in r["ours"] and "runtime_s" not in r["ours"] for r in rows)
    assert not any("measuring" in line for line in lines)
    header, cells = table_rows(collect(out))
    assert all(line[header.index("time s (ours)")] == "-" for line in cells)
    run_experiment("cran-table7", out, ExperimentOptions(tiny=True, device="cpu"), progress=(again := []).append)
    assert len(again) == len(rows) and all(": measuring" in line for line in again)
    measured = collect(out)["rows"]
    assert all(r["ours"]["runtime_s"] > 0 and r["ours"]["device"] for r in measured)
    assert [r["ours"]["macs"] for r in measured] == [r["ours"]["macs"] for r in rows]
    run_experiment("cran-table7", out, ExperimentOptions(tiny=True, device="cpu"), progress=(third := []).append)
    assert all(line.endswith(": done") for line in third)


def test_bad_complexity_definitions_are_one_line_errors():
    base = {"name": "x", "kind": "complexity", "paper": "p", "scales": [2],
            "rows": [{"label": "a", "model": "edsr-baseline", "paper": {2: {"params_k": 1.0}}}]}
    with pytest.raises(ConfigError, match="columns among"):
        parse({**base, "input": {"lr": [8, 8]}, "columns": ["params_k", "watts"]}, "x.yaml")
    with pytest.raises(ConfigError, match="input must be"):
        parse({**base, "input": {"middle": [8, 8]}, "columns": ["params_k"]}, "x.yaml")
    with pytest.raises(ConfigError, match="x.yaml"):
        parse({**base, "input": {"lr": [8, 8]}, "columns": ["params_k"], "rows": [
            {"label": "a", "model": "edsr-baseline", "hparams": {"no_such": 1}}]}, "x.yaml")
    exp = parse({**base, "input": {"hr": [360, 480]}, "columns": ["params_k"]}, "x.yaml")
    assert exp.lr_hw(3) == (120, 160) and exp.summary()["input"] == {"hr": [360, 480]}


def test_options_a_kind_of_table_does_not_use_are_refused(tmp_path, capsys):
    """They would be ignored: an exit 0 for something other than what was asked."""
    args = ["experiment", "run", "cran-table7", "-o", str(tmp_path / "a"), "--iterations", "5", "--seeds", "2"]
    assert main(args) != 0
    assert "cran-table7 is a complexity table: --iterations, --seeds do not apply" in capsys.readouterr().err
    assert main(["experiment", "run", "defian-bi", "-o", str(tmp_path / "b"), "--train-sets", "T91"]) != 0
    assert "--train-sets does not apply" in capsys.readouterr().err
    assert main(["experiment", "run", "defian-bi", "-o", str(tmp_path / "d"), "--counts-only"]) != 0
    assert "--counts-only does not apply" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="--weights does not apply"):
        run_experiment("cran-table1", tmp_path / "c", ExperimentOptions(weights={"2": "x.safetensors"}))
    assert not any(tmp_path.iterdir())  # refused before a folder is claimed


def test_a_folder_left_by_a_failed_start_takes_the_corrected_options(tmp_path):
    """A run refused at its first variant (bad --set key) left only experiment.json, and the corrected command was
    refused as 'other options'. Now such a folder is claimed again; one holding results still is not."""
    from sisr.experiments.runner import _claim_folder

    exp, out = get_experiment("cran-table1"), tmp_path / "ex"
    with pytest.raises(ConfigError):
        run_experiment(exp, out, ExperimentOptions(tiny=True, overrides=("train.iterationz=2",)), progress=lambda _: None)
    assert [p.name for p in out.iterdir()] == ["experiment.json"]
    _claim_folder(out, exp, ExperimentOptions(tiny=True))
    assert json.loads((out / "experiment.json").read_text())["options"]["overrides"] == []
    (out / "runs" / "01-x").mkdir(parents=True)
    (out / "runs" / "01-x" / "config.yaml").write_text("{}")
    with pytest.raises(ConfigError, match="run with other options"):
        _claim_folder(out, exp, ExperimentOptions(tiny=True, seeds=2))


def test_an_interrupted_experiment_exits_with_the_signal_and_says_how_to_resume(tmp_path, monkeypatch, capsys):
    from sisr.training.trainer import TrainingInterrupted
    import sisr.experiments as experiments

    def interrupted(*args, **kwargs):
        raise TrainingInterrupted(tmp_path / "ex" / "runs" / "01-RB-s1", 121, 15, 121)

    monkeypatch.setattr(experiments, "run_experiment", interrupted)
    assert main(["experiment", "run", "cran-table1", "-o", str(tmp_path / "ex"), "--tiny"]) == 143
    err = capsys.readouterr().err
    assert "01-RB-s1: interrupted at iteration 121 (checkpoint saved); resume with the same command" in err
    assert "sisr train --resume" not in err
