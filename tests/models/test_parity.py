"""Parity with the authors' original model code (../shared/fixtures/parity).

Each ``<name>.weights.safetensors`` holds an official state_dict (perturbed so
every parameter matters), ``<name>.io.safetensors`` an input and the official
network's output (both mapped to RGB in [0, 1] by the convention in
``<name>.json``), and the JSON the constructor arguments. Every fixture file of
that form is picked up, whatever its model family or scale.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import sisr
from testing_utils import ground_truth_cases, require_case, shared_root
from sisr.models import count_parameters, get_info

# official model family (JSON "model") -> registry names that implement it
FAMILIES = {
    "EDSR": ("edsr-baseline", "edsr"),
    "RCAN": ("rcan",),
    "CSNLN": ("csnln",),
    "DeFiAN": ("defian-s", "defian-l"),
}


def _fixture_names() -> list[str]:
    root = shared_root()
    if root is None:
        return []
    return sorted(p.name[: -len(".weights.safetensors")] for p in (root / "fixtures" / "parity").glob("*.weights.safetensors"))


def build_from_fixture(spec: dict) -> torch.nn.Module:
    """Registry model for a fixture JSON: the entry whose defaults match, else the first with overrides."""
    candidates = FAMILIES[spec["model"]]
    best = None
    for name in candidates:
        info = get_info(name)
        hp = {k: spec[k] for k in info.hparam_names() if k in spec}
        matches = all(info.defaults.get(k) == v for k, v in hp.items())
        if best is None or matches:
            best = (name, hp)
        if matches:
            break
    name, hp = best
    return sisr.create_model(name, scale=spec["scale"], **hp)


@pytest.mark.parametrize("fixture", ground_truth_cases(_fixture_names(), "../shared/fixtures/parity"))
def test_parity_with_official_code(fixture, fixtures_root: Path):
    require_case(fixture, "../shared/fixtures/parity")
    folder = fixtures_root / "parity"
    spec = json.loads((folder / f"{fixture}.json").read_text())
    state = load_file(folder / f"{fixture}.weights.safetensors")
    io = load_file(folder / f"{fixture}.io.safetensors")

    model = build_from_fixture(spec)
    assert count_parameters(model) == spec["n_params"]
    assert len(model.state_dict()) == spec["n_state"]
    model.load_state_dict(state, strict=True)
    model.eval()
    with torch.no_grad():
        out = model(io["input"])
    assert out.shape == io["output"].shape
    diff = (out - io["output"]).abs().max().item()
    assert diff < 1e-4, f"{fixture}: max abs difference {diff:.3g}"
