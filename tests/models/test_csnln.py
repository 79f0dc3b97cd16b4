"""CSNLN: attention semantics, fast vs reference path, precision, official layout."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

import sisr
from sisr.errors import ModelError
from sisr.models import get_info
from sisr.models.csnln import CrossScaleAttention

TINY = get_info("csnln").tiny


def _sharpen_attention(model: torch.nn.Module, factor: float = 4.0) -> None:
    """Scale the matching embeddings so the softmaxes are far from uniform."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "conv_match" in name and name.endswith("0.weight"):
                p.mul_(factor)


def _brute_force_cross_scale(module: CrossScaleAttention, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The cross-scale attention written query by query from its definition; returns (output, weights).

    p x p query patches of x against p x p key patches of x at 1/s (zero padding p // 2), each match
    pasting the sp x sp value patch at its key's position; overlap-add divided by 6 p^2 / 9.
    """
    s, k = module.scale, module.ksize
    r, m = k // 2, s * (k // 2)
    _, _, h, w = x.shape
    embed = module.conv_assembly(x)[0]
    match = F.pad(module.conv_match_1(x)[0], (r, r, r, r))
    ref = module.conv_match_2(F.interpolate(x, scale_factor=1 / s, mode="bilinear"))[0]
    ref = F.pad(ref, (r, r, r, r))
    hk, wk = h // s, w // s
    keys = torch.stack([ref[:, g:g + k, c:c + k].flatten() for g in range(hk) for c in range(wk)])
    keys = keys / keys.norm(dim=1, keepdim=True).clamp_min(1e-4)
    values = F.pad(embed, (m, m, m, m))
    out = torch.zeros(embed.shape[0], s * h + 2 * m, s * w + 2 * m)
    all_weights = []
    for i in range(h):
        for j in range(w):
            weights = torch.softmax(10 * keys @ match[:, i:i + k, j:j + k].flatten(), dim=0)
            all_weights.append(weights)
            for idx, (g, c) in enumerate((g, c) for g in range(hk) for c in range(wk)):
                patch = values[:, s * g:s * g + k * s, s * c:s * c + k * s]
                out[:, s * i:s * i + k * s, s * j:s * j + k * s] += weights[idx] * patch
    return out[None, :, m:m + s * h, m:m + s * w] / (6 * k * k / 9), torch.stack(all_weights)


@pytest.mark.parametrize("scale,ksize", [(2, 3), (3, 3), (2, 1), (3, 1), (2, 5), (3, 5)])
def test_cross_scale_attention_matches_its_definition(scale, ksize):
    torch.manual_seed(scale)
    module = CrossScaleAttention(8, scale=scale, ksize=ksize)
    _sharpen_attention(module)
    x = torch.randn(1, 8, 2 * scale, 3 * scale)
    with torch.no_grad():
        expected, weights = _brute_force_cross_scale(module, x)
        assert weights.max() > 0.5, "attention weights are nearly uniform: the test would be weak"
        module.mode = "reference"
        outputs = {"reference": module(x)}
        module.mode = "fast"
        # one query per block, parts of rows, whole rows, the whole map
        for budget in (1, 2**12, 2**14, 2**15, 2**25):
            module.budget = budget
            outputs[f"fast, budget {budget}"] = module(x)
    for name, out in outputs.items():
        assert out.shape == (1, 8, 2 * scale * scale, 3 * scale * scale)
        assert (out - expected).abs().max().item() < 1e-5, name


def _run(model, x, mode, budget=None):
    model.attention = mode
    if budget is not None:
        model.attention_budget = budget
    model.zero_grad()
    x = x.clone().requires_grad_(True)
    out = model(x)
    torch.manual_seed(99)
    (out * torch.randn_like(out)).mean().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    return out.detach(), x.grad, grads


def _assert_paths_agree(model, x, budget=None):
    ref_out, ref_gx, ref_grads = _run(model, x, "reference")
    out, gx, grads = _run(model, x, "fast", budget)
    assert out.shape == (x.shape[0], 3, model.scale * x.shape[2], model.scale * x.shape[3])
    assert (out - ref_out).abs().max().item() < 1e-4
    assert (gx - ref_gx).abs().max().item() < 1e-4
    assert ref_gx.abs().max() > 0
    for name, g in ref_grads.items():
        assert (grads[name] - g).abs().max().item() < 1e-4, name


@pytest.mark.parametrize("size,budget", [((7, 10), None), ((7, 10), 2**16), ((5, 3), None)],
                         ids=["7x10-one-block", "7x10-small-blocks", "5x3-one-block"])  # 64 KiB: rows, parts of rows
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_fast_path_equals_reference_tiny(scale, size, budget):
    torch.manual_seed(scale)
    model = sisr.create_model("csnln", scale=scale, **TINY)
    _sharpen_attention(model)
    _assert_paths_agree(model, torch.rand(2, 3, *size), budget)


@pytest.mark.parametrize("scale,size", [(2, (5, 4)), (3, (4, 5)), (4, (2, 3))])
def test_fast_path_equals_reference_full_width(scale, size):
    torch.manual_seed(0)
    model = sisr.create_model("csnln", scale=scale, depth=2)
    _assert_paths_agree(model, torch.rand(1, 3, *size), budget=2**16)  # blocks of 1 to 3 queries


def test_bf16_autocast_close_to_fp32():
    torch.manual_seed(0)
    model = sisr.create_model("csnln", scale=2).eval()
    x = torch.rand(1, 3, 8, 10)
    dtypes = []
    hook = model.SEM.multi_source_projection.encoder.register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
    with torch.no_grad():
        ref = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(x)
    hook.remove()
    assert dtypes[-1] == torch.bfloat16 and dtypes[0] == torch.float32
    assert torch.isfinite(low).all()
    assert (low.float() - ref).abs().max().item() <= 2 / 255


def test_parity_both_paths(fixtures_root):
    folder = fixtures_root / "parity"
    spec = json.loads((folder / "csnln_x2.json").read_text())
    io = load_file(folder / "csnln_x2.io.safetensors")
    model = sisr.create_model("csnln", scale=spec["scale"], n_feats=spec["n_feats"], depth=spec["depth"],
                              rgb_range=spec["rgb_range"])
    model.load_state_dict(load_file(folder / "csnln_x2.weights.safetensors"), strict=True)
    model.eval()
    for mode, budget in (("reference", None), ("fast", 1)):
        model.attention = mode
        if budget:
            model.attention_budget = budget
        with torch.no_grad():
            out = model(io["input"])
        assert (out - io["output"]).abs().max().item() < 1e-4, mode


def test_from_official_layout(fixtures_root):
    info = get_info("csnln")
    official = load_file(fixtures_root / "parity" / "csnln_x2.weights.safetensors")
    assert info.official.detect(official) == {"scale": 2, "n_feats": 128, "depth": 12, "rgb_range": 1}
    official["sub_mean.bias"] = official["sub_mean.bias"] * 255
    assert info.official.detect(official)["rgb_range"] == 255
    for scale in (3, 4):
        sd = sisr.create_model("csnln", scale=scale, n_feats=8, depth=3).state_dict()
        assert info.official.detect(sd) == {"scale": scale, "n_feats": 8, "depth": 3, "rgb_range": 1}
    assert info.official.detect(sisr.create_model("edsr-baseline", scale=2).state_dict()) is None


def test_state_dict_layout_x4():
    x2 = set(sisr.create_model("csnln", scale=2).state_dict())
    x4 = sisr.create_model("csnln", scale=4).state_dict()
    assert len(x2) == 51 and len(x4) == 84
    msp = {k.replace("SEM.multi_source_projection.", "SEM.multi_source_projection_2.")
           for k in x2 if k.startswith("SEM.multi_source_projection.")}
    extra = {f"SEM.{m}.{p}" for m in ("down_sample_3", "down_sample_4", "error_encode_2")
             for p in ("0.weight", "0.bias", "1.weight")}
    assert set(x4) == (x2 - {k for k in x2 if k.startswith("SEM.down_sample_2.")}) | msp | extra
    for name in ("down_sample_3", "down_sample_4", "error_encode_2"):
        assert x4[f"SEM.{name}.0.weight"].shape == (128, 128, 8, 8)
    assert isinstance(sisr.create_model("csnln", scale=4).SEM.error_encode_2[0], torch.nn.ConvTranspose2d)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_any_input_size_pads_by_replication(scale):
    torch.manual_seed(0)
    model = sisr.create_model("csnln", scale=scale, **TINY).eval()
    with torch.no_grad():
        for h, w in ((1, 1), (1, 5), (4, 7)):
            x = torch.rand(1, 3, h, w)
            out = model(x)
            assert out.shape == (1, 3, scale * h, scale * w) and torch.isfinite(out).all()
        multiple = 2 if scale == 4 else scale
        x = torch.rand(1, 3, 2 * multiple + 1, 3 * multiple - 1)
        padded = F.pad(x, (0, 1, 0, multiple - 1), mode="replicate")
        expected = model(padded)[..., :scale * x.shape[2], :scale * x.shape[3]]
        assert torch.equal(model(x), expected)


def test_clear_errors():
    with pytest.raises(ModelError, match="supports scales 2, 3, 4"):
        sisr.create_model("csnln", scale=8)
    with pytest.raises(ModelError, match="attention must be one of"):
        sisr.create_model("csnln", scale=2, attention="flash", **TINY)
    model = sisr.create_model("csnln", scale=2, **TINY)
    with pytest.raises(ModelError, match="attention_budget"):
        model.attention_budget = 0
