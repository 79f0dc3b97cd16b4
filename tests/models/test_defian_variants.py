"""DeFiAN ablation variants (paper Tables III-V): printed parameter counts, the switches' meaning, tiny runs.

The variants are read from the experiment definitions src/sisr/experiments/tables/defian-table{3,4,5}.yaml,
so every cell defined there is built here: at full size (construction on ``meta``) for the counts, at the
registry's tiny size for a forward and backward pass.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path
from unittest import mock

import pytest
import torch
import yaml
from torch import nn
from torch.nn.modules.conv import _ConvNd

import sisr
from sisr.errors import ModelError
from sisr.models import count_parameters, get_info
from sisr.models.defian import MSHF, DiEnDec, SingleModule

TABLES = Path(sisr.__file__).parent / "experiments" / "tables"
ABLATIONS = ("defian-table3", "defian-table4", "defian-table5")


def load_table(name: str) -> dict:
    return yaml.safe_load((TABLES / f"{name}.yaml").read_text(encoding="utf-8"))


def cells(*names: str) -> list:
    out = []
    for name in names:
        table = load_table(name)
        for variant in table["variants"]:
            out.append(pytest.param(table, variant, id=f"{name}:{variant['label']}"))
    return out


def full_size_count(table: dict, variant: dict) -> int:
    """Parameters of the variant at the table's size, built on ``meta`` (no weights allocated)."""
    return _full_size(table, variant)[0]


def full_size_flops(table: dict, variant: dict) -> float:
    """#FLOPs (G) by the authors' counting rules, for a 480x360 output (paper Sec. IV-A2)."""
    return _full_size(table, variant)[1]


def _full_size(table: dict, variant: dict) -> tuple[int, float | None]:
    hp = {**table["hparams"], **variant.get("hparams", {})}
    return _measure(variant.get("model", table["model"]), table["scale"], yaml.safe_dump(hp, sort_keys=True),
                    "flops_g" in variant["paper"])


