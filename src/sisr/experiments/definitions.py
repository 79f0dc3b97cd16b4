"""The papers' tables as data: one YAML file per table in ``sisr/experiments/tables/``.

Two kinds (docs/experiments.md has the full schema):

* ``ablation``: variants of a registry model, each trained with the table's protocol (a training
  recipe plus overrides) and scored on the table's datasets; every variant carries the paper's
  figures for its cell.
* ``evaluation``: a main results table (datasets x scales, PSNR/SSIM, plain and "+" rows) that
  scores given weights files.

A variant is ``sisr.create_model(variant.model, scale=experiment.scale, **variant.hparams)``:
the experiment's base hyper-parameters merged with the variant's own.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Mapping

import yaml

from ..errors import ConfigError, ModelError
from ..models.registry import get_info

KINDS = ("ablation", "evaluation")
PAPERS = ("eacrn", "csnln", "cran", "defian", "sisr")


@dataclass(frozen=True)
class Variant:
    """One cell (column or row) of an ablation table."""

    label: str
    model: str
    hparams: Mapping[str, Any]
    paper: Mapping[str, Any] = field(default_factory=dict)  # params_k, flops_g, psnr: {set: dB}, ssim: {...}
    recipe: str | None = None  # overrides the experiment's recipe (equal-budget comparisons)

    def tiny_hparams(self, base: Mapping[str, Any]) -> dict[str, Any]:
        """The variant at the registry's tiny size: tiny under the variant's switches, over the base."""
        tiny = dict(get_info(self.model).tiny)
        own = {k: v for k, v in self.hparams.items() if k not in base or base[k] != v}
        merged = {**base, **tiny, **own}
        return {**merged, **{k: v for k, v in tiny.items() if _is_size(k)}}


def _is_size(key: str) -> bool:
    """Width/depth hyper-parameters: tiny wins for these even where a variant sets them."""
    return key.startswith(("n_", "num_")) or key in ("depth", "width", "channels", "reduction")


@dataclass(frozen=True)
class EvalRow:
    """One method row of a main results table."""

    label: str
    model: str
    self_ensemble: bool = False
    paper: Mapping[int, Mapping[str, tuple[float, float]]] = field(default_factory=dict)


@dataclass(frozen=True)
class Experiment:
    name: str
    kind: str
    paper: str
    table: str
    title: str
    scale: int = 2
    model: str = ""
    hparams: Mapping[str, Any] = field(default_factory=dict)
    recipe: str = ""
    train: Mapping[str, Any] = field(default_factory=dict)
    datasets: tuple[str, ...] = ("Set5",)
    metrics: tuple[str, ...] = ("psnr",)
    protocol: str = ""
    notes: str = ""
    variants: tuple[Variant, ...] = ()
    # evaluation tables
    scales: tuple[int, ...] = ()
    degradation: str = "BI"
    rows: tuple[EvalRow, ...] = ()

    def variant(self, label: str) -> Variant:
        for v in self.variants:
            if v.label == label:
                return v
        raise ConfigError(f"experiment '{self.name}' has no variant '{label}'")

    def summary(self) -> dict[str, Any]:
        """The ``sisr experiment list --json`` object."""
        out: dict[str, Any] = {"name": self.name, "kind": self.kind, "paper": self.paper, "table": self.table,
                               "title": self.title}
        if self.kind == "ablation":
            out["variants"] = [{"label": v.label, "model": v.model, "scale": self.scale,
                                "hparams": dict(v.hparams), "paper": _plain(v.paper)} for v in self.variants]
        else:
            out.update(scales=list(self.scales), datasets=list(self.datasets), degradation=self.degradation,
                       rows=[{"label": r.label, "model": r.model, "self_ensemble": r.self_ensemble,
                              "paper": _plain(r.paper)} for r in self.rows])
        return out


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _folder():
    return resources.files(__package__) / "tables"


@functools.lru_cache(maxsize=None)
def _all() -> dict[str, Experiment]:
    found = {}
    for entry in sorted(_folder().iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".yaml"):
            exp = parse(yaml.safe_load(entry.read_text(encoding="utf-8")), entry.name)
            found[exp.name] = exp
    return found


def list_experiments() -> list[Experiment]:
    return list(_all().values())


def get_experiment(name: str) -> Experiment:
    experiments = _all()
    if name not in experiments:
        raise ConfigError(f"unknown experiment '{name}'; available: {', '.join(experiments)}")
    return experiments[name]


def parse(data: Any, source: str) -> Experiment:
    """An :class:`Experiment` from a YAML mapping; ``ConfigError`` naming ``source`` for a bad file."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: not a mapping")
    try:
        return _parse(data, source)
    except ModelError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"{source}: {type(exc).__name__}: {exc}") from None


def _parse(d: Mapping[str, Any], source: str) -> Experiment:
    kind = d["kind"]
    if kind not in KINDS:
        raise ConfigError(f"{source}: kind must be one of {', '.join(KINDS)}, not {kind!r}")
    name = d["name"]
    if f"{name}.yaml" != source.rsplit("/", 1)[-1]:
        raise ConfigError(f"{source}: name '{name}' differs from the file name")
    evals = d.get("eval") or {}
    common = dict(name=name, kind=kind, paper=str(d["paper"]), table=str(d.get("table", "")),
                  title=str(d.get("title", "")), protocol=str(d.get("protocol", "")), notes=str(d.get("notes", "")),
                  datasets=tuple(evals.get("datasets") or d.get("datasets") or ("Set5",)),
                  metrics=tuple(evals.get("metrics") or ("psnr", "ssim")))
    if kind == "evaluation":
        rows = tuple(EvalRow(label=str(r["label"]), model=str(r["model"]), self_ensemble=bool(r.get("self_ensemble")),
                             paper={int(s): {k: tuple(v) for k, v in sets.items()}
                                    for s, sets in (r.get("paper") or {}).items()}) for r in d["rows"])
        for r in rows:
            get_info(r.model)
        return Experiment(**common, scales=tuple(int(s) for s in d["scales"]),
                          degradation=str(d.get("degradation", "BI")), rows=rows)
    model, base = str(d["model"]), dict(d.get("hparams") or {})
    variants = tuple(Variant(label=str(v["label"]), model=str(v.get("model", model)),
                             hparams={**(base if "model" not in v else {}), **(v.get("hparams") or {})},
                             paper=dict(v.get("paper") or {}), recipe=v.get("recipe")) for v in d["variants"])
    labels = [v.label for v in variants]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"{source}: duplicate variant labels")
    scale = int(d.get("scale", 2))
    for v in variants:
        get_info(v.model).hparams(scale, **v.hparams)  # unknown hyper-parameters / scales fail here
    return Experiment(**common, scale=scale, model=model, hparams=base, recipe=str(d.get("recipe") or model),
                      train=dict(d.get("train") or {}), variants=variants)
