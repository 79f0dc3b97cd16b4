"""sisr.evaluation.protocol: scores, forward paths, model sources, result files, and the bicubic rows of the papers."""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pytest
import torch

import sisr
from sisr.data.io import image_to_tensor, tensor_to_image, write_image
from sisr.evaluation.protocol import evaluate, save_results
from sisr.inference.forward import run
from sisr.errors import ConfigError, ModelError
from sisr.metrics import MetricError, psnr, ssim
from sisr.models import create_model, get_info
from sisr.utils.fs import OutputExistsError
from sisr.weights import save_weights

# Published bicubic rows (e.g. the EDSR/RCAN tables): (PSNR, SSIM) on Y, shave = scale
LITERATURE_BICUBIC = {
    "Set5": {2: (33.66, 0.9299), 3: (30.39, 0.8682), 4: (28.42, 0.8104)},
    "Set14": {2: (30.24, 0.8688), 3: (27.55, 0.7742), 4: (26.00, 0.7027)},
    "B100": {2: (29.56, 0.8431), 3: (27.21, 0.7385), 4: (25.96, 0.6675)},
}


@pytest.fixture
def tiny_root(tmp_path):
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate([(26, 30), (33, 24)]):
        base = rng.integers(0, 256, (h // 3, w // 3, 3)).astype(np.float64)
        hr = np.kron(base, np.ones((3, 3, 1)))  # smooth-ish content
        hr = np.pad(hr, ((0, h - hr.shape[0]), (0, w - hr.shape[1]), (0, 0)), mode="edge")
        write_image(tmp_path / "data" / "Tiny" / "HR" / f"img{i}.png", hr.astype(np.uint8))
    return tmp_path / "data"


def _tiny_edsr(scale=2):
    torch.manual_seed(0)
    return sisr.create_model("edsr-baseline", scale=scale, **get_info("edsr-baseline").tiny).eval()


@pytest.mark.parametrize("dataset", ["Set5", "Set14"])
def test_bicubic_matches_the_literature(datasets_root, dataset):
    # the literature's bicubic rows score Set14's gray 'bridge' as a gray image (see docs/evaluation.md)
    results = evaluate("bicubic", data_root=datasets_root, datasets=[dataset], scales=[2, 3, 4], progress=False,
                       check_border=False, gray_images="gray")
    for scale, (ref_psnr, ref_ssim) in LITERATURE_BICUBIC[dataset].items():
        got = results.get(dataset, scale)
        assert abs(got.psnr_y - ref_psnr) <= 0.03, f"{dataset} x{scale}: PSNR {got.psnr_y:.3f} vs {ref_psnr}"
        assert abs(got.ssim_y - ref_ssim) <= 0.002, f"{dataset} x{scale}: SSIM {got.ssim_y:.4f} vs {ref_ssim}"


def test_gray_images_rgb_or_gray(tmp_path):
    rng = np.random.default_rng(5)
    write_image(tmp_path / "G" / "HR" / "a.png", rng.integers(0, 256, (24, 28, 3), dtype=np.uint8))
    write_image(tmp_path / "G" / "HR" / "b.png", rng.integers(0, 256, (24, 28, 1), dtype=np.uint8))
    as_rgb = evaluate("bicubic", scales=[2], data_root=tmp_path, datasets=["G"], progress=False)
    as_gray = evaluate("bicubic", scales=[2], data_root=tmp_path, datasets=["G"], progress=False, gray_images="gray")
    (rgb_a, rgb_b), (gray_a, gray_b) = as_rgb.sets[0].images, as_gray.sets[0].images
    assert (rgb_a.psnr_y, rgb_a.ssim_y, rgb_a.psnr_rgb) == (gray_a.psnr_y, gray_a.ssim_y, gray_a.psnr_rgb)  # colour: same
    # bicubic keeps the three replicated channels equal, so Y = 16 + 219/255 * gray: PSNR differs by 20 log10(255/219)
    assert rgb_b.psnr_y - gray_b.psnr_y == pytest.approx(20 * math.log10(255 / 219), abs=1e-3)
    assert gray_b.psnr_rgb == gray_b.psnr_y  # one channel
    assert as_gray.protocol["gray_images"].startswith("scored as gray") and as_gray.protocol["gray_images"].endswith("(G: b)")
    assert as_rgb.protocol["gray_images"].startswith("replicated to RGB")
    with pytest.raises(ConfigError, match="gray_images must be one of rgb, gray"):
        evaluate("bicubic", scales=[2], data_root=tmp_path, datasets=["G"], gray_images="luma")


def test_scores_equal_the_metrics_of_the_model_output(tiny_root):
    net = _tiny_edsr()
    results = evaluate(net, data_root=tiny_root, datasets=["Tiny"], progress=False)
    (set_score,) = results.sets
    assert (set_score.dataset, set_score.scale) == ("Tiny", 2)
    assert "matlab-resize, symmetric (2/2)" in set_score.lr
    from sisr.data.benchmark import BenchmarkSet

    for item, score in zip(BenchmarkSet(tiny_root, "Tiny", 2), set_score.images):
        with torch.no_grad():
            sr = tensor_to_image(net(image_to_tensor(item.lr)[None])[0], np.uint8)
        assert score.name == item.name
        assert score.psnr_y == psnr(sr, item.hr, 2) and score.ssim_y == ssim(sr, item.hr, 2)
        assert score.psnr_rgb == psnr(sr, item.hr, 2, y_only=False)
        assert score.lr_source == "matlab-resize, symmetric" and score.seconds >= 0
    assert set_score.psnr_y == pytest.approx(np.mean([i.psnr_y for i in set_score.images]), abs=1e-12)
    # shave changes the score as the metric says
    shaved = evaluate(net, data_root=tiny_root, datasets=["Tiny"], shave=0, progress=False)
    assert shaved.sets[0].images[0].psnr_y != set_score.images[0].psnr_y
    assert shaved.protocol["shave"] == 0 and results.protocol["shave"] == "scale"


def test_self_ensemble_goes_through_inference_run(tiny_root):
    net = _tiny_edsr()
    plain = evaluate(net, data_root=tiny_root, datasets=["Tiny"], progress=False)
    ens = evaluate(net, data_root=tiny_root, datasets=["Tiny"], self_ensemble=True, progress=False)
    from sisr.data.benchmark import BenchmarkSet

    item = BenchmarkSet(tiny_root, "Tiny", 2)[0]
    sr = tensor_to_image(run(net, image_to_tensor(item.lr)[None], self_ensemble=True)[0], np.uint8)
    assert ens.sets[0].images[0].psnr_y == psnr(sr, item.hr, 2)
    assert ens.sets[0].images[0].psnr_y != plain.sets[0].images[0].psnr_y
    assert ens.protocol["forward"]["self_ensemble"] is True
    assert plain.protocol["forward"].startswith("model(x) under torch.inference_mode")


def test_weights_file_as_model(tiny_root, tmp_path):
    net = _tiny_edsr(scale=3)
    path = save_weights(net, tmp_path / "tiny_x3.safetensors", model="edsr-baseline", scale=3,
                        hparams=dict(net.sisr_spec.hparams))
    results = evaluate(str(path), data_root=tiny_root, datasets=["Tiny"], progress=False)
    assert [s.scale for s in results.sets] == [3]
    assert results.model["label"] == "tiny_x3"
    entry = results.model["per_scale"]["x3"]
    assert entry["weights"] == str(path) and entry["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    direct = evaluate(net, data_root=tiny_root, datasets=["Tiny"], progress=False)
    assert results.sets[0].psnr_y == direct.sets[0].psnr_y
    # the same file through a registry name and --weights
    named = evaluate("edsr-baseline", weights=path, scales=[3], data_root=tiny_root, datasets=["Tiny"], progress=False)
    assert named.sets[0].psnr_y == direct.sets[0].psnr_y and named.model["label"] == "edsr-baseline"


def test_model_errors(tiny_root):
    net = _tiny_edsr()
    with pytest.raises(ConfigError, match="one scale"):
        evaluate(net, data_root=tiny_root, datasets=["Tiny"], scales=[2, 3], progress=False)
    with pytest.raises(ModelError, match="upscales x2, not x3"):
        evaluate(net, data_root=tiny_root, datasets=["Tiny"], scales=[3], progress=False)
    with pytest.raises(ConfigError, match="needs scales"):
        evaluate(torch.nn.Upsample(scale_factor=2), data_root=tiny_root, datasets=["Tiny"], progress=False)
    with pytest.raises(ModelError, match=r"Tiny/img0: model output is 20x16, expected 30x24 \(x3\)"):
        evaluate(torch.nn.Upsample(scale_factor=2), scales=[3], data_root=tiny_root, datasets=["Tiny"], progress=False)
    with pytest.raises(ModelError, match="supports scales"):
        evaluate("bicubic", scales=[5], data_root=tiny_root, datasets=["Tiny"], progress=False)


def test_result_files_record_the_protocol(tiny_root, tmp_path, monkeypatch):
    results = evaluate("bicubic", data_root=tiny_root, datasets=["Tiny"], scales=[2, 3], progress=False)
    out = save_results(results, tmp_path / "out")
    assert sorted(p.name for p in out.iterdir()) == ["env.json", "per_image.csv", "results.json", "table.md"]
    assert json.loads((out / "env.json").read_text())["torch"] == torch.__version__
    data = json.loads((out / "results.json").read_text())
    proto = data["protocol"]
    assert proto["shave"] == "scale" and "rounded half to even" in proto["quantisation"]
    assert "rgb2ycbcr" in proto["metrics"] and "Y" in proto["channels"]
    assert proto["lr"] == {"Tiny x2": "matlab-resize, symmetric (2/2)", "Tiny x3": "matlab-resize, symmetric (2/2)"}
    assert proto["software"]["torch"] == torch.__version__ and proto["software"]["sisr"] == sisr.__version__
    assert proto["device"].startswith("cpu")
    assert data["model"]["per_scale"]["x2"] == {"model": "bicubic", "hparams": {"border": "symmetric"},
                                                "parameters": 0, "weights": None, "sha256": None}
    assert [(r["dataset"], r["scale"], len(r["images"])) for r in data["results"]] == [("Tiny", 2, 2), ("Tiny", 3, 2)]
    csv_text = (out / "per_image.csv").read_text()
    assert "# shave: scale" in csv_text and "# lr: Tiny x2: matlab-resize" in csv_text
    assert "Tiny,3,img1," in csv_text
    md = (out / "table.md").read_text()
    cell = f"{results.get('Tiny', 2).psnr_y:.2f}/{results.get('Tiny', 2).ssim_y:.4f}"
    assert f"| Tiny | {cell} |" in md and "## Protocol" in md and "quantisation" in md
    assert results.table().splitlines()[1].split()[1] == cell

    with pytest.raises(OutputExistsError, match="already exists"):
        save_results(results, out)
    save_results(results, out, overwrite=True)

    monkeypatch.chdir(tmp_path)
    first, second = save_results(results), save_results(results)
    assert first != second and first.parent.name == "results" and first.name.startswith("eval-bicubic-")


def test_identical_images_give_infinite_psnr_in_json(tmp_path):
    class Exact(torch.nn.Module):
        """Returns the HR: nearest-neighbour upscaling of a block-constant image."""

        def forward(self, x):
            return x.repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1)

    hr = np.kron(np.random.default_rng(0).integers(0, 256, (12, 12, 3)), np.ones((2, 2, 1))).astype(np.uint8)
    write_image(tmp_path / "B" / "HR" / "a.png", hr)
    write_image(tmp_path / "B" / "LR_bicubic" / "X2" / "ax2.png", hr[::2, ::2])
    results = evaluate(Exact(), scales=[2], data_root=tmp_path, datasets=["B"], progress=False)
    assert math.isinf(results.sets[0].psnr_y) and results.sets[0].ssim_y == pytest.approx(1.0)
    assert results.to_dict()["results"][0]["psnr_y"] == "inf"
    json.dumps(results.to_dict(), allow_nan=False)


def test_an_image_too_small_to_score_is_named_before_its_forward(tiny_root):
    """Tiny/img1 is 24 wide: 24 - 2 x 7 = 10 < SSIM's 11 (was "SSIM needs at least 11x11 ...", naming no image)."""
    calls = []

    class Counting(torch.nn.Module):
        def forward(self, x):
            calls.append(x.shape)
            return x.repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1)

    with pytest.raises(MetricError, match=r"Tiny/img1.*: 24x32 is too small to score with a 7-pixel shave"):
        evaluate(Counting(), scales=[2], data_root=tiny_root, datasets=["Tiny"], shave=7, progress=False)
    assert len(calls) == 1  # img0 (30x26 -> 16x12 after shaving) was scored, img1 never ran


def test_weights_file_scale_is_the_default_and_partial_outputs_are_refused(tmp_path):
    torch.manual_seed(0)
    net = create_model("edsr-baseline", scale=3, **get_info("edsr-baseline").tiny)
    weights = save_weights(net, tmp_path / "w.safetensors", model="edsr-baseline", scale=3,
                           hparams=dict(get_info("edsr-baseline").tiny))
    root = tmp_path / "data"
    write_image(root / "G" / "HR" / "a.png", np.random.default_rng(0).integers(0, 256, (24, 27, 3), dtype=np.uint8))
    results = evaluate("edsr-baseline", weights=weights, data_root=root, datasets=["G"], progress=False)
    assert [s.scale for s in results.sets] == [3]
    out = tmp_path / "out"
    out.mkdir()
    (out / "per_image.csv").write_text("mine")
    with pytest.raises(OutputExistsError):
        save_results(results, out)
    assert sorted(p.name for p in out.iterdir()) == ["per_image.csv"]  # nothing half-written


def test_evaluate_images_yields_what_was_scored_and_results_match_evaluate(tiny_root):
    from sisr.evaluation.protocol import ImageResult, evaluate_images
    from sisr.inference.options import RunOptions

    net = _tiny_edsr()
    images = evaluate_images(net, data_root=tiny_root, datasets=["Tiny"])
    assert len(images) == 2
    first = next(iter(images))
    assert isinstance(first, ImageResult) and (first.dataset, first.scale, first.name) == ("Tiny", 2, "img0")
    with torch.no_grad():
        expected = tensor_to_image(net(image_to_tensor(first.lr)[None])[0], np.uint8)
    np.testing.assert_array_equal(first.sr, expected)
    assert first.score.psnr_y == psnr(first.sr, first.hr, 2) and first.hr.shape == first.sr.shape
    results = images.results()  # runs the image not iterated yet
    direct = evaluate(net, data_root=tiny_root, datasets=["Tiny"], progress=False)
    assert [(i.name, i.psnr_y, i.ssim_y) for i in results.sets[0].images] == \
        [(i.name, i.psnr_y, i.ssim_y) for i in direct.sets[0].images]
    ens = evaluate(net, data_root=tiny_root, datasets=["Tiny"], options=RunOptions(self_ensemble=True), progress=False)
    assert ens.sets[0].psnr_y == evaluate(net, data_root=tiny_root, datasets=["Tiny"], self_ensemble=True,
                                          progress=False).sets[0].psnr_y
    assert ens.protocol["forward"]["self_ensemble"] is True and ens.protocol["forward"]["backend"] == "auto"
    with pytest.raises(ModelError, match="scale must be a whole number"):
        evaluate_images("bicubic", data_root=tiny_root, datasets=["Tiny"], scales=[2.5])
