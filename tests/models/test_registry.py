"""Every registry entry and variant: construction, parameter counts, tiny-configuration behaviour, metadata parts."""

from __future__ import annotations

import inspect

import pytest
import torch

import sisr
from sisr.errors import ModelError
from sisr.models import count_parameters, get_info, is_model_name, list_models
from sisr.models.registry import Capabilities, ModelInfo, Reference

NAMES = list_models()
VARIANTS = [n for n in list_models(variants=True) if ":" in n]


def test_registry_names():
    assert set(NAMES) == {"csnln", "defian-s", "defian-l", "cran", "cran-edsr", "eacrn", "edsr", "edsr-baseline",
                          "rcan", "bicubic"}


@pytest.mark.parametrize("name", NAMES)
def test_full_configuration_parameter_count(name):
    reference = get_info(name).reference
    assert set(reference.params) <= set(get_info(name).scales)
    for scale in get_info(name).scales:
        model = sisr.create_model(name, scale=scale)
        n = count_parameters(model)
        ref = reference.params.get(scale)
        if ref is None:
            continue
        if reference.params_tolerance == 0:
            assert n == ref, f"{name} x{scale}: {n:,} parameters, reference {ref:,}"
        else:
            assert abs(n - ref) <= reference.params_tolerance * ref, f"{name} x{scale}: {n:,} vs {ref:,}"


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


# The former flat fields, kept read-only for benchmarks/ and scripts/, and where each now lives.
ALIASES = {"paper": "reference.paper", "code": "reference.code", "reference_params": "reference.params",
           "reference_source": "reference.params_source", "params_tolerance": "reference.params_tolerance",
           "tiling": "capabilities.tiling", "input_size": "capabilities.input_size",
           "precisions": "capabilities.precisions", "train_precisions": "capabilities.train_precisions",
           "cpu_train_compile": "capabilities.cpu_train_compile",
           "onnx_unsupported": "capabilities.onnx_unsupported", "onnx_notes": "capabilities.onnx_notes",
           "from_official": "official.detect", "official_convention": "official.convention"}


@pytest.mark.parametrize("name", NAMES + VARIANTS)
def test_former_flat_fields_read_the_parts(name):
    info = get_info(name)
    for alias, path in ALIASES.items():
        part, field = path.split(".")
        owner = getattr(info, part)
        if owner is None:  # no official format: the former defaults
            assert getattr(info, alias) == ("" if alias == "official_convention" else None), f"{name}.{alias}"
        else:
            assert getattr(info, alias) is getattr(owner, field), f"{name}.{alias}"
    with pytest.raises(AttributeError):
        info.precisions = ("fp32",)


def test_official_formats_where_the_authors_released_checkpoints():
    with_official = {n for n in NAMES if get_info(n).official is not None}
    assert with_official == {"edsr-baseline", "edsr", "rcan", "csnln", "defian-s", "defian-l"}
    assert all(get_info(n).reference.code for n in with_official)


def test_variants_are_listed_after_their_entry():
    assert list_models() == NAMES and not any(":" in n for n in NAMES)
    assert set(VARIANTS) == {"csnln:reference", "defian-s:no-attention", "defian-l:no-attention", "cran:paper-form",
                             "cran:no-group-conv", "eacrn:group-ema", "eacrn:group-skip"}
    every = list_models(variants=True)
    assert [n for n in every if ":" not in n] == NAMES
    for name in VARIANTS:
        base = name.split(":")[0]
        assert every.index(base) < every.index(name)
        assert all(":" not in n or n.startswith(base + ":") for n in every[every.index(base) + 1:every.index(name)])
    assert [i.name for i in sisr.models.model_infos(variants=True)] == every


def _resolved(name, scale):
    """Every constructor argument of ``name`` at ``scale``: the builder's defaults, then the registry's."""
    info = get_info(name)
    params = inspect.signature(info.build).parameters
    signature = {k: p.default for k, p in params.items() if k in info.hparam_names()}
    return {**signature, **info.hparams(scale)}


@pytest.mark.parametrize("name", VARIANTS)
def test_variant_is_its_entry_with_its_hyper_parameters(name):
    base, _, variant = name.partition(":")
    info, entry = get_info(name), get_info(base)
    assert info.name == name and get_info(name.upper()).name == name and is_model_name(name.upper())
    changed = dict(entry.variants[variant])
    for scale in entry.scales:
        full, base_full = _resolved(name, scale), _resolved(base, scale)
        assert {k for k in full if full[k] != base_full[k]} == set(changed)
        assert {k: full[k] for k in changed} == changed
    assert info.capabilities is entry.capabilities and info.scales == entry.scales and not info.variants
    assert info.official is None and info.reference.params == {} and info.reference.paper == entry.reference.paper
    torch.manual_seed(0)
    model = sisr.create_model(name, scale=info.scales[0], **info.tiny)
    assert model.sisr_spec.name == name and model.sisr_spec.hparams == info.hparams(info.scales[0], **info.tiny)
    again = sisr.create_model(model.sisr_spec.name, model.sisr_spec.scale, **model.sisr_spec.hparams)
    assert {k: v.shape for k, v in again.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}
    _check_forward_backward(name, info.scales[0])


def test_overrides_win_over_the_variant():
    model = sisr.create_model("cran:paper-form", scale=2, descriptor_norm="rms", **get_info("cran").tiny)
    assert model.sisr_spec.hparams["descriptor_norm"] == "rms"


def test_variant_parameter_counts_from_the_docs():
    """docs/models/eacrn.md (EM attention once per CRG) and docs/models/cran.md (no per-group tail conv), x2."""
    assert count_parameters(sisr.create_model("eacrn:group-ema", scale=2)) == 15_112_347
    assert count_parameters(sisr.create_model("cran:no-group-conv", scale=2)) == 15_290_087
    plain = count_parameters(sisr.create_model("defian-s", scale=2, **get_info("defian-s").tiny))
    assert count_parameters(sisr.create_model("defian-s:no-attention", scale=2, **get_info("defian-s").tiny)) < plain


def test_unknown_variant_is_a_one_line_error():
    with pytest.raises(ModelError, match=r"^model 'cran' has no variant 'nope'; variants: paper-form, "
                                         r"no-group-conv$"):
        sisr.create_model("cran:nope", scale=2)
    with pytest.raises(ModelError, match=r"^model 'edsr' has no variant 'x'; variants: none$"):
        get_info("edsr:x")
    with pytest.raises(ModelError, match=r"^unknown model 'nope'; available: "):
        get_info("nope:x")
    assert not is_model_name("cran:nope") and not is_model_name("nope:x") and not is_model_name("cran:")


def test_variant_declarations_are_checked():
    from sisr.models.edsr import build_edsr

    def entry(variants):
        return ModelInfo(name="t", title="t", build=build_edsr, scales=(2,), reference=Reference(paper="p"),
                         capabilities=Capabilities(), variants=variants)

    assert entry({"fine": {"n_feats": 8}}).variants == {"fine": {"n_feats": 8}}
    for bad in ({"Upper": {"n_feats": 8}}, {"a:b": {"n_feats": 8}}, {"empty": {}}, {"typo": {"width": 8}}):
        with pytest.raises(ValueError, match="variant"):
            entry(bad)
    with pytest.raises(ModelError, match="n_feats must be a non-negative integer"):
        entry({"neg": {"n_feats": -1}})
