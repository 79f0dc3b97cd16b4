"""The run directory under failure: nothing written by a start that fails, a folder without a
checkpoint counts as empty, deterministic faults inside every atomic write of a checkpoint and
between its files and the commit (the previous checkpoint is resumed, no ``.part`` is left), the
durable order of a checkpoint, the training-set fingerprint, TensorBoard's purge step, unreadable
training states, ``model.init`` from official checkpoints, the EMA without private torch API."""

from __future__ import annotations

import datetime
import json
import os
import signal
import subprocess
import sys
import types

import numpy as np
import pytest
import torch
import yaml
from testing_utils import tiny_train_config

import sisr
import sisr.utils.fs as fs
from sisr.data.io import write_image
from sisr.errors import ConfigError, SisrError
from sisr.training import checkpoint as ckpt
from sisr.training.checkpoint import CheckpointError, RunPaths, load_checkpoint, save_checkpoint
from sisr.training.step import EMA
from sisr.training.trainer import TrainingError, load_init, train
from sisr.weights import load_weights

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    for i in range(4):
        write_image(root / "train" / f"t{i}.png", (rng.random((28 + 4 * i, 32, 3)) * 255).astype(np.uint8))
    write_image(root / "bench" / "Val" / "HR" / "v0.png", (rng.random((24, 24, 3)) * 255).astype(np.uint8))
    return root


def _config(root, **sections):
    cfg = tiny_train_config(root, val={"set": "Val", "root": str(root / "bench"), "every": 6},
                            optim={"lr": 1e-3}, train={"iterations": 12, "batch_size": 2, "checkpoint_every": 6},
                            log={"every": 3})
    for section, values in sections.items():
        cfg[section] = {**cfg.get(section, {}), **values}
    return cfg


def _parts(run):
    return sorted(str(p.relative_to(run)) for p in run.rglob("*.part"))


def _pointer(run):
    return json.loads((run / "checkpoints" / "latest.json").read_text())["iteration"]


def _same_file_weights(a, b):
    wa, wb = load_weights(a)[0], load_weights(b)[0]
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


# --------------------------------------------------------------------------- failed starts


@pytest.mark.parametrize("bad, match", [
    ({"data": {"hr": ["missing"]}}, "no such training image folder"),
    ({"model": {"init": "missing.safetensors"}}, "model.init: .*missing.safetensors: no such file"),
    ({"val": {"set": "Nope"}}, "val.set: Nope not found"),
    ({"data": {"hr": ["Set5"]}}, "inside the benchmark test set"),
])
def test_a_start_that_fails_writes_nothing_and_the_corrected_command_runs(data, tmp_path, monkeypatch, bad, match):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "Set5").mkdir()
    run = tmp_path / "run"
    with pytest.raises(SisrError, match=match):
        train(_config(data, **bad), run_dir=run)
    assert not run.exists()
    run.mkdir()  # an empty folder is fine too
    with pytest.raises(SisrError, match=match):
        train(_config(data, **bad), run_dir=run)
    assert list(run.iterdir()) == []
    assert train(_config(data, train={"iterations": 2}), run_dir=run) == run
    assert _pointer(run) == 2


def test_an_unwritable_run_directory_is_refused_before_the_data_is_loaded(data, tmp_path, monkeypatch):
    import sisr.training.trainer as trainer

    monkeypatch.setattr(trainer, "build_training_parts", lambda *a: pytest.fail("loaded data for an unusable run"))
    (tmp_path / "afile").write_text("x")
    for bad in ("/proc/run", tmp_path / "afile" / "run"):
        with pytest.raises(SisrError, match="cannot be created|not a folder"):
            train(_config(data), run_dir=bad)


