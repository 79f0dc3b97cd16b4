"""sisr.evaluation.inspect and `sisr inspect`: the DeFiAN / CSNLN maps (shapes, finiteness, equality with what the
network computes), the figures (PNG, atomic, never overwritten unless asked) and one-line errors; the plot helpers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import sisr
from sisr.cli import main
from sisr.data.io import write_image
from sisr.errors import ConfigError, ModelError
from sisr.evaluation import inspect as ins
from sisr.models import get_info
from sisr.models.cran import CRAC
from sisr.models.csnln import CrossScaleAttention, NonLocalAttention
from sisr.models.defian import DiEnDec, SingleModule
from sisr.utils.fs import OutputExistsError
from sisr.utils.plot import colormap_lut, fit_tile, heatmap, tile_grid
from sisr.weights import save_weights


def tiny(name: str, scale: int = 2, **overrides) -> torch.nn.Module:
    torch.manual_seed(0)
    return sisr.create_model(name, scale=scale, **{**get_info(name).tiny, **overrides}).eval()


def image(h: int = 13, w: int = 11, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def capture(modules, fn):
    """Forward hooks calling ``fn`` (whose result is dropped: a hook returning a value replaces the output)."""
    handles = [m.register_forward_hook(lambda *a: None if fn(*a) is None else None) for m in modules]
    return lambda: [h.remove() for h in handles]


# DeFiAN


def test_defian_maps_have_the_documented_shapes_and_are_finite(one_thread):
    net = tiny("defian-s")  # 2 DeFiAMs, 16 channels
    maps = ins.defian_maps(net, ins.image_batch(image()))
    assert maps.kernels == (3, 5, 7)
    assert maps.hessian.shape == (2, 3, 13, 11) and maps.attention.shape == (2, 13, 11)
    assert maps.endec_module == 1  # the third DeFiAM (the paper's Fig. 13), or the last of fewer
    assert [f.shape[0] for _, f in maps.endec] == [3, 6, 12, 24, 12, 6, 3, 1]
    assert [label for label, _ in maps.endec][:2] == ["input: lambda maps", "encoder 1 (dilation 1)"]
    assert all(f.shape[1:] == (13, 11) for _, f in maps.endec)
    for arr in [maps.hessian, maps.attention] + [f for _, f in maps.endec]:
        assert arr.dtype == np.float32 and np.isfinite(arr).all()
    assert ((maps.attention > 0) & (maps.attention < 1)).all()
    full = ins.defian_maps(net, ins.image_batch(image()), ("attention",), channel_mean=False)
    assert full.attention.shape == (2, 16, 13, 11) and full.hessian is None and full.endec == []
    np.testing.assert_allclose(full.attention.mean(axis=1), maps.attention, rtol=1e-6)


def test_hessian_maps_equal_what_the_network_feeds_its_diendec(one_thread):
    net = tiny("defian-s")
    fed = []
    remove = capture([m for m in net.modules() if isinstance(m, DiEnDec)], lambda m, i, o: fed.append(i[0].clone()))
    maps = ins.defian_maps(net, ins.image_batch(image()), ("hessian",))
    remove()
    assert len(fed) == 2 and maps.hessian.std() > 0
    for ours, theirs in zip(maps.hessian, fed):  # MSHF.forward (the paper's formula) vs MSHF.channel_mean
        np.testing.assert_allclose(ours, theirs[0].numpy(), rtol=1e-5, atol=1e-5 * float(theirs.abs().max()))


def test_attention_is_the_gate_that_rebuilds_each_module_output(one_thread):
    net = tiny("defian-s")
    seen = {}
    modules = [m for m in net.modules() if isinstance(m, SingleModule)]
    removes = [capture([m.body_block], lambda mod, i, o, k=k: seen.setdefault(("resin", k), o.clone()))
               for k, m in enumerate(modules)]
    removes += [capture([m], lambda mod, i, o, k=k: seen.setdefault(("io", k), (i[0].clone(), o.clone())))
                for k, m in enumerate(modules)]
    maps = ins.defian_maps(net, ins.image_batch(image()), ("attention",), channel_mean=False)
    for remove in removes:
        remove()
    for k in range(2):
        x, y = seen[("io", k)]
        rebuilt = x + seen[("resin", k)] * torch.from_numpy(maps.attention[k])[None]
        torch.testing.assert_close(rebuilt, y, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("variant, expect", [
    ({"dac": False}, ("hessian", "attention", "endec")),
    ({"endec_depth": 0}, ("hessian", "attention")),
    ({"endec_depth": 0, "dac": False}, ("hessian", "attention")),
    ({"mshf": False}, ("attention", "endec")),
    ({"mshf": False, "endec_depth": 0, "dac": False}, ("attention",)),
    ({"attention": False}, ("attention",)),
    ({"mshf_kernels": [5]}, ("hessian", "attention", "endec")),
    ({"endec": "hgendec", "endec_depth": 2}, ("hessian", "attention", "endec")),
])
def test_ablation_variants_give_their_maps(variant, expect, one_thread):
    net = tiny("defian-s", **variant)  # the variants of paper Tables III-V (Fig. 10 shows their attention)
    assert ins.available(net) == expect
    maps = ins.defian_maps(net, ins.image_batch(image()), expect)  # the gate check passes for every variant
    assert maps.attention.shape == (2, 13, 11) and np.isfinite(maps.attention).all()
    if not ins.available(net)[1:]:  # no attention branch: a = 1 (paper Fig. 10(a))
        assert (maps.attention == 1).all()
    if "hessian" in expect:
        assert maps.hessian.shape == (2, len(maps.kernels), 13, 11)
    assert all(np.isfinite(f).all() for _, f in maps.endec)


def test_a_module_gated_otherwise_is_an_error_not_a_wrong_map(one_thread):
    net = tiny("defian-s")
    first = next(m for m in net.modules() if isinstance(m, SingleModule))
    first.register_forward_hook(lambda m, i, o: o * 1.01)  # runs before the probe's hook: another gate
    with pytest.raises(ModelError, match="DeFiAM 1: its output is not x \\+ resin"):
        ins.defian_maps(net, ins.image_batch(image()), ("attention",))


def test_shipped_defian_s_maps(one_thread):
    net = sisr.load_model("defian-s", scale=2)
    maps = ins.defian_maps(net, ins.image_batch(image(24, 20)))
    assert maps.hessian.shape == (5, 3, 24, 20) and maps.attention.shape == (5, 24, 20)
    assert maps.endec_module == 2 and np.isfinite(maps.hessian).all() and np.isfinite(maps.attention).all()


# CSNLN


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_correlation_weights_rebuild_each_attention_output(scale, one_thread):
    net = tiny("csnln", scale)
    seen = []
    remove = capture([m for m in net.modules() if isinstance(m, (CrossScaleAttention, NonLocalAttention))],
                     lambda m, i, o: seen.append((m, i[0].clone(), o.clone())))
    with torch.no_grad():
        net(ins.image_batch(image(12, 12)))
        remove()
        assert len(seen) == (8 if scale == 4 else 4)  # depth 2 x (CS + IS) x stages
        for module, x, out in seen:
            n, c, h, w = x.shape
            if isinstance(module, NonLocalAttention):
                weights = ins.nonlocal_weights(module, x)  # (n, hw, hw)
                values = module.conv_assembly(x).flatten(2).transpose(1, 2)
                rebuilt = torch.bmm(weights, values).transpose(1, 2).reshape(out.shape)
            else:  # the authors' formulation: transposed conv of the weights with the 3s x 3s value patches, / 6
                s, big = module.scale, 3 * module.scale
                weights = ins.cross_scale_weights(module, x)  # (n, hw, L)
                raw = F.unfold(F.pad(module.conv_assembly(x), (s, s, s, s)), big, stride=s)
                raw = raw.view(n, c, big, big, -1).permute(0, 4, 1, 2, 3)
                rebuilt = torch.cat([F.conv_transpose2d(weights[i].T.reshape(1, -1, h, w), raw[i], stride=s,
                                                        padding=s) / 6 for i in range(n)])
            torch.testing.assert_close(rebuilt, out, rtol=1e-5, atol=1e-6)


def test_correlation_maps_shapes_stages_and_query(one_thread):
    maps = ins.correlation_maps(tiny("csnln", 2), ins.image_batch(image(13, 11)), (4, 7))
    assert len(maps) == 1 and maps[0].factor == 2 and maps[0].query == (4, 7)
    assert [m.shape for m in maps[0].in_scale] == [(14, 12)] * 2  # padded to a multiple of 2
    assert [m.shape for m in maps[0].cross_scale] == [(7, 6)] * 2
    for m in maps[0].in_scale + maps[0].cross_scale:
        assert np.isfinite(m).all() and (m >= 0).all() and abs(m.sum() - 1) < 1e-4  # softmax weights
    x4 = ins.correlation_maps(tiny("csnln", 4), ins.image_batch(image(12, 10)), (3, 5))
    assert [(s.factor, s.resolution, s.query) for s in x4] == [(2, 1, (3, 5)), (2, 2, (6, 10))]
    assert x4[1].in_scale[0].shape == (24, 20) and x4[1].cross_scale[0].shape == (12, 10)


def test_query_outside_the_image_is_an_error():
    with pytest.raises(ConfigError, match=r"--query 11,3: outside the image \(11x13: X 0..10, Y 0..12\)"):
        ins.correlation_maps(tiny("csnln"), ins.image_batch(image(13, 11)), (11, 3))
    for bad in ("40", "4,x", "-1,2", "1,2,3"):
        with pytest.raises(ConfigError, match="expected X,Y"):
            ins.parse_query(bad)
    assert ins.parse_query("40, 60") == (40, 60)


def test_what_is_checked_against_the_network():
    assert ins.parse_what("hessian,attention") == ("hessian", "attention")
    assert ins.parse_what("all", tiny("defian-s")) == ("hessian", "attention", "endec")
    assert ins.parse_what("all", tiny("csnln")) == ("correlation",)
    with pytest.raises(ConfigError, match="--what 'heat': unknown; choose from hessian, attention, endec, "):
        ins.parse_what("heat")
    with pytest.raises(ConfigError, match="--what hessian: needs a DeFiAN model .*it has: correlation"):
        ins.parse_what("hessian", tiny("csnln"))
    with pytest.raises(ConfigError, match="--what all: this network has no DeFiAM"):
        ins.parse_what("all", tiny("edsr-baseline"))


# Figures and files


def test_figures_are_written_atomically_and_never_replaced_unless_asked(tmp_path, one_thread):
    figures = ins.render(tiny("defian-s"), image(), ins.DEFIAN_WHATS, label="tiny")
    assert list(figures) == ["hessian", "attention", "endec"]
    paths = ins.write_figures(figures, tmp_path / "figs", "x")
    assert [p.name for p in paths] == ["x-hessian.png", "x-attention.png", "x-endec.png"]
    for path in paths:
        with Image.open(path) as im:
            assert im.format == "PNG" and im.width > 100 and im.height > 100
    before = paths[1].read_bytes()
    with pytest.raises(OutputExistsError, match="x-attention.png: already exists"):
        ins.write_figures({"correlation": figures["hessian"], "attention": figures["hessian"]}, tmp_path / "figs",
                          "x")
    assert paths[1].read_bytes() == before and not (tmp_path / "figs" / "x-correlation.png").exists()  # none written
    ins.write_figures({"attention": figures["hessian"]}, tmp_path / "figs", "x", overwrite=True)
    assert paths[1].read_bytes() != before
    assert not [p for p in (tmp_path / "figs").iterdir() if p.name.startswith(".")]  # no temporary left


def test_correlation_figure(tmp_path, one_thread):
    figures = ins.render(tiny("csnln", 4), image(10, 12), ("correlation",), query=(2, 3), label="tiny")
    assert figures["correlation"].width > 3 * 48  # input + 2 steps of at least 48 px
    assert ins.write_figures(figures, tmp_path, "x")[0].name == "x-correlation.png"


@pytest.fixture()
def files(tmp_path):
    img = write_image(tmp_path / "lr.png", image(14, 12))
    defian = save_weights(tiny("defian-s"), tmp_path / "defian.safetensors", model="defian-s", scale=2,
                          hparams=get_info("defian-s").tiny)
    csnln = save_weights(tiny("csnln"), tmp_path / "csnln.safetensors", model="csnln", scale=2,
                         hparams=get_info("csnln").tiny)
    return img, defian, csnln


def test_cli_writes_every_figure_the_network_has(files, tmp_path, capsys, one_thread):
    img, defian, csnln = files
    out = tmp_path / "figs"
    assert main(["inspect", "--weights", str(defian), "--image", str(img), "-o", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["lr-attention.png", "lr-endec.png", "lr-hessian.png"]
    assert capsys.readouterr().out.split() == [str(out / f"lr-{w}.png") for w in ins.DEFIAN_WHATS]
    assert main(["inspect", "--model", "csnln", "--weights", str(csnln), "--image", str(img), "--what",
                 "correlation", "--query", "3,4", "-o", str(out)]) == 0
    assert (out / "lr-correlation.png").is_file()
    assert main(["inspect", "--weights", str(defian), "--image", str(img), "--what", "endec", "--module", "1",
                 "-o", str(out), "--overwrite"]) == 0


@pytest.mark.parametrize("options, message", [
    (["--what", "heat"], "--what 'heat': unknown; choose from hessian, attention, endec, correlation, diversity or all"),
    (["--what", "correlation"], "--what correlation: needs a CSNLN model with those modules (it has: hessian, "),
    (["--query", "40"], "--query '40': expected X,Y (pixel column and row of the input image, from 0)"),
    (["--what", "attention", "--query", "1,1"], "--query applies to --what correlation"),
    (["--module", "3", "--what", "endec"], "--module 3: the network has DeFiAMs 1..2"),
    (["--image", "missing.png"], "missing.png: "),
    (["--images", "."], "give --image FILE (the maps of one image) or --images FOLDER"),
    (["--what", "diversity"], "--what diversity: needs a CRAN-family model with those modules (it has: "),
])
def test_cli_errors_are_one_line(files, tmp_path, capsys, options, message, monkeypatch):
    img, defian, _ = files
    monkeypatch.chdir(tmp_path)
    args = ["inspect", "--weights", str(defian), "--image", str(img), "-o", str(tmp_path / "out"), *options]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("sisr inspect: error: ") and message in err
    assert not (tmp_path / "out").exists()


def test_cli_query_outside_and_existing_outputs(files, tmp_path, capsys, one_thread):
    img, _, csnln = files
    base = ["inspect", "--weights", str(csnln), "--image", str(img), "-o", str(tmp_path)]
    assert main(base + ["--query", "12,0"]) == 1
    assert f"--query 12,0: outside {img} (12x14: X 0..11, Y 0..13)" in capsys.readouterr().err
    (tmp_path / "lr-correlation.png").write_bytes(b"keep")
    assert main(base) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "lr-correlation.png: already exists (use --overwrite to replace it)" in err
    assert (tmp_path / "lr-correlation.png").read_bytes() == b"keep"
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    assert main(["inspect", "--weights", str(csnln), "--image", str(bad), "-o", str(tmp_path)]) == 1
    assert capsys.readouterr().err.count("\n") == 1


# CRAN


def test_mask_distances_are_each_cracs_distance_from_all_ones(one_thread):
    """Fig. 8: ||F_A - 1|| per image and CRAC, from the mask the layer applies; a mask of ones is at 0."""
    net = tiny("cran")
    cracs = [m for m in net.modules() if isinstance(m, CRAC)]
    xs = [ins.image_batch(image(12, 10, seed)) for seed in range(3)]
    seen = []
    undo = capture(cracs, lambda m, inputs, out: seen.append(float((m.mask(inputs[0]) - 1).norm())))
    for x in xs:
        with torch.no_grad():
            net(x)
    undo()
    names, distances = ins.mask_distances(net, xs)
    assert len(names) == len(cracs) and distances.shape == (3, len(cracs))
    np.testing.assert_allclose(distances.ravel(), seen, rtol=1e-6)
    assert np.ptp(distances[:, 0]) > 0  # the modulation depends on the input
    cracs[1].mask = lambda x: torch.ones(x.shape[0], 1, 1, 1, 1)  # W* = W: no modulation
    assert np.all(ins.mask_distances(net, xs)[1][:, 1] == 0)
    with pytest.raises(ModelError, match="no CRAC layers"):
        ins.mask_distances(tiny("defian-s"), xs)


def test_cli_diversity_over_a_folder(tmp_path, capsys, one_thread):
    folder = tmp_path / "set"
    for seed in range(4):
        write_image(folder / f"{seed}.png", image(12, 10, seed))
    cran = save_weights(tiny("cran"), tmp_path / "cran.safetensors", model="cran", scale=2,
                        hparams=get_info("cran").tiny)
    out = tmp_path / "figs"
    assert main(["inspect", "--weights", str(cran), "--images", str(folder), "--limit", "3", "-o", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == str(out / "set-diversity.png") and Image.open(out / "set-diversity.png").size == (800, 480)
    assert ", 3 images: mean distance per image" in lines[1]
    assert main(["inspect", "--weights", str(cran), "--image", str(folder / "0.png"), "-o", str(out)]) == 1
    assert "CRAN's Fig. 8 is over a set of images; give --images FOLDER" in capsys.readouterr().err
    assert main(["inspect", "--model", "defian-s", "--images", str(folder), "-o", str(out)]) == 1
    assert "--images: only --what diversity" in capsys.readouterr().err


# Plot helpers


def test_heatmap_colours_range_and_non_finite():
    lut = colormap_lut()
    assert lut.shape == (256, 3) and tuple(lut[0]) == (0x44, 0x01, 0x54) and tuple(lut[-1]) == (0xfd, 0xe7, 0x25)
    values = np.array([[0.0, 1.0], [np.nan, 0.5]])
    rgb = np.asarray(heatmap(values))
    assert tuple(rgb[0, 0]) == tuple(lut[0]) and tuple(rgb[0, 1]) == tuple(lut[-1])
    assert tuple(rgb[1, 0]) == (128, 128, 128) and tuple(rgb[1, 1]) == tuple(lut[128])
    assert tuple(np.asarray(heatmap(np.full((2, 2), 3.0)))[0, 0]) == tuple(lut[128])  # constant: middle
    clipped = np.asarray(heatmap(np.array([[0.0, 10.0]]), lo=0, hi=5))
    assert tuple(clipped[0, 1]) == tuple(lut[-1])
    with pytest.raises(ValueError, match="2-D"):
        heatmap(np.zeros(3))


def test_tile_grid_and_fit_tile():
    small = Image.new("RGB", (10, 5), "red")
    assert fit_tile(small, 64).size == (60, 30)  # whole factor 6, nearest
    assert fit_tile(Image.new("RGB", (200, 100)), 64).size == (64, 32)
    grid = tile_grid([[("a", small), ("b", None)], [("c", small)]], title="t", row_labels=["r1", "r2"], note="n",
                     tile_size=64)
    assert grid.mode == "RGB" and grid.width >= 2 * 60 and grid.height >= 2 * 30
    pixels = np.asarray(grid)
    assert (pixels == (255, 0, 0)).all(axis=2).sum() == 2 * 60 * 30  # both tiles, once each
