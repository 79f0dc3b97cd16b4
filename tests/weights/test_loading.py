"""load_model: sisr weights files, registry names, shipped pretrained weights."""

from __future__ import annotations

import pytest
import torch

import sisr
from sisr.weights.loading import available_pretrained, load_model
from sisr.errors import ConfigError, ModelError, WeightsError
from sisr.weights import save_weights


def tiny(name: str, scale: int = 2, seed: int = 0):
    torch.manual_seed(seed)
    return sisr.create_model(name, scale=scale, **sisr.get_info(name).tiny).eval()


def _same_outputs(a, b, size=(9, 10)):
    """Equal outputs up to float rounding: a loaded CPU network runs in channels_last, a fresh one contiguous."""
    x = torch.rand(1, 3, *size)
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(x), atol=1e-5, rtol=0)


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
    with pytest.raises(ModelError, match="unknown model 'edsr2' and no such weights file"):
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


# ----------------------------------------------------------------------------- resolve and LoadedModel


def test_resolve_returns_a_loaded_model_with_its_provenance(tmp_path, monkeypatch):
    import hashlib

    import sisr.weights.pretrained as pretrained
    from sisr.weights.handle import LoadedModel, identify, is_channels_last
    from sisr.weights.loading import resolve

    model = tiny("edsr-baseline", 3)
    path = save_weights(model, tmp_path / "w.safetensors", model="edsr-baseline", scale=3,
                        hparams=model.sisr_spec.hparams, metadata={"training": {"iterations": 7}})
    loaded = resolve(path, device="cpu")
    assert isinstance(loaded, LoadedModel) and (loaded.name, loaded.scale) == ("edsr-baseline", 3)
    assert loaded.info.name == "edsr-baseline" and loaded.spec == model.sisr_spec
    assert loaded.weights.path == path and loaded.weights.source == "sisr weights file"
    assert loaded.weights.metadata["training"] == {"iterations": 7}
    assert "sha256" not in vars(loaded.weights)  # computed when first asked for, once
    assert loaded.weights.sha256 == hashlib.sha256(path.read_bytes()).hexdigest() == loaded.weights.record()["sha256"]
    assert loaded.device == torch.device("cpu") and not loaded.module.training
    assert is_channels_last(loaded.module)  # CPU networks are loaded in channels_last, once
    assert not is_channels_last(resolve(path, channels_last=False).module)
    assert resolve(loaded) is loaded and resolve(loaded.module, 3).weights.path == path
    foreign = identify(torch.nn.Conv2d(3, 3, 1))
    assert (foreign.name, foreign.scale, foreign.weights.source) == ("Conv2d", None, "not recorded")
    assert resolve("bicubic", 2).weights.source == "no parameters"
    monkeypatch.setattr(pretrained, "PRETRAINED_DIR", tmp_path / "shipped")
    save_weights(model, tmp_path / "shipped" / "edsr-baseline_x3.safetensors", model="edsr-baseline", scale=3,
                 hparams=model.sisr_spec.hparams)
    assert resolve("edsr-baseline", 3).weights.source == "shipped weights"
    notes = []
    assert resolve(None, 3, notify=notes.append).name == "bicubic" and "no shipped weights for defian-s x3" in notes[0]
    with pytest.warns(UserWarning, match="using bicubic"):
        resolve()
    with pytest.raises(ModelError, match="'defian-s' supports scales 2, 3, 4, 8; got 5"):
        resolve(None, 5, notify=notes.append)  # named after the default model, with no fallback notice first
    assert len(notes) == 1
    assert resolve(weights=path).scale == 3


