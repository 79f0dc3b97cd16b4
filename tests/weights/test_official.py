"""Official checkpoints: containers, safe loading, detection, conversion (API and `sisr convert`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import sisr
from sisr.cli import main
from sisr.weights.loading import load_model
from sisr.errors import WeightsError
from sisr.models import get_info
from sisr.weights import read_metadata, save_weights
from sisr.weights.official import convert_official, detect, read_checkpoint, sha256_file

PARITY = ("csnln_x2", "defian_s_x2", "edsr_baseline_x2", "rcan_g2b3_x2")


def _fixture(fixtures_root: Path, name: str):
    folder = fixtures_root / "parity"
    return (folder / f"{name}.weights.safetensors", load_file(folder / f"{name}.weights.safetensors"),
            load_file(folder / f"{name}.io.safetensors"), json.loads((folder / f"{name}.json").read_text()))


def _assert_reproduces(model, io):
    with torch.no_grad():
        out = model(io["input"])
    assert (out - io["output"]).abs().max() < 1e-4


# ----------------------------------------------------------------------------- containers and parity fixtures


@pytest.mark.parametrize("name", PARITY)
def test_parity_fixtures_load_as_official_checkpoints(name, fixtures_root, tmp_path):
    path, sd, io, spec = _fixture(fixtures_root, name)
    direct = load_model(path)  # a safetensors state_dict without sisr metadata
    assert direct.sisr_spec.scale == spec["scale"]
    _assert_reproduces(direct, io)
    pt = tmp_path / f"{name}.pt"
    torch.save(sd, pt)
    _assert_reproduces(load_model(pt), io)


CONTAINERS = {
    "plain": lambda sd: sd,
    "state_dict": lambda sd: {"state_dict": sd},
    "defian-epoch-dataparallel": lambda sd: {"epoch": 1000, "state_dict": {f"module.{k}": v for k, v in sd.items()}},
    "basicsr-ema-preferred": lambda sd: {"params": {k: v + 1 for k, v in sd.items()}, "params_ema": sd},
    "params": lambda sd: {"params": sd},
    "model": lambda sd: {"model": sd, "optimizer": {"lr": 1e-4}},
    "net": lambda sd: {"net": sd},
    "nested": lambda sd: {"model": {"state_dict": sd}, "epoch": 3},
}


@pytest.mark.parametrize("container", CONTAINERS)
def test_official_containers_are_unwrapped(container, fixtures_root, tmp_path):
    _, sd, io, _ = _fixture(fixtures_root, "rcan_g2b3_x2")
    path = tmp_path / "RCAN_BIX2.pt"
    torch.save(CONTAINERS[container](sd), path)
    model = load_model(path, scale=2)
    assert model.sisr_spec.name == "rcan" and model.sisr_weights["source"] == "official checkpoint"
    _assert_reproduces(model, io)


# ----------------------------------------------------------------------------- detection of full-size layouts

OFFICIAL = [name for name in sisr.list_models() if get_info(name).official is not None]  # the registry says which
FULL = [(name, scale) for name in OFFICIAL for scale in get_info(name).scales]


def test_the_registry_declares_the_official_formats_of_the_released_checkpoints():
    assert set(OFFICIAL) >= {"edsr-baseline", "edsr", "rcan", "csnln", "defian-s", "defian-l"}


@pytest.mark.parametrize("name,scale", FULL)
def test_full_size_official_layouts_are_recognised(name, scale, tmp_path):
    model = sisr.create_model(name, scale=scale)
    path = tmp_path / f"{name}_x{scale}.pth"
    torch.save({k: v.half() for k, v in model.state_dict().items()}, path)  # half: smaller files, same shapes
    try:
        found = detect(read_checkpoint(path))
    finally:
        path.unlink()
    assert (found.model, found.scale) == (name, scale)
    defaults = model.sisr_spec.hparams
    assert {k: v for k, v in found.hparams.items() if k in defaults} == {k: defaults[k] for k in found.hparams}
    assert set(found.hparams) & {"n_feats", "n_channels"}  # the width is read from the shapes


# ----------------------------------------------------------------------------- refusals and errors


class _Payload:
    """Unpickling this would create a marker file: it must never happen."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_pickle_with_python_objects_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "was_unpickled"
    path = tmp_path / "evil.pt"
    sd = sisr.create_model("edsr-baseline", scale=2, n_resblocks=1, n_feats=4).state_dict()
    torch.save({"state_dict": sd, "extra": _Payload(marker)}, path)
    with pytest.raises(WeightsError, match=r"refused: the file contains Python objects other than tensors \("):
        load_model(path)
    assert not marker.exists()
    torch.load(path, weights_only=False)  # the payload is live: an unsafe load runs it
    assert marker.exists()


