"""run(): whole image, self-ensemble, precision, optimised path; upscale(): numpy forms; devices."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

import sisr
from sisr.data.io import image_to_tensor, tensor_to_image, write_image
from sisr.data.resize import imresize
from sisr.inference.forward import run
from sisr.inference.images import default_model, upscale
from sisr.errors import ConfigError, ImageError, ModelError
from sisr.utils.device import DeviceError, is_out_of_memory, resolve_device
from sisr.weights import save_weights

GREY = 1 / 255


def tiny(name: str, scale: int = 2, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return sisr.create_model(name, scale=scale, **sisr.get_info(name).tiny).eval()


def rand(*shape, seed=0):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------- run


def test_run_is_the_clamped_forward_and_restores_training_mode():
    model = tiny("edsr-baseline").train()
    x = rand(2, 3, 13, 17)
    out = run(model, x)
    assert model.training
    with torch.no_grad():
        expected = model.eval()(x).clamp(0, 1)
    torch.testing.assert_close(out, expected)
    assert not out.requires_grad


def test_run_never_clamps_the_callers_tensor():
    x = rand(1, 3, 4, 4) * 2 - 0.5
    before = x.clone()
    out = run(nn.Identity(), x)
    assert torch.equal(x, before) and out.min() == 0 and out.max() == 1


def test_run_rejects_inputs_that_are_not_float_batches():
    model = tiny("edsr-baseline")
    for bad in (torch.rand(3, 8, 8), torch.zeros(1, 3, 8, 8, dtype=torch.uint8)):
        with pytest.raises(ConfigError, match=r"\(N, C, H, W\)"):
            run(model, bad)


def _x8_reference(model, x):
    """EDSR's forward_x8 written with rot90: the 8 symmetries of the square, each undone, averaged."""
    outs = []
    with torch.no_grad():
        for flip in (False, True):
            for k in range(4):
                v = x.flip(-1) if flip else x
                y = model(torch.rot90(v, k, (-2, -1)))
                y = torch.rot90(y, -k, (-2, -1))
                outs.append(y.flip(-1) if flip else y)
    return torch.stack(outs).mean(0).clamp(0, 1)


def test_self_ensemble_is_the_mean_of_the_eight_symmetries():
    model = tiny("edsr-baseline")
    x = rand(1, 3, 12, 19)
    out = run(model, x, self_ensemble=True)
    torch.testing.assert_close(out, _x8_reference(model, x), atol=1e-6, rtol=0)
    assert (out - run(model, x)).abs().max() > GREY  # the network is not symmetric: the ensemble matters


def test_self_ensemble_of_a_symmetric_model_changes_nothing():
    model = sisr.create_model("bicubic", scale=3)  # MATLAB bicubic commutes with flips and transposes
    x = rand(1, 3, 10, 14)
    torch.testing.assert_close(run(model, x, self_ensemble=True), run(model, x), atol=1e-6, rtol=0)


def test_self_ensemble_passes_are_tiled_and_chopped():
    model = tiny("edsr-baseline")
    x = rand(1, 3, 100, 72)
    reference = _x8_reference(model, x)
    assert (run(model, x, self_ensemble=True, tile=64) - reference).abs().max() < 1e-5
    assert (run(model, x, self_ensemble=True, chop=True, chop_min_size=1000) - reference).abs().max() < 1e-5


def test_bf16_autocast_stays_close_and_weights_stay_fp32():
    model = tiny("defian-s")
    x = rand(1, 3, 24, 24)
    out = run(model, x, precision="bf16")
    assert out.dtype == torch.float32 and next(model.parameters()).dtype == torch.float32
    diff = (out - run(model, x)).abs().max()
    assert 0 < diff < 4 * GREY  # bf16 really ran (not bit-identical) and stays within a few grey levels


def test_precision_errors():
    x = rand(1, 3, 8, 8)
    with pytest.raises(ConfigError, match="fp16 is not supported on the CPU"):
        run(tiny("defian-s"), x, precision="fp16")
    with pytest.raises(ConfigError, match="model 'csnln' does not support fp16"):
        run(tiny("csnln"), x, precision="fp16")
    with pytest.raises(ConfigError, match="'edsr-baseline' does not support bf16 for inference .*trained weights"):
        run(tiny("edsr-baseline"), x, precision="bf16")
    with pytest.raises(ConfigError, match="unknown precision 'int8'"):
        run(tiny("edsr-baseline"), x, precision="int8")


