"""Training parts and extension points: build_training_parts, callbacks and stop conditions, the schedule
object, the loss registry, gradient accumulation, no host wait per step, validation slices held out of
training, RNG restore on fewer GPUs, TF32, env.json, one-line warnings from `sisr train`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from testing_utils import tiny_train_config, write_noise_images

import sisr
from sisr.data.io import write_image
from sisr.errors import ConfigError
from sisr.training import checkpoint as ckpt
from sisr.training import losses
from sisr.training.callbacks import Callback
from sisr.training.config import load_config
from sisr.training.parts import build_training_parts
from sisr.training.step import TrainStep, make_optimizer, set_tf32
from sisr.training.trainer import Trainer, train
from sisr.weights import load_weights

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_noise_images(root / "train", 4, (32, 36, 3))
    write_noise_images(root / "BSD200" / "HR", 5, (28, 30, 3))
    return root


def _config(root, **sections):
    cfg = tiny_train_config(root, optim={"lr": 1e-3}, train={"iterations": 6, "batch_size": 4, "checkpoint_every": 6},
                            log={"every": 2})
    for section, values in sections.items():
        cfg[section] = {**cfg.get(section, {}), **values}
    return cfg


def _records(run, kind):
    return [r for r in map(json.loads, (run / "log.jsonl").read_text().splitlines()) if r["type"] == kind]


def test_build_training_parts_gives_model_optimizer_schedule_loss_and_data(data):
    cfg = load_config(_config(data, train={"loss": "mse"}))
    parts = build_training_parts(cfg, "cpu")
    assert parts.model.sisr_spec.hparams["n_feats"] == 8
    assert parts.optimizer.param_groups[0]["lr"] == 1e-3 and parts.loss is losses.get_loss("mse")
    assert parts.schedule.factor(10**6) == 0.5 ** 5 and parts.scheduler.lr_lambdas[0] is parts.schedule
    pairs = parts.data.prepare(report=False)
    lr, hr = next(iter(parts.data.loader(pairs)))
    assert lr.shape == (4, 3, 8, 8) and hr.shape == (4, 3, 16, 16)
    result = parts.make_step()(lr, hr)
    assert result.stepped and result.loss > 0
    again = build_training_parts(cfg, "cpu", data=False)  # the seed: the same initial weights
    assert again.data is None
    with pytest.raises(ConfigError, match=r"^model.hparams: model 'edsr-baseline': n_feats=0 gives empty layers"):
        build_training_parts(load_config(_config(data, model={"hparams": {"n_feats": 0, "n_resblocks": 1}})), "cpu")


def test_gradient_accumulation_equals_the_whole_batch(data, tmp_path):
    runs = {k: train(_config(data, train={"accumulate": k, "batch_size": 8}), run_dir=tmp_path / f"k{k}")
            for k in (1, 4)}
    whole, parts = (load_weights(runs[k] / "latest.safetensors")[0] for k in (1, 4))
    for key in whole:
        torch.testing.assert_close(parts[key], whole[key], rtol=0, atol=2e-6, msg=key)
    assert max(float((whole[k] - parts[k]).abs().max()) for k in whole) < 2e-6
    losses_1, losses_4 = ([r["loss"] for r in _records(runs[k], "train")] for k in (1, 4))
    assert losses_4 == pytest.approx(losses_1, rel=1e-5)
    with pytest.raises(ConfigError, match="train.accumulate: 3 micro-batches do not divide"):
        train(_config(data, train={"accumulate": 3}), run_dir=tmp_path / "bad")
    resumed = train(_config(data, train={"accumulate": 2, "batch_size": 8, "iterations": 8}), run_dir=runs[1])
    assert json.loads((resumed / "checkpoints" / "latest.json").read_text())["iteration"] == 8  # resume-safe key


class _Recorder(Callback):
    def __init__(self, stop_at=None, milestone_at=None):
        self.stop_at, self.milestone_at = stop_at, milestone_at
        self.steps, self.validations, self.events = [], [], []

    def on_fit_start(self, trainer):
        self.events.append(("start", trainer.iteration))

    def on_step_end(self, trainer, result):
        self.steps.append(trainer.iteration)
        if trainer.iteration == self.milestone_at:
            trainer.schedule.add_milestone(trainer.iteration)

    def on_validation(self, trainer, metrics):
        self.validations.append((metrics["iteration"], metrics["best"]))

    def should_stop(self, trainer):
        return "enough" if trainer.iteration == self.stop_at else None

    def on_fit_end(self, trainer):
        self.events.append(("end", trainer.iteration))


def test_callbacks_stop_cleanly_and_change_the_schedule_explicitly(data, tmp_path, capsys):
    cfg = _config(data, val={"set": "BSD200:4-5", "every": 4, "root": str(data)}, train={"iterations": 8},
                  schedule={"step": None, "milestones": []})
    rec = _Recorder(stop_at=5, milestone_at=3)
    run = train(cfg, run_dir=tmp_path / "run", callbacks=[rec])  # returns: a clean stop is no interruption
    assert rec.steps == [1, 2, 3, 4, 5] and rec.events == [("start", 0), ("end", 5)]
    assert [v[0] for v in rec.validations] == [4, 5]  # validated at the stop too
    assert json.loads((run / "checkpoints" / "latest.json").read_text())["iteration"] == 5
    assert "stopped at iteration 5 (enough; checkpoint saved)" in capsys.readouterr().err
    assert [r["lr"] for r in _records(run, "train")] == [1e-3, 5e-4, 5e-4]  # iterations 2, 4, 5: halved from 4
    state = torch.load(run / "checkpoints" / "000000005" / "state.pt", weights_only=True)
    assert state["scheduler"]["lr_lambdas"][0]["milestones"] == [3]  # the schedule is in the checkpoint
    resumed = Trainer(load_config(run / "config.yaml"), run)
    assert resumed.schedule.milestones == [3] and resumed.optimizer.param_groups[0]["lr"] == 5e-4
    resumed.fit()
    assert json.loads((run / "checkpoints" / "latest.json").read_text())["iteration"] == 8


def test_time_limit_stops_with_a_checkpoint_and_resume_goes_on(data, tmp_path):
    run = train(_config(data, train={"time_limit_s": 1e-6, "iterations": 6}), run_dir=tmp_path / "run")
    assert json.loads((run / "checkpoints" / "latest.json").read_text())["iteration"] == 1
    train(None, ["train.time_limit_s=null"], run_dir=run, resume=True)  # a resume-safe key
    assert json.loads((run / "checkpoints" / "latest.json").read_text())["iteration"] == 6


def test_step_values_are_read_two_iterations_later_except_at_log_and_checkpoint_points(data, tmp_path, monkeypatch):
    from sisr.training.step import StepResult

    calls, reads, trainer_ref = [], {}, {}
    real_call, real_read = TrainStep.__call__, StepResult._read

    def call(self, lr, hr, **flags):
        result = real_call(self, lr, hr, **flags)
        result.index = len(calls) + 1
        calls.append(result)
        return result

    def read(self):
        reads.setdefault(self.index, trainer_ref["t"].iteration)
        return real_read(self)

    monkeypatch.setattr(TrainStep, "__call__", call)
    monkeypatch.setattr(StepResult, "_read", read)
    trainer = Trainer(load_config(_config(data, train={"iterations": 10, "checkpoint_every": 10},
                                          log={"every": 10})), tmp_path / "run")
    trainer_ref["t"] = trainer
    trainer.fit()
    assert reads == {k: min(k + 2, 10) for k in range(1, 11)}


def test_a_non_finite_step_is_skipped_on_the_device_without_touching_weights_or_adam(data):
    torch.manual_seed(0)
    net = sisr.create_model("edsr-baseline", scale=2, n_resblocks=1, n_feats=4)
    cfg = load_config(_config(data))
    opt = make_optimizer(cfg, net.parameters())
    step = TrainStep(net, opt, device=torch.device("cpu"))
    assert step.device_skip  # fused Adam: no host decision
    lr, hr = torch.rand(2, 3, 6, 6), torch.rand(2, 3, 12, 12)
    assert step(lr, hr).stepped
    weights = {k: v.clone() for k, v in net.state_dict().items()}
    moments = [s["exp_avg"].clone() for s in opt.state.values()]
    steps = [float(s["step"]) for s in opt.state.values()]
    step.loss_fn = lambda sr, target: (sr - target).abs().mean() * float("nan")
    result = step(lr, hr)
    assert not result.stepped and np.isnan(result.loss)
    assert all(torch.equal(v, weights[k]) for k, v in net.state_dict().items())
    assert all(torch.equal(s["exp_avg"], m) for s, m in zip(opt.state.values(), moments))
    assert [float(s["step"]) for s in opt.state.values()] == steps


def test_the_loss_registry(data, tmp_path):
    assert losses.list_losses()[:3] == ["charbonnier", "l1", "mse"]
    zero = torch.zeros(1, 3, 4, 4)
    assert float(losses.get_loss("charbonnier")(zero, zero)) == pytest.approx(losses.CHARBONNIER_EPS)
    assert float(losses.get_loss("mse")(zero, zero + 0.5)) == 0.25
    seen = []

    def half_l1(sr, hr):
        seen.append(sr.dtype)
        return (sr - hr).abs().mean() / 2

    losses.register_loss("test-half-l1", half_l1)
    try:
        with pytest.raises(ConfigError, match="already registered"):
            losses.register_loss("test-half-l1", half_l1)
        train(_config(data, train={"loss": "test-half-l1", "iterations": 2}), run_dir=tmp_path / "run")
        assert seen == [torch.float32, torch.float32]
    finally:
        losses._LOSSES.pop("test-half-l1")
    with pytest.raises(ConfigError, match="unknown loss 'nope'"):
        losses.get_loss("nope")


def test_a_validation_slice_of_a_training_source_is_held_out_and_an_explicit_overlap_refused(data, tmp_path, capsys):
    cfg = _config(data, data={"hr": [str(data / "train"), str(data / "BSD200")]},
                  val={"set": "BSD200:4-5", "every": 6})
    run = train(cfg, run_dir=tmp_path / "run")
    assert "held out for validation (BSD200:4-5)" in capsys.readouterr().err
    state = torch.load(run / "checkpoints" / "000000006" / "state.pt", weights_only=True)
    names = [f[0] for f in state["data"]["fingerprint"]["files"]]
    assert len(names) == 4 + 3 and not {"img3.png", "img4.png"} & set(names[4:])
    assert [r["set"] for r in _records(run, "val")] == ["BSD200:4-5"]
    overlap = _config(data, val={"set": str(data / "train"), "every": 6})
    with pytest.raises(ConfigError, match=r"val.set: .*4 validation image\(s\) are also training images"):
        train(overlap, run_dir=tmp_path / "overlap")
    with pytest.raises(ConfigError, match="val.set: 'Set5' is the benchmark test set"):
        train(_config(data, val={"set": "Set5", "every": 6}), run_dir=tmp_path / "test-set")
    assert not (tmp_path / "overlap").exists() and not (tmp_path / "test-set").exists()


def test_cuda_rng_states_are_restored_for_the_devices_that_exist(monkeypatch):
    restored = []
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device: restored.append((int(state[0]), device)))
    saved = [torch.full((4,), i, dtype=torch.uint8) for i in range(3)]  # saved on 3 GPUs, resumed on 1
    assert ckpt.restore_cuda_rng(saved) == 1 and restored == [(0, 0)]
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    restored.clear()
    assert ckpt.restore_cuda_rng(saved[:2]) == 2 and restored == [(0, 0), (1, 1)]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    restored.clear()
    state = ckpt.capture_rng()
    state["cuda"] = saved
    ckpt.restore_rng(state)
    assert restored == [(0, 0)]


def test_tf32_switch():
    matmul = torch.backends.cuda.matmul
    before = (matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision)
    try:
        set_tf32(True)
        assert (matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision) == ("tf32", "tf32")
        set_tf32(False)
        assert (matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision) == ("ieee", "ieee")
    finally:
        matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision = before
    assert load_config({"model": {"name": "edsr-baseline"}, "data": {"hr": ["x"]}}).train.tf32 is True


def test_env_json_records_the_environment_of_each_session(data, tmp_path):
    run = train(_config(data, train={"iterations": 2}), run_dir=tmp_path / "run")
    env = json.loads((run / "env.json").read_text())
    assert env["sisr"] == sisr.__version__ and env["torch"] == torch.__version__ and env["world_size"] == 1
    assert {"git", "cuda", "cudnn", "gpus", "cpu", "command", "python"} <= set(env) and env["earlier"] == []
    train(_config(data, train={"iterations": 4}), run_dir=run)
    env = json.loads((run / "env.json").read_text())
    assert len(env["earlier"]) == 1 and env["earlier"][0]["torch"] == torch.__version__


def test_sisr_train_prints_warnings_as_one_clean_line(tmp_path, capsys):
    import yaml

    from sisr.cli import main

    write_noise_images(tmp_path / "train", 2, (30, 32, 3))
    write_image(tmp_path / "train" / "tiny.png", np.zeros((6, 6, 3), np.uint8))  # smaller than a patch: skipped
    cfg = tiny_train_config(tmp_path, train={"iterations": 2})
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["train", "--config", str(tmp_path / "c.yaml"), "--run-dir", str(tmp_path / "run")]) == 0
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("sisr train: warning")]
    assert len(lines) == 1 and lines[0].startswith("sisr train: warning: skipped training image: ")
    assert "tiny.png" in lines[0] and ".py:" not in err and "warnings.warn" not in err


def test_an_optimizer_state_of_another_implementation_loads_into_the_fused_one(data):
    from sisr.training.step import load_optimizer_state

    torch.manual_seed(0)
    net = sisr.create_model("edsr-baseline", scale=2, n_resblocks=1, n_feats=4)
    plain = torch.optim.Adam(net.parameters(), lr=1e-3)  # as an earlier version saved it
    net(torch.rand(1, 3, 6, 6)).mean().backward()
    plain.step()
    fused = make_optimizer(load_config(_config(data)), net.parameters())
    load_optimizer_state(fused, plain.state_dict())
    assert fused.param_groups[0]["fused"] is True
    step = TrainStep(net, fused, device=torch.device("cpu"))
    assert step(torch.rand(2, 3, 6, 6), torch.rand(2, 3, 12, 12)).stepped  # the device skip path works
    assert [float(s["step"]) for s in fused.state.values()][:1] == [2.0]


def test_with_validation_off_a_missing_val_set_is_ignored_and_a_found_slice_still_held_out(data, tmp_path):
    missing = load_config(_config(data, val={"set": "DIV2K:801-810", "every": 0, "root": str(data)}))
    assert build_training_parts(missing, "cpu").data.validation is None
    with pytest.raises(ConfigError, match="no training source or folder 'DIV2K'"):
        build_training_parts(load_config(_config(data, val={"set": "DIV2K:801-810", "every": 5,
                                                                 "root": str(data)})), "cpu")
    found = load_config(_config(data, data={"hr": [str(data / "train"), str(data / "BSD200")]},
                                val={"set": "BSD200:4-5", "every": 0}))
    parts = build_training_parts(found, "cpu")
    assert parts.data.held_out() == 2 and len(parts.data.images()) == 4 + 3
