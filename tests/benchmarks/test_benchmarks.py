"""benchmarks/common.py and benchmarks/inference.py in-process, on tiny models (the GPU suite's dry run covers the
parts the suite shares: test_gpu_suite.py)."""

from __future__ import annotations

import json

import pytest
import torch

from testing_utils import REPO

from sisr.models import has_parameters, list_models


@pytest.fixture
def bench(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))  # the benchmarks import each other from their folder
    import common
    import inference

    return common, inference


def test_rotate_turns_the_order_every_round(bench):
    common, _ = bench
    seen = []
    times = common.rotate({"a": "a", "b": "b", "c": "c"}, 4, lambda call: seen.append(call) or len(seen))
    assert "".join(seen) == "abc" + "bca" + "cab" + "abc"
    assert times == {"a": [1, 6, 8, 10], "b": [2, 4, 9, 11], "c": [3, 5, 7, 12]}
    assert common.md_table(["x", "y"], [["1", "2"]]) == ["| x | y |", "|---|---|", "| 1 | 2 |"]
    assert common.fmt(None) == "n/a" and common.fmt(float("nan")) == "n/a" and common.fmt(0.5, "{:.1%}") == "50.0%"


def test_inference_run_of_a_tiny_model(bench, tmp_path, capsys):
    _, inference = bench
    name = next(m for m in list_models() if has_parameters(m))
    out = tmp_path / "inference.json"
    args = ["--tiny", "--models", name, "--lr-size", "12", "--runs", "2", "--no-analysis", "--json", str(out),
            "--variants", "eager", "cl", "--outputs", str(tmp_path / "outputs")]
    assert inference.main(args) == 0
    result = json.loads(out.read_text())
    row = result["rows"][0]
    assert row["model"] == name and row["lr_size"] == [12, 12] and row["weights"] == "random"
    cl = row["variants"]["cl"]
    assert len(cl["times_s"]) == 2 and cl["speedup_vs_eager"] > 0 and cl["max_abs_diff_255"] < 0.01
    assert cl["options"] == {"precision": "fp32", "channels_last": True, "backend": "eager", "figure": False}
    assert result["environment"]["command"] and (tmp_path / "outputs" / f"{name}_x2_12x12.pt").is_file()
    assert f"| {name} |" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="already exists"):  # never silently replaced
        inference.main(args)


def test_roofline_of_a_tiny_model(bench):
    common, inference = bench
    name = next(m for m in list_models() if has_parameters(m))
    cost = inference.model_cost(name, 2, (16, 16), tiny=True)
    assert cost["flops"] > 0 and cost["weight_bytes"] > 0 and cost["op_bytes"] >= cost["layer_activation_bytes"] > 0
    samples = [{"fp32": 1e11, "conv1x1_fp32": 2e11, "bf16": 3e11, "copy_bytes_per_s": 1e10},
               {"fp32": 1e11, "conv1x1_fp32": 1e11, "bf16": 1e11, "copy_bytes_per_s": 3e10},
               {"fp32": 3e11, "bf16": 2e11, "copy_bytes_per_s": 2e10}]
    peaks = inference.combine_peaks(samples, torch.device("cpu"))
    assert (peaks["fp32_flops_per_s"], peaks["bf16_flops_per_s"], peaks["bytes_per_s"]) == (2e11, 2e11, 2e10)
    assert peaks["best"] == {"fp32": 3e11, "bf16": 3e11, "bytes": 3e10}
    row = {"model": name, "lr_size": [16, 16], "cost": cost, "variants": {
        "eager": {"median_s": 0.01}, "optimised": {"options": {"precision": "bf16"}, "speedup_vs_eager": 1.5}}}
    limit = row["limit"] = inference.analyse(row, cost, peaks, use_compile=False)
    compute, memory = cost["flops"] / 2e11, cost["layer_bytes"] / 2e10
    assert limit["floor_s"] == max(compute, memory) and limit["measured_over_floor"] == 0.01 / limit["floor_s"]
    assert limit["predicted_speedup"]["cl"] == 1.0 and limit["measured_speedup"] == {"optimised": 1.5}
    assert any(line.startswith(f"| {name} | 16x16 |") for line in inference.limit_lines([row], peaks))
