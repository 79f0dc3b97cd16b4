"""`sisr train` and `sisr plot` on the command line."""

from __future__ import annotations

import pytest
import yaml
from testing_utils import tiny_train_config, write_noise_images

from sisr.cli import main


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture()
def config_file(tmp_path):
    write_noise_images(tmp_path / "train", 3, (30, 32, 3))
    cfg = tiny_train_config(tmp_path, model={"hparams": {"n_resblocks": 1, "n_feats": 4}})
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_print_config_resolves_recipe_and_overrides(capsys):
    assert main(["train", "--config", "eacrn", "--print-config", "model.scale=3", "optim.lr=2e-4"]) == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["model"] == {"name": "eacrn", "scale": 3, "hparams": {}, "init": None}
    assert cfg["data"]["patch_size"] == 48 and cfg["optim"]["lr"] == 2e-4


@pytest.mark.parametrize("argv, message", [
    (["train"], "sisr train: error: give --config CONFIG"),
    (["train", "--config", "nope"], "sisr train: error: no config file or recipe 'nope'; recipes: cran, cran-edsr, csnln"),
    (["train", "--config", "bicubic"], "sisr train: error: model 'bicubic' has no parameters: there is nothing to train"),
    (["train", "--config", "rcan", "optim.lrr=1"], "unknown key 'optim.lrr' (did you mean 'lr'?)"),
    (["train", "--config", "rcan", "optim.lr"], "override 'optim.lr': expected key=value"),
    (["plot", "a", "b"], "sisr plot: error: several runs: give --out FOLDER"),
])
def test_user_errors_are_one_line(argv, message, capsys):
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_overrides_may_follow_options(capsys):
    argv = ["train", "--config", "edsr-baseline", "model.hparams={n_resblocks: 2, n_feats: 8}", "--run-dir", "runs/x",
            "data.hr=[a, b]", "--print-config", "train.iterations=7"]
    assert main(argv) == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["model"]["hparams"] == {"n_resblocks": 2, "n_feats": 8}
    assert cfg["data"]["hr"] == ["a", "b"] and cfg["train"]["iterations"] == 7


def test_a_failed_start_leaves_no_run_and_the_corrected_command_works(config_file, tmp_path, capsys):
    run = tmp_path / "run"
    argv = ["train", "--config", str(config_file), "--run-dir", str(run), "train.iterations=2"]
    assert main(argv + [f"data.hr=[{tmp_path / 'missing'}]"]) == 1
    err = capsys.readouterr().err
    assert "no such training image folder" in err and len(err.strip().splitlines()) == 1
    assert not run.exists()
    assert main(argv) == 0
    assert capsys.readouterr().out.strip() == str(run)


def test_train_resume_and_plot(config_file, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--config", str(config_file), "--run-dir", str(run), "train.iterations=2"]) == 0
    assert capsys.readouterr().out.strip() == str(run)
    assert main(["train", "--resume", "--run-dir", str(run), "train.iterations=4"]) == 0
    assert "resuming" in capsys.readouterr().err
    assert (run / "latest.safetensors").is_file() and (run / "plots" / "loss.png").is_file()

    assert main(["plot", str(run)]) == 0  # redraws the run's own plots in place
    assert capsys.readouterr().out.split() == [str(run / "plots" / "loss.png"), str(run / "plots" / "psnr.png")]
    out = tmp_path / "cmp"
    assert main(["plot", str(run), str(run), "--out", str(out)]) == 0
    assert main(["plot", str(run), "--out", str(out)]) == 1
    assert "already exists" in capsys.readouterr().err
    assert main(["plot", str(run), "--out", str(out), "--overwrite"]) == 0


def test_help_lists_the_recipes(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "recipes: cran, cran-edsr, csnln, defian-l, defian-s, eacrn, edsr, edsr-baseline, rcan" in capsys.readouterr().out
