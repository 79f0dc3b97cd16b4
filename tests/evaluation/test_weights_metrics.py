"""sisr.evaluation.protocol.weights_metrics: a weights file's scores in the form packaged metadata records them."""

from __future__ import annotations

import json

import numpy as np
import torch

import sisr
from sisr.data.io import write_image
from sisr.evaluation.protocol import evaluate, weights_metrics
from sisr.models import get_info, has_parameters, list_models
from sisr.weights import save_weights


def test_plain_and_self_ensemble_scores_of_a_weights_file(tmp_path):
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate([(24, 30), (36, 24)]):
        hr = np.kron(rng.integers(0, 256, (h // 3, w // 3, 3)), np.ones((3, 3, 1))).astype(np.uint8)
        write_image(tmp_path / "data" / "Tiny" / "HR" / f"img{i}.png", hr)
    name = next(m for m in list_models() if has_parameters(m))
    torch.manual_seed(0)
    net = sisr.create_model(name, scale=3, **get_info(name).tiny).eval()
    path = save_weights(net, tmp_path / "w_x3.safetensors", model=name, scale=3, hparams=dict(net.sisr_spec.hparams))

    metrics = weights_metrics(path, data_root=tmp_path / "data", datasets=["Tiny"], out_dir=tmp_path / "eval")
    assert sorted(metrics) == ["Tiny", "Tiny+"]
    for key, ensemble in (("Tiny", False), ("Tiny+", True)):
        direct = evaluate(path, data_root=tmp_path / "data", datasets=["Tiny"], self_ensemble=ensemble,
                          progress=False).sets[0]
        assert metrics[key] == {"psnr_y": direct.psnr_y, "ssim_y": direct.ssim_y}
    assert metrics["Tiny"] != metrics["Tiny+"]
    saved = json.loads((tmp_path / "eval" / "eval-x3-plus" / "results.json").read_text())
    assert saved["protocol"]["forward"]["self_ensemble"] is True and (tmp_path / "eval" / "eval-x3").is_dir()
    assert weights_metrics(path, data_root=tmp_path / "data", datasets=["Tiny"], self_ensemble=[False]) == {
        "Tiny": metrics["Tiny"]}
