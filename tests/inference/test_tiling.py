"""Tiling (blended overlapping tiles, fixed and automatic size) and the authors' chop."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import sisr
from sisr.inference import network, tiling
from sisr.inference.forward import run
from sisr.inference.network import InferenceOutOfMemory
from sisr.inference.tiling import tile_starts, tile_window
from sisr.errors import ConfigError

GREY = 1 / 255


def tiny(name: str, scale: int = 2, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return sisr.create_model(name, scale=scale, **sisr.get_info(name).tiny).eval()


@pytest.fixture(scope="module")
def photo(datasets_root):
    """A real LR photo (Set14 'monarch' x2, 256x384 LR): realistic statistics for the global-pooling models."""
    from sisr.data.io import image_to_tensor, read_image

    return image_to_tensor(read_image(datasets_root / "Set14" / "LR_bicubic" / "X2" / "monarchx2.png"))[None]


class Nearest(nn.Module):
    """Nearest-neighbour x s: local with a receptive field of one pixel (no spec: scale is measured)."""

    def __init__(self, scale: int):
        super().__init__()
        self.s = scale
        self.calls: list[tuple[int, int]] = []

    def forward(self, x):
        self.calls.append(tuple(x.shape[-2:]))
        return x.repeat_interleave(self.s, -2).repeat_interleave(self.s, -1)


# ----------------------------------------------------------------------------- geometry


@pytest.mark.parametrize("length,tile,overlap", [(100, 40, 10), (257, 64, 32), (64, 64, 32), (65, 64, 32),
                                                 (500, 128, 0), (31, 100, 8)])
def test_tile_starts_cover_with_enough_overlap(length, tile, overlap):
    starts = tile_starts(length, tile, overlap)
    t = min(tile, length)
    assert starts[0] == 0 and starts[-1] + t == length
    assert starts == sorted(set(starts))
    for a, b in zip(starts, starts[1:]):
        assert a + t - b >= overlap  # neighbours overlap by at least the overlap
    if len(starts) > 1:  # one tile fewer would leave a gap or too little overlap
        assert (len(starts) - 1) * (t - overlap) + overlap < length


def test_tile_windows_sum_to_one_at_the_nominal_overlap():
    ov, n = 24, 80
    left = tile_window(n, False, True, ov)
    right = tile_window(n, True, False, ov)
    total = torch.zeros(2 * n - ov)
    total[:n] += left
    total[n - ov:] += right
    torch.testing.assert_close(total, torch.ones_like(total))
    assert (right[: ov // 4] == 0).all() and (right[ov // 4: ov] > 0).all()


# ----------------------------------------------------------------------------- tiled == whole


def test_local_model_tiles_match_whole_image_to_float_rounding():
    # tiny EDSR: receptive field 7.5 LR pixels < the discarded margin (overlap / 4 = 8)
    model = tiny("edsr-baseline")
    x = torch.rand(2, 3, 150, 110, generator=torch.Generator().manual_seed(1))
    whole = run(model, x)
    tiled = run(model, x, tile=64)  # default overlap 32: 4 x 3 tiles
    assert tiled.shape == whole.shape == (2, 3, 300, 220)
    assert (tiled - whole).abs().max() < 1e-5
    seams = run(model, x, tile=64, tile_overlap=0)
    assert (seams - whole).abs().max() > 10 * GREY  # the test can see seams


@pytest.mark.parametrize("name", ["edsr-baseline", "rcan", "defian-s"])
def test_tiles_match_whole_image_within_one_grey_level(name, photo):
    # 192 x 192 LR tiles (2 x 3 over the 256 x 384 photo) at the default overlap. RCAN and DeFiAN
    # pool statistics over their whole input (channel attention, DAC), so each tile sees different
    # statistics: the difference shrinks with the tile, it is not zero. Smaller tiles and the
    # full-size networks differ more: see "Tiling, chop or the whole image" in docs/usage.md.
    model = tiny(name)
    whole = run(model, photo)
    tiled = run(model, photo, tile=192)
    assert (tiled - whole).abs().max() < GREY
    assert (run(model, photo, tile=192, tile_overlap=0) - whole).abs().max() > 2 * GREY


def test_tiling_a_batch_with_a_short_side_and_a_foreign_module():
    model = Nearest(3)  # no sisr_spec: the scale is measured on a small crop
    x = torch.rand(3, 3, 20, 150)
    out = run(model, x, tile=64, tile_overlap=16)
    torch.testing.assert_close(out, model(x))
    assert all(h == 20 for h, _ in model.calls[1:])  # the short side is never split


def test_global_attention_model_warns_when_tiled_but_not_when_chopped():
    model = tiny("csnln")
    x = torch.rand(1, 3, 24, 20)
    with pytest.warns(UserWarning, match="csnln attends over the whole image"):
        run(model, x, tile=16, tile_overlap=8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run(model, x, chop=True, chop_shave=4, chop_min_size=1000, chop_round_to_scale=True)
        run(model, x, tile=64, tile_overlap=8)  # one tile: nothing changes, no warning


@pytest.mark.parametrize("kwargs,match", [
    ({"tile": 40}, "at least twice"),
    ({"tile": "big"}, "'auto'"),
    ({"tile": 64, "tile_overlap": -1}, "overlap must be >= 0"),
    ({"tile": 64, "chop": True}, "not both"),
])
def test_bad_tile_options_are_clear_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        run(Nearest(2), torch.rand(1, 3, 8, 8), **kwargs)


# ----------------------------------------------------------------------------- automatic tile size


def test_estimate_memory_sees_linear_and_quadratic_costs():
    runner = network.Runner(tiny("edsr-baseline"), torch.device("cpu"))
    with torch.inference_mode():
        linear, quadratic = tiling.estimate_memory(runner)
    assert linear > 8 * 4 and quadratic == 0  # at least one 8-channel float map per pixel

    class Attention(nn.Module):  # all pixel pairs: an (HW x HW) score matrix
        def forward(self, x):
            f = x.flatten(2)
            a = torch.softmax(f.transpose(1, 2) @ f, -1)
            return (f @ a).view_as(x).repeat_interleave(2, -1).repeat_interleave(2, -2)

    runner = network.Runner(Attention(), torch.device("cpu"))
    with torch.inference_mode():
        linear, quadratic = tiling.estimate_memory(runner)
    assert quadratic >= 4  # at least one float32 score per pixel pair


def test_auto_tile_fits_the_free_memory_and_matches_whole(monkeypatch):
    model = tiny("edsr-baseline")
    x = torch.rand(1, 3, 150, 120)
    whole = run(model, x)
    calls = []
    model.register_forward_pre_hook(lambda m, a: calls.append(tuple(a[0].shape[-2:])))
    run(model, x, tile="auto")  # plenty of memory: one pass over the whole image (after the probes)
    assert calls[-1] == (150, 120)
    calls.clear()
    monkeypatch.setattr(tiling, "free_memory", lambda device: 12_000_000)
    auto = run(model, x, tile="auto")
    tiles = [c for c in calls if c not in ((16, 16), (32, 32))]
    assert len(tiles) > 1 and max(max(c) for c in tiles) < 150
    assert (auto - whole).abs().max() < 1e-5


def test_auto_tile_halves_after_out_of_memory(monkeypatch):
    class Fussy(Nearest):  # fails like the CPU allocator above 48 x 48 pixels
        def forward(self, x):
            if x.shape[-1] * x.shape[-2] > 48 * 48:
                raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory")
            return super().forward(x)

    model = Fussy(2)
    x = torch.rand(1, 3, 200, 130)
    out = run(model, x, tile="auto", tile_overlap=8)
    torch.testing.assert_close(out, x.repeat_interleave(2, -1).repeat_interleave(2, -2))
    assert max(max(c) for c in model.calls) <= 48
    with pytest.raises(InferenceOutOfMemory, match="use --tile auto or a smaller --tile"):
        run(model, x)  # the whole image: a one-line error instead of the allocator's message


def test_auto_tile_gives_up_below_twice_the_overlap():
    class Starved(Nearest):  # the probes (<= 32 pixels) fit, no tile of >= 2 x overlap = 40 does
        def forward(self, x):
            if max(x.shape[-2:]) > 32:
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            return super().forward(x)

    with pytest.raises(InferenceOutOfMemory, match="even with 48-pixel tiles"):
        run(Starved(2), torch.rand(1, 3, 200, 130), tile="auto", tile_overlap=20)


def test_other_errors_are_not_mistaken_for_out_of_memory():
    class Broken(Nearest):
        def forward(self, x):
            raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        run(Broken(2), torch.rand(1, 3, 40, 40), tile="auto")


# ----------------------------------------------------------------------------- chop


def test_chop_recursion_follows_the_authors_rule():
    # 100 x 80, shave 10, min_size 2000: quadrants 60 x 50 (3000 >= 2000) are split again into
    # 40 x 35 (1400 < 2000), which run: 16 leaves.
    model = Nearest(2)
    x = torch.rand(1, 3, 100, 80)
    out = run(model, x, chop=True, chop_shave=10, chop_min_size=2000)
    assert model.calls[1:] == [(40, 35)] * 16  # calls[0] is the scale probe
    torch.testing.assert_close(out, x.repeat_interleave(2, -1).repeat_interleave(2, -2))


def test_chop_csnln_rounding_and_odd_sizes():
    # CSNLN's copy adds s - size % s: 60 -> 62, 50 -> 52 (3224 < 3600: one level of 4 leaves)
    model = Nearest(2)
    x = torch.rand(1, 3, 100, 80)
    run(model, x, chop=True, chop_shave=10, chop_min_size=3600, chop_round_to_scale=True)
    assert model.calls[1:] == [(62, 52)] * 4
    model = Nearest(3)
    x = torch.rand(2, 3, 37, 51)  # odd sizes: the halves are stitched at s * (h // 2)
    out = run(model, x, chop=True, chop_shave=3, chop_min_size=50)
    torch.testing.assert_close(out, x.repeat_interleave(3, -1).repeat_interleave(3, -2))
    tiny_input = torch.rand(1, 3, 5, 7)  # smaller than the shave: one pass over the whole input
    torch.testing.assert_close(run(Nearest(2), tiny_input, chop=True),
                               tiny_input.repeat_interleave(2, -1).repeat_interleave(2, -2))
    # shave 0 leaves odd sizes uncovered and 1-pixel halves empty (was a conv2d error); shave 1, min size 1 works
    with pytest.raises(ConfigError, match="--chop-shave must be"):
        run(Nearest(2), tiny_input, chop=True, chop_shave=0)
    torch.testing.assert_close(run(Nearest(2), tiny_input, chop=True, chop_shave=1, chop_min_size=1),
                               tiny_input.repeat_interleave(2, -1).repeat_interleave(2, -2))


def test_chop_matches_whole_image_for_a_local_model():
    model = tiny("edsr-baseline")  # receptive field 7.5 < shave 10
    x = torch.rand(1, 3, 90, 75)
    whole = run(model, x)
    assert (run(model, x, chop=True, chop_min_size=1000) - whole).abs().max() < 1e-5
    assert (run(model, x, chop=True, chop_shave=2, chop_min_size=1000) - whole).abs().max() > 2 * GREY
