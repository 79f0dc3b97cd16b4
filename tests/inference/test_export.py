"""ONNX export: every exportable registry model matches PyTorch in onnxruntime at sizes other than
the trace size; the others are refused with their reason; outputs are never silently wrong or
overwritten; a missing optional package gives a one-line error."""

from __future__ import annotations

import importlib
import re
import sys

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

import sisr
from sisr.cli import main
from sisr.inference import export as ex
from sisr.models.registry import get_info, list_models
from sisr.weights import save_weights



def importable(name: str) -> bool:
    try:
        importlib.import_module(name)
    except ImportError:
        return False
    return True


HAVE_ONNX = all(importable(m) for m in ("onnx", "onnxscript", "onnxruntime"))
needs_onnx = pytest.mark.skipif(not HAVE_ONNX, reason="onnx, onnxscript and onnxruntime not installed "
                                                      "(pip install 'sisr[onnx]')")

EXPORTABLE = [n for n in list_models() if ex.onnx_unsupported_reason(n) is None]
UNSUPPORTED = [n for n in list_models() if ex.onnx_unsupported_reason(n) is not None]
# independent of the exporter's own trace and check sizes: odd, non-square, batch 3
TEST_SHAPES = [(1, 3, 11, 7), (3, 3, 6, 15)]


def tiny(name: str, scale: int = 2, **overrides) -> nn.Module:
    torch.manual_seed(0)
    return sisr.create_model(name, scale=scale, **{**get_info(name).tiny, **overrides})


def onnx_vs_torch(path, model: nn.Module, shape) -> float:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.rand(*shape)
    with torch.no_grad():
        ref = model.eval()(x).numpy()
    out = session.run(["sr"], {"lr": x.numpy()})[0]
    assert out.shape == ref.shape
    return float(np.abs(out - ref).max())


def test_every_registry_model_is_classified():
    assert set(EXPORTABLE) | set(UNSUPPORTED) == set(list_models())
    assert {"edsr", "rcan", "eacrn"} <= set(EXPORTABLE)  # plain convolutional models must export


@needs_onnx
@pytest.mark.parametrize("name", EXPORTABLE)
def test_exported_model_matches_pytorch(name, tmp_path):
    import onnx

    scale = 3 if name == "edsr-baseline" else 2  # one odd scale too
    model = tiny(name, scale)
    model.train()  # export must run in eval mode and restore the mode
    state = {k: v.clone() for k, v in model.state_dict().items()}
    path = tmp_path / f"{name}.onnx"
    result = ex.export_onnx(model, path)
    assert model.training
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())  # e.g. EACRN's bases untouched
    assert result.verified and result.max_abs_diff < 1e-4 and path.is_file()

    graph = onnx.load(str(path)).graph
    dims = [d.dim_param or d.dim_value for d in graph.input[0].type.tensor_type.shape.dim]
    assert [graph.input[0].name, graph.output[0].name] == ["lr", "sr"]
    assert dims[1] == 3 and all(isinstance(d, str) for d in (dims[0], dims[2], dims[3]))
    for shape in TEST_SHAPES:
        assert onnx_vs_torch(path, model, shape) < 1e-4, shape


@pytest.mark.parametrize("name", UNSUPPORTED)
def test_unsupported_model_is_refused(name, tmp_path):
    path = tmp_path / "m.onnx"
    with pytest.raises(ex.ExportError) as err:
        ex.export_onnx(tiny(name), path)
    msg = str(err.value)
    assert msg.startswith(f"{name} cannot be exported to ONNX") and ex.onnx_unsupported_reason(name) in msg
    assert "\n" not in msg and not path.exists()


@needs_onnx
@pytest.mark.parametrize("name, overrides", [("bicubic", {}), ("cran", {"n_resgroups": 1, "n_resblocks": 1})])
def test_unsupported_declaration_still_holds(name, overrides, tmp_path):
    """Forcing the export of a model declared unsupported fails a check; nothing is written.
    (csnln's failing export takes 10-30 s; its measurements are in the docs.)"""
    path = tmp_path / "m.onnx"
    with pytest.raises(ex.ExportError, match=f"^{name} x2: ") as err:
        ex.export_onnx(tiny(name, **overrides), path, allow_unsupported=True)
    assert "\n" not in str(err.value) and not path.exists()
    assert list(tmp_path.iterdir()) == []  # no temporary file left


