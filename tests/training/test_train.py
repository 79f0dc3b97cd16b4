"""Training engine: outputs, checkpoints, exact resume (also after SIGKILL), stop on signal,
non-finite losses, EMA / mixed precision / clipping, schedule, initialisation from weights.
Crash safety of checkpoints and the run directory: tests/training/test_run_dir.py."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from testing_utils import tiny_train_config

import sisr
from sisr.data.io import write_image
from sisr.training.config import ScheduleConfig, load_config
from sisr.weights.loading import load_model
from sisr.training import trainer as train_module
from sisr.training.trainer import TrainingError, TrainStep, load_init, lr_factor, train
from sisr.errors import ConfigError
from sisr.weights import load_weights, read_metadata


pytestmark = pytest.mark.usefixtures("one_thread")


def _smooth(rng, h, w):
    """A smooth random RGB image (bilinear-upsampled noise), so a tiny network can learn it."""
    small = torch.from_numpy(rng.random((1, 3, h // 4 + 2, w // 4 + 2)).astype(np.float32))
    big = torch.nn.functional.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)
    return (big[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    for i in range(6):
        write_image(root / "train" / f"t{i}.png", _smooth(rng, 40 + 4 * i, 44))
    for i in range(2):
        write_image(root / "bench" / "Val" / "HR" / f"v{i}.png", _smooth(rng, 36, 40))
    return root


def _config(root, **sections):
    cfg = tiny_train_config(root, data={"iterations_per_epoch": 10},
                            val={"set": "Val", "root": str(root / "bench"), "every": 6}, optim={"lr": 1e-3},
                            schedule={"step": 8}, train={"iterations": 12, "batch_size": 4, "checkpoint_every": 6},
                            log={"every": 3})
    for section, values in sections.items():
        cfg[section] = {**cfg.get(section, {}), **values}
    return cfg


def _weights(path):
    return load_weights(path)[0]


def _assert_same_weights(a, b):
    """Bitwise: resuming replays the exact computation of an uninterrupted run (CPU)."""
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


def test_run_writes_weights_state_logs_and_plots(data, tmp_path):
    run = train(_config(data), run_dir=tmp_path / "run")
    assert run == tmp_path / "run"
    assert (run / "config.yaml").is_file()
    assert load_config(run / "config.yaml").train.iterations == 12
    pointer = json.loads((run / "checkpoints" / "latest.json").read_text())
    assert pointer["iteration"] == 12
    folder = run / "checkpoints" / pointer["dir"]
    assert sorted(p.name for p in folder.iterdir()) == ["model.safetensors", "state.pt"]
    assert [p.name for p in (run / "checkpoints").iterdir() if p.is_dir()] == [pointer["dir"]]  # keep 1

    meta = read_metadata(run / "latest.safetensors")
    assert meta["format"] == "sisr-weights" and meta["model"] == "edsr-baseline" and meta["scale"] == 2
    assert meta["hparams"] == {"n_resblocks": 1, "n_feats": 8}
    assert meta["training"]["iteration"] == 12 and meta["training"]["config"]["optim"]["lr"] == 1e-3
    assert meta["metrics"]["set"] == "Val" and meta["metrics"]["iteration"] == 12
    best = read_metadata(run / "best.safetensors")
    assert best["metrics"]["psnr"] == max(r["psnr"] for r in _records(run, "val"))

    state = torch.load(folder / "state.pt", weights_only=True)
    fingerprint = state["data"].pop("fingerprint")
    assert state["iteration"] == 12 and state["data"] == {"seed": 1, "batch_size": 4, "samples_seen": 48}
    assert fingerprint["count"] == 6 and len(fingerprint["sha256"]) == 64
    assert fingerprint["files"][:2] == [["t0.png", (data / "train" / "t0.png").stat().st_size, 20, 22],
                                        ["t1.png", (data / "train" / "t1.png").stat().st_size, 22, 22]]
    assert set(state) >= {"optimizer", "scheduler", "rng", "best", "nonfinite", "config"}
    assert set(state["rng"]) >= {"python", "numpy", "torch"}

    train_records = _records(run, "train")
    assert [r["iteration"] for r in train_records] == [3, 6, 9, 12]
    assert [r["epoch"] for r in train_records] == [0.3, 0.6, 0.9, 1.2]
    assert all(np.isfinite(r["loss"]) and r["it_per_s"] > 0 for r in train_records)
    assert [r["lr"] for r in train_records] == [1e-3, 1e-3, 5e-4, 5e-4]  # halved after 8 iterations
    assert [r["iteration"] for r in _records(run, "val")] == [6, 12]
    assert (run / "train.csv").read_text().splitlines()[0] == "iteration,epoch,loss,lr,it_per_s,elapsed_s,skipped"
    assert len((run / "val.csv").read_text().splitlines()) == 3
    for name in ("loss.png", "psnr.png"):
        with Image.open(run / "plots" / name) as im:
            assert im.format == "PNG" and im.size == (800, 480)

    net = load_model(run / "best.safetensors")
    assert net.sisr_spec.hparams["n_feats"] == 8
    with torch.no_grad():
        assert net(torch.rand(1, 3, 5, 6)).shape == (1, 3, 10, 12)


def _records(run, kind):
    lines = (run / "log.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["type"] == kind]


def test_existing_run_is_resumed_extended_and_protected(data, tmp_path, capsys):
    first = train(_config(data, train={"iterations": 6}), run_dir=tmp_path / "a")
    resumed = train(_config(data), run_dir=first)  # same config, more iterations: continues at 6
    assert "resuming" in capsys.readouterr().err
    straight = train(_config(data), run_dir=tmp_path / "b")
    _assert_same_weights(resumed / "latest.safetensors", straight / "latest.safetensors")
    assert [r["iteration"] for r in _records(resumed, "train")] == [3, 6, 9, 12]

    train(_config(data), run_dir=first)  # complete: nothing to do
    assert "already trained to iteration 12" in capsys.readouterr().err
    with pytest.raises(TrainingError, match=r"holds a run with a different config \(optim.lr: 0.001 -> 0.0005; "
                                            r"checkpoint of iteration 12\)"):
        train(_config(data, optim={"lr": 5e-4}), run_dir=first)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("x")
    with pytest.raises(TrainingError, match="exists and is not a sisr run"):
        train(_config(data), run_dir=tmp_path / "other")
    with pytest.raises(TrainingError, match="no run to resume"):
        train(_config(data), run_dir=tmp_path / "nothing", resume=True)
    again = train(None, ["train.iterations=13"], run_dir=first, resume=True)  # the run's own config
    assert json.loads((again / "checkpoints" / "latest.json").read_text())["iteration"] == 13


def test_resume_compares_with_the_checkpoints_config_not_an_edited_config_yaml(data, tmp_path):
    run = train(_config(data, train={"iterations": 6}, val={"every": 0}), run_dir=tmp_path / "run")
    saved = yaml.safe_load((run / "config.yaml").read_text())
    edited = {**saved, "optim": {**saved["optim"], "lr": 1e-2}, "train": {**saved["train"], "loss": "mse"}}
    (run / "config.yaml").write_text(yaml.safe_dump(edited))
    with pytest.raises(TrainingError, match=r"different config \(optim.lr: 0.001 -> 0.01, train.loss: l1 -> mse; "
                                            r"checkpoint of iteration 6\); these change the weights"):
        train(None, ["train.iterations=8"], run_dir=run, resume=True)
    assert json.loads((run / "checkpoints" / "latest.json").read_text())["iteration"] == 6  # untouched
    edited = {**saved, "log": {**saved["log"], "every": 2}}  # keys that do not change the weights may change
    (run / "config.yaml").write_text(yaml.safe_dump(edited))
    train(None, ["train.iterations=8"], run_dir=run, resume=True)
    assert [r["iteration"] for r in _records(run, "train")] == [3, 6, 8]


def _run_cli(cfg_path, run_dir):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "sisr", "train", "--config", str(cfg_path), "--run-dir",
                             str(run_dir)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_checkpoint(proc, run_dir, at_least, timeout=120):
    pointer = run_dir / "checkpoints" / "latest.json"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pointer.is_file():
            try:
                if json.loads(pointer.read_text())["iteration"] >= at_least:
                    return
            except (ValueError, KeyError):
                pass
        if proc.poll() is not None:
            raise AssertionError(f"training ended early: {proc.communicate()[1][-2000:]}")
        time.sleep(0.01)
    proc.kill()
    raise AssertionError("no checkpoint appeared in time")


def test_resume_after_sigkill_gives_the_weights_of_an_uninterrupted_run(data, tmp_path):
    # lr 1e-3 halved every 60 iterations: 2.5e-4 at the end, so late updates still move the weights
    cfg = _config(data, train={"iterations": 150, "checkpoint_every": 10, "keep_checkpoints": 2},
                  schedule={"step": 60}, val={"every": 0}, log={"every": 10},
                  model={"hparams": {"n_resblocks": 1, "n_feats": 4}})
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    killed = _run_cli(cfg_path, tmp_path / "killed")
    _wait_for_checkpoint(killed, tmp_path / "killed", at_least=20)
    killed.send_signal(signal.SIGKILL)
    killed.communicate()
    assert killed.returncode == -signal.SIGKILL
    stopped_at = json.loads((tmp_path / "killed" / "checkpoints" / "latest.json").read_text())["iteration"]
    assert 20 <= stopped_at < 150

    resumed = _run_cli(cfg_path, tmp_path / "killed")  # the same command resumes
    straight = _run_cli(cfg_path, tmp_path / "straight")
    errors = []
    for proc in (resumed, straight):
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-2000:]
        errors.append(err)
    assert f"from iteration {stopped_at}" in errors[0]
    _assert_same_weights(tmp_path / "killed" / "latest.safetensors", tmp_path / "straight" / "latest.safetensors")
    before_end = _weights(tmp_path / "straight" / "checkpoints" / "000000140" / "model.safetensors")
    end = _weights(tmp_path / "straight" / "latest.safetensors")
    assert max(float((end[k] - before_end[k]).abs().max()) for k in end) > 1e-4  # the last 10 steps count
    iterations = [r["iteration"] for r in _records(tmp_path / "killed", "train")]
    assert iterations == list(range(10, 151, 10))  # records written after the last checkpoint were dropped


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_after_the_iteration_with_a_checkpoint_and_exit_status_128_plus_it(data, tmp_path, signum):
    cfg = _config(data, train={"iterations": 100000, "checkpoint_every": 1000, "compile": False}, val={"every": 0},
                  log={"every": 5})
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    proc = _run_cli(cfg_path, tmp_path / "run")
    log = tmp_path / "run" / "log.jsonl"
    deadline = time.monotonic() + 120
    while not (log.is_file() and log.stat().st_size) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)  # wait until it trains
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum, err[-2000:]
    assert out == ""  # the run folder is printed only when the run is complete
    last = err.strip().splitlines()[-1]
    assert last.startswith("sisr train: interrupted at iteration ")
    assert last.endswith(f" (checkpoint saved); resume with: sisr train --resume --run-dir {tmp_path / 'run'}")
    stopped = int(last.split("interrupted at iteration ")[1].split()[0])
    pointer = json.loads((tmp_path / "run" / "checkpoints" / "latest.json").read_text())
    assert pointer["iteration"] == stopped > 0
    resumed = train(None, [f"train.iterations={stopped + 2}"], run_dir=tmp_path / "run", resume=True)
    assert json.loads((resumed / "checkpoints" / "latest.json").read_text())["iteration"] == stopped + 2


def test_train_step_skips_non_finite_losses_without_touching_the_weights(monkeypatch):
    torch.manual_seed(0)
    net = sisr.create_model("edsr-baseline", scale=2, n_resblocks=1, n_feats=4)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    step = TrainStep(net, opt, device=torch.device("cpu"))
    lr, hr = torch.rand(2, 3, 6, 6), torch.rand(2, 3, 12, 12)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    step.loss_fn = lambda sr, target: (sr - target).abs().mean() * float("nan")
    result = step(lr, hr)
    assert not result.stepped and np.isnan(result.loss)
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k])
    assert all(p.grad is None for p in net.parameters())
    step.loss_fn = torch.nn.functional.l1_loss
    assert step(lr, hr).stepped
    assert any(not torch.equal(v, before[k]) for k, v in net.state_dict().items())


def test_repeated_non_finite_losses_stop_the_run(data, tmp_path, monkeypatch):
    calls = {"n": 0}
    real = torch.nn.functional.l1_loss

    def flaky(sr, hr):
        calls["n"] += 1
        loss = real(sr, hr)
        return loss * float("nan") if calls["n"] in (2, 3) or calls["n"] > 7 else loss

    monkeypatch.setattr(torch.nn.functional, "l1_loss", flaky)
    with pytest.warns(RuntimeWarning, match="non-finite loss"), \
            pytest.raises(TrainingError, match="training diverged: 3 non-finite losses in a row at iteration 10"):
        train(_config(data, train={"max_nonfinite": 3}), run_dir=tmp_path / "run")
    events = _records(tmp_path / "run", "event")
    assert [e["iteration"] for e in events] == [2, 3, 8, 9, 10]
    assert [r["skipped"] for r in _records(tmp_path / "run", "train")] == [2, 0, 2]


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_ema_mixed_precision_clipping_and_channels_last(data, tmp_path, precision):
    cfg = _config(data, train={"iterations": 6, "ema": 0.9, "grad_clip": 0.1, "precision": precision,
                               "channels_last": True})
    run = train(cfg, run_dir=tmp_path / "run")
    latest, ema = _weights(run / "latest.safetensors"), _weights(run / "latest_ema.safetensors")
    assert latest.keys() == ema.keys()
    assert any(not torch.equal(latest[k], ema[k]) for k in latest)
    assert all(torch.isfinite(v).all() for v in ema.values())
    best = read_metadata(run / "best.safetensors")
    assert best["metrics"]["ema"] is True
    _assert_same_weights(run / "best.safetensors", run / "latest_ema.safetensors")
    state = torch.load(next((run / "checkpoints").glob("0*/state.pt")), weights_only=True)
    assert (state["scaler"] is not None) == (precision == "fp16")


def test_lr_schedule_step_and_milestones():
    step = ScheduleConfig(step=100, gamma=0.5)
    assert [lr_factor(step, i) for i in (0, 99, 100, 199, 200, 450)] == [1, 1, 0.5, 0.5, 0.25, 0.0625]
    miles = ScheduleConfig(step=None, milestones=[200, 300], gamma=0.1)
    assert [lr_factor(miles, i) for i in (0, 199, 200, 299, 300, 10**6)] == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])


def test_init_from_weights_loads_what_fits(data, tmp_path, capsys):
    run = train(_config(data, train={"iterations": 3}, val={"every": 0}), run_dir=tmp_path / "x2")
    x3 = sisr.create_model("edsr-baseline", scale=3, n_resblocks=1, n_feats=8)
    count, left = load_init(x3, run / "latest.safetensors")
    assert left == ["tail.0.0.bias", "tail.0.0.weight"]  # the x2 upsampler does not fit x3
    x2 = _weights(run / "latest.safetensors")
    assert count == len(x2) - 2
    assert torch.equal(x3.state_dict()["head.0.weight"], x2["head.0.weight"])
    other = sisr.create_model("defian-s", scale=2, **sisr.get_info("defian-s").tiny)
    with pytest.raises(ConfigError, match="no tensor fits"):
        load_init(other, run / "latest.safetensors")
    cfg = _config(data, model={"scale": 3, "init": str(run / "latest.safetensors")},
                  train={"iterations": 1}, val={"every": 0})
    train(cfg, run_dir=tmp_path / "x3")
    assert f"initialised {count} tensors from" in capsys.readouterr().err


def test_bd_degradation_trains_and_validates_on_made_lr(data, tmp_path):
    from sisr.data.degrade import degrade
    from sisr.training.trainer import Validator

    validator = Validator("Val", 2, root=str(data / "bench"), degradation="BD", device=torch.device("cpu"))
    assert "LR made by sisr.data.degrade" in validator.source
    name, lr, hr = validator.items[0]
    hr_img = (hr.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    np.testing.assert_array_equal((lr.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8), degrade(hr_img, 2, "BD"))
    run = train(_config(data, data={"degradation": "BD"}, train={"iterations": 2}, val={"every": 2}),
                run_dir=tmp_path / "run")
    assert [r["iteration"] for r in _records(run, "val")] == [2]


def test_a_validation_image_too_small_for_ssim_is_refused_before_training(tmp_path):
    """17x17 at x3: 15x15 after modcrop, 9x9 after shaving 3 per side, under SSIM's 11x11 window. Found at the
    first validation it cost every update before it (no checkpoint yet); now one line naming the file, at once."""
    from sisr.training.trainer import Validator

    write_image(tmp_path / "val" / "small.png", np.zeros((17, 17, 3), np.uint8))
    with pytest.raises(ConfigError, match=r"small.png: 17x17 is too small to validate at x3 \(SSIM needs 11x11"):
        Validator(str(tmp_path / "val"), 3, device=torch.device("cpu"))
    write_image(tmp_path / "ok" / "fits.png", np.zeros((17, 17, 3), np.uint8))
    assert len(Validator(str(tmp_path / "ok"), 2, device=torch.device("cpu")).items) == 1  # 13x13 after shaving


def test_tensorboard_required_but_missing_is_a_clear_error(data, tmp_path):
    if importlib.util.find_spec("tensorboard") is not None:
        pytest.skip("tensorboard is installed")
    with pytest.raises(sisr.errors.SisrError, match="tensorboard package is not installed"):
        train(_config(data, log={"tensorboard": True}), run_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_resume_restores_ema_and_grad_scaler(data, tmp_path):
    extra = {"ema": 0.9, "precision": "fp16", "grad_clip": 1.0, "checkpoint_every": 4}
    train(_config(data, train={**extra, "iterations": 4}, val={"every": 0}), run_dir=tmp_path / "a")
    resumed = train(_config(data, train={**extra, "iterations": 8}, val={"every": 0}), run_dir=tmp_path / "a")
    straight = train(_config(data, train={**extra, "iterations": 8}, val={"every": 0}), run_dir=tmp_path / "b")
    for name in ("latest.safetensors", "latest_ema.safetensors"):
        _assert_same_weights(resumed / name, straight / name)
    states = [torch.load(next((r / "checkpoints").glob("0*/state.pt")), weights_only=True) for r in (resumed, straight)]
    assert states[0]["scaler"] == states[1]["scaler"]


def test_a_second_signal_interrupts_at_once_and_names_the_last_checkpoint(data, tmp_path, monkeypatch):
    real, calls = TrainStep.__call__, {"n": 0}

    def step(self, lr, hr, **flags):
        calls["n"] += 1
        if calls["n"] == 8:  # after the checkpoint of iteration 6
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGTERM)
        return real(self, lr, hr, **flags)

    monkeypatch.setattr(TrainStep, "__call__", step)
    with pytest.raises(train_module.TrainingInterrupted) as info:
        train(_config(data, val={"every": 0}), run_dir=tmp_path / "run")
    assert str(info.value) == (f"interrupted at iteration 7 (no checkpoint since iteration 6); resume with: "
                               f"sisr train --resume --run-dir {tmp_path / 'run'}")
    assert info.value.exit_code == 143
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handlers are restored