@functools.lru_cache(maxsize=None)
def _measure(name: str, scale: int, hparams_yaml: str, flops: bool) -> tuple[int, float | None]:
    """(parameters, #FLOPs in G where the paper prints them); one meta build for both."""
    model = meta_model(name, scale, **yaml.safe_load(hparams_yaml)).eval()
    return count_parameters(model), authors_flops(model, 480 // scale, 360 // scale) / 1e9 if flops else None


def authors_flops(model: torch.nn.Module, h: int, w: int) -> int:
    """The rules of the authors' ``flops_counter.py`` (their ``main.py`` input (3, 480 // s, 360 // s)).

    Conv2d: kernel x in x out / groups MACs per output pixel plus one add per output for a bias;
    ConvTranspose2d: the same per *input* pixel, its bias counted over H x H (their typo); nn.ReLU:
    one per output element; everything else (sigmoid, pooling by F.*, pixel shuffle, the Hessian
    arithmetic, the DAC statistics) 0. Our MSHF runs combined kernels through F.conv2d, so its three
    convolutions are added as the authors' modules would count them.
    """
    total = 0

    def conv(m, args, out):
        nonlocal total
        pixels = out.shape[0] * out.shape[2] * out.shape[3]
        total += math.prod(m.kernel_size) * m.in_channels * (m.out_channels // m.groups) * pixels
        total += m.out_channels * pixels if m.bias is not None else 0

    def deconv(m, args, out):
        nonlocal total
        x = args[0]
        per_pixel = math.prod(m.kernel_size) * m.in_channels * (m.out_channels // m.groups)
        total += per_pixel * x.shape[0] * x.shape[2] * x.shape[3]
        total += m.out_channels * out.shape[0] * out.shape[2] * out.shape[2] if m.bias is not None else 0

    def relu(m, args, out):
        nonlocal total
        total += out.numel()

    hooks = {nn.ConvTranspose2d: deconv, nn.Conv2d: conv, nn.ReLU: relu}
    handles = [m.register_forward_hook(hook) for m in model.modules() for kind, hook in hooks.items()
               if type(m) is kind]
    with torch.no_grad():
        model(torch.empty(1, 3, h, w, device="meta"))
    for handle in handles:
        handle.remove()
    for m in model.modules():
        if isinstance(m, MSHF):
            total += sum(9 * c.in_channels + c.out_channels for c in (m.grad_xx, m.grad_yy, m.grad_xy)) * h * w
    return total


def meta_model(name: str, scale: int, **hparams) -> torch.nn.Module:
    # initialisation changes no shape: skip it (halves the ~1 s build of a DeFiAN_L)
    with torch.device("meta"), mock.patch.object(_ConvNd, "reset_parameters", lambda self: None):
        return sisr.create_model(name, scale=scale, **hparams)


def tiny_size(table: dict, variant: dict) -> torch.nn.Module:
    """The schema's tiny rule: tiny over base, variant over that, tiny's width/depth keys over all."""
    name = variant.get("model", table["model"])
    tiny = dict(get_info(name).tiny)
    hp = {**table["hparams"], **tiny, **variant.get("hparams", {}), **tiny}
    torch.manual_seed(0)
    return sisr.create_model(name, scale=table["scale"], **hp)


def test_tables_define_every_cell_of_the_paper():
    assert [len(load_table(n)["variants"]) for n in ABLATIONS] == [8, 8, 12]
    for name in ABLATIONS:
        table = load_table(name)
        assert table["name"] == name and table["kind"] == "ablation" and table["scale"] == 3
        assert table["hparams"]["n_channels"] == 64 and table["train"]["train.iterations"] == 50000
        assert len({v["label"] for v in table["variants"]}) == len(table["variants"])
    # Tables III and IV print #Params for every column
    assert all("params_k" in v["paper"] for n in ABLATIONS[:2] for v in load_table(n)["variants"])


@pytest.mark.parametrize("table, variant", cells("defian-table3", "defian-table4"))
def test_parameter_count_equals_the_printed_one(table, variant):
    n = full_size_count(table, variant)
    assert f"{n / 1000:.1f}" == f"{variant['paper']['params_k']:.1f}", f"{n:,} parameters"


@pytest.mark.parametrize("table, variant", cells("defian-table3", "defian-table4"))
def test_flops_by_the_authors_rules_equal_the_printed_ones(table, variant):
    assert f"{full_size_flops(table, variant):.1f}" == f"{variant['paper']['flops_g']:.1f}"


def test_table5_counts_agree_with_table3_and_across_encoder_decoders():
    t3_table = load_table("defian-table3")
    t3 = {v["label"]: v for v in t3_table["variants"]}
    t5 = load_table("defian-table5")
    t5_counts = {v["label"]: full_size_count(t5, v) for v in t5["variants"]}
    # the d=0 cells are Table III cells (same PSNR printed), d=3 DiEnDec the released DeFiAN_L x3
    assert t5_counts["DiEnDec, d = 0, w/o MSHF"] == full_size_count(t3_table, t3["MSHF ✗ DiEnDec ✗ DAC ✓"])
    assert t5_counts["DiEnDec, d = 0, w/ MSHF"] == full_size_count(t3_table, t3["MSHF ✓ DiEnDec ✗ DAC ✓"])
    assert t5_counts["DiEnDec, d = 3"] == full_size_count(t3_table, t3["MSHF ✓ DiEnDec ✓ DAC ✓"]) \
        == get_info("defian-l").reference.params[3]
    for d in (2, 3, 4):  # "with comparative #Params": the three types have the same layers
        assert t5_counts[f"HGenDec, d = {d}"] == t5_counts[f"ConvEnDec, d = {d}"] == t5_counts[f"DiEnDec, d = {d}"]
    assert len(set(t5_counts[f"DiEnDec, d = {d}"] for d in (1, 2, 3, 4))) == 4


@pytest.mark.parametrize("table, variant", cells(*ABLATIONS))
def test_every_variant_trains_at_tiny_size(table, variant):
    model = tiny_size(table, variant)
    x = torch.rand(2, 3, 10, 9)
    y = model(x)
    assert y.shape == (2, 3, 30, 27) and torch.isfinite(y).all()
    (y - torch.rand_like(y)).abs().mean().backward()
    for name, p in model.named_parameters():
        if p.requires_grad:  # every trainable layer of the variant is used and gets a finite gradient
            assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_defaults_are_the_authors_network():
    explicit = dict(mshf=True, mshf_kernels=[3, 5, 7], endec="diendec", endec_depth=3, dac=True)
    default = meta_model("defian-l", 3).state_dict()
    spelled = meta_model("defian-l", 3, **explicit).state_dict()
    assert {k: v.shape for k, v in default.items()} == {k: v.shape for k, v in spelled.items()}
    assert len(default) == 1567  # x3 has one upsampler conv, as x2 (test_defian.py OFFICIAL_STATE_LEN)


def _copy_weights(dst: torch.nn.Module, src: torch.nn.Module) -> torch.nn.Module:
    dst.load_state_dict(src.state_dict(), strict=True)
    return dst.eval()


TINY = get_info("defian-l").tiny


def tiny(**hp) -> torch.nn.Module:
    torch.manual_seed(0)
    return sisr.create_model("defian-l", scale=2, **{**TINY, **hp})


def test_all_three_off_is_the_network_without_attention():
    off = tiny(mshf=False, endec_depth=0, dac=False)
    plain = tiny(attention=False)
    assert off.state_dict().keys() == plain.state_dict().keys()
    assert not any(".coder." in k or ".dac." in k or ".hessian" in k for k in off.state_dict())
    x = torch.rand(1, 3, 7, 8)
    with torch.no_grad():
        torch.testing.assert_close(_copy_weights(off, plain)(x), plain.eval()(x), rtol=0, atol=0)


def _module_input(n_channels: int = 16) -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(2, n_channels, 9, 11)


def test_without_mshf_each_filter_is_the_identity():
    module = SingleModule(16, 1, mshf=False, endec_depth=2, dac=True)
    assert not any(k.startswith("hessian") for k in module.state_dict())
    assert module.coder[0].encoder[0].in_channels == 3  # three slots, as the printed DiEnDec-only count needs
    resin = _module_input()
    maps = module.detail_maps(resin)
    assert maps.shape == (2, 3, 9, 11)
    for k in range(3):
        torch.testing.assert_close(maps[:, k:k + 1], resin.mean(dim=1, keepdim=True))


def test_without_endec_and_dac_the_gate_is_the_sigmoid_of_the_mean_map():
    module = SingleModule(16, 1, mshf_kernels=(3, 7), endec_depth=0, dac=False).eval()
    assert {k.split(".")[0] for k in module.state_dict()} == {"body_block", "hessian3", "hessian7"}
    x = _module_input()
    with torch.no_grad():
        resin = module.body_block(x)
        lam3, lam7 = module.hessian3[0](resin), module.hessian7[0](resin)  # full eigenvalue maps (forward)
        mean_map = (lam3.mean(1, keepdim=True) + lam7.mean(1, keepdim=True)) / 2
        torch.testing.assert_close(module(x), x + resin * torch.sigmoid(mean_map))


def test_without_dac_the_encoder_decoder_output_gates_every_channel():
    module = SingleModule(16, 1, dac=False).eval()
    assert "dac" not in {k.split(".")[0] for k in module.state_dict()}
    x = _module_input()
    with torch.no_grad():
        resin = module.body_block(x)
        gate = torch.sigmoid(module.coder(module.detail_maps(resin)))
        assert gate.shape == (2, 1, 9, 11)
        torch.testing.assert_close(module(x), x + resin * gate)


def test_without_endec_the_dac_aligns_the_mean_map():
    module = SingleModule(16, 1, endec_depth=0).eval()
    x = _module_input()
    with torch.no_grad():
        resin = module.body_block(x)
        gate = torch.sigmoid(module.dac[0](module.detail_maps(resin).mean(1, keepdim=True), x))
        torch.testing.assert_close(module(x), x + resin * gate)


def _reach(endec: DiEnDec, size: int = 71) -> int:
    """How far (pixels) one input pixel moves the output, with all-positive weights (every ReLU active)."""
    with torch.no_grad():
        for p in endec.parameters():
            p.fill_(0.05)
    x = torch.ones(1, endec.gate.in_channels, size, size, requires_grad=True)
    endec(x)[0, 0, size // 2, size // 2].backward()
    rows = x.grad[0].abs().sum(0).sum(1).nonzero().flatten()
    return int(size // 2 - rows.min())


def test_encoder_decoder_types_differ_only_in_dilation_and_resolution():
    # DiEnDec d=3: dilations 1, 2, 4 in the encoder and again in the decoder: reach 2 * (1 + 2 + 4)
    assert _reach(DiEnDec(3, 3, "diendec")) == 14
    assert _reach(DiEnDec(3, 3, "convendec")) == 6
    assert _reach(DiEnDec(3, 4, "diendec")) == 30
    assert _reach(DiEnDec(3, 3, "hgendec")) > 6  # pooling grows the receptive field too
    # d=1 (and d=0): "HGenDec = ConvEnDec = DiEnDec", the same layers and the same function
    x = torch.rand(2, 3, 9, 7)
    ref = DiEnDec(3, 1, "diendec")
    for kind in ("convendec", "hgendec"):
        with torch.no_grad():
            torch.testing.assert_close(_copy_weights(DiEnDec(3, 1, kind), ref)(x), ref(x), rtol=0, atol=0)


@pytest.mark.parametrize("size", [(1, 1), (2, 3), (9, 10), (13, 5)])
def test_hourglass_keeps_odd_and_tiny_sizes(size):
    endec = DiEnDec(3, 4, "hgendec")
    out = endec(torch.rand(1, 3, *size))
    assert out.shape == (1, 1, *size) and torch.isfinite(out).all()


def test_variant_weights_round_trip(tmp_path):
    from sisr.weights import save_weights

    model = tiny(mshf_kernels=(5,), endec="hgendec", endec_depth=2).eval()
    path = save_weights(model, tmp_path / "variant.safetensors", model="defian-l", scale=2,
                        hparams=model.sisr_spec.hparams)
    loaded = sisr.load_model(path)
    assert loaded.sisr_spec.hparams["endec"] == "hgendec" and list(loaded.sisr_spec.hparams["mshf_kernels"]) == [5]
    for (name, a), (_, b) in zip(loaded.state_dict().items(), model.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    x = torch.rand(1, 3, 6, 7)
    with torch.no_grad():  # the loader may pick another memory layout: float rounding only
        torch.testing.assert_close(loaded(x), model(x))


@pytest.mark.parametrize("hp, option", [
    ({"mshf_kernels": []}, "mshf_kernels"), ({"mshf_kernels": [4]}, "mshf_kernels"),
    ({"mshf_kernels": [3, 3]}, "mshf_kernels"), ({"mshf_kernels": ["3"]}, "mshf_kernels"),
    ({"endec": "unet"}, "endec"), ({"endec_depth": -1}, "endec_depth"), ({"endec_depth": 7}, "endec_depth"),
    ({"endec_depth": 2.0}, "endec_depth"),
])
def test_bad_switches_are_one_clear_error(hp, option):
    with pytest.raises(ModelError, match=rf"\b{option}\b") as err:
        tiny(**hp)
    assert "\n" not in str(err.value)