def test_a_run_folder_without_a_checkpoint_counts_as_empty(data, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()  # what an earlier version left after a failed start or an early stop
    (run / "config.yaml").write_text(yaml.safe_dump(_config(data, optim={"lr": 5e-4})))
    (run / "log.jsonl").write_text(json.dumps({"type": "train", "iteration": 3, "loss": 9.0}) + "\n")
    (run / "best.safetensors").write_bytes(b"stale")
    (run / "checkpoints" / "000000006").mkdir(parents=True)
    (run / "checkpoints" / "000000006" / "model.safetensors").write_bytes(b"torn")
    train(_config(data, train={"iterations": 3}, val={"every": 0}), run_dir=run)
    assert "no checkpoint yet; starting the run afresh" in capsys.readouterr().err
    assert yaml.safe_load((run / "config.yaml").read_text())["optim"]["lr"] == 1e-3
    losses = [json.loads(line)["loss"] for line in (run / "log.jsonl").read_text().splitlines()]
    assert len(losses) == 1 and losses[0] != 9.0
    assert not (run / "best.safetensors").exists()  # from the abandoned start
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["000000003", "latest.json"]


def test_resume_without_latest_json_takes_the_newest_complete_checkpoint_and_deletes_nothing(data, tmp_path, capsys):
    cfg = _config(data, train={"keep_checkpoints": 3}, val={"every": 6})
    run = train(cfg, run_dir=tmp_path / "run")
    best = (run / "best.safetensors").read_bytes()
    (run / "checkpoints" / "latest.json").unlink()
    (run / "checkpoints" / "000000012" / "state.pt").write_bytes(b"torn")  # the newest is not complete
    resumed = train(None, ["train.iterations=14"], run_dir=run, resume=True)
    err = capsys.readouterr().err
    assert "latest.json is missing: resuming from the newest complete checkpoint (iteration 6)" in err
    assert "afresh" not in err
    assert _pointer(resumed) == 14 and (run / "best.safetensors").read_bytes() != b""
    assert [r["iteration"] for r in map(json.loads, (run / "log.jsonl").read_text().splitlines())
            if r["type"] == "val"][:1] == [6]  # the log up to the checkpoint is kept
    straight = train(_config(data, train={"keep_checkpoints": 3, "iterations": 14}, val={"every": 6}),
                     run_dir=tmp_path / "straight")
    assert _same_file_weights(resumed / "latest.safetensors", straight / "latest.safetensors")
    assert best  # (read before)


def test_resume_with_no_complete_checkpoint_is_refused_and_changes_nothing(data, tmp_path):
    run = train(_config(data, train={"iterations": 6}, val={"every": 6}), run_dir=tmp_path / "run")
    (run / "checkpoints" / "latest.json").unlink()
    (run / "checkpoints" / "000000006" / "model.safetensors").unlink()
    before = sorted(str(p.relative_to(run)) for p in run.rglob("*"))
    with pytest.raises(TrainingError, match="no checkpoint to resume .latest.json missing and no complete checkpoint "
                                            "folder.; nothing was changed"):
        train(None, ["train.iterations=8"], run_dir=run, resume=True)
    assert sorted(str(p.relative_to(run)) for p in run.rglob("*")) == before


def test_a_commit_record_pointing_outside_the_run_is_refused(data, tmp_path):
    run = train(_config(data, train={"iterations": 6}, val={"every": 0}), run_dir=tmp_path / "run")
    outside = tmp_path / "elsewhere"
    (run / "checkpoints" / "000000006").rename(outside)
    (run / "checkpoints" / "latest.json").write_text(json.dumps({"iteration": 6, "dir": "../../elsewhere"}))
    with pytest.raises(CheckpointError, match=r"latest.json: refused: names '../../elsewhere', not a checkpoint "
                                              r"folder of this run"):
        train(None, ["train.iterations=8"], run_dir=run, resume=True)


# --------------------------------------------------------------------------- faults in a checkpoint


def _fail_on_call(monkeypatch, target, nth):
    """Make fs.fsync_file raise on the ``nth`` sync of a temporary file for ``target``: inside its
    atomic write, after the data is written and before it is moved into place."""
    real, calls = fs.fsync_file, {"n": 0}

    def fsync_file(path):
        if os.path.basename(path).startswith(f".{target}."):
            calls["n"] += 1
            if calls["n"] == nth:
                raise OSError(28, "No space left on device (injected)")
        return real(path)

    monkeypatch.setattr(fs, "fsync_file", fsync_file)


CHECKPOINT_WRITES = ["model.safetensors", "ema.safetensors", "state.pt", "latest.json", "latest.safetensors",
                     "latest_ema.safetensors"]


@pytest.mark.parametrize("target", CHECKPOINT_WRITES + ["commit"])
def test_a_fault_in_a_checkpoint_leaves_the_previous_one_and_resume_is_exact(data, tmp_path, monkeypatch, target):
    cfg = _config(data, train={"ema": 0.9}, val={"every": 0})
    straight = train(cfg, run_dir=tmp_path / "straight")
    run = tmp_path / "run"
    with monkeypatch.context() as patch:
        if target == "commit":  # after state.pt, before latest.json is written
            real, calls = ckpt._commit, {"n": 0}

            def commit(*args):
                calls["n"] += 1
                if calls["n"] == 2:
                    raise OSError(5, "Input/output error (injected)")
                real(*args)

            patch.setattr(ckpt, "_commit", commit)
        else:
            _fail_on_call(patch, target, nth=2)  # the checkpoint of iteration 12
        with pytest.raises(OSError, match="injected"):
            train(cfg, run_dir=run)
    assert _parts(run) == []
    committed_before = target in ("latest.safetensors", "latest_ema.safetensors")
    assert _pointer(run) == (12 if committed_before else 6)
    train(cfg, run_dir=run)  # the same command goes on from the committed checkpoint
    assert _pointer(run) == 12 and _parts(run) == []
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["000000012", "latest.json"]
    for name in ("latest.safetensors", "latest_ema.safetensors"):
        assert _same_file_weights(run / name, straight / name), name
        assert _same_file_weights(run / name, run / "checkpoints" / "000000012" / name.replace("latest", "model")
                                  .replace("model_ema", "ema"))


KILL_SCRIPT = """
import os, signal, sys
import sisr.utils.fs as fs
from sisr.training import checkpoint as ckpt
from sisr.training.trainer import train
import yaml

cfg, run, point = yaml.safe_load(open(sys.argv[1])), sys.argv[2], sys.argv[3]
real_sync, real_commit, seen = fs.fsync_file, ckpt._commit, {"n": 0}

def fsync_file(path):
    if os.path.basename(path).startswith(".state.pt."):
        seen["n"] += 1
        if seen["n"] == 2:
            os.kill(os.getpid(), signal.SIGKILL)
    return real_sync(path)

def commit(*args):
    seen["n"] += 1
    if seen["n"] == 2:
        os.kill(os.getpid(), signal.SIGKILL)
    real_commit(*args)

if point == "state.pt":
    fs.fsync_file = fsync_file
else:
    ckpt._commit = commit
train(cfg, run_dir=run)
"""


@pytest.mark.parametrize("point", ["state.pt", "commit"])
def test_sigkill_inside_a_checkpoint_is_resumed_from_the_previous_one(data, tmp_path, point):
    cfg = _config(data, val={"every": 0})
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", KILL_SCRIPT, str(tmp_path / "cfg.yaml"), str(run), point],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert _pointer(run) == 6
    assert (run / "checkpoints" / "000000012" / "model.safetensors").is_file()  # the torn checkpoint
    assert bool(_parts(run)) == (point == "state.pt")
    train(cfg, run_dir=run)
    assert _pointer(run) == 12 and _parts(run) == []
    assert _same_file_weights(run / "latest.safetensors", train(cfg, run_dir=tmp_path / "straight") /
                              "latest.safetensors")


def test_checkpoint_files_are_durable_before_latest_json_names_them(tmp_path, monkeypatch):
    events = []
    real_replace, real_file, real_dir = os.replace, fs.fsync_file, fs.fsync_dir
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append(("replace", os.path.basename(b))),
                                                    real_replace(a, b))[1])
    monkeypatch.setattr(fs, "fsync_file", lambda p: (events.append(("file", os.path.basename(p).split(".part")[0]
                                                                    .rsplit(".", 1)[0])), real_file(p))[1])
    dirs = lambda p: (events.append(("dir", os.path.basename(os.path.normpath(p)))), real_dir(p))[1]  # noqa: E731
    monkeypatch.setattr(fs, "fsync_dir", dirs)
    monkeypatch.setattr(ckpt, "fsync_dir", dirs)
    paths = RunPaths(tmp_path / "run")
    net = sisr.create_model("edsr-baseline", scale=2, n_resblocks=1, n_feats=4)
    save_checkpoint(paths, 5, model=net, ema=net, state={}, weights_meta={"model": "edsr-baseline", "scale": 2})
    commit = events.index(("replace", "latest.json"))
    before = events[:commit]
    for name in ("model.safetensors", "ema.safetensors", "state.pt"):
        at = before.index(("replace", name))
        assert ("file", f".{name}") in before[:at], name  # data on disk before the rename
        assert ("dir", "000000005") in before[at:], name  # the rename on disk before the commit
    assert ("dir", "checkpoints") in before[before.index(("replace", "state.pt")):]  # the folder's entry
    assert events[commit + 1] == ("dir", "checkpoints")
    assert events.index(("replace", "latest.safetensors")) > commit  # the convenience copy comes after