def test_channels_last_matches_within_two_grey_levels():
    model = tiny("rcan")
    x = rand(1, 3, 20, 28)
    reference = run(model, x)
    assert (run(model, x, channels_last=True) - reference).abs().max() < 2 * GREY


# ----------------------------------------------------------------------------- devices


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else ("mps" if torch.backends.mps.is_available() else "cpu")
    assert resolve_device("auto").type == expected
    with pytest.raises(DeviceError, match="unknown device 'gpu0'"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="CUDA is not available"):
            resolve_device("cuda:1")
    else:
        with pytest.raises(DeviceError, match="CUDA device"):
            resolve_device(f"cuda:{torch.cuda.device_count()}")
    if not torch.backends.mps.is_available():
        with pytest.raises(DeviceError, match="MPS is not available"):
            resolve_device("mps")


def test_out_of_memory_recognition():
    assert is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory"))
    assert is_out_of_memory(RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory"))
    assert is_out_of_memory(RuntimeError("MPS backend out of memory (MPS allocated: 1 GB)"))
    assert not is_out_of_memory(RuntimeError("Given groups=1, weight of size [8, 3, 3, 3]"))
    assert not is_out_of_memory(ValueError("out of memory"))


# ----------------------------------------------------------------------------- default model


def test_default_model_rule(tmp_path, monkeypatch):
    import sisr.weights.pretrained as pretrained

    monkeypatch.setattr(pretrained, "PRETRAINED_DIR", tmp_path)
    name, notice = default_model(4)
    assert name == "bicubic" and "no shipped weights for defian-s x4" in notice
    (tmp_path / "defian-s_x4.safetensors").write_bytes(b"")
    assert default_model(4) == ("defian-s", None)
    assert default_model(2)[0] == "bicubic"


# ----------------------------------------------------------------------------- upscale (numpy forms)


def _run_rgb(model, rgb01: torch.Tensor) -> torch.Tensor:
    return run(model, rgb01[None])[0]


def test_upscale_rgb_uint8_is_run_then_quantised():
    model = tiny("edsr-baseline")
    img = (rand(9, 11, 3).numpy() * 255).astype(np.uint8)
    out = upscale(img, model)
    assert out.shape == (18, 22, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, tensor_to_image(_run_rgb(model, image_to_tensor(img)), np.uint8))


def test_upscale_gray_runs_as_rgb_and_returns_luma():
    model = tiny("edsr-baseline")
    gray = (rand(10, 7).numpy() * 255).astype(np.uint8)
    rgb_out = _run_rgb(model, image_to_tensor(gray[:, :, None]).expand(3, -1, -1))
    luma = 0.299 * rgb_out[0] + 0.587 * rgb_out[1] + 0.114 * rgb_out[2]
    expected = tensor_to_image(luma[None], np.uint8)
    out2d = upscale(gray, model)
    assert out2d.shape == (20, 14) and out2d.dtype == np.uint8
    np.testing.assert_array_equal(out2d, expected[:, :, 0])
    np.testing.assert_array_equal(upscale(gray[:, :, None], model), expected)


@pytest.mark.parametrize("channels", [2, 4])
def test_upscale_alpha_is_bicubic_and_reattached(channels):
    model = tiny("edsr-baseline")
    img = (rand(8, 9, channels).numpy() * 255).astype(np.uint8)
    out = upscale(img, model)
    assert out.shape == (16, 18, channels)
    alpha = np.clip(imresize(img[:, :, -1].astype(np.float64) / 255, output_size=(16, 18)), 0, 1)
    np.testing.assert_array_equal(out[:, :, -1], np.round(alpha * 255).astype(np.uint8))
    np.testing.assert_array_equal(out[:, :, :-1], upscale(img[:, :, :-1], model))


def test_upscale_keeps_16_bit_precision():
    model = sisr.create_model("bicubic", scale=2)
    img = (rand(6, 5, 3).numpy() * 65535).astype(np.uint16)
    out = upscale(img, model)
    assert out.dtype == np.uint16
    expected = _run_rgb(model, torch.from_numpy(img.astype(np.float32) / 65535).permute(2, 0, 1))
    np.testing.assert_array_equal(out, tensor_to_image(expected, np.uint16))
    assert np.any(out % 257 != 0)  # not 8-bit values scaled up


def test_upscale_float_image_and_path(tmp_path):
    model = tiny("edsr-baseline")
    img = (rand(7, 8, 3).numpy() * 255).astype(np.uint8)
    out = upscale(img.astype(np.float32) / 255, model)
    assert out.dtype == np.float32 and out.shape == (14, 16, 3) and 0 <= out.min() and out.max() <= 1
    path = write_image(tmp_path / "in.png", img)
    np.testing.assert_array_equal(upscale(path, model), upscale(img, model))


def test_upscale_by_name_weights_file_and_default(tmp_path, monkeypatch):
    import sisr.weights.pretrained as pretrained

    monkeypatch.setattr(pretrained, "PRETRAINED_DIR", tmp_path)
    img = (rand(6, 6, 3).numpy() * 255).astype(np.uint8)
    with pytest.warns(UserWarning, match="using bicubic"):
        default = upscale(img, scale=3)
    np.testing.assert_array_equal(default, upscale(img, "bicubic", scale=3))
    model = tiny("edsr-baseline", scale=4)
    weights = save_weights(model, tmp_path / "e.safetensors", model="edsr-baseline", scale=4,
                           hparams=model.sisr_spec.hparams)
    np.testing.assert_array_equal(upscale(img, weights), upscale(img, model))
    np.testing.assert_array_equal(upscale(img, "edsr-baseline", weights=weights), upscale(img, model))
    with pytest.raises(ModelError, match="upscales x4, not x2"):
        upscale(img, model, scale=2)


def test_upscale_rejects_unusable_arrays():
    model = sisr.create_model("bicubic", scale=2)
    with pytest.raises(ImageError, match="unsupported dtype int32"):
        upscale(np.zeros((4, 4, 3), np.int32), model)
    with pytest.raises(ImageError, match="got shape"):
        upscale(np.zeros((4, 4, 5), np.uint8), model)


@pytest.mark.parametrize("options", [{}, {"self_ensemble": True}, {"chop": True, "chop_min_size": 10}, {"tile": 64}])
def test_a_network_returning_its_input_leaves_the_callers_tensor_alone(options):
    class Identity(torch.nn.Module):
        def forward(self, x):
            return x

    x = torch.rand(1, 3, 8, 9) * 1.2  # values above 1 would be clamped in place
    before = x.clone()
    y = run(Identity(), x, **options)
    assert torch.equal(x, before)
    torch.testing.assert_close(y, before.clamp(0, 1))


# ----------------------------------------------------------------------------- RunOptions


def test_run_options_check_themselves_once_and_name_the_option():
    from sisr.inference.options import RunOptions

    assert RunOptions().tile_overlap == 32 and RunOptions(tile_overlap=None).tile_overlap == 32
    for kwargs, match in [({"tile": 40}, "--tile 40 must be at least twice the tile overlap"),
                          ({"tile": "big"}, "--tile must be a number of LR pixels or 'auto'"),
                          ({"tile": True}, "--tile must be"), ({"tile_overlap": -1}, "--tile-overlap must be >= 0"),
                          ({"tile": 64, "chop": True}, "choose --tile or --chop, not both"),
                          ({"chop_shave": -3}, "--chop-shave must be >= 1"),
                          ({"chop_min_size": 0}, "--chop-min-size must be >= 1"),
                          ({"precision": "int8"}, "unknown precision 'int8'"),
                          ({"backend": "tvm"}, "unknown backend 'tvm'"),
                          ({"alpha": "nearest"}, "alpha must be one of")]:
        with pytest.raises(ConfigError, match=match):
            RunOptions(**kwargs)
    options = RunOptions(tile=64, self_ensemble=True)
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.tile = 32
    assert options.pixel_options() == {"tile": 64, "tile_overlap": 32, "chop": False, "chop_shave": 10,
                                       "chop_min_size": 160000, "chop_round_to_scale": False, "self_ensemble": True,
                                       "precision": "fp32", "alpha": "bicubic"}
    assert RunOptions.build(options, tile=None) == RunOptions(self_ensemble=True)
    with pytest.raises(ConfigError, match="compile=True is now backend='compile'"):
        RunOptions.build(compile=True)
    with pytest.raises(ConfigError, match="unknown inference option 'tiles'"):
        run(nn.Identity(), rand(1, 3, 4, 4), tiles=8)
    assert [RunOptions(backend=b).load_channels_last for b in ("auto", "eager", "compile")] == [None, False, False]
    assert RunOptions(backend="eager", channels_last=True).load_channels_last is True


def test_one_options_object_travels_from_upscale_array_to_the_convolution(monkeypatch):
    """What run(), the Runner and the tiler receive is the very RunOptions object given to upscale_array."""
    from sisr.inference import forward, network
    from sisr.inference.images import upscale_array
    from sisr.inference.options import RunOptions

    seen = []
    for module, name in ((forward, "Tiler"), (network, "check_precision")):
        original = getattr(module, name)

        def spy(*args, _original=original, **kwargs):
            seen.extend(a for a in args if isinstance(a, RunOptions))
            return _original(*args, **kwargs)

        monkeypatch.setattr(module, name, spy)
    original_runner = network.Runner.__init__

    def runner_init(self, model, device, options=None, pixels=None):
        seen.append(options)
        original_runner(self, model, device, options, pixels)

    monkeypatch.setattr(network.Runner, "__init__", runner_init)
    options = RunOptions(tile=16, tile_overlap=4, self_ensemble=True)
    upscale_array((rand(20, 18, 3).numpy() * 255).astype(np.uint8), tiny("edsr-baseline"), options)
    assert seen and all(s is options for s in seen)


# ----------------------------------------------------------------------------- wrong results refused (issue 23)


def test_float_images_outside_0_1_non_finite_values_and_fractional_scales_are_refused():
    model = sisr.create_model("bicubic", scale=2)
    img = rand(6, 5, 3).numpy()
    with pytest.raises(ImageError, match=r"float values must lie in \[0, 1\], got 0 to 255 .*divide 8-bit"):
        upscale(np.linspace(0, 255, 90, dtype=np.float32).reshape(6, 5, 3), model)  # 8-bit values as float
    with pytest.raises(ImageError, match=r"got -0\.49"):
        upscale(img - 0.5, model)
    nan = img.copy()
    nan[2, 3, 1] = np.nan
    with pytest.raises(ImageError, match="NaN or infinite"):
        upscale(nan, model)
    with pytest.raises(ImageError, match="NaN or infinite"):
        run(model, torch.tensor(nan).permute(2, 0, 1)[None].float())
    for bad in (2.5, "x2", True, 0):
        with pytest.raises(ModelError, match="scale must be a whole number"):
            upscale(img, "bicubic", scale=bad)
    assert upscale(img, "bicubic", scale=2.0).shape == (12, 10, 3)  # a whole float is a scale
    out = upscale(img.astype(np.float64), model)
    assert out.dtype == np.float32 and np.isfinite(out).all()


# ----------------------------------------------------------------------------- memory layout


def test_resolve_fixes_the_layout_once_and_run_never_converts_the_module():
    from sisr.weights.handle import is_channels_last
    from sisr.weights.loading import resolve

    loaded = resolve("bicubic", 2)
    assert not is_channels_last(loaded.module)  # no convolutions: nothing to convert
    model = tiny("edsr-baseline")
    inputs = []
    model.head.register_forward_pre_hook(lambda m, a: inputs.append(a[0].is_contiguous()))
    x = rand(1, 3, 70, 66)
    reference = run(model, x)
    assert not is_channels_last(model) and inputs[-1]  # auto: the contiguous module gets contiguous inputs
    assert (run(model, x, channels_last=True) - reference).abs().max() < 1e-5
    assert is_channels_last(model) and not inputs[-1]  # converted once, in place, on request
    run(model, x, backend="eager")
    assert is_channels_last(model) and not inputs[-1]  # and run in its layout from then on


@pytest.mark.parametrize("channels_last", [False, True])
def test_concurrent_runs_of_one_module_leave_its_layout_alone(channels_last):
    from concurrent.futures import ThreadPoolExecutor

    from sisr.weights.handle import is_channels_last, set_channels_last

    model = set_channels_last(tiny("edsr-baseline"), channels_last)
    xs = [rand(1, 3, 66, 64 + k, seed=k) for k in range(4)]
    expected = [run(model, x) for x in xs]
    with ThreadPoolExecutor(4) as pool:
        outs = list(pool.map(lambda x: run(model, x), xs * 2))
    assert is_channels_last(model) == channels_last
    for a, b in zip(outs, expected * 2):
        torch.testing.assert_close(a, b, atol=0, rtol=0)


def test_an_exported_backend_runs_a_channels_last_module_by_converting_it_once(tmp_path):
    pytest.importorskip("onnxruntime")
    from sisr.weights.handle import is_channels_last
    from sisr.weights.loading import load_model

    model = tiny("edsr-baseline")
    path = save_weights(model, tmp_path / "w.safetensors", model="edsr-baseline", scale=2,
                        hparams=model.sisr_spec.hparams)
    net = load_model(path)
    assert is_channels_last(net)
    x = rand(1, 3, 16, 20)
    reference = run(net, x)
    assert (run(net, x, backend="onnxruntime") - reference).abs().max() < 1 / 255
    assert not is_channels_last(net)  # the export traced the contiguous layout it was given
