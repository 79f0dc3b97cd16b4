"""load_model: sisr weights files, registry names, shipped pretrained weights."""

from __future__ import annotations

import pytest
import torch

import sisr
from sisr.weights.loading import available_pretrained, load_model
from sisr.errors import ModelError, WeightsError
from sisr.weights import save_weights


def tiny(name: str, scale: int = 2, seed: int = 0):
    torch.manual_seed(seed)
    return sisr.create_model(name, scale=scale, **sisr.get_info(name).tiny).eval()


def _same_outputs(a, b, size=(9, 10)):
    x = torch.rand(1, 3, *size)
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(x), atol=0, rtol=0)


@pytest.mark.parametrize("name,scale", [("edsr-baseline", 3), ("rcan", 2), ("defian-s", 4)])
def test_round_trip_save_weights_load_model(tmp_path, name, scale):
    model = tiny(name, scale)
    path = save_weights(model, tmp_path / "w.safetensors", model=name, scale=scale, hparams=model.sisr_spec.hparams)
    loaded = load_model(path)
    assert not loaded.training and loaded.sisr_spec == model.sisr_spec
    assert loaded.sisr_weights["path"] == str(path)
    _same_outputs(model, loaded)
    _same_outputs(model, load_model(name, scale, weights=path, device="auto").cpu())


def test_half_precision_file_loads_into_fp32(tmp_path):
    model = tiny("edsr-baseline")
    path = save_weights(model, tmp_path / "w.safetensors", model="edsr-baseline", scale=2,
                        hparams=model.sisr_spec.hparams, dtype=torch.float16)
    loaded = load_model(path)
    assert next(loaded.parameters()).dtype == torch.float32
    for (k, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        torch.testing.assert_close(a.half().float(), b, msg=k)


def test_mismatches_are_clear_errors(tmp_path):
    model = tiny("edsr-baseline")
    path = save_weights(model, tmp_path / "w.safetensors", model="edsr-baseline", scale=2,
                        hparams=model.sisr_spec.hparams)
    with pytest.raises(WeightsError, match="holds edsr-baseline weights for x2, not x4"):
        load_model(path, scale=4)
    with pytest.raises(WeightsError, match="holds weights for 'edsr-baseline', not 'rcan'"):
        load_model("rcan", 2, weights=path)
    wrong = save_weights(model, tmp_path / "wrong.safetensors", model="edsr-baseline", scale=2)  # no hparams
    with pytest.raises(WeightsError, match="does not fit edsr-baseline x2: .*shape mismatch"):
        load_model(wrong)
    with pytest.raises(WeightsError, match="no such weights file"):
        load_model(tmp_path / "missing.safetensors")
    with pytest.raises(WeightsError, match="unknown model 'edsr2' and no such weights file"):
        load_model("edsr2")
    with pytest.raises(ModelError, match="supports scales"):
        load_model("rcan", 5)


def test_missing_pretrained_weights_say_how_to_get_them(tmp_path, monkeypatch):
    import sisr.weights.pretrained as pretrained

    monkeypatch.setattr(pretrained, "PRETRAINED_DIR", tmp_path)
    with pytest.raises(WeightsError, match=r"no pretrained weights shipped for rcan x3; .*sisr train --config.*sisr convert"):
        load_model("rcan", 3)
    bicubic = load_model("bicubic", 4)  # nothing to load
    assert bicubic.sisr_spec.scale == 4


def test_shipped_pretrained_weights_are_listed_and_used(tmp_path, monkeypatch):
    import sisr.weights.pretrained as pretrained

    monkeypatch.setattr(pretrained, "PRETRAINED_DIR", tmp_path)
    assert available_pretrained() == []
    model = sisr.create_model("edsr-baseline", scale=3)
    save_weights(model, tmp_path / "edsr-baseline_x3.safetensors", model="edsr-baseline", scale=3)
    (tmp_path / "notes.txt").write_text("not weights")
    (tmp_path / "unknown-net_x2.safetensors").write_bytes(b"")
    assert available_pretrained() == [("edsr-baseline", 3, tmp_path / "edsr-baseline_x3.safetensors")]
    _same_outputs(model.eval(), load_model("edsr-baseline", 3))