# --------------------------------------------------------------------------- training-set fingerprint


def test_resuming_on_other_training_images_is_refused(data, tmp_path, capsys):
    for name, sizes in (("a", (28, 32, 36)), ("b", (28, 32, 40))):
        for i, h in enumerate(sizes):
            write_image(tmp_path / name / "imgs" / f"x{i}.png", np.full((h, 32, 3), 100, np.uint8))
    cfg = _config(data, data={"hr": ["imgs"], "root": str(tmp_path / "a")}, val={"every": 0})
    run = train({**cfg, "train": {**cfg["train"], "iterations": 6}}, run_dir=tmp_path / "run")
    moved = {**cfg, "data": {**cfg["data"], "root": str(tmp_path / "b")}}  # data.root is resume-safe
    with pytest.raises(TrainingError) as info:
        train(moved, run_dir=run)
    assert str(info.value) == (f"{run}: the training images differ from those the run was trained on (x2.png: "
                               f"HR file of {(tmp_path / 'a/imgs/x2.png').stat().st_size} bytes, LR 16x18, is now "
                               f"{(tmp_path / 'b/imgs/x2.png').stat().st_size} bytes, LR 16x20); data.hr, "
                               f"data.root and val.set must name the same images to resume")
    assert _pointer(run) == 6 and not (run / "checkpoints" / "000000012").exists()

    state_path = run / "checkpoints" / "000000006" / "state.pt"  # a checkpoint of an earlier version
    state = torch.load(state_path, weights_only=True)
    del state["data"]["fingerprint"]
    torch.save(state, state_path)
    train(cfg, run_dir=run)
    assert "predates training-set fingerprints" in capsys.readouterr().err
    assert _pointer(run) == 12
    assert torch.load(run / "checkpoints" / "000000012" / "state.pt", weights_only=True)["data"]["fingerprint"]


