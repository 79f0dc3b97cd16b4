"""EACRN's ablation variants (Table 1: cross residual learning in the CRG / CRB, EM attention) and the
experiment definitions that use them."""

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
from sisr.models.eacrn import CrossResidualBlock, CrossResidualGroup, EMAttention

TABLES = Path(sisr.__file__).resolve().parent / "experiments" / "tables"
C = 64
EM_UNIT = 2 * (C * C + C)  # conv1 + conv2, 1x1 with bias: 8,320
FULL = {2: 15_361_947, 4: 15_509_659}  # docs/models/eacrn.md; Table 3 prints 15.4M for the full model


def _table(name: str) -> dict:
    return yaml.safe_load((TABLES / f"{name}.yaml").read_text(encoding="utf-8"))


def _variant_hparams(table: dict, variant: dict, tiny: bool = False) -> dict:
    """The schema's merge: base < tiny < variant, except that tiny's width/depth keys win."""
    small = dict(get_info(table["model"]).tiny) if tiny else {}
    return {**table.get("hparams", {}), **small, **variant.get("hparams", {}), **small}


def _record(module, store, key):
    def hook(mod, inputs, output):
        store[key] = (inputs[0].detach().clone(), output.detach().clone())
    return module.register_forward_hook(hook)


# ---------------------------------------------------------------- experiment definition

def test_table1_definition_has_the_five_printed_cells():
    table = _table("eacrn-table1")
    assert table["name"] == "eacrn-table1" and table["kind"] == "ablation" and table["paper"] == "eacrn"
    assert table["model"] == "eacrn" and table["recipe"] == "eacrn" and table["scale"] == 4
    assert table["eval"] == {"datasets": ["Set5"], "metrics": ["psnr"]}
    assert table["train"]["val.set"] != "Set5"  # the paper picks its best on Set5; we do not select on a test set
    switches = [(hp.get("cross_group", True), hp.get("cross_block", True), hp.get("ema_placement", "block"))
                for hp in (_variant_hparams(table, v) for v in table["variants"])]
    # the ticks as printed: none; CRG + CRB; CRG + EMA; CRG + CRB + EMA; CRG
    assert switches == [(False, False, "none"), (True, True, "none"), (True, False, "block"),
                        (True, True, "block"), (True, False, "none")]
    assert [v["paper"] for v in table["variants"]] == [{"psnr": {"Set5": p}} for p in
                                                      (31.23, 31.45, 31.87, 32.16, 32.23)]


def test_table1_figures_are_the_papers(shared):
    text = (shared / "papers" / "eacrn.md").read_text(encoding="utf-8")
    line = next(ln for ln in text.splitlines() if ln.startswith("PSNR\t"))
    printed = [float(v) for v in line.split("\t")[1:] if v]
    assert [v["paper"]["psnr"]["Set5"] for v in _table("eacrn-table1")["variants"]] == printed


def test_every_cell_builds_at_full_size_with_the_documented_count():
    table = _table("eacrn-table1")
    for variant in table["variants"]:
        hp = _variant_hparams(table, variant)
        for scale in (2, 4):
            model = sisr.create_model("eacrn", scale, **hp)
            units = 0 if hp.get("ema_placement") == "none" else 40
            assert count_parameters(model) == FULL[scale] - (40 - units) * EM_UNIT, (variant["label"], scale)
            assert sum(isinstance(m, EMAttention) for m in model.modules()) == units
    assert FULL[4] - 40 * EM_UNIT == 15_176_859 and FULL[2] - 40 * EM_UNIT == 15_029_147


def test_every_cell_runs_forward_and_backward_at_the_tiny_size():
    table = _table("eacrn-table1")
    for variant in table["variants"]:
        torch.manual_seed(0)
        model = sisr.create_model("eacrn", table["scale"], **_variant_hparams(table, variant, tiny=True))
        x = torch.rand(2, 3, 11, 13, requires_grad=True)
        y = model(x)
        assert y.shape == (2, 3, 44, 52) and torch.isfinite(y).all(), variant["label"]
        y.abs().mean().backward()
        assert torch.isfinite(x.grad).all()
        for pname, p in model.named_parameters():
            if p.requires_grad:
                assert p.grad is not None and torch.isfinite(p.grad).all(), f"{variant['label']}: {pname}"


# ---------------------------------------------------------------- what each "without" does

