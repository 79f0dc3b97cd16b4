"""sisr models: the registry table."""

from __future__ import annotations

import json

from sisr.cli import main
from sisr.models import list_models


def test_models_json_lists_every_registry_entry(capsys):
    assert main(["models", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == list_models()
    for r in rows:
        assert r["scales"] and isinstance(r["pretrained"], list)
        assert set(r["pretrained"]) <= set(r["scales"])


def test_models_table(capsys):
    assert main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["name", "scales", "pretrained"]
    assert len(lines) == 1 + len(list_models())


def test_models_variants(capsys):
    assert main(["models", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["cran"]["variants"]["paper-form"] == {"descriptor_norm": "none"}
    assert main(["models", "--variants"]) == 0
    names = [line.split()[0] for line in capsys.readouterr().out.splitlines()[1:]]
    assert names == list_models(variants=True) and "eacrn:group-ema" in names