def test_unknown_state_dict_lists_what_was_recognised(tmp_path):
    path = tmp_path / "random.pth"
    torch.save({"encoder.0.weight": torch.rand(4, 3, 3, 3), "encoder.0.bias": torch.rand(4),
                "decoder.weight": torch.rand(3, 4, 1, 1)}, path)
    with pytest.raises(WeightsError) as info:
        load_model(path)
    message = str(info.value)
    assert "\n" not in message
    assert "not a checkpoint of a known model" in message and "3 tensors" in message
    assert "key prefixes: encoder, decoder" in message and "tried: " in message and "rcan" in message


def test_scale_and_model_mismatches(tmp_path, fixtures_root):
    _, sd, _, _ = _fixture(fixtures_root, "edsr_baseline_x2")
    path = tmp_path / "edsr_baseline_x2.pt"
    torch.save(sd, path)
    with pytest.raises(WeightsError, match="holds edsr-baseline weights for x2, not x4"):
        load_model(path, scale=4)
    with pytest.raises(WeightsError, match="not a checkpoint of 'rcan'"):
        load_model("rcan", 2, weights=path)
    torch.save({**sd, "tail.9.weight": torch.zeros(1)}, path)
    with pytest.raises(WeightsError, match=r"does not fit edsr-baseline x2: 1 unexpected \(tail.9.weight\)"):
        load_model(path)


def test_files_that_are_not_checkpoints(tmp_path):
    text = tmp_path / "notes.pth"
    text.write_text("hello")
    with pytest.raises(WeightsError, match="notes.pth: not a PyTorch checkpoint"):
        load_model(text)
    whole = tmp_path / "whole.pt"
    torch.save({"w": torch.zeros(64)}, whole)
    cut = tmp_path / "cut.pt"
    cut.write_bytes(whole.read_bytes()[:200])
    with pytest.raises(WeightsError, match="cut.pt: truncated or damaged PyTorch checkpoint"):
        load_model(cut)
    tensor = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), tensor)
    with pytest.raises(WeightsError, match="holds a Tensor, not a state_dict"):
        load_model(tensor)
    nothing = tmp_path / "nothing.pt"
    torch.save({"epoch": 3, "lr": 0.1}, nothing)
    with pytest.raises(WeightsError, match="no state_dict found .*top-level keys: epoch, lr"):
        load_model(nothing)


# ----------------------------------------------------------------------------- conversion


def test_convert_writes_sisr_weights_with_provenance(tmp_path, fixtures_root):
    _, sd, io, _ = _fixture(fixtures_root, "defian_s_x2")
    src = tmp_path / "DeFiAN_S_x2.pth"
    torch.save({"epoch": 300, "state_dict": sd}, src)
    dst, found = convert_official(src, tmp_path / "defian-s_x2.safetensors")
    meta = read_metadata(dst)
    assert meta["format"] == "sisr-weights" and meta["model"] == "defian-s" and meta["scale"] == 2
    assert meta["hparams"] == dict(found.hparams)
    assert meta["source_file"] == "DeFiAN_S_x2.pth" and meta["source_sha256"] == sha256_file(src)
    assert meta["official_convention"] == get_info("defian-s").official.convention
    _assert_reproduces(load_model(dst), io)
    with pytest.raises(WeightsError, match="already exists"):
        convert_official(src, dst)
    with pytest.raises(WeightsError, match="already a sisr weights file"):
        convert_official(dst, tmp_path / "again.safetensors")
    with pytest.raises(WeightsError, match="must be a .safetensors file"):
        convert_official(src, tmp_path / "out.pt")


