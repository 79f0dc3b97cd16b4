"""Every registry entry: construction, parameter counts, and tiny-configuration behaviour."""

from __future__ import annotations

import pytest
import torch

import sisr
from sisr.errors import ModelError
from sisr.models import count_parameters, get_info, list_models

NAMES = list_models()


def test_registry_names():
    assert set(NAMES) == {"csnln", "defian-s", "defian-l", "cran", "cran-edsr", "eacrn", "edsr", "edsr-baseline",
                          "rcan", "bicubic"}


@pytest.mark.parametrize("name", NAMES)
def test_full_configuration_parameter_count(name):
    info = get_info(name)
    assert set(info.reference_params) <= set(info.scales)
    for scale in info.scales:
        model = sisr.create_model(name, scale=scale)
        n = count_parameters(model)
        ref = info.reference_params.get(scale)
        if ref is None:
            continue
        if info.params_tolerance == 0:
            assert n == ref, f"{name} x{scale}: {n:,} parameters, reference {ref:,}"
        else:
            assert abs(n - ref) <= info.params_tolerance * ref, f"{name} x{scale}: {n:,} vs {ref:,}"


@pytest.mark.parametrize("name", NAMES)
def test_tiny_forward_backward(name):
    for scale in get_info(name).scales:
        _check_forward_backward(name, scale)


def _check_forward_backward(name, scale):
    info = get_info(name)
    torch.manual_seed(0)
    model = sisr.create_model(name, scale=scale, **info.tiny)
    x = torch.rand(2, 3, 11, 13, requires_grad=True)
    y = model(x)
    assert y.shape == (2, 3, 11 * scale, 13 * scale)
    assert torch.isfinite(y).all()
    y.abs().mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    for pname, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None, f"{name}: no gradient for {pname}"
            assert torch.isfinite(p.grad).all(), f"{name}: non-finite gradient for {pname}"


@pytest.mark.parametrize("name", NAMES)
def test_tiny_deterministic_under_seed(name):
    info = get_info(name)
    scale = info.scales[0]
    x = torch.rand(1, 3, 9, 12)
    outs = []
    for _ in range(2):
        torch.manual_seed(123)
        model = sisr.create_model(name, scale=scale, **info.tiny).eval()
        with torch.no_grad():
            outs.append(model(x))
    assert torch.equal(outs[0], outs[1])


@pytest.mark.parametrize("name", NAMES)
def test_batch_items_independent(name):
    info = get_info(name)
    torch.manual_seed(0)
    model = sisr.create_model(name, scale=info.scales[0], **info.tiny).eval()
    x = torch.rand(3, 3, 10, 7)
    with torch.no_grad():
        whole = model(x)
        single = torch.cat([model(x[i:i + 1]) for i in range(3)])
    torch.testing.assert_close(whole, single, atol=1e-5, rtol=1e-5)


def test_unknown_model_scale_and_hparam_are_clear_errors():
    with pytest.raises(ModelError, match="unknown model 'nope'"):
        sisr.create_model("nope")
    with pytest.raises(ModelError, match="supports scales"):
        sisr.create_model("csnln", scale=5)
    with pytest.raises(ModelError, match="no hyper-parameter 'width'"):
        sisr.create_model("edsr-baseline", scale=2, width=3)