@pytest.fixture
def entry_points(tmp_path):
    """Each public way to name a model, as ``call(source, scale, weights) -> None`` (raises on a mistake)."""
    import numpy as np

    from sisr.cli import main
    from sisr.data.io import write_image
    from sisr.evaluation.protocol import evaluate
    from sisr.evaluation.report import make_report
    from sisr.inference.images import upscale
    from sisr.weights.loading import resolve

    img = np.random.default_rng(0).integers(0, 256, (12, 12, 3), dtype=np.uint8)
    photo = write_image(tmp_path / "p.png", img)
    write_image(tmp_path / "data" / "S" / "HR" / "a.png", img)

    def report(source, scale, weights):
        make_report([source], ["S"], scale, tmp_path / "rep", data_root=tmp_path / "data", progress=False,
                    weights=None if weights is None else {str(source): weights})

    def cli(command):
        def call(source, scale, weights):
            argv = {"upscale": ["upscale", str(photo), "-o", str(tmp_path / "o")],
                    "demo": ["demo", "-o", str(tmp_path / "demo")],
                    "eval": ["eval", "--data-root", str(tmp_path / "data"), "--datasets", "S"],
                    "report": ["report", "--datasets", "S", "--data-root", str(tmp_path / "data"), "-o",
                               str(tmp_path / "rep")]}[command]
            argv += ["--models" if command == "report" else "--model", str(source)]
            argv += ["--scales" if command == "eval" else "--scale", str(scale)]
            argv += ["--weights", str(weights)] if weights is not None else []
            return main(argv)
        return call

    return {"resolve": lambda s, k, w: resolve(s, k, weights=w),
            "load_model": lambda s, k, w: load_model(s, k, weights=w),
            "upscale": lambda s, k, w: upscale(img, s, k, weights=w),
            "evaluate": lambda s, k, w: evaluate(s, data_root=tmp_path / "data", datasets=["S"], scales=[k],
                                                 weights=w, progress=False),
            "make_report": report, "sisr upscale": cli("upscale"), "sisr eval": cli("eval"),
            "sisr report": cli("report"), "sisr demo": cli("demo")}


MISTAKES = {  # mistake -> (source, scale, weights, error type, message)
    "unknown model": ("edsr2", 2, None, ModelError, "unknown model 'edsr2' and no such weights file"),
    "missing file": ("missing.safetensors", 2, None, WeightsError, "missing.safetensors: no such weights file"),
    "scale the model lacks": ("bicubic", 5, None, ModelError, "supports scales 2, 3, 4, 8; got 5"),
    "fractional scale": ("bicubic", 2.5, None, ModelError, "scale must be a whole number"),
    "file of another scale": ("FILE", 3, None, WeightsError, "holds edsr-baseline weights for x2, not x3"),
    "weights of another model": ("rcan", 2, "FILE", WeightsError, "holds weights for 'edsr-baseline', not 'rcan'"),
    "weights given twice": ("FILE", 2, "FILE", ConfigError, "weights are given twice"),
    "module of another scale": ("MODULE", 3, None, ModelError, "upscales x2, not x3"),
    "weights with a module": ("MODULE", 2, "FILE", ConfigError, "weights= applies to a model name or a weights file"),
}


@pytest.mark.parametrize("mistake", MISTAKES)
def test_each_mistake_is_one_error_through_every_entry_point(tmp_path, entry_points, capsys, mistake):
    model = tiny("edsr-baseline")
    file = save_weights(model, tmp_path / "w.safetensors", model="edsr-baseline", scale=2,
                        hparams=model.sisr_spec.hparams)
    source, scale, weights, kind, message = MISTAKES[mistake]
    source = {"FILE": file, "MODULE": model}.get(source, source)
    weights = file if weights == "FILE" else weights
    tried = 0
    for name, call in entry_points.items():
        command = name.startswith("sisr ")
        if command and (isinstance(source, torch.nn.Module) or scale != int(scale)):
            continue  # the commands take names and files, and whole scales (argparse)
        if name == "sisr demo" and scale not in (2, 3, 4, 8):
            continue  # its --scale has choices (argparse)
        if weights is not None and (name == "sisr report" or (name == "make_report" and mistake.endswith("module"))):
            continue  # their weights are keyed by model name (sisr report: --weights NAME=FILE)
        tried += 1
        if command:
            assert call(source, scale, weights) == 1, name
            err = capsys.readouterr().err
            assert message in err and err.count("\n") == 1, (name, err)
        else:
            with pytest.raises(kind, match=message):
                call(source, scale, weights)
    assert tried >= 4