def test_convert_command(tmp_path, fixtures_root, capsys):
    _, sd, io, _ = _fixture(fixtures_root, "rcan_g2b3_x2")
    src = tmp_path / "RCAN_BIX2.pt"
    torch.save(sd, src)
    out = tmp_path / "rcan_x2.safetensors"
    assert main(["convert", str(src), str(out), "--model", "rcan"]) == 0
    assert "rcan x2" in capsys.readouterr().out
    _assert_reproduces(load_model(out), io)
    assert main(["convert", str(src), str(tmp_path / "edsr.safetensors"), "--model", "edsr"]) == 1
    assert "not a checkpoint of 'edsr'" in capsys.readouterr().err
    assert main(["convert", str(src), str(out)]) == 1
    assert "already exists" in capsys.readouterr().err
    assert main(["convert", str(src), str(out), "--overwrite"]) == 0


def test_sisr_file_without_metadata_marker_is_not_mistaken(tmp_path):
    # a sisr file is recognised by its metadata; the same tensors with no metadata load as official
    model = sisr.create_model("edsr-baseline", scale=2, n_resblocks=1, n_feats=4)
    sisr_file = save_weights(model, tmp_path / "a.safetensors", model="edsr-baseline", scale=2,
                             hparams=model.sisr_spec.hparams)
    assert load_model(sisr_file).sisr_weights.get("format") == "sisr-weights"
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "b.safetensors"))
    loaded = load_model(tmp_path / "b.safetensors")
    assert loaded.sisr_weights["source"] == "official checkpoint"
    assert loaded.sisr_spec.hparams["n_feats"] == 4


def test_convert_refuses_to_replace_its_source(tmp_path, capsys):
    model = sisr.create_model("edsr-baseline", scale=2, n_resblocks=1, n_feats=4)
    from safetensors.torch import save_file

    src = tmp_path / "plain.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(src))
    before = src.read_bytes()
    assert main(["convert", str(src), str(src), "--overwrite"]) == 1
    err = capsys.readouterr().err
    assert "is the checkpoint being converted" in err and err.count("\n") == 1
    assert src.read_bytes() == before


def test_truncated_checkpoint_is_named_as_such(tmp_path):
    model = sisr.create_model("edsr-baseline", scale=2, n_resblocks=1, n_feats=4)
    full = tmp_path / "full.pt"
    torch.save(model.state_dict(), full)
    cut = tmp_path / "cut.pt"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(WeightsError, match=r"cut.pt: truncated or damaged PyTorch checkpoint"):
        load_model(cut)


@pytest.mark.parametrize("protocol", [0, 1, 2, 4])
def test_a_plain_pickle_is_refused_as_a_pickle(tmp_path, protocol):
    """A pickle not written by torch.save is refused without being unpickled, and called what it is."""
    import pickle

    path = tmp_path / "plain.pkl"
    path.write_bytes(pickle.dumps({"w": [0.0, 1.0], "b": 2}, protocol=protocol))
    with pytest.raises(WeightsError) as caught:
        read_checkpoint(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: refused: a plain Python pickle (protocol {protocol})"), message
    assert "not written by torch.save" in message and "neither" not in message and "\n" not in message
    torch.save({"w": torch.zeros(2)}, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    assert set(read_checkpoint(tmp_path / "legacy.pt")) == {"w"}  # torch's legacy format is still read


def test_weights_that_are_a_folder_say_so(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "wdir"
    folder.mkdir()
    for given in (folder, "wdir"):
        monkeypatch.chdir(tmp_path)
        with pytest.raises(WeightsError, match="wdir: is a folder, not a weights file"):
            load_model("defian-s", scale=2, weights=given)
    assert main(["convert", str(folder), str(tmp_path / "out.safetensors")]) == 1
    assert "is a folder, not a weights file" in capsys.readouterr().err
