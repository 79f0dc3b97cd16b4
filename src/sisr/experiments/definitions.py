"""The papers' tables as data: one YAML file per table in ``sisr/experiments/tables/``.

Three kinds (docs/experiments.md has the full schema):

* ``ablation``: variants of a registry model, each trained with the table's protocol (a training
  recipe plus overrides) and scored on the table's datasets; every variant carries the paper's
  figures for its cell.
* ``evaluation``: a main results table (datasets x scales, PSNR/SSIM, plain and "+" rows) that
  scores given weights files.
* ``complexity``: a complexity table (parameters, FLOPs, memory, time per model and scale on one
  input size): counted on the meta device, memory and time measured on the run's device.

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

KINDS = ("ablation", "evaluation", "complexity")
# a complexity table's columns, in the paper's units: name -> (what is measured, divisor)
COMPLEXITY_COLUMNS = {"params_k": ("parameters", 1e3), "params_m": ("parameters", 1e6), "flops_g": ("flops", 1e9),
                      "memory_mb": ("peak_memory_bytes", 2**20), "time_s": ("runtime_s", 1.0)}
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
    """One method row of a main results table (paper: scale -> dataset -> (PSNR, SSIM)) or of a complexity
    table (paper: scale -> column -> value; hparams: how the row's network is built)."""

    label: str
    model: str
    self_ensemble: bool = False
    paper: Mapping[int, Mapping[str, Any]] = field(default_factory=dict)
    hparams: Mapping[str, Any] = field(default_factory=dict)


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
    # complexity tables: the input (LR size, or the HR size each scale's LR is derived from), the columns
    # and what the paper calls FLOPs ("macs": multiply-accumulates by our count, or "flops")
    input_side: str = "lr"
    input_hw: tuple[int, ...] = ()
    columns: tuple[str, ...] = ()
    flops_are: str = "macs"

    def lr_hw(self, scale: int) -> tuple[int, int]:
        """A complexity table's LR input at ``scale`` (an HR size divided, rounded to nearest)."""
        h, w = self.input_hw
        return (h, w) if self.input_side == "lr" else (round(h / scale), round(w / scale))
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
            return out
        evaluation = self.kind == "evaluation"
        out.update(scales=list(self.scales), rows=[
            {"label": r.label, "model": r.model, "paper": _plain(r.paper),
             **({"self_ensemble": r.self_ensemble} if evaluation else {"hparams": dict(r.hparams)})}
            for r in self.rows])
        if evaluation:
            out.update(datasets=list(self.datasets), degradation=self.degradation)
        else:
            out.update(input={self.input_side: list(self.input_hw)}, columns=list(self.columns),
                       flops_are=self.flops_are)
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
    if kind == "complexity":
        return _parse_complexity(d, common, source)
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


def _parse_complexity(d: Mapping[str, Any], common: dict[str, Any], source: str) -> Experiment:
    (side, hw), = dict(d["input"]).items()  # exactly one of lr: [H, W] / hr: [H, W]
    columns = tuple(d["columns"])
    unknown = [c for c in columns if c not in COMPLEXITY_COLUMNS]
    if side not in ("lr", "hr") or len(hw) != 2 or unknown:
        raise ConfigError(f"{source}: input must be lr: [H, W] or hr: [H, W]; columns among "
                          f"{', '.join(COMPLEXITY_COLUMNS)} (not {', '.join(unknown) or side})")
    flops_are = str(d.get("flops_are", "macs"))
    if flops_are not in ("macs", "flops"):
        raise ConfigError(f"{source}: flops_are must be macs or flops, not {flops_are!r}")
    scales = tuple(int(s) for s in d["scales"])
    rows = tuple(EvalRow(label=str(r["label"]), model=str(r["model"]), hparams=dict(r.get("hparams") or {}),
                         paper={int(s): {k: float(v) for k, v in cols.items()}
                                for s, cols in (r.get("paper") or {}).items()}) for r in d["rows"])
    for r in rows:
        for scale in scales:
            get_info(r.model).hparams(scale, **r.hparams)  # unknown hyper-parameters / scales fail here
    return Experiment(**common, scales=scales, rows=rows, input_side=side, input_hw=tuple(int(v) for v in hw),
                      columns=columns, flops_are=flops_are)
