"""sisr.evaluation.profile: FLOP counting (meta vs real, against arithmetic), memory, timing, outputs."""

from __future__ import annotations

import json
import statistics

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from sisr.evaluation.profile import (
    check_output, count_flops, count_flops_meta_first, count_model_flops, flop_counter, hd_input_hw, parse_hw,
    profile, save_profile,
)
from sisr.errors import ConfigError, ModelError, SisrError
from sisr.models.registry import count_parameters, create_model, get_info, list_models
from sisr.utils.fs import OutputExistsError


def test_single_conv_counts_its_multiply_accumulates():
    conv = nn.Conv2d(3, 5, 3)  # valid: 7x9 -> 5x7
    flops, by_op = count_flops(conv, torch.rand(1, 3, 7, 9))
    macs = 5 * 7 * 5 * 3 * 3 * 3  # output positions x out channels x in channels x kernel
    assert flops == 2 * macs
    assert by_op == {"aten.convolution": 2 * macs}


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_edsr_tiny_macs_by_hand(scale):
    hp = dict(get_info("edsr-baseline").tiny)
    f, r = hp["n_feats"], hp["n_resblocks"]
    h, w = 13, 10
    lr, hr = h * w, h * w * scale * scale
    per_lr = (
        3 * 3  # sub_mean, 1x1 3->3
        + 9 * 3 * f  # head 3->F
        + r * 2 * 9 * f * f  # resblocks, two 3x3 F->F each
        + 9 * f * f  # body's last conv
    )
    if scale == 3:
        upsampler = 9 * f * 9 * f * lr  # conv F->9F at LR, pixel shuffle 3
    else:  # [conv F->4F, shuffle 2] per factor 2, at growing resolutions
        upsampler = sum(9 * f * 4 * f * lr * 4**i for i in range(scale.bit_length() - 1))
    per_hr = 9 * f * 3 + 3 * 3  # tail F->3 and add_mean at HR
    expected = lr * per_lr + upsampler + hr * per_hr
    counted = count_model_flops("edsr-baseline", scale, (h, w), hparams=hp)
    assert counted["flop_counting"] == "meta"
    assert counted["macs"] == expected
    assert counted["flops"] == 2 * expected


@pytest.mark.parametrize("name", list_models())
def test_meta_count_equals_real_count_on_tiny_models(name):
    info = get_info(name)
    scale = info.scales[0]
    variants = [dict(info.tiny)]
    if name == "csnln":
        variants.append({**info.tiny, "attention": "reference"})
    for hp in variants:
        torch.manual_seed(0)
        model = create_model(name, scale, **hp).eval()
        real, real_ops = count_flops(model, torch.rand(2, 3, 13, 10))
        meta = count_model_flops(name, scale, (13, 10), hparams=hp)
        assert meta["flop_counting"] == "meta"
        assert 2 * meta["flops"] == real  # batch 2 for real: counts are linear in the batch
        # per operator too, except that meta runs fused attention as its math decomposition (bmm)
        assert 2 * meta["flops_by_op"].get("aten.convolution", 0) == real_ops.get("aten.convolution", 0)
        assert meta["parameters"] == count_parameters(model)
        assert real > 0


def test_cpu_fused_attention_is_counted():
    q, k, v = torch.rand(1, 2, 40, 8), torch.rand(1, 2, 30, 8), torch.rand(1, 2, 30, 6)
    expected = 2 * 2 * 40 * 30 * 8 + 2 * 2 * 40 * 30 * 6  # q k^T and weights @ v, per head
    counter = flop_counter()
    with counter, torch.inference_mode():
        F.scaled_dot_product_attention(q, k, v)
    assert counter.get_total_flops() == expected
    with torch.device("meta"):  # the math path on meta counts the same
        counter = flop_counter()
        with counter:
            F.scaled_dot_product_attention(torch.empty(q.shape), torch.empty(k.shape), torch.empty(v.shape))
    assert counter.get_total_flops() == expected


def test_pytorch_counter_alone_misses_the_cpu_fused_attention():
    """Why flop_counter() adds a formula: if PyTorch learns this op, the addition can go."""
    q = torch.rand(1, 1, 64, 16)
    plain = FlopCounterMode(display=False)
    with plain, torch.inference_mode():
        out = F.scaled_dot_product_attention(q, q, q)
    if plain.get_total_flops() != 0:
        pytest.skip("this PyTorch counts the CPU fused attention itself")
    assert out.shape == q.shape


