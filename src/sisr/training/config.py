"""Training configuration: YAML recipes validated into typed dataclasses.

A config has the sections ``model``, ``data``, ``val``, ``optim``, ``schedule``, ``train`` and
``log`` (see the dataclasses below and docs/training.md), plus ``per_scale``: a mapping from a
scale to a partial config merged over the base when ``model.scale`` is that scale (patch sizes or
schedules that differ per scale). ``load_config`` takes a file, a shipped recipe name
(``"defian-s"``) or a mapping, applies ``a.b=c`` overrides (values parsed as YAML scalars) and
checks every key and type: an unknown key or a wrong type is a ``ConfigError`` naming the dotted
key. A flow mapping written without the space YAML requires after a colon (``{n_feats:32}``) is
read as ``{n_feats: 32}``. Numbers written ``1e-4`` or ``2e5`` (strings to PyYAML's YAML 1.1 rules) are accepted for
number keys; non-finite numbers (``.nan``, ``.inf``) are not. An error caused by an override names the override
(``override 'optim.lr=.nan': ...``), otherwise the file. ``val.set`` never names a benchmark test set.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

import yaml

from ..errors import ConfigError

RECIPES_DIR = Path(__file__).resolve().parent / "recipes"


@dataclass
class ModelConfig:
    name: str = ""
    scale: int = 2
    hparams: dict[str, Any] = field(default_factory=dict)  # constructor arguments over the registry's
    init: str | None = None  # weights file to start from (names and shapes that match are loaded)


@dataclass
class DataConfig:
    hr: list[str] = field(default_factory=list)  # folders (searched recursively) or image files
    root: str | None = None  # base of relative paths in hr/lr (default: the current folder)
    lr: str | None = None  # prepared LR folder (holding X<s>/ or the images); None: made from the HR
    degradation: Literal["BI", "BD", "DN"] = "BI"
    noise_level: float = 30.0  # DN only; the noise is drawn once per image (fixed)
    patch_size: int = 48  # LR patch side; the HR patch is scale * patch_size
    augment: bool = True  # random horizontal/vertical flips and transposition (8 dihedral transforms)
    iterations_per_epoch: int = 1000  # an "epoch" (EDSR's: DIV2K repeated to 1000 batches of 16)
    cache_dir: str | None = None  # decoded .npy cache (default $SISR_CACHE or ~/.cache/sisr/training)
    workers: int = 4  # DataLoader worker processes per training process
    allow_test_sets: bool = False  # refuse Set5/Set14/B100/Urban100/Manga109 as training data


@dataclass
class ValConfig:
    every: int = 1000  # iterations between validations; 0 = never
    set: str | None = None  # a folder (<root>/<set>/HR or a path) or a slice NAME:FIRST-LAST; None: no validation
    root: str | None = None  # folder holding <set>/HR (default: $SISR_DATASETS, ./datasets, ../shared/datasets)
    tile: int | None = None  # LR tile size for networks too large for whole images
    at_start: bool = False  # also validate the initial weights (iteration 0)


@dataclass
class OptimConfig:
    name: Literal["adam", "adamw"] = "adam"
    lr: float = 1e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    weight_decay: float = 0.0


@dataclass
class ScheduleConfig:
    step: int | None = 200_000  # multiply the lr by gamma every `step` iterations
    milestones: list[int] = field(default_factory=list)  # or at these iterations (when step is null)
    gamma: float = 0.5


@dataclass
class TrainConfig:
    iterations: int = 300_000
    batch_size: int = 16  # global: split evenly over the DDP processes
    loss: str = "l1"  # a name in sisr.training.losses (l1, mse, charbonnier, or registered)
    accumulate: int = 1  # micro-batches per step: the batch (B / processes) is split in K parts, summed gradients
    seed: int = 1
    device: str = "auto"  # auto (cuda if available, else cpu), cpu, cuda, cuda:N, mps
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"  # bf16/fp16: autocast (fp16 with a GradScaler)
    channels_last: bool | None = None  # None (auto): on the CPU when not compiling
    compile: bool | None = None  # torch.compile the training forward; None (auto): CPU, >= 1000 its, >= 1 M params
    ema: float | None = None  # decay of an exponential moving average of the weights (e.g. 0.999)
    grad_clip: float | None = None  # max global L2 norm of the gradients
    max_nonfinite: int = 10  # consecutive non-finite losses (skipped steps) before the run stops
    checkpoint_every: int = 1000
    keep_checkpoints: int = 1
    time_limit_s: float | None = None  # stop cleanly (checkpoint, validation) after this many seconds of training
    tf32: bool = True  # CUDA: TF32 matmuls and convolutions (Ampere and later); no effect elsewhere
    dist_timeout_s: float = 1800.0  # DDP: the process group's timeout (its start, barriers, collectives)
    test_sets: list[str] | None = None  # scored once at the end; None: those present of Set5..Manga109; []: none


@dataclass
class LogConfig:
    every: int = 100  # iterations between log records
    tensorboard: bool | None = None  # None: when the tensorboard package is installed
    plots: bool = True  # PNG curves in <run>/plots at every validation and at the end


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    val: ValConfig = field(default_factory=ValConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    log: LogConfig = field(default_factory=LogConfig)
    run_dir: str | None = None  # default runs/<model>-x<scale>
    source: str | None = None  # where the config came from (file or recipe); informational

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=False)


# keys that may change when a run is resumed (they do not change the trained weights; train.accumulate only the float
# summation order, and what BatchNorm sees: it lets a run resume on fewer GPUs with the memory of a micro-batch)
RESUME_SAFE = ("train.iterations", "train.checkpoint_every", "train.keep_checkpoints", "train.device",
               "train.accumulate", "train.max_nonfinite", "train.time_limit_s", "train.dist_timeout_s",
               "train.test_sets", "data.workers", "data.cache_dir", "data.root", "val", "log", "run_dir", "source")


def list_recipes() -> list[str]:
    """Names of the shipped recipes (``src/sisr/training/recipes/*.yaml``)."""
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))


def recipe_path(name: str) -> Path:
    path = RECIPES_DIR / f"{name}.yaml"
    if not path.is_file():
        from ..models import get_info, has_parameters, list_models

        if name.lower() in list_models() and not has_parameters(name):
            raise ConfigError(f"model '{get_info(name).name}' has no parameters: there is nothing to train")
        raise ConfigError(f"no config file or recipe '{name}'; recipes: {', '.join(list_recipes())}")
    return path


def load_config(source: str | os.PathLike | Mapping[str, Any] | Config,
                overrides: Sequence[str] = ()) -> Config:
    """A validated :class:`Config` from a YAML file, a recipe name, a mapping or a Config."""
    if isinstance(source, Config):
        raw, where = source.to_dict(), source.source or "config"
    elif isinstance(source, Mapping):
        raw, where = copy.deepcopy(dict(source)), "config"
    else:
        path = Path(source)
        if not path.is_file():
            if path.suffix in (".yaml", ".yml") or os.sep in str(source):
                raise ConfigError(f"{path}: no such config file")
            path = recipe_path(str(source))
        raw, where = read_yaml(path), str(path)
    origins = {}
    for item in overrides:
        key, value = parse_override(item)
        set_dotted(raw, key, value, where=f"override '{item}'")
        origins[key] = item
    raw = _apply_per_scale(raw, overrides, where)
    raw.setdefault("source", where)
    return from_dict(raw, Where(where, origins))


class Where:
    """The origin of a dotted key for error messages: ``override '<item>'`` when an override set it (or a section
    holding it), else the file or "config"."""

    def __init__(self, source: str, overrides: Mapping[str, str] | None = None):
        self.source, self.overrides = source, dict(overrides or {})

    def __call__(self, path: str) -> str:
        for key, item in reversed(self.overrides.items()):
            if path == key or path.startswith((key + ".", key + "[")) or key.startswith(path + "."):
                return f"override '{item}'"
        return self.source

    def __str__(self) -> str:
        return self.source


def _at(where: "Where | str", path: str) -> str:
    return where(path) if isinstance(where, Where) else str(where)


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not a YAML text file (byte {exc.start} is not UTF-8)") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}:{where}: invalid YAML ({problem})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections, got {type(data).__name__}")
    return data


def parse_override(item: str) -> tuple[str, Any]:
    """``"optim.lr=2e-4"`` -> ``("optim.lr", "2e-4")`` with the value parsed as YAML."""
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"override '{item}': expected key=value, e.g. optim.lr=2e-4")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError as exc:
        if text.lstrip()[:1] in ("{", "["):  # meant as a mapping or list: say why it is not one
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise ConfigError(f"override '{item}': invalid YAML ({problem})") from None
        value = text
    return key, _split_glued_pairs(value, item)


_GLUED = re.compile(r"([A-Za-z_][\w-]*):(\S.*)")


def _split_glued_pairs(value: Any, item: str) -> Any:
    """``{n_resblocks:2}`` -> ``{n_resblocks: 2}``.

    YAML needs a space after the colon of a mapping entry; without it ``n_resblocks:2`` is one key
    without a value. Config keys are plain names, so such an entry is split at its colon.
    """
    if isinstance(value, list):
        return [_split_glued_pairs(v, item) for v in value]
    if not isinstance(value, dict):
        return value
    out = {}
    for key, inner in value.items():
        glued = _GLUED.fullmatch(key) if isinstance(key, str) and inner is None else None
        if glued:
            key, text = glued.groups()
            try:
                inner = yaml.safe_load(text)
            except yaml.YAMLError:
                raise ConfigError(f"override '{item}': cannot read '{glued.group(0)}'; "
                                  f"write a space after the colon ({key}: {text})") from None
        out[key] = _split_glued_pairs(inner, item)
    return out


def set_dotted(raw: dict[str, Any], key: str, value: Any, where: str = "config") -> None:
    node = raw
    parts = key.split(".")
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{where}: {'.'.join(parts[:i + 1])} is not a section")
        node = child
    node[parts[-1]] = value


def _apply_per_scale(raw: dict[str, Any], overrides: Sequence[str], where: str) -> dict[str, Any]:
    per_scale = raw.pop("per_scale", None)
    if not per_scale:
        return raw
    if not isinstance(per_scale, dict):
        raise ConfigError(f"{where}: per_scale: expected a mapping scale -> settings")
    scale = raw.get("model", {}).get("scale", ModelConfig.scale) if isinstance(raw.get("model"), dict) else None
    extra = None
    for key, value in per_scale.items():
        if not isinstance(key, int) or isinstance(key, bool):
            raise ConfigError(f"{where}: per_scale.{key}: expected an integer scale")
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: per_scale.{key}: expected a mapping of settings")
        if key == scale:
            extra = value
    if extra is None:
        return raw
    merged = _deep_merge(raw, extra)
    for item in overrides:  # explicit overrides win over the per-scale settings
        key, value = parse_override(item)
        set_dotted(merged, key, value, where=f"override '{item}'")
    return merged


def _deep_merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict) and key != "hparams":
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def from_dict(raw: Mapping[str, Any], where: "Where | str" = "config") -> Config:
    """Convert and validate a nested mapping (dotted key paths in every error)."""
    cfg = _build(Config, raw, "", where)
    check(cfg, where)
    return cfg


def _build(cls, raw: Any, path: str, where: str):
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{_at(where, path)}: {path or 'config'}: expected a mapping, got {_describe(raw)}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in raw.items():
        dotted = f"{path}.{key}" if path else str(key)
        if key not in hints:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else f" (valid: {', '.join(names)})"
            raise ConfigError(f"{_at(where, dotted)}: unknown key '{dotted}'{hint}")
        kwargs[key] = _convert(value, hints[key], dotted, where)
    return cls(**kwargs)


def _convert(value: Any, hint: Any, path: str, where: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return _build(hint, {} if value is None else value, path, where)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        errors = []
        for a in inner:
            try:
                return _convert(value, a, path, where)
            except ConfigError as exc:
                errors.append(exc)
        raise errors[0]
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{_at(where, path)}: {path}: expected one of {', '.join(map(str, args))}; got {value!r}")
        return value
    if origin is list:
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            if hint == list[str] and isinstance(value, str):
                return [value]
            raise ConfigError(f"{_at(where, path)}: {path}: expected a list, got {_describe(value)}")
        return [_convert(v, args[0], f"{path}[{i}]", where) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{_at(where, path)}: {path}: expected a mapping, got {_describe(value)}")
        return {str(k): v for k, v in value.items()}
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{_at(where, path)}: {path}: expected true or false, got {_describe(value)}")
        return value
    if hint is int:
        if isinstance(value, str):  # "2e5": a string to YAML 1.1
            try:
                value = float(value) if not value.strip().lstrip("+-").isdigit() else int(value)
            except ValueError:
                raise ConfigError(f"{_at(where, path)}: {path}: expected an integer, got {_describe(value)}") from None
        if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
            return int(value)  # 2e5 written in floating-point notation
        if not isinstance(value, int) or isinstance(value, bool):
            raise ConfigError(f"{_at(where, path)}: {path}: expected an integer, got {_describe(value)}")
        return value
    if hint is float:
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                pass
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ConfigError(f"{_at(where, path)}: {path}: expected a number, got {_describe(value)}")
        if not math.isfinite(value):
            raise ConfigError(f"{_at(where, path)}: {path}: expected a finite number, got {value}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{_at(where, path)}: {path}: expected a string, got {_describe(value)}")
        return value
    if hint is Any:
        return value
    raise TypeError(f"unsupported config type {hint!r} at {path}")


def _describe(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) < 40 else text[:37] + '...'}"


def check(cfg: Config, where: "Where | str" = "config") -> None:
    """Checks across keys and against the model registry."""
    def fail(key: str, problem: str) -> None:
        raise ConfigError(f"{_at(where, key)}: {key}: {problem}")

    _check_model(cfg, fail)
    _check_ranges(cfg, fail)
    _check_schedule_and_optim(cfg, fail)
    _check_validation(cfg, fail)


def _check_model(cfg: Config, fail) -> None:
    from ..errors import ModelError
    from ..models import get_info, has_parameters
    from .losses import get_loss

    if not cfg.model.name:
        fail("model.name", "missing (a registry model, e.g. edsr-baseline)")
    try:
        info = get_info(cfg.model.name)
        info.hparams(cfg.model.scale, **cfg.model.hparams)
    except ModelError as exc:
        key = "model.hparams" if cfg.model.hparams and "hyper-parameter" not in str(exc) else "model"
        fail(key, str(exc))
    if not has_parameters(info.name):
        fail("model.name", f"'{info.name}' has no parameters: there is nothing to train")
    cfg.model.name = info.name
    if cfg.train.precision not in info.capabilities.train_precisions:
        fail("train.precision",
             f"'{info.name}' supports {', '.join(info.capabilities.train_precisions)}, not {cfg.train.precision}")
    try:
        get_loss(cfg.train.loss)
    except ConfigError as exc:
        fail("train.loss", str(exc))


def _check_ranges(cfg: Config, fail) -> None:
    if cfg.train.seed < 0:
        fail("train.seed", f"must not be negative, got {cfg.train.seed}")
    for key, value in (("data.patch_size", cfg.data.patch_size), ("data.iterations_per_epoch",
                       cfg.data.iterations_per_epoch), ("train.iterations", cfg.train.iterations),
                       ("train.batch_size", cfg.train.batch_size), ("train.checkpoint_every",
                       cfg.train.checkpoint_every), ("train.keep_checkpoints", cfg.train.keep_checkpoints),
                       ("train.max_nonfinite", cfg.train.max_nonfinite), ("log.every", cfg.log.every),
                       ("train.accumulate", cfg.train.accumulate)):
        if value < 1:
            fail(key, f"must be at least 1, got {value}")
    for key, value in (("val.every", cfg.val.every), ("data.workers", cfg.data.workers),
                       ("optim.weight_decay", cfg.optim.weight_decay), ("data.noise_level", cfg.data.noise_level)):
        if value < 0:
            fail(key, f"must not be negative, got {value}")
    if cfg.train.batch_size % cfg.train.accumulate:
        fail("train.accumulate", f"{cfg.train.accumulate} micro-batches do not divide train.batch_size "
                                 f"{cfg.train.batch_size}")
    if cfg.train.time_limit_s is not None and cfg.train.time_limit_s <= 0:
        fail("train.time_limit_s", f"must be positive (or null), got {cfg.train.time_limit_s}")
    if cfg.train.dist_timeout_s <= 0:
        fail("train.dist_timeout_s", f"must be positive, got {cfg.train.dist_timeout_s}")
    if any(not name.strip() or "/" in name for name in cfg.train.test_sets or ()):
        fail("train.test_sets", f"expected names of benchmark sets (e.g. [Set5, Set14]), got {cfg.train.test_sets}")
    if not cfg.data.hr:
        fail("data.hr", "no training images given (folders or files, e.g. data.hr=[DIV2K])")
    if cfg.val.tile is not None and cfg.val.tile < 1:
        fail("val.tile", f"must be at least 1, got {cfg.val.tile}")


def _check_schedule_and_optim(cfg: Config, fail) -> None:
    if len(cfg.optim.betas) != 2 or not all(0 <= b < 1 for b in cfg.optim.betas):
        fail("optim.betas", f"expected two numbers in [0, 1), got {cfg.optim.betas}")
    if cfg.optim.lr <= 0 or cfg.optim.eps <= 0:
        fail("optim.lr" if cfg.optim.lr <= 0 else "optim.eps", "must be positive")
    if cfg.schedule.step is not None and cfg.schedule.step < 1:
        fail("schedule.step", f"must be at least 1 (or null), got {cfg.schedule.step}")
    if cfg.schedule.milestones != sorted(cfg.schedule.milestones) or any(m < 1 for m in cfg.schedule.milestones):
        fail("schedule.milestones", "must be increasing positive iterations")
    if cfg.schedule.step is not None and cfg.schedule.milestones:
        fail("schedule", "give either step or milestones, not both (set schedule.step=null)")
    if not 0 < cfg.schedule.gamma <= 1:
        fail("schedule.gamma", f"must be in (0, 1], got {cfg.schedule.gamma}")
    if cfg.train.ema is not None and not 0 < cfg.train.ema < 1:
        fail("train.ema", f"decay must be in (0, 1), got {cfg.train.ema}")
    if cfg.train.grad_clip is not None and cfg.train.grad_clip <= 0:
        fail("train.grad_clip", f"must be positive (or null), got {cfg.train.grad_clip}")


def _check_validation(cfg: Config, fail) -> None:
    """``val.set``: a slice or folder spec that is not a benchmark test set (files are checked at the start)."""
    from ..data.splits import ValSetError, parse_val_set

    if cfg.val.set is None:
        return
    try:
        parse_val_set(cfg.val.set)
    except ValSetError as exc:
        fail("val.set", str(exc))


def diff(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two config dicts."""
    keys = []
    for key in sorted(set(old) | set(new), key=str):
        dotted = f"{prefix}{key}"
        a, b = old.get(key), new.get(key)
        if isinstance(a, Mapping) and isinstance(b, Mapping) and key != "hparams":
            keys += diff(a, b, dotted + ".")
        elif a != b:
            keys.append(dotted)
    return keys


def resume_conflicts(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Keys that differ and would change the trained weights (not in ``RESUME_SAFE``)."""
    return [k for k in diff(old, new) if not any(k == s or k.startswith(s + ".") for s in RESUME_SAFE)]


def normalised(raw: Mapping[str, Any]) -> dict[str, Any]:
    """A saved config (a checkpoint's, maybe of an earlier version) with today's defaults for the keys it lacks."""
    try:
        return _build(Config, raw, "", "saved config").to_dict()
    except (ConfigError, TypeError):
        return dict(raw)


def describe_changes(old: Mapping[str, Any], new: Mapping[str, Any], keys: Sequence[str], limit: int = 4) -> str:
    """``"optim.lr: 0.0001 -> 0.001, train.loss: l1 -> mse"`` for the first ``limit`` keys."""
    def get(d: Any, key: str) -> Any:
        for part in key.split("."):
            d = d.get(part) if isinstance(d, Mapping) else None
        return d

    shown = [f"{k}: {get(old, k)} -> {get(new, k)}" for k in keys[:limit]]
    return ", ".join(shown) + (", ..." if len(keys) > limit else "")