class SizeDependentPool(nn.Module):
    """Nearest x2 plus a 3x3 adaptive pool: the exporter bakes the pooling windows of the trace size."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = F.adaptive_avg_pool2d(x, 3)
        return F.interpolate(x, scale_factor=2, mode="nearest") + pooled.amax(dim=(2, 3), keepdim=True)


@needs_onnx
def test_wrong_graph_is_not_written(tmp_path):
    path = tmp_path / "pool.onnx"
    with pytest.raises(ex.ExportError, match="SizeDependentPool: .*(differs from PyTorch|does not run|could not)"):
        ex.export_onnx(SizeDependentPool(), path)
    assert list(tmp_path.iterdir()) == []


class ExportsDifferently(nn.Module):
    """Nearest x2, plus ``offset`` in the exported graph only."""

    def __init__(self, offset: float):
        super().__init__()
        self.offset = offset

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.interpolate(x, scale_factor=2, mode="nearest")
        return y + self.offset if torch.compiler.is_exporting() else y


@needs_onnx
@pytest.mark.parametrize("offset, ok", [(1e-2, False), (1e-3, False), (1e-5, True)])
def test_tolerance(offset, ok, tmp_path):
    path = tmp_path / "m.onnx"
    if ok:
        result = ex.export_onnx(ExportsDifferently(offset), path)
        assert result.verified and result.max_abs_diff == pytest.approx(offset, rel=1e-2)  # float32 rounding
    else:
        expected = f"differs from PyTorch by {offset:.3g} (> 0.0001) on a 2x3x17x13 input; nothing written"
        with pytest.raises(ex.ExportError, match=re.escape(expected)):
            ex.export_onnx(ExportsDifferently(offset), path)
        assert not path.exists()


@needs_onnx
def test_opset_fallback_is_an_error(tmp_path):
    # torch.onnx silently returns opset 18 when it cannot convert down to 13
    with pytest.raises(ex.ExportError, match=r"could not produce opset 13 \(it gave 18\); use the default opset or a"):
        ex.export_onnx(tiny("edsr-baseline"), tmp_path / "m.onnx", opset=13)
    with pytest.raises(ex.ExportError, match=r"could not produce opset 999 \(it gave \d+\); use a lower one"):
        ex.export_onnx(tiny("edsr-baseline"), tmp_path / "m.onnx", opset=999)
    assert list(tmp_path.iterdir()) == []


@needs_onnx
def test_without_onnxruntime_export_warns_or_refuses(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime -> ImportError
    with pytest.raises(ex.ExportError, match="needs the package onnxruntime.*pip install 'sisr\\[onnx\\]'"):
        ex.export_onnx(tiny("edsr-baseline"), tmp_path / "a.onnx", verify=True)
    with pytest.warns(UserWarning, match="not checked against PyTorch"):
        result = ex.export_onnx(tiny("edsr-baseline"), tmp_path / "b.onnx")
    assert not result.verified and result.max_abs_diff is None and (tmp_path / "b.onnx").is_file()
    assert not (tmp_path / "a.onnx").exists()

    model = tiny("edsr-baseline")
    weights = save_weights(model, tmp_path / "w.safetensors", model="edsr-baseline", scale=2,
                           hparams=model.sisr_spec.hparams)
    assert main(["export", "--model", str(weights), "-o", str(tmp_path / "c.onnx")]) == 0
    captured = capsys.readouterr()
    assert "not checked against PyTorch: onnxruntime is not installed" in captured.out and not captured.err


@needs_onnx
def test_cli_export_and_overwrite(tmp_path, capsys):
    model = tiny("edsr-baseline")
    weights = save_weights(model, tmp_path / "w.safetensors", model="edsr-baseline", scale=2,
                           hparams=model.sisr_spec.hparams)
    out = tmp_path / "m.onnx"
    assert main(["export", "--model", str(weights), "--format", "onnx", "-o", str(out)]) == 0
    line = capsys.readouterr().out
    assert "edsr-baseline x2 ->" in line and "matches PyTorch" in line
    assert onnx_vs_torch(out, model, TEST_SHAPES[0]) < 1e-4
    before = out.read_bytes()

    assert main(["export", "--model", "edsr-baseline", "--weights", str(weights), "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert "already exists" in err and "--overwrite" in err and len(err.strip().splitlines()) == 1
    assert out.read_bytes() == before

    out.write_bytes(b"stale")
    assert main(["export", "--model", str(weights), "-o", str(out), "--overwrite"]) == 0
    assert out.read_bytes() == before  # same weights, same deterministic export


def test_cli_refuses_unsupported_model(tmp_path, capsys):
    out = tmp_path / "m.onnx"
    assert main(["export", "--model", "csnln", "--scale", "2", "-o", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("sisr export: error: csnln cannot be exported to ONNX") and "\n" not in err
    assert not out.exists()


@pytest.mark.parametrize("missing", ["onnx", "onnxscript"])
def test_missing_package_message(missing, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, missing, None)  # import -> ImportError, installed or not
    with pytest.raises(ex.ExportError, match=f"needs the package.* {missing}[ ,].*pip install 'sisr\\[onnx\\]'"):
        ex.require_onnx()
    # the CLI says so before looking for weights
    assert main(["export", "--model", "edsr", "-o", str(tmp_path / "m.onnx")]) == 1
    err = capsys.readouterr().err.strip()
    assert missing in err and "pip install 'sisr[onnx]'" in err and "\n" not in err


def test_cli_export_refuses_non_onnx_and_its_own_weights(tmp_path, capsys):
    model = tiny("edsr-baseline")
    weights = save_weights(model, tmp_path / "w.safetensors", model="edsr-baseline", scale=2,
                           hparams=model.sisr_spec.hparams)
    before = weights.read_bytes()
    for argv in (["--model", str(weights), "-o", str(weights), "--overwrite"],
                 ["--model", "edsr-baseline", "--weights", str(weights), "-o", str(weights), "--overwrite"],
                 ["--model", str(weights), "-o", str(tmp_path / "tiny.txt")]):
        assert main(["export", *argv]) == 1
        err = capsys.readouterr().err
        assert "must be an .onnx file" in err and err.count("\n") == 1
    link = tmp_path / "same.onnx"
    link.hardlink_to(weights)
    assert main(["export", "--model", str(weights), "-o", str(link), "--overwrite"]) == 1
    assert "is the weights file being exported" in capsys.readouterr().err
    assert weights.read_bytes() == before and not (tmp_path / "tiny.txt").exists()
    with pytest.raises(ex.ExportError, match="must be an .onnx file"):
        ex.export_onnx(model, tmp_path / "x.safetensors")


@needs_onnx
def test_export_of_a_loaded_channels_last_network_keeps_its_layout(tmp_path):
    """load_model puts networks in channels_last on the CPU; export traces a contiguous copy."""
    from sisr.weights.handle import is_channels_last, set_channels_last

    net = sisr.create_model("edsr-baseline", scale=2, n_resblocks=1, n_feats=8).eval()
    set_channels_last(net, True)
    result = ex.export_onnx(net, tmp_path / "m.onnx", verify=True)
    assert result.verified and is_channels_last(net)
