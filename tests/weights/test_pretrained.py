"""Shipped weights: packaging, and every shipped file loads and beats bicubic."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sisr.data.io import read_image
from sisr.data.resize import imresize
from sisr.inference.images import upscale_array
from sisr.weights.loading import load_model
from sisr.errors import WeightsError
from sisr.metrics import psnr
from sisr.models import create_model, get_info
from sisr.weights import read_metadata, save_weights
from sisr.weights.package import package_pretrained
from sisr.weights.pretrained import available_pretrained, pretrained_path


def _trained_file(tmp_path):
    torch.manual_seed(0)
    net = create_model("edsr-baseline", scale=2, **get_info("edsr-baseline").tiny)
    return save_weights(net, tmp_path / "best.safetensors", model="edsr-baseline", scale=2,
                        hparams=dict(get_info("edsr-baseline").tiny), metadata={"training": {"iterations": 5}})


def test_package_in_float16_keeps_metadata_and_output(tmp_path):
    src = _trained_file(tmp_path)
    out = package_pretrained(src, metadata={"metrics": {"Set5": {"psnr": 1.0}}, "training": {"data": ["T91"]}},
                             dest_dir=tmp_path / "pre")
    assert out.name == "edsr-baseline_x2.safetensors"
    meta = read_metadata(out)
    assert meta["training"] == {"iterations": 5, "data": ["T91"]} and meta["metrics"]["Set5"]["psnr"] == 1.0
    assert meta["storage"]["dtype"] == "float16" and meta["storage"]["max_output_change_vs_fp32"] <= 1 / 255
    a, b = load_model(src), load_model(out)
    assert next(b.parameters()).dtype == torch.float32  # cast back on load
    x = torch.rand(1, 3, 20, 24)
    with torch.inference_mode():
        assert (a(x) - b(x)).abs().max() <= 1 / 255
    with pytest.raises(FileExistsError):
        package_pretrained(src, dest_dir=tmp_path / "pre")


def test_package_refuses_float16_that_changes_the_output(tmp_path):
    src = _trained_file(tmp_path)
    with pytest.raises(WeightsError, match="float16 storage changes the output"):
        package_pretrained(src, dest_dir=tmp_path / "pre", tolerance=0.0)
    assert not (tmp_path / "pre" / "edsr-baseline_x2.safetensors").exists()


SHIPPED = available_pretrained()


def test_the_default_model_is_shipped_at_x2_x3_x4():
    assert {(n, s) for n, s, _ in SHIPPED} >= {("defian-s", 2), ("defian-s", 3), ("defian-s", 4)}
    from sisr.inference.images import default_model

    assert [default_model(s) for s in (2, 3, 4)] == [("defian-s", None)] * 3


def test_shipped_x2_reproduces_its_recorded_set5_score(datasets_root):
    from sisr.evaluation.protocol import evaluate

    path = pretrained_path("defian-s", 2)
    recorded = read_metadata(path)["metrics"]["Set5"]
    result = evaluate("defian-s", data_root=datasets_root, datasets=["Set5"], scales=[2], device="cpu", progress=False)
    assert abs(result.sets[0].psnr_y - recorded["psnr_y"]) < 0.01
    assert abs(result.sets[0].ssim_y - recorded["ssim_y"]) < 1e-4


@pytest.mark.parametrize("name,scale,path", SHIPPED, ids=[f"{n}-x{s}" for n, s, _ in SHIPPED] or None)
def test_shipped_weights_load_and_beat_bicubic(name, scale, path, datasets_root):
    meta = read_metadata(path)
    for key in ("training", "metrics", "command"):
        assert key in meta, f"{path.name}: metadata lacks '{key}'"
    net = load_model(name, scale)
    hr = read_image(datasets_root / "Set5" / "HR" / "butterfly.png")
    hr = hr[: hr.shape[0] // scale * scale, : hr.shape[1] // scale * scale]
    lr = imresize(hr, 1 / scale)
    gain = psnr(upscale_array(lr, net), hr, shave=scale) - psnr(np.asarray(imresize(lr, scale)), hr, shave=scale)
    assert gain > 1.0, f"{name} x{scale}: only {gain:.2f} dB over bicubic on butterfly"


@pytest.mark.parametrize("name,scale,path", available_pretrained())
def test_declared_reduced_precisions_are_safe_with_the_shipped_weights(name, scale, path, datasets_root):
    """What ModelInfo.capabilities.precisions may list: bf16 (and fp16, under CPU autocast: the same dtype range as on a
    GPU) give a finite, uncollapsed picture within a few grey levels of fp32 with trained weights."""
    from sisr.inference.forward import run

    declared = set(get_info(name).capabilities.precisions)
    assert declared <= {"fp32", "bf16", "fp16"}
    lr = read_image(datasets_root / "Set5" / "LR_bicubic" / f"X{scale}" / f"babyx{scale}.png")
    x = torch.from_numpy(np.ascontiguousarray(lr[:96, :96])).permute(2, 0, 1)[None].float() / 255
    net = load_model(path)
    ref = run(net, x, backend="eager")
    if "bf16" in declared:
        out = run(net, x, precision="bf16", backend="eager")
        assert torch.isfinite(out).all() and out.std() > 0.5 * ref.std()
        assert (out - ref).abs().max() < 4 / 255 and float((out - ref).square().mean()) < 10 ** -4.5  # > 45 dB
    if "fp16" in declared:
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.float16):
            out = net(x).float().clamp(0, 1)
        assert torch.isfinite(out).all() and (out - ref).abs().max() < 1 / 255


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_every_shipped_file_says_which_set_chose_it(scale):
    from sisr.weights import read_metadata
    from sisr.weights.pretrained import pretrained_path

    selection = read_metadata(pretrained_path("defian-s", scale))["selection"]
    assert selection["set"] and isinstance(selection["test_sets_used_for_selection"], bool)
