"""Training configs: YAML loading, validation with dotted keys, overrides, per-scale settings, recipes."""

from __future__ import annotations

import pytest
import yaml

from sisr.training.config import (
    Config,
    from_dict,
    list_recipes,
    load_config,
    parse_override,
    resume_conflicts,
)
from sisr.errors import ConfigError
from sisr.models import get_info, list_models

MINIMAL = {"model": {"name": "edsr-baseline", "scale": 2}, "data": {"hr": ["imgs"]}}


def _write(tmp_path, data, name="c.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


def test_every_trainable_registry_model_has_a_valid_recipe():
    recipes = set(list_recipes())
    for name in list_models():
        info = get_info(name)
        if name == "bicubic":
            assert name not in recipes
            continue
        assert name in recipes, f"no recipe for {name}"
        for scale in info.scales:
            cfg = load_config(name, [f"model.scale={scale}"])
            assert cfg.model.name == name and cfg.model.scale == scale
            assert cfg.train.batch_size == 16 and cfg.train.loss == "l1"
            assert cfg.optim.name == "adam" and cfg.optim.betas == [0.9, 0.999] and cfg.optim.eps == 1e-8
            assert cfg.data.augment and cfg.schedule.gamma == 0.5
            assert cfg.data.patch_size % scale == 0 or name != "csnln"  # CSNLN needs LR patches divisible by s


@pytest.mark.parametrize("name, lr, step, iterations", [
    ("eacrn", 1e-4, 200_000, None),
    ("csnln", 1e-4, 150_000, 500_000),
    ("cran", 1e-4, 200_000, None),
    ("defian-s", 1e-4, 200_000, 600_000),
    ("defian-l", 1e-4, 200_000, 600_000),
    ("edsr", 1e-4, 200_000, None),
    ("rcan", 1e-4, 200_000, None),
])
def test_recipes_follow_the_papers_schedules(name, lr, step, iterations):
    cfg = load_config(name)
    assert cfg.optim.lr == lr and cfg.schedule.step == step
    if iterations is not None:
        assert cfg.train.iterations == iterations
    assert cfg.data.iterations_per_epoch == 1000


def test_eacrn_lr_patch_48_at_every_scale_and_overrides_win():
    for scale in (2, 3, 4, 8):
        assert load_config("eacrn", [f"model.scale={scale}"]).data.patch_size == 48
    assert load_config("eacrn", ["model.scale=4", "data.patch_size=32"]).data.patch_size == 32


def test_bicubic_has_nothing_to_train():
    with pytest.raises(ConfigError, match="bicubic.*nothing to train"):
        load_config("bicubic")
    with pytest.raises(ConfigError, match="nothing to train"):
        from_dict({"model": {"name": "bicubic", "scale": 2}, "data": {"hr": ["x"]}})


def test_unknown_keys_name_the_dotted_path(tmp_path):
    path = _write(tmp_path, {**MINIMAL, "optim": {"lrr": 1e-4}})
    with pytest.raises(ConfigError, match=r"c\.yaml: unknown key 'optim\.lrr' \(did you mean 'lr'\?\)"):
        load_config(path)
    with pytest.raises(ConfigError, match="unknown key 'trian'"):
        from_dict({**MINIMAL, "trian": {}})


@pytest.mark.parametrize("override, message", [
    ("train.iterations=many", "train.iterations: expected an integer, got str 'many'"),
    ("train.iterations=2.5", "train.iterations: expected an integer"),
    ("data.augment=1", "data.augment: expected true or false"),
    ("optim.lr=fast", "optim.lr: expected a number"),
    ("optim.betas=0.9", "optim.betas: expected a list"),
    ("optim.betas=[0.9, x]", r"optim.betas\[1\]: expected a number"),
    ("train.precision=fp8", "train.precision: expected one of fp32, bf16, fp16"),
    ("data.degradation=XX", "data.degradation: expected one of BI, BD, DN"),
    ("model=3", "model: expected a mapping"),
    ("train.batch_size=0", "train.batch_size: must be at least 1"),
    ("schedule.gamma=2", r"schedule.gamma: must be in \(0, 1\]"),
    ("train.ema=1.5", r"train.ema: decay must be in \(0, 1\)"),
    ("model.scale=5", "supports scales"),
    ("model.hparams={width: 3}", "no hyper-parameter 'width'"),
    ("schedule.milestones=[10, 5]", "schedule: give either step or milestones|milestones: must be increasing"),
])
def test_wrong_values_are_clear_errors(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(MINIMAL, [override])


def test_precision_must_be_supported_by_the_model():
    cfg = load_config("defian-s", ["train.precision=fp16"])
    assert cfg.train.precision == "fp16"
    with pytest.raises(ConfigError, match="train.precision: 'csnln' supports fp32, bf16, not fp16"):
        load_config("csnln", ["train.precision=fp16"])


def test_overrides_are_yaml_scalars_and_create_sections():
    cfg = load_config(MINIMAL, ["optim.lr=2e-4", "train.ema=0.999", "data.hr=[a, b]", "val.tile=null",
                                "model.hparams={n_feats: 8}", "schedule.step=null", "schedule.milestones=[10, 20]",
                                "schedule.gamma=0.1", "train.iterations=2e5"])
    assert cfg.optim.lr == 2e-4 and cfg.train.ema == 0.999
    assert cfg.data.hr == ["a", "b"] and cfg.val.tile is None
    assert cfg.model.hparams == {"n_feats": 8}
    assert cfg.schedule.milestones == [10, 20] and cfg.train.iterations == 200_000
    assert parse_override("a.b=") == ("a.b", None)
    with pytest.raises(ConfigError, match="expected key=value"):
        parse_override("optim.lr")


def test_a_flow_mapping_without_spaces_after_colons_is_read_as_meant():
    # YAML reads {n_resblocks:2} as the key 'n_resblocks:2' without a value
    assert parse_override("model.hparams={n_resblocks:2,n_feats:8}") == (
        "model.hparams", {"n_resblocks": 2, "n_feats": 8})
    assert parse_override("model.hparams={res_scale:0.1, n_feats: 8}")[1] == {"res_scale": 0.1, "n_feats": 8}
    assert parse_override("a={b:{c:1}}")[1] == {"b": {"c": 1}}
    assert parse_override("data.hr=[C:/data/DIV2K]")[1] == ["C:/data/DIV2K"]  # list items are not touched
    cfg = load_config(MINIMAL, ["model.hparams={n_feats:8}"])
    assert cfg.model.hparams == {"n_feats": 8}
    with pytest.raises(ConfigError, match=r"cannot read 'n_feats:'x'; write a space after the colon"):
        parse_override("model.hparams={n_feats:'x}")
    with pytest.raises(ConfigError, match=r"^override 'model.hparams={n_feats: \[8}': invalid YAML \(expected ',' or"):
        parse_override("model.hparams={n_feats: [8}")


def test_string_hr_becomes_a_list_and_floats_written_1e_minus_4_are_numbers(tmp_path):
    path = _write(tmp_path, "model: {name: edsr-baseline, scale: 3}\ndata: {hr: imgs}\noptim: {lr: 1e-4}\n")
    cfg = load_config(path)
    assert cfg.data.hr == ["imgs"] and cfg.optim.lr == 1e-4 and isinstance(cfg.optim.lr, float)


def test_yaml_errors_and_missing_files(tmp_path):
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(_write(tmp_path, "model: [unclosed\n"))
    with pytest.raises(ConfigError, match="expected a mapping of sections"):
        load_config(_write(tmp_path, "- a\n- b\n"))
    (tmp_path / "latin1.yaml").write_bytes(b"\xffmodel: {}\n")  # or a PNG given as --config: was a traceback
    with pytest.raises(ConfigError, match=r"latin1.yaml: not a YAML text file \(byte 0 is not UTF-8\)"):
        load_config(tmp_path / "latin1.yaml")
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="no config file or recipe 'nope'; recipes: cran"):
        load_config("nope")
    with pytest.raises(ConfigError, match="model.name: missing"):
        from_dict({"data": {"hr": ["x"]}})
    with pytest.raises(ConfigError, match="data.hr: no training images"):
        from_dict({"model": {"name": "edsr", "scale": 2}})


def test_round_trip_through_saved_yaml(tmp_path):
    cfg = load_config("rcan", ["model.scale=4", "train.ema=0.999"])
    path = _write(tmp_path, cfg.to_yaml(), "saved.yaml")
    again = load_config(path)
    assert again.to_dict() == {**cfg.to_dict(), "source": cfg.source}
    assert isinstance(again, Config)


def test_resume_conflicts_ignore_safe_keys():
    a = load_config(MINIMAL).to_dict()
    b = load_config(MINIMAL, ["train.iterations=5", "data.workers=0", "val.every=7", "log.every=3"]).to_dict()
    assert resume_conflicts(a, b) == []
    c = load_config(MINIMAL, ["optim.lr=3e-4", "model.hparams={n_feats: 8}"]).to_dict()
    assert resume_conflicts(a, c) == ["model.hparams", "optim.lr"]


def test_auto_cpu_path_compiles_long_cpu_runs_and_uses_channels_last_otherwise():
    import torch

    from sisr.training.trainer import resolve_cpu_path

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    long = load_config("defian-s", ["train.iterations=1000"])
    assert long.train.compile is None and long.train.channels_last is None
    assert resolve_cpu_path(long, cpu, 10**6) == (True, False)
    assert resolve_cpu_path(long, cpu, 10**6 - 1) == (False, True)  # tiny networks: compile measured slower
    assert resolve_cpu_path(load_config("defian-s", ["train.iterations=999"]), cpu, 10**6) == (False, True)
    assert resolve_cpu_path(load_config("csnln", ["train.iterations=5000"]), cpu, 10**7) == (False, True)  # 0.94x
    assert resolve_cpu_path(long, cuda, 10**6) == (False, False)
    explicit = load_config("defian-s", ["train.iterations=5000", "train.compile=false", "train.channels_last=false"])
    assert resolve_cpu_path(explicit, cpu, 10**6) == (False, False)
    assert resolve_cpu_path(load_config("rcan", ["train.compile=true", "train.iterations=10"]), cpu, 1) == (True, False)


@pytest.mark.parametrize("override, message", [
    ("model.hparams={n_feats: -3}", "^override 'model.hparams={n_feats: -3}': model.hparams: model 'edsr-baseline': "
                                    "n_feats must be a non-negative integer, got -3$"),
    ("model.hparams={n_feats: 2.5}", "n_feats must be a non-negative integer, got 2.5"),
    ("model.hparams={res_scale: .nan}", "res_scale must be a finite number, got nan"),
    ("optim.lr=.nan", r"^override 'optim.lr=.nan': optim.lr: expected a finite number, got nan$"),
    ("optim.lr=.inf", r"^override 'optim.lr=.inf': optim.lr: expected a finite number, got inf$"),
    ("schedule.gamma=-.inf", "schedule.gamma: expected a finite number"),
    ("model.scale=x2", r"^override 'model.scale=x2': model.scale: expected an integer, got str 'x2'$"),
    ("val.set=Set14", r"val.set: 'Set14' is the benchmark test set 'Set14': weights chosen on a test set"),
    ("val.set=bsd100:1-10", "is the benchmark test set 'bsd100'"),
    ("val.set=/data/benchmark/Urban100", "is the benchmark test set 'Urban100'"),
    ("val.set=BSD200:10-5", r"val.set: 'BSD200:10-5': FIRST-LAST must satisfy 1 <= FIRST <= LAST"),
    ("train.loss=huber", "train.loss: unknown loss 'huber'; registered: charbonnier, l1, mse"),
    ("train.accumulate=3", "train.accumulate: 3 micro-batches do not divide train.batch_size 16"),
    ("train.time_limit_s=0", r"train.time_limit_s: must be positive \(or null\)"),
])
def test_bad_values_are_one_line_errors_naming_the_override(override, message):
    with pytest.raises(ConfigError, match=message) as info:
        load_config("edsr-baseline", [override])
    assert len(str(info.value).splitlines()) == 1


def test_errors_name_the_file_for_its_own_keys_and_the_override_for_overridden_ones(tmp_path):
    path = _write(tmp_path, {**MINIMAL, "optim": {"lr": "fast"}})
    with pytest.raises(ConfigError, match=r"c\.yaml: optim.lr: expected a number"):
        load_config(path)
    with pytest.raises(ConfigError, match=r"^override 'optim.lr=-1': optim.lr: must be positive"):
        load_config(path, ["optim.lr=-1"])
    with pytest.raises(ConfigError, match=r"^override 'schedule.milestones=\[5\]': schedule: give either step"):
        load_config("edsr-baseline", ["schedule.milestones=[5]"])  # the recipe's schedule.step stays
    with pytest.raises(ConfigError, match=r"^override 'optim.lrr=1': unknown key 'optim.lrr'"):
        load_config("edsr-baseline", ["optim.lrr=1"])


def test_recipes_validate_on_a_held_out_slice_never_a_test_set():
    for name in list_recipes():
        cfg = load_config(name)
        assert cfg.val.set == "DIV2K:801-810", name
    assert load_config(MINIMAL).val.set is None  # no validation unless a set is named
    cfg = load_config("defian-s", ["val.set=BSD200:190-199", "train.loss=charbonnier", "train.accumulate=4",
                                   "train.time_limit_s=3600"])
    assert (cfg.val.set, cfg.train.loss, cfg.train.accumulate, cfg.train.time_limit_s) == (
        "BSD200:190-199", "charbonnier", 4, 3600.0)


def test_a_checkpoint_config_of_an_earlier_version_compares_with_todays_defaults():
    from sisr.training.config import normalised

    today = load_config(MINIMAL).to_dict()
    earlier = {k: dict(v) if isinstance(v, dict) else v for k, v in today.items()}
    for key in ("accumulate", "time_limit_s", "tf32"):  # keys an earlier version did not have
        del earlier["train"][key]
    assert resume_conflicts(normalised(earlier), today) == []
    earlier["optim"]["lr"] = 1e-3
    assert resume_conflicts(normalised(earlier), today) == ["optim.lr"]


@pytest.mark.parametrize("kwargs, message", [
    ({"n_feats": -1}, "n_feats must be a non-negative integer, got -1"),
    ({"n_feats": 0}, r"n_feats=0 gives empty layers \(head.0.weight\); sizes must be positive"),
    ({"n_feats": "64"}, "n_feats must be a non-negative integer, got '64'"),
    ({"res_scale": float("inf")}, "res_scale must be a finite number, got inf"),
    ({"scale": "x2"}, r"scale must be an integer \(2, 3, 4, 8\); got 'x2'"),
    ({"scale": 2.5}, "scale must be an integer"),
])
def test_create_model_refuses_bad_sizes_and_scales_with_a_model_error(kwargs, message):
    from sisr import create_model
    from sisr.errors import ModelError

    kwargs = {"scale": 2, **kwargs}
    with pytest.raises(ModelError, match=message):
        create_model("edsr-baseline", **kwargs)
    assert create_model("defian-s", scale=2, endec_depth=0, n_channels=16, n_blocks=1, n_modules=1) is not None