@pytest.mark.parametrize("scale, hw", [(2, (14, 10)), (3, (12, 9)), (4, (14, 10))])
def test_csnln_fast_path_counts_reference_plus_padded_in_scale_attention(scale, hw):
    """docs/models/csnln.md: the fast NL pads queries/keys from C/2 to C channels, +C/2 N^2 MACs per call;
    everything else (cross-scale attention as bmm instead of conv / transposed conv, split tail) is equal."""
    tiny = dict(get_info("csnln").tiny)
    fast = count_model_flops("csnln", scale, hw, hparams=tiny)
    ref = count_model_flops("csnln", scale, hw, hparams={**tiny, "attention": "reference"})
    n = hw[0] * hw[1]
    positions = [n] if scale != 4 else [n, 4 * n]  # x4: a second stage at twice the resolution
    extra_macs = tiny["depth"] * (tiny["n_feats"] // 2) * sum(p * p for p in positions)
    assert fast["macs"] - ref["macs"] == extra_macs


def test_fallback_to_a_real_input_when_meta_fails():
    class NeedsValues(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 1)

        def forward(self, x):
            y = self.conv(x)
            return y * float(y.abs().max().item() > -1)  # data-dependent: impossible on meta

    counted = count_flops_meta_first(NeedsValues, (5, 6))
    assert counted["flop_counting"] == "cpu"
    assert counted["macs"] == 5 * 6 * 4 * 3
    assert counted["parameters"] == 16


def test_hd_input_sizes():
    assert hd_input_hw(2) == (360, 640)
    assert hd_input_hw(3) == (240, 427)  # 426.67 -> 427: output 1281x720
    assert hd_input_hw(4) == (180, 320)
    assert hd_input_hw(8) == (90, 160)


def test_profile_rows_in_process():
    result = profile(["edsr-baseline", "bicubic"], 2, (16, 12), tiny=True, runs=3, warmup=2, isolate=False)
    assert [r.model for r in result.rows] == ["edsr-baseline", "bicubic"]
    edsr = result.rows[0]
    hp = dict(get_info("edsr-baseline").tiny)
    assert edsr.parameters == count_parameters(create_model("edsr-baseline", 2, **hp))
    assert edsr.macs == count_model_flops("edsr-baseline", 2, (16, 12), hparams=hp)["macs"]
    assert edsr.hd_mult_adds == count_model_flops("edsr-baseline", 2, (360, 640), hparams=hp)["macs"]
    assert edsr.hd_output_hw == (720, 1280)
    assert edsr.hparams["n_feats"] == hp["n_feats"]
    for row in result.rows:
        assert len(row.runtimes_s) == 3 and row.runtime_s == statistics.median(row.runtimes_s) > 0
        assert isinstance(row.peak_memory_bytes, int) and row.peak_memory_bytes >= 0
    assert result.rows[1].parameters == 0
    md = result.markdown().splitlines()
    assert md[0] == "| | edsr-baseline | bicubic |"
    assert [line.split(" | ")[0] for line in md[2:8]] == [
        "| Parameters (M)", "| FLOPs (G)", "| MACs (G)", "| CPU mem. (MiB), RSS peak growth",
        "| Running time (s), median of 3", "| Mult-Adds (G), 1280x720 output"]
    json.dumps(result.to_dict())  # serialisable


def test_cpu_peak_memory_sees_the_output_tensor():
    # bicubic x2 of a 3x1000x1000 input: the output alone is 3x2000x2000 float32 = 45.8 MiB
    result = profile(["bicubic"], 2, (1000, 1000), runs=0, isolate=False)
    row = result.rows[0]
    assert row.runtime_s is None and row.runtimes_s == []
    out_bytes = 3 * 2000 * 2000 * 4
    assert out_bytes <= row.peak_memory_bytes <= 8 * out_bytes


def test_profile_in_a_fresh_process():
    result = profile(["bicubic"], 3, (9, 7), runs=1, isolate=True)
    row = result.rows[0]
    assert "fresh process" in row.memory_method and len(row.runtimes_s) == 1
    assert row.hd_input_hw == (240, 427) and row.hd_output_hw == (720, 1281)


@pytest.mark.parametrize("kwargs, error", [
    (dict(models=["no-such-model"]), ModelError),
    (dict(models=["csnln"], scale=8), ModelError),
    (dict(models=[]), ConfigError),
    (dict(runs=-1), ConfigError),
    (dict(warmup=0), ConfigError),
    (dict(input_hw=(0, 4)), ConfigError),
    (dict(device="no-device"), ConfigError),
])
def test_bad_arguments_fail_before_any_work(kwargs, error):
    args = {"models": ["edsr-baseline"], "scale": 2, "input_hw": (8, 8), "runs": 1, **kwargs}
    with pytest.raises(error) as info:
        profile(**args, tiny=True, isolate=False)
    assert isinstance(info.value, SisrError) and "\n" not in str(info.value)


@pytest.mark.parametrize("text", ["160", "160x", "ax3", "1x2x3", "-1x4", "0x0", ""])
def test_parse_hw_rejects(text):
    with pytest.raises(ConfigError, match="input size"):
        parse_hw(text)


def test_parse_hw():
    assert parse_hw("160x120") == (160, 120)
    assert parse_hw("90X160") == (90, 160)


def test_save_refuses_to_overwrite(tmp_path):
    result = profile(["bicubic"], 2, (4, 4), runs=1, isolate=False)
    out = save_profile(result, tmp_path / "p")
    written = {p.name: p.read_text() for p in out.iterdir()}
    assert set(written) == {"profile.json", "profile.md"}
    assert json.loads(written["profile.json"])["rows"][0]["model"] == "bicubic"
    (out / "profile.md").unlink()  # one file missing, the other present: still nothing written
    with pytest.raises(OutputExistsError):
        save_profile(result, out)
    assert not (out / "profile.md").exists()
    with pytest.raises(OutputExistsError):
        check_output(out)
    save_profile(result, out, overwrite=True)
    assert (out / "profile.md").read_text() == written["profile.md"]


def test_an_input_too_large_for_memory_is_one_line(tmp_path):
    from sisr.errors import ConfigError
    from sisr.evaluation.profile import profile

    with pytest.raises(ConfigError, match="out of memory with a 100000x100000 input"):
        profile(["edsr-baseline"], 2, (100000, 100000), "cpu", runs=0, tiny=True, isolate=False, progress=False)
    with pytest.raises(ConfigError, match="threads must be >= 1"):
        profile(["edsr-baseline"], 2, (16, 16), "cpu", runs=0, tiny=True, isolate=False, threads=0, progress=False)