def test_crg_without_cross_residual_learning_fuses_the_two_path_ends():
    torch.manual_seed(7)
    group = CrossResidualGroup(8, n_blocks=4, em_bases=4, ema_placement="none", cross_group=False).eval()
    io: dict = {}
    handles = [_record(b, io, i) for i, b in enumerate(group.blocks)] + [_record(group.fuse, io, "fuse")]
    x = torch.randn(2, 8, 6, 7)
    with torch.no_grad():
        out = group(x)
    for h in handles:
        h.remove()
    assert torch.equal(io[0][0], x) and torch.equal(io[1][0], x)  # the two paths as in eq. 5-8
    assert torch.equal(io[2][0], io[0][1]) and torch.equal(io[3][0], io[1][1])
    assert torch.equal(io["fuse"][0], torch.cat([io[2][1], io[3][1]], dim=1))  # [F3, F4]: no cross sums
    assert torch.equal(out, io["fuse"][1]) and group.ema is None


def test_crb_without_cross_residual_learning_fuses_the_branch_ends_and_keeps_its_shortcut():
    torch.manual_seed(8)
    block = CrossResidualBlock(8, cross=False).eval()
    seen: dict = {}
    handles = [_record(getattr(block, n), seen, n) for n in ("head1", "head2", "ms3", "ms5", "fuse")]
    x = torch.randn(1, 8, 9, 10)
    with torch.no_grad():
        out = block(x)
    for h in handles:
        h.remove()
    b1, b2 = F.relu(seen["head1"][1]), F.relu(seen["head2"][1])
    torch.testing.assert_close(seen["ms3"][0], b1)
    torch.testing.assert_close(seen["ms5"][0], b2)
    b3, b4 = F.relu(seen["ms3"][1]), F.relu(seen["ms5"][1])
    torch.testing.assert_close(seen["fuse"][0], torch.cat([b3, b4], dim=1))
    torch.testing.assert_close(out, x + seen["fuse"][1])


def test_switches_keep_every_weight_so_the_cells_share_a_layout():
    torch.manual_seed(0)
    tiny = get_info("eacrn").tiny
    full = sisr.create_model("eacrn", 2, **tiny).eval()
    crossless = sisr.create_model("eacrn", 2, **tiny, cross_group=False, cross_block=False).eval()
    assert list(full.state_dict()) == list(crossless.state_dict())
    crossless.load_state_dict(full.state_dict())
    x = torch.rand(1, 3, 8, 9)
    with torch.no_grad():
        assert not torch.allclose(full(x), crossless(x))  # same weights, other wiring
    no_ema = sisr.create_model("eacrn", 2, **tiny, ema_placement="none")
    assert set(no_ema.state_dict()) == {k for k in full.state_dict() if ".ema." not in k}


def test_defaults_are_the_full_model():
    info = get_info("eacrn")
    assert info.defaults["cross_group"] is True and info.defaults["cross_block"] is True
    assert info.defaults["ema_placement"] == "block"
    assert count_parameters(sisr.create_model("eacrn", 2)) == FULL[2]


def test_bad_placement_is_a_clear_error():
    with pytest.raises(ModelError, match="ema_placement must be one of block, group, none"):
        sisr.create_model("eacrn", 2, ema_placement="off")


# ---------------------------------------------------------------- the main table

def _printed_rows(text: str) -> dict[tuple[str, int], dict[str, list[float]]]:
    """(label, scale) -> dataset -> [PSNR, SSIM] of Table 2 (cells that are not two figures left out)."""
    datasets = ["Set5", "Set14", "B100", "Urban100", "Manga109"]
    block = text[text.index("Table 2. Quantitative comparisons"):text.index("MBASE is obtained")]
    rows = {}
    for line in block.splitlines():
        parts = line.split("\t")
        if len(parts) != 7 or not re.fullmatch(r"\d", parts[1]):
            continue
        cells = {}
        for dataset, cell in zip(datasets, parts[2:]):
            figures = cell.split("/")
            if len(figures) == 2:
                cells[dataset] = [float(figures[0]), float(figures[1])]
        rows[(parts[0], int(parts[1]))] = cells
    return rows


def test_bi_table_figures_are_the_papers(shared):
    table = _table("eacrn-bi")
    assert table["name"] == "eacrn-bi" and table["kind"] == "evaluation" and table["table"] == "Table 2"
    assert table["degradation"] == "BI" and table["scales"] == [2, 3, 4]
    printed = _printed_rows((shared / "papers" / "eacrn.md").read_text(encoding="utf-8"))
    assert [r["label"] for r in table["rows"]] == ["Bicubic", "EDSR", "RCAN", "EACRN"]
    for row in table["rows"]:
        get_info(row["model"])
        assert sorted(row["paper"]) == [2, 3, 4]
        for scale, cells in row["paper"].items():
            assert cells == printed[(row["label"], scale)], (row["label"], scale)
    assert "B100" not in table["rows"][0]["paper"][2]  # printed as the word "SSIM"
