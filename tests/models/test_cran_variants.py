"""CRAN's ablation variants (Tables 1-3, registry `cran-edsr`) and the experiment definitions that use them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

import sisr
from sisr.errors import ModelError
from sisr.models import count_parameters, get_info
from sisr.models.common import RCAB, ResBlock
from sisr.models.cran import CRAB, CRAC

TABLES = Path(sisr.__file__).resolve().parent / "experiments" / "tables"
ABLATIONS = {"cran-table1": 4, "cran-table2": 4, "cran-table3": 5}  # cells printed in the paper
EVALUATIONS = {"cran-bi": ("Table 4", [2, 3, 4]), "cran-bd": ("Table 5", [3]), "cran-dn": ("Table 6", [3])}

C, E, KK = 64, 5, 9
CONV = KK * C * C + C  # a 3x3 64->64 conv with bias: 36,928
CRAC_EXTRAS = {"encode": KK * E, "cdrr": 4 * C * C, "channel_interaction": (C // 16) ** 2,
               "spatial_out": E * KK, "spatial_in": E * KK}  # 45, 16,384, 16, 45, 45
EDSR_BASELINE_X2 = 1_369_883  # the authors' count (edsr-baseline, parity fixture)
CHANNEL_ATTENTION = C * (C // 16) + C // 16 + (C // 16) * C + C  # RCAB's 1x1 convs: 580


def _table(name: str) -> dict:
    return yaml.safe_load((TABLES / f"{name}.yaml").read_text(encoding="utf-8"))


def _variant_hparams(table: dict, variant: dict, tiny: bool = False) -> dict:
    """The schema's merge: base < tiny < variant, except that tiny's width/depth keys win."""
    small = dict(get_info(variant.get("model", table["model"])).tiny) if tiny else {}
    return {**table.get("hparams", {}), **small, **variant.get("hparams", {}), **small}


def _crac_params(**off) -> int:
    """Parameters of one 64->64 CRAC with the named parts switched off."""
    return CONV + sum(n for part, n in CRAC_EXTRAS.items() if off.get(part, True))


def _expected_params(hp: dict) -> int:
    """Documented arithmetic (docs/models/cran.md, 'Ablation variants'): x2, 16 blocks x 64 channels."""
    switches = {k: hp.get(k, True) for k in ("cdrr", "spatial_out", "spatial_in", "channel_interaction")}
    crab_extra = 2 * (_crac_params(**switches) - CONV)
    kinds = ["crab" if i + 1 in hp.get("crab_at", []) else hp.get("block", "rb") for i in range(16)]
    extra = {"rb": 0, "rcab": CHANNEL_ATTENTION, "crab": crab_extra}
    return EDSR_BASELINE_X2 + sum(extra[k] for k in kinds)


# ---------------------------------------------------------------- experiment definitions

@pytest.mark.parametrize("name, cells", ABLATIONS.items())
def test_ablation_definitions_name_every_printed_cell(name, cells):
    table = _table(name)
    assert table["name"] == name and table["kind"] == "ablation" and table["paper"] == "cran"
    assert table["model"] == "cran-edsr" and table["scale"] == 2 and table["recipe"] == "cran-edsr"
    assert table["train"]["train.iterations"] == 200_000  # 200 epochs of 1000 iterations
    assert table["eval"]["datasets"] == [table["train"]["val.set"]] == ["DIV2K:801-810"]
    assert len(table["variants"]) == cells
    labels = [v["label"] for v in table["variants"]]
    assert len(set(labels)) == cells
    configs = [tuple(sorted(_variant_hparams(table, v).items(), key=str)) for v in table["variants"]]
    assert len(set(map(str, configs))) == cells  # no two cells build the same network
    for v in table["variants"]:
        assert set(v["paper"]) == {"psnr"} and set(v["paper"]["psnr"]) == {"DIV2K:801-810"}


@pytest.mark.parametrize("name", ABLATIONS)
def test_every_cell_builds_at_full_size_with_the_documented_count(name):
    table = _table(name)
    for variant in table["variants"]:
        hp = _variant_hparams(table, variant)
        model = sisr.create_model(table["model"], table["scale"], **hp)
        assert count_parameters(model) == _expected_params(hp), variant["label"]


@pytest.mark.parametrize("name", ABLATIONS)
def test_every_cell_runs_forward_and_backward_at_the_tiny_size(name):
    table = _table(name)
    for variant in table["variants"]:
        torch.manual_seed(0)
        model = sisr.create_model(table["model"], table["scale"], **_variant_hparams(table, variant, tiny=True))
        x = torch.rand(2, 3, 11, 13, requires_grad=True)
        y = model(x)
        assert y.shape == (2, 3, 22, 26) and torch.isfinite(y).all(), variant["label"]
        y.abs().mean().backward()
        assert torch.isfinite(x.grad).all()
        for pname, p in model.named_parameters():
            if p.requires_grad:
                assert p.grad is not None and torch.isfinite(p.grad).all(), f"{variant['label']}: {pname}"


def test_printed_counts_of_the_cells():
    """The counts docs/models/cran.md gives for each cell (the paper prints none)."""
    counts = {}
    for name in ABLATIONS:
        table = _table(name)
        for v in table["variants"]:
            model = sisr.create_model("cran-edsr", 2, **_variant_hparams(table, v))
            counts[(name, v["label"])] = count_parameters(model)
    assert counts[("cran-table1", "RB [36]")] == counts[("cran-table3", "Baseline [36]")] == 1_369_883
    assert counts[("cran-table1", "RCAB [64]")] == 1_379_163
    assert counts[("cran-table1", "CRAB (w/o CDRR)")] == 1_374_715
    assert counts[("cran-table1", "CRAB")] == counts[("cran-table2", "F_A1 + F_A2 + F_C1")] == 1_899_003
    assert counts[("cran-table2", "F_A2")] == 1_897_051
    assert counts[("cran-table2", "F_A1 + F_C1")] == 1_897_563
    assert counts[("cran-table2", "F_A1 + F_A2")] == 1_898_491
    assert {counts[("cran-table3", p)] for p in ("1-st", "4-th", "8-th", "16-th")} == {1_402_953}


def _paper_rows(text: str, caption: str) -> dict[tuple[str, int], list[list[float]]]:
    """(label, scale) -> [[PSNR, SSIM] per dataset] from the result table whose caption starts with ``caption``."""
    end = text.index(caption)
    start = max(text.rfind("\nMethod\t", 0, end), 0)
    rows = {}
    for line in text[start:end].splitlines():
        parts = line.split("\t")
        scale = re.search(r"(\d)", parts[1]) if len(parts) > 2 else None
        if scale is None:
            continue
        cells = [c for part in parts[2:] for c in part.split("/")]
        rows[(parts[0], int(scale.group(1)))] = [[float(a), float(b)] for a, b in zip(cells[::2], cells[1::2])]
    return rows


@pytest.mark.parametrize("name", EVALUATIONS)
def test_evaluation_figures_are_the_papers(name, shared):
    caption, scales = EVALUATIONS[name]
    table = _table(name)
    assert table["name"] == name and table["kind"] == "evaluation" and table["table"] == caption
    assert table["scales"] == scales
    assert table["datasets"] == ["Set5", "Set14", "B100", "Urban100", "Manga109"]
    rows = _paper_rows((shared / "papers" / "cran.md").read_text(encoding="utf-8"), caption + ".")
    for row in table["rows"]:
        get_info(row["model"])  # a registry name
        assert sorted(row["paper"]) == scales
        for scale, cells in row["paper"].items():
            assert [cells[d] for d in table["datasets"]] == rows[(row["label"], scale)], (row["label"], scale)
    plus = [r for r in table["rows"] if r.get("self_ensemble")]
    assert [r["label"] for r in plus] == ["CRAN+ (ours)"] and plus[0]["model"] == "cran"


def test_ablation_figures_are_the_papers(shared):
    text = (shared / "papers" / "cran.md").read_text(encoding="utf-8")
    for name, caption in (("cran-table1", "Table 1."), ("cran-table2", "Table 2."), ("cran-table3", "Table 3.")):
        block = text[:text.index(caption)]
        line = [ln for ln in block.splitlines() if ln.startswith("PSNR (dB)")][-1]
        printed = [float(v) for v in line.split("\t")[1:] if v]
        assert [v["paper"]["psnr"]["DIV2K:801-810"] for v in _table(name)["variants"]] == printed, name


# ---------------------------------------------------------------- the network

def test_default_is_the_edsr_baseline_with_the_same_seeded_weights():
    torch.manual_seed(3)
    edsr = sisr.create_model("edsr-baseline", scale=2)
    torch.manual_seed(3)
    ours = sisr.create_model("cran-edsr", scale=2)
    assert ours.block_kinds == ("rb",) * 16
    a, b = edsr.state_dict(), ours.state_dict()
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)
    assert get_info("cran-edsr").reference.params == {2: EDSR_BASELINE_X2}


@pytest.mark.parametrize("hp, kinds", [
    ({"block": "rcab"}, ["rcab"] * 16),
    ({"block": "crab"}, ["crab"] * 16),
    ({"crab_at": [4]}, ["rb"] * 3 + ["crab"] + ["rb"] * 12),
    ({"crab_at": 16}, ["rb"] * 15 + ["crab"]),
    ({"block": "rcab", "crab_at": [1, 8]}, ["crab"] + ["rcab"] * 6 + ["crab"] + ["rcab"] * 8),
])
def test_blocks_at_each_position(hp, kinds):
    model = sisr.create_model("cran-edsr", 2, **get_info("cran-edsr").tiny, **hp)
    classes = {"rb": ResBlock, "rcab": RCAB, "crab": CRAB}
    assert list(model.block_kinds) == kinds
    assert [type(m) for m in model.body[:16]] == [classes[k] for k in kinds]
    assert isinstance(model.body[16], torch.nn.Conv2d) and len(model.body) == 17


def test_crab_in_place_of_an_rb_keeps_the_rb_layout():
    """A CRAB is the RB with its two convs replaced by CRACs (eq. 6): same positions in the block."""
    model = sisr.create_model("cran-edsr", 2, crab_at=[2])
    rb, crab = model.body[0], model.body[1]
    assert [type(m) for m in crab.body] == [CRAC, torch.nn.ReLU, CRAC]
    assert [type(m) for m in rb.body] == [torch.nn.Conv2d, torch.nn.ReLU, torch.nn.Conv2d]
    assert crab.body[0].weight.shape == rb.body[0].weight.shape and crab.body[2].bias.shape == rb.body[2].bias.shape


def _reference_mask(crac: CRAC, x: torch.Tensor) -> torch.Tensor:
    """F_A of eq. 1-4 (paper orientation), each part skipped when its switch is off."""
    k, g, n = crac.kernel_size, crac.ci_groups, x.shape[0]
    f_c = F.adaptive_avg_pool2d(x, k).reshape(n, crac.in_channels, k * k) @ crac.encode.weight.T  # (N, c_in, e)
    f_star = f_c
    if crac.cdrr is not None:
        emb1, emb2 = f_c.transpose(1, 2) @ crac.cdrr.varphi.weight.T, f_c.transpose(1, 2) @ crac.cdrr.phi.weight.T
        r = emb1 @ emb2.transpose(1, 2)  # eq. 1, (N, e, e)
        gate = torch.sigmoid((r @ f_c.transpose(1, 2) @ crac.cdrr.gcn.weight.T @ crac.cdrr.residual.weight.T))
        f_star = gate.transpose(1, 2) * f_c + f_c  # eq. 2
    logit = torch.zeros(n, crac.out_channels, crac.in_channels, k * k, dtype=x.dtype)
    if crac.spatial_out is not None:
        f_ci = f_star
        if crac.channel_interaction is not None:
            f_ci = (f_star.transpose(1, 2) @ torch.block_diag(*[crac.channel_interaction.weight.T] * g)).transpose(1, 2)
        logit = logit + (f_ci @ crac.spatial_out.weight.T)[:, :, None]  # F_A1 over the output channels
    if crac.spatial_in is not None:
        logit = logit + (f_star @ crac.spatial_in.weight.T)[:, None]  # F_A2 over the input channels
    return torch.sigmoid(logit).view(n, crac.out_channels, crac.in_channels, k, k)


@pytest.mark.parametrize("off", [{}, {"cdrr": False}, {"spatial_in": False},
                                 {"channel_interaction": False},
                                 {"spatial_out": False, "channel_interaction": False}])
def test_switched_mask_follows_the_equations_without_the_part(off):
    torch.manual_seed(0)
    crac = CRAC(16, 16, 3, ci_groups=4, descriptor_norm="none", **off).double()
    x = torch.randn(2, 16, 7, 9, dtype=torch.double)
    with torch.no_grad():
        mask = crac.mask(x)
        torch.testing.assert_close(mask, _reference_mask(crac, x), atol=1e-12, rtol=1e-10)
        out = crac(x)
    for i in range(2):  # the switched CRAC is still a convolution with each sample's masked kernel
        torch.testing.assert_close(out[i:i + 1], F.conv2d(x[i:i + 1], crac.weight * mask[i], crac.bias, padding=1))
    if off.get("spatial_in") is False:
        assert torch.equal(mask, mask[:, :, :1].expand_as(mask))  # one value per output channel
    if off.get("spatial_out") is False:
        assert torch.equal(mask, mask[:, :1].expand_as(mask))  # one value per input channel


@pytest.mark.parametrize("off", [{"cdrr": False}, {"spatial_in": False}, {"channel_interaction": False},
                                 {"spatial_out": False, "channel_interaction": False}])
def test_switches_remove_their_modules_and_parameters(off):
    full, switched = CRAC(C, C, 3), CRAC(C, C, 3, **off)
    assert count_parameters(full) == _crac_params() == 53_463
    assert count_parameters(switched) == _crac_params(**off)
    for part in off:
        assert getattr(switched, part) is None and not any(k.startswith(part) for k in switched.state_dict())
    assert "off=" in repr(switched)
    kept = {k for k in full.state_dict() if k.split(".")[0] not in off}
    assert set(switched.state_dict()) == kept


@pytest.mark.parametrize("hp, message", [
    ({"block": "crab", "spatial_out": False}, "set channel_interaction=False when spatial_out=False"),
    ({"block": "crab", "spatial_out": False, "spatial_in": False, "channel_interaction": False},
     "without both the mask is constant"),
    ({"cdrr": False}, "cdrr switched off but no block is a CRAB"),
    ({"block": "dense"}, "block must be one of rb, rcab, crab"),
    ({"crab_at": [0]}, r"positions in 1..16"),
    ({"crab_at": [17]}, r"positions in 1..16"),
    ({"crab_at": [3, 3]}, "distinct positions"),
    ({"crab_at": [True]}, "list of block positions"),
    ({"crab_at": "4"}, "list of block positions"),
    ({"n_resblocks": 0}, "n_resblocks >= 1"),
    ({"block": "rcab", "reduction": 128}, "reduction must be in 1..n_feats=64"),
    ({"block": "crab", "n_feats": 24}, "divisible by ci_groups=16"),
])
def test_bad_hyper_parameters_are_one_line_errors(hp, message):
    with pytest.raises(ModelError, match=message) as err:
        sisr.create_model("cran-edsr", 2, **hp)
    assert "\n" not in str(err.value)


def test_crac_without_channel_interaction_needs_equal_widths():
    with pytest.raises(ModelError, match="in_channels == out_channels, got 16->8"):
        CRAC(16, 8, 3, ci_groups=4, channel_interaction=False)


def test_cran_defaults_unchanged():
    """The switches default to the paper's CRAC: cran's parameter count and layout are today's."""
    crac = sisr.create_model("cran", 2).body[0].body[19].body[0]
    assert all(getattr(crac, p) is not None for p in CRAC_EXTRAS)
    assert count_parameters(sisr.create_model("cran", 2)) == 15_659_367
