"""CSNLN ablation variants (paper Tables 3-5): every table cell builds, trains and keeps the defaults intact."""

from __future__ import annotations

import json
from importlib import resources

import pytest
import torch
import yaml
from safetensors.torch import load_file

import sisr
from sisr.errors import ModelError
from sisr.models import count_parameters, get_info
from sisr.models.csnln import ConvRecurrentBlock

TINY = get_info("csnln").tiny
TABLES = ("csnln-table3", "csnln-table4", "csnln-table5")
SWITCHES = ("local", "in_scale", "cross_scale", "patch_size", "fusion")

# full size (n_feats 128, depth 12), x2: parameters of each cell, counted once and recorded here
FULL_X2 = 3_061_289
COUNTS_X2 = {
    (False, False, False): 2_996_010,  # Table 3 baseline: 10 conv3x3 + deconv + two-layer output CNN
    (True, False, False): 1_520_160,
    (False, True, False): 1_553_187,
    (False, False, True): 963_234,
    (True, True, False): 2_733_093,
    (True, False, True): 2_143_140,
    (False, True, True): 1_881_383,
    (True, True, True): FULL_X2,
}
FUSION_COUNTS_X2 = {"add": 2_176_167, "concat": 2_225_447, "mutual": FULL_X2}


def _table(name: str) -> dict:
    text = (resources.files("sisr.experiments") / "tables" / f"{name}.yaml").read_text(encoding="utf-8")
    return yaml.safe_load(text)


def _cells() -> list:
    cells = []
    for name in TABLES:
        table = _table(name)
        for v in table["variants"]:
            cells.append(pytest.param(table["scale"], v["hparams"], id=f"{name}:{v['label']}"))
    return cells