# --------------------------------------------------------------------------- TensorBoard


def test_tensorboard_purges_the_steps_after_the_resumed_checkpoint(data, tmp_path, monkeypatch):
    made = []

    class SummaryWriter:
        def __init__(self, log_dir, purge_step=None):
            made.append(purge_step)

        def add_scalar(self, *args):
            pass

        flush = close = lambda self: None

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", types.SimpleNamespace(SummaryWriter=SummaryWriter))
    cfg = _config(data, val={"every": 0}, log={"every": 3, "tensorboard": True})
    train({**cfg, "train": {**cfg["train"], "iterations": 6}}, run_dir=tmp_path / "run")
    train(cfg, run_dir=tmp_path / "run")
    assert made == [None, 7]  # iteration 6 was logged before its checkpoint: kept


# --------------------------------------------------------------------------- unreadable training states


def test_a_pickled_object_in_the_training_state_is_refused_without_unpickling_advice(data, tmp_path):
    run = train(_config(data, train={"iterations": 2, "checkpoint_every": 2}, val={"every": 0}),
                run_dir=tmp_path / "run")
    folder = run / "checkpoints" / "000000002"
    state = torch.load(folder / "state.pt", weights_only=True)
    torch.save({**state, "when": datetime.date(2026, 1, 1)}, folder / "state.pt")
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(folder)
    message = str(info.value)
    assert "refused" in message and "datetime.date" in message and "never unpickles" in message
    assert "weights_only" not in message and "\n" not in message

    data_bytes = (folder / "state.pt").read_bytes()
    (folder / "state.pt").write_bytes(data_bytes[: len(data_bytes) // 2])
    with pytest.raises(CheckpointError, match="cannot read the training state, damaged or truncated") as info:
        load_checkpoint(folder)
    assert "weights_only" not in str(info.value) and "\n" not in str(info.value)


# --------------------------------------------------------------------------- model.init


def test_model_init_reads_official_checkpoints_through_the_safe_loader(tmp_path):
    source = sisr.create_model("edsr-baseline", scale=2, n_resblocks=1, n_feats=8)
    container = {"epoch": 3, "state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}}
    torch.save(container, tmp_path / "official.pth")
    target = sisr.create_model("edsr-baseline", scale=2, n_resblocks=1, n_feats=8)
    count, left = load_init(target, tmp_path / "official.pth")
    assert count == len(source.state_dict()) and left == []
    assert all(torch.equal(v, target.state_dict()[k]) for k, v in source.state_dict().items())

    torch.save({"state_dict": source.state_dict(), "when": datetime.date(2026, 1, 1)}, tmp_path / "evil.pth")
    with pytest.raises(ConfigError, match=r"^model.init: .*evil.pth: refused") as info:
        load_init(target, tmp_path / "evil.pth")
    assert "weights_only" not in str(info.value)


# --------------------------------------------------------------------------- EMA


def test_ema_does_not_need_torch_private_foreach_lerp(monkeypatch):
    torch.manual_seed(0)
    net = sisr.create_model("edsr-baseline", scale=2, n_resblocks=1, n_feats=4)
    fast, plain = EMA(net, 0.9), EMA(net, 0.9)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p))
    fast.update(net)
    monkeypatch.delattr(torch, "_foreach_lerp_")
    plain.update(net)
    for a, b in zip(fast.module.state_dict().values(), plain.module.state_dict().values()):
        assert torch.equal(a, b)
