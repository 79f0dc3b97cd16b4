"""CPU paths: cgroup-aware free memory, the reduced-precision fallback, importing without torch's private APIs."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import pytest
import torch
from torch import nn

from sisr.inference.forward import run
from sisr.inference.network import output_is_sound
from sisr.utils import device as dev


def _files(tmp_path, limit: str, usage: str):
    lim, cur = tmp_path / "memory.max", tmp_path / "memory.current"
    lim.write_text(limit + "\n")
    cur.write_text(usage + "\n")
    return ((str(lim), str(cur)),)


def test_cgroup_v2_limit_minus_usage(tmp_path):
    assert dev._cgroup_available_memory(_files(tmp_path, str(3 << 30), str(1 << 30))) == 2 << 30


def test_cgroup_without_limit(tmp_path):
    assert dev._cgroup_available_memory(_files(tmp_path, "max", "12345")) is None
    assert dev._cgroup_available_memory(_files(tmp_path, str(1 << 62), "12345")) is None  # v1 "unlimited"
    assert dev._cgroup_available_memory(((str(tmp_path / "none"), str(tmp_path / "none2")),)) is None


def test_cgroup_usage_over_limit_is_zero(tmp_path):
    assert dev._cgroup_available_memory(_files(tmp_path, "100", "150")) == 0


def test_cpu_free_memory_is_the_smaller_of_system_and_cgroup(monkeypatch):
    monkeypatch.setattr(dev, "_system_available_memory", lambda: 8 << 30)
    monkeypatch.setattr(dev, "_cgroup_available_memory", lambda: 200 << 20)
    assert dev.free_memory(torch.device("cpu")) == 200 << 20
    monkeypatch.setattr(dev, "_cgroup_available_memory", lambda: None)
    assert dev.free_memory(torch.device("cpu")) == 8 << 30


class _BadUnderAutocast(nn.Module):
    """A 2x nearest upscaler that returns NaN (or zeros) when run under autocast."""

    def __init__(self, failure: str):
        super().__init__()
        self.w = nn.Parameter(torch.ones(()))
        self.failure = failure

    def forward(self, x):
        y = nn.functional.interpolate(x * self.w, scale_factor=2, mode="nearest")
        if torch.is_autocast_enabled("cpu"):
            return torch.full_like(y, float("nan")) if self.failure == "nan" else torch.zeros_like(y)
        return y


@pytest.mark.parametrize("failure", ["nan", "zeros"])
@pytest.mark.parametrize("tile", [None, 16])
def test_reduced_precision_failure_is_redone_in_fp32_with_one_warning(failure, tile):
    net = _BadUnderAutocast(failure)
    x = torch.rand(1, 3, 40, 40, generator=torch.Generator().manual_seed(0))
    ref = run(net, x)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = run(net, x, precision="bf16", tile=tile, tile_overlap=4)
    fallback = [w for w in caught if "recomputed in fp32" in str(w.message)]
    assert len(fallback) == 1
    assert torch.isfinite(out).all()
    assert (out - ref).abs().max() <= 1e-6


def test_output_is_sound():
    x = torch.rand(1, 3, 4, 4)
    assert output_is_sound(x, x * 2)
    assert not output_is_sound(x, torch.zeros(1, 3, 8, 8))
    assert not output_is_sound(x, torch.full((1, 3, 8, 8), float("inf")))
    assert output_is_sound(torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 8, 8))  # flat in, flat out is fine


def test_import_survives_without_torch_private_dispatch_api():
    """sisr (and its tiling module) import with torch.utils._python_dispatch / _pytree unavailable."""
    code = ("import sys, torch\n"
            "sys.modules['torch.utils._python_dispatch'] = None  # any import of it now raises ImportError\n"
            "sys.modules['torch.utils._pytree'] = None\n"
            "import sisr, sisr.inference.tiling, sisr.inference.forward\n"
            "try:\n"
            "    from torch.utils._python_dispatch import TorchDispatchMode\n"
            "except ImportError:\n"
            "    print('ok')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "ok" in done.stdout, done.stderr[-2000:]


# ----------------------------------------------------------------------------- backends

def _tiny(name: str = "edsr-baseline") -> nn.Module:
    import sisr

    torch.manual_seed(0)
    return sisr.create_model(name, scale=2, **sisr.get_info(name).tiny).eval()


def _x(h: int = 16, w: int = 20) -> torch.Tensor:
    return torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(0))


def test_auto_runs_the_module_in_its_own_layout_and_never_converts_it():
    from sisr.inference.network import Runner
    from sisr.inference.options import RunOptions
    from sisr.weights.handle import set_channels_last

    model = _tiny()
    reference = run(model, _x(64, 72), backend="eager")
    out = run(model, _x(64, 72))
    assert (out - reference).abs().max() < 1e-5
    assert all(p.is_contiguous() for p in model.parameters())  # a contiguous module stays contiguous
    assert Runner(model, torch.device("cpu"), RunOptions(), pixels=64 * 72).channels_last is False
    set_channels_last(model, True)  # as sisr.weights.resolve loads CPU networks
    runner = Runner(model, torch.device("cpu"), RunOptions(), pixels=64 * 72)
    assert runner.channels_last and runner.backend == "eager (channels_last)"
    assert (run(model, _x(64, 72)) - reference).abs().max() < 1e-5


def test_backend_errors_are_one_line():
    from sisr.errors import ConfigError

    model = _tiny("defian-s")
    with pytest.raises(ConfigError, match="unknown backend 'tvm'"):
        run(model, _x(), backend="tvm")
    with pytest.raises(ConfigError, match="backend compile runs float32 graphs"):
        run(model, _x(), backend="compile", precision="bf16")


def test_model_key_follows_weights_spec_and_kind():
    from sisr.inference.backends import model_key

    a, b = _tiny(), _tiny()
    assert model_key(a, "aoti") == model_key(b, "aoti") != model_key(a, "onnx")
    with torch.no_grad():
        next(b.parameters()).view(-1)[0] += 1e-3
    assert model_key(a, "aoti") != model_key(b, "aoti")


def test_compile_backend_builds_one_cached_package_within_one_grey_level(tmp_path, monkeypatch):
    pytest.importorskip("torch._inductor")
    monkeypatch.setenv("SISR_CACHE_DIR", str(tmp_path))
    model = _tiny()
    keys = list(model.state_dict())
    reference = run(model, _x(), backend="eager")
    out = run(model, _x(), backend="compile")
    assert (out - reference).abs().max() < 1 / 255
    packages = list((tmp_path / "compiled").glob("*.pt2"))
    assert len(packages) == 1 and not list((tmp_path / "compiled").glob("*.part*"))
    stamp = packages[0].stat().st_mtime_ns
    fresh = _tiny()  # same weights, new module: the package is loaded, not rebuilt
    out2 = run(fresh, _x(24, 12), backend="compile")  # another size: the package has dynamic H/W
    assert (out2 - run(fresh, _x(24, 12), backend="eager")).abs().max() < 1 / 255
    assert packages[0].stat().st_mtime_ns == stamp and len(list((tmp_path / "compiled").glob("*.pt2"))) == 1
    assert set(model.state_dict()) == set(keys)
    # a later process loads the package without importing inductor (seconds of start-up)
    code = ("import sys, torch, sisr; from sisr.inference.forward import run; torch.manual_seed(0); "
            "m = sisr.create_model('edsr-baseline', scale=2, **sisr.get_info('edsr-baseline').tiny).eval(); "
            "x = torch.rand(1, 3, 16, 20, generator=torch.Generator().manual_seed(0)); "
            "d = (run(m, x, backend='compile') - run(m, x, backend='eager')).abs().max().item(); "
            "print(d, 'torch._inductor' in sys.modules)")
    env = dict(os.environ, SISR_CACHE_DIR=str(tmp_path))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    diff, inductor = out.stdout.split()[-2:]
    assert float(diff) < 1 / 255 and inductor == "False", out.stderr[-500:]
    assert packages[0].stat().st_mtime_ns == stamp


def test_onnxruntime_backend_within_one_grey_level(tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    monkeypatch.setenv("SISR_CACHE_DIR", str(tmp_path))
    model = _tiny()
    reference = run(model, _x(), backend="eager")
    out = run(model, _x(), backend="onnxruntime")
    assert (out - reference).abs().max() < 1 / 255
    assert len(list((tmp_path / "onnx").glob("*.onnx"))) == 1
    assert (run(model, _x(), backend="onnxruntime", self_ensemble=True)
            - run(model, _x(), backend="eager", self_ensemble=True)).abs().max() < 1 / 255


def test_compile_backend_refuses_a_package_that_differs_from_eager(tmp_path, monkeypatch):
    """A package with a size baked in (CRAN's did: 128x128 out for any input) is an error, and not cached."""
    pytest.importorskip("torch._inductor")
    from sisr.errors import ConfigError
    from sisr.inference import backends

    monkeypatch.setenv("SISR_CACHE_DIR", str(tmp_path))
    real = backends._load_package
    monkeypatch.setattr(backends, "_load_package", lambda path: (lambda x, fn=real(path): fn(x)[..., :8]))
    with pytest.raises(ConfigError, match=r"the compiled package gives shape 2x3x34x8 on a 2x3x17x13 input, "
                                          r"PyTorch 2x3x34x26.*use --backend eager"):
        run(_tiny(), _x(), backend="compile")
    assert not [p for p in (tmp_path / "compiled").glob("*") if p.suffix != ".lock"]


# ----------------------------------------------------------------------------- the compile / onnx cache

def _fake_compile(monkeypatch, root):
    """The compile backend with a stand-in builder and loader: records what was built and what was loaded."""
    from pathlib import Path

    from sisr.inference import backends

    monkeypatch.setenv("SISR_CACHE_DIR", str(root))
    calls = {"built": 0, "loaded": [], "fail_loads": 0}

    def build(model, dest):
        calls["built"] += 1
        Path(dest).write_bytes(b"genuine package " + backends.model_key(model, "aoti").encode())

    def load(path):
        calls["loaded"].append(Path(path).read_bytes())
        if calls["fail_loads"]:
            calls["fail_loads"] -= 1
            raise RuntimeError("undefined symbol: foo")
        return lambda x: x

    monkeypatch.setattr(backends, "_build_package", build)
    monkeypatch.setattr(backends, "_load_package", load)
    return calls


def _compile(model):
    from sisr.inference import backends

    return backends.prepare(model, "compile", torch.device("cpu"), None)


def _entry(model):
    from sisr.inference import backends

    return backends.cached_file(model, "compile", torch.device("cpu"))


def test_a_foreign_file_at_the_cached_path_is_rebuilt_not_loaded(tmp_path, monkeypatch):
    calls = _fake_compile(monkeypatch, tmp_path / "cache")
    path, exists = _entry(_tiny())
    assert not exists
    path.parent.mkdir(parents=True)
    path.write_bytes(b"a package of another model, or one whose .so runs code on load")
    assert _entry(_tiny()) == (path, False)  # present, but not a recorded build: not usable
    _compile(_tiny())
    assert calls["built"] == 1 and calls["loaded"] == [path.read_bytes()]
    assert path.read_bytes().startswith(b"genuine package")
    assert _entry(_tiny()) == (path, True)
    _compile(_tiny())  # a new module with the same weights: loaded, not rebuilt
    assert calls["built"] == 1 and len(calls["loaded"]) == 2
    assert oct(path.stat().st_mode & 0o777) == "0o600"


def test_a_digest_mismatch_or_another_models_record_rebuilds(tmp_path, monkeypatch):
    import json
    import shutil

    calls = _fake_compile(monkeypatch, tmp_path / "cache")
    a = _tiny()
    _compile(a)
    path = _entry(a)[0]
    record = json.loads(path.with_suffix(".json").read_text())
    for made in (path, path.with_suffix(".json"), path.parent, path.parent.parent):  # sisr made these private
        assert made.stat().st_mode & 0o077 == 0, made
    assert record["key"] == path.stem and len(record["sha256"]) == 64 and record["backend"] == "compile"
    path.write_bytes(b"tampered")  # the record no longer matches the file
    _compile(_tiny())
    assert calls["built"] == 2 and calls["loaded"][-1].startswith(b"genuine package")
    b = _tiny()
    with torch.no_grad():
        next(b.parameters()).view(-1)[0] += 1
    other = _entry(b)[0]
    shutil.copy(path, other)  # a's package and record under b's name
    shutil.copy(path.with_suffix(".json"), other.with_suffix(".json"))
    _compile(b)
    assert calls["built"] == 3 and other.read_bytes() != path.read_bytes()


def test_a_writable_cache_folder_is_refused_in_one_line(tmp_path, monkeypatch):
    from sisr.errors import ConfigError

    root = tmp_path / "cache"
    calls = _fake_compile(monkeypatch, root)
    _compile(_tiny())
    for folder in (root, root / "compiled"):
        folder.chmod(0o777)
        with pytest.raises(ConfigError) as caught:
            _compile(_tiny())
        message = str(caught.value)
        assert "\n" not in message and str(folder) in message and "writable by group or others" in message
        assert "SISR_CACHE_DIR" in message
        with pytest.raises(ConfigError, match="writable by group or others"):
            _entry(_tiny())
        folder.chmod(0o700)
    assert calls["built"] == 1 and len(calls["loaded"]) == 1


def test_a_cache_file_owned_by_another_user_is_refused(tmp_path, monkeypatch):
    from sisr.errors import ConfigError
    from sisr.inference import backends

    calls = _fake_compile(monkeypatch, tmp_path / "cache")
    _compile(_tiny())
    path = _entry(_tiny())[0]
    for target in (path, path.with_suffix(".json"), path.parent):
        monkeypatch.setattr(backends, "_file_owner", lambda p, st, t=target: 4321 if p == t else st.st_uid)
        with pytest.raises(ConfigError) as caught:
            _compile(_tiny())
        assert "\n" not in str(caught.value) and str(target) in str(caught.value)
        assert "owned by another user (uid 4321)" in str(caught.value)
    assert calls["built"] == 1 and len(calls["loaded"]) == 1


def test_an_unusable_cache_folder_names_the_cache_and_sisr_cache_dir(tmp_path, monkeypatch):
    from sisr.errors import ConfigError

    (tmp_path / "afile").write_text("x")
    _fake_compile(monkeypatch, tmp_path / "afile" / "cache")
    with pytest.raises(ConfigError) as caught:
        _compile(_tiny())
    message = str(caught.value)
    assert "\n" not in message and "cache folder" in message and "SISR_CACHE_DIR" in message, message


def test_a_recorded_package_that_fails_to_load_is_rebuilt_once(tmp_path, monkeypatch):
    from sisr.errors import ConfigError

    calls = _fake_compile(monkeypatch, tmp_path / "cache")
    _compile(_tiny())
    calls["fail_loads"] = 1
    _compile(_tiny())  # loading the recorded package fails once: rebuilt, then loaded
    assert calls["built"] == 2 and len(calls["loaded"]) == 3
    calls["fail_loads"] = 2
    with pytest.raises(ConfigError, match=r"cannot load the compiled package \(RuntimeError: undefined symbol: foo\) "
                                          r"even after rebuilding it; use --backend eager"):
        _compile(_tiny())
    assert calls["built"] == 3


def test_onnx_cache_of_another_model_is_not_used(tmp_path, monkeypatch):
    """A real graph of model a copied to the cached path of model b: b is exported again, and right."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    import shutil

    from sisr.inference.backends import cached_file

    monkeypatch.setenv("SISR_CACHE_DIR", str(tmp_path))
    a, b = _tiny(), _tiny()
    with torch.no_grad():
        b.tail[-1].bias += 60  # on the 0-255 scale inside the network: b's output is a's + 0.24
    expected = run(b, _x(), backend="eager")
    assert (run(a, _x(), backend="eager") - expected).abs().max() > 0.2
    run(a, _x(), backend="onnxruntime")
    a_path, _ = cached_file(a, "onnxruntime", torch.device("cpu"))
    b_path, exists = cached_file(b, "onnxruntime", torch.device("cpu"))
    assert not exists
    shutil.copy(a_path, b_path)
    out = run(b, _x(), backend="onnxruntime")
    assert (out - expected).abs().max() < 1 / 255
    assert b_path.read_bytes() != a_path.read_bytes() and cached_file(b, "onnxruntime", torch.device("cpu"))[1]
    assert a_path.with_suffix(".json").is_file() and oct(a_path.stat().st_mode & 0o777) == "0o600"