def _backward(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = model(x)
    torch.manual_seed(7)
    (out * torch.randn_like(out)).mean().backward()
    return out


@pytest.mark.parametrize("scale,switches", _cells())
def test_every_table_cell_trains_at_the_tiny_size(scale, switches):
    assert set(switches) <= set(SWITCHES)
    torch.manual_seed(0)
    model = sisr.create_model("csnln", scale=scale, **TINY, **switches)
    out = _backward(model, torch.rand(2, 3, 6, 8))
    assert out.shape == (2, 3, 6 * scale, 8 * scale) and torch.isfinite(out).all()
    for name, p in model.named_parameters():
        if p.requires_grad:  # every layer a variant builds is used
            assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("scale", [3, 4])
@pytest.mark.parametrize("switches", [dict(local=False, in_scale=False, cross_scale=False), dict(in_scale=False),
                                      dict(local=False), dict(in_scale=False, cross_scale=False),
                                      dict(fusion="add"), dict(fusion="concat", local=False), dict(patch_size=5)],
                         ids=["baseline", "L+CS", "IS+CS", "L", "add", "concat-IS+CS", "p5"])
def test_variants_at_x3_x4(scale, switches):
    torch.manual_seed(0)
    model = sisr.create_model("csnln", scale=scale, **TINY, **switches)
    out = _backward(model, torch.rand(1, 3, 4, 5))
    assert out.shape == (1, 3, 4 * scale, 5 * scale) and torch.isfinite(out).all()
    unused = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not unused


@pytest.mark.parametrize("switches", [dict(patch_size=1), dict(patch_size=5), dict(fusion="add"),
                                      dict(fusion="concat"), dict(local=False, in_scale=False)],
                         ids=["p1", "p5", "add", "concat", "CS"])
def test_fast_path_equals_reference_for_variants(switches):
    torch.manual_seed(1)
    model = sisr.create_model("csnln", scale=2, **TINY, **switches)
    x = torch.rand(1, 3, 6, 4)
    outputs = []
    for mode in ("reference", "fast"):
        model.attention = mode
        model.attention_budget = 2**12  # several blocks on the fast path
        with torch.no_grad():
            outputs.append(model(x))
    assert (outputs[0] - outputs[1]).abs().max().item() < 1e-5


def test_fusion_formulas():
    """Each SEM stage computes the documented H (paper Eqs. 5-8 and the add/concat alternatives)."""
    torch.manual_seed(0)
    cells = {}
    for key, switches in {"full": {}, "no L": dict(local=False), "L+IS": dict(cross_scale=False),
                          "L": dict(in_scale=False, cross_scale=False), "add": dict(fusion="add"),
                          "concat": dict(fusion="concat")}.items():
        cells[key] = sisr.create_model("csnln", scale=2, **TINY, **switches).SEM.eval()
    x = torch.rand(1, TINY["n_feats"], 4, 6)  # an LR state
    with torch.no_grad():
        got = {key: sem(x)[1] for key, sem in cells.items()}
        sem = cells["full"]
        msp = sem.multi_source_projection
        f_i = msp.upsample(msp.down_attention(x))
        f_ic = f_i + msp.encoder(msp.up_attention(x) - f_i)
        assert torch.allclose(got["full"], f_ic + sem.error_encode(x - sem.down_sample_1(f_ic)), atol=1e-6)
        sem = cells["no L"]
        msp = sem.multi_source_projection
        f_i = msp.upsample(msp.down_attention(x))
        assert torch.allclose(got["no L"], f_i + msp.encoder(msp.up_attention(x) - f_i), atol=1e-6)
        sem = cells["L+IS"]
        msp = sem.multi_source_projection
        f_i = msp.upsample(msp.down_attention(x))
        assert torch.allclose(got["L+IS"], f_i + sem.error_encode(x - sem.down_sample_1(f_i)), atol=1e-6)
        assert torch.allclose(got["L"], cells["L"].error_encode(x), atol=1e-6)
        for key in ("add", "concat"):
            sem = cells[key]
            msp = sem.multi_source_projection
            parts = [sem.error_encode(x), msp.upsample(msp.down_attention(x)), msp.up_attention(x)]
            want = sum(parts) if key == "add" else sem.fuse(torch.cat(parts, dim=1))
            assert torch.allclose(got[key], want, atol=1e-6), key


def test_modules_each_variant_builds():
    def sem_modules(**switches):
        return {n for n, _ in sisr.create_model("csnln", scale=2, **TINY, **switches).SEM.named_children()}

    assert sem_modules() == {"multi_source_projection", "down_sample_1", "down_sample_2", "error_encode", "post_conv"}
    assert sem_modules(local=False) == {"multi_source_projection", "down_sample_2", "post_conv"}
    assert sem_modules(in_scale=False, cross_scale=False) == {"error_encode", "down_sample_2", "post_conv"}
    assert sem_modules(fusion="add") == {"multi_source_projection", "down_sample_2", "error_encode", "post_conv"}
    assert sem_modules(fusion="concat") == {"multi_source_projection", "down_sample_2", "error_encode", "post_conv",
                                            "fuse"}
    msp = sisr.create_model("csnln", scale=2, **TINY, in_scale=False).SEM.multi_source_projection
    assert {n for n, _ in msp.named_children()} == {"up_attention"}
    x4 = sisr.create_model("csnln", scale=4, **TINY, in_scale=False, cross_scale=False).SEM
    assert {n for n, _ in x4.named_children()} == {"post_conv", "down_sample_4", "error_encode_2"}


def test_full_size_parameter_counts():
    for (local, in_scale, cross_scale), expected in COUNTS_X2.items():
        model = sisr.create_model("csnln", scale=2, local=local, in_scale=in_scale, cross_scale=cross_scale)
        assert count_parameters(model) == expected, (local, in_scale, cross_scale)
    for fusion, expected in FUSION_COUNTS_X2.items():
        assert count_parameters(sisr.create_model("csnln", scale=2, fusion=fusion)) == expected, fusion
    for p in (1, 5):  # the patch size changes no weight
        assert count_parameters(sisr.create_model("csnln", scale=2, patch_size=p)) == FULL_X2


def test_baseline_is_ten_convolutions_with_the_full_models_size():
    model = sisr.create_model("csnln", scale=2, local=False, in_scale=False, cross_scale=False)
    assert isinstance(model.SEM, ConvRecurrentBlock)
    assert len(model.SEM.body) == 10
    assert all(isinstance(layer[0], torch.nn.Conv2d) and layer[0].kernel_size == (3, 3) for layer in model.SEM.body)
    baseline = count_parameters(model)
    # the paper: "the same" parameters as the other variants, CSNLN printed as 3M (Table 2)
    assert round(baseline / 1e6) == round(FULL_X2 / 1e6) == 3
    assert abs(baseline - FULL_X2) / FULL_X2 < 0.025


def test_explicit_defaults_are_the_authors_network(fixtures_root):
    """Spelling out the default switches gives the official layout and the official output."""
    folder = fixtures_root / "parity"
    spec = json.loads((folder / "csnln_x2.json").read_text())
    model = sisr.create_model("csnln", scale=2, n_feats=spec["n_feats"], depth=spec["depth"],
                              rgb_range=spec["rgb_range"], local=True, in_scale=True, cross_scale=True,
                              patch_size=3, fusion="mutual")
    assert count_parameters(model) == spec["n_params"] and len(model.state_dict()) == spec["n_state"]
    model.load_state_dict(load_file(folder / "csnln_x2.weights.safetensors"), strict=True)
    io = load_file(folder / "csnln_x2.io.safetensors")
    with torch.no_grad():
        assert (model.eval()(io["input"]) - io["output"]).abs().max().item() < 1e-4


def test_each_tables_full_model_cell_is_the_default_network():
    default = sisr.create_model("csnln", scale=2, **TINY)
    shapes = {k: v.shape for k, v in default.state_dict().items()}
    for name in TABLES:
        table = _table(name)
        full = [v for v in table["variants"] if v["paper"]["psnr"]["Set14"] == 33.74]
        assert len(full) == 1, name
        model = sisr.create_model("csnln", scale=table["scale"], **TINY, **full[0]["hparams"])
        assert {k: v.shape for k, v in model.state_dict().items()} == shapes, name
        assert model.SEM.multi_source_projection.up_attention.ksize == 3, name


@pytest.mark.parametrize("switches,message", [
    (dict(patch_size=2), "odd size"), (dict(patch_size=0), "odd size"), (dict(patch_size=True), "patch_size"),
    (dict(fusion="sum"), "fusion must be one of"), (dict(local="yes"), "local .* true or false"),
    (dict(cross_scale=False, patch_size=5), "cross_scale=false removes"),
    (dict(local=False, in_scale=False, fusion="add"), "at least two SEM branches"),
])
def test_clear_errors(switches, message):
    with pytest.raises(ModelError, match=message):
        sisr.create_model("csnln", scale=2, **TINY, **switches)
