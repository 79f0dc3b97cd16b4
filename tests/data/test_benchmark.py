"""sisr.data.benchmark: the EDSR-layout reader on ../shared/datasets and on small synthetic sets."""

from __future__ import annotations

import numpy as np
import pytest

from sisr.data.benchmark import BenchmarkSet, DatasetError, list_sets
from sisr.data.io import read_image, write_image
from sisr.data.resize import imresize


def _make_set(root, name="Tiny", sizes=((29, 37), (24, 30)), scales=(), folder="LR_bicubic", gray=False):
    """A set under root/name with random HR images and, for each scale in ``scales``, MATLAB-exact LR files."""
    rng = np.random.default_rng(0)
    hrs = {}
    for i, (h, w) in enumerate(sizes):
        hr = rng.integers(0, 256, (h, w, 1 if gray else 3), dtype=np.uint8)
        write_image(root / name / "HR" / f"im{i}.png", hr)
        hrs[f"im{i}"] = hr
        for s in scales:
            lr = imresize(hr[: h // s * s, : w // s * s], 1 / s)
            write_image(root / name / folder / f"X{s}" / f"im{i}x{s}.png", lr)
    return hrs


# --------------------------------------------------------------------------- shared datasets


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_set5_files(datasets_root, scale):
    bench = BenchmarkSet(datasets_root, "Set5", scale)
    assert bench.names == ["baby", "bird", "butterfly", "head", "woman"]
    items = list(bench)
    for item in items:
        raw = read_image(datasets_root / "Set5" / "HR" / f"{item.name}.png")
        h, w = raw.shape[0] // scale, raw.shape[1] // scale
        assert item.lr.shape == (h, w, 3) and item.lr.dtype == np.uint8
        assert np.array_equal(item.hr, raw[: h * scale, : w * scale])
        assert item.lr_source == "file" and item.lr_path.name == f"{item.name}x{scale}.png"
        assert item.lr_border == "symmetric"  # the README: Set5 X2-X4 are modern-MATLAB files
    assert bench.describe_lr(items) == (f"file LR_bicubic/X{scale} (5/5), MATLAB bicubic border rule reproduced byte for byte: "
                                        "symmetric 5")


def test_resize_source_reproduces_the_set5_files(datasets_root):
    files = BenchmarkSet(datasets_root, "Set5", 3, check_border=False)
    made = BenchmarkSet(datasets_root, "Set5", 3, lr_source="resize")
    for a, b in zip(files, made):
        assert b.lr_source == "matlab-resize, symmetric" and b.lr_path is None
        assert np.array_equal(a.hr, b.hr) and np.array_equal(a.lr, b.lr)


def test_b100_files_follow_the_replicate_rule(datasets_root):
    bench = BenchmarkSet(datasets_root, "B100", 4)
    assert len(bench) == 100
    item = bench[0]
    assert item.lr_border == "replicate"
    made = BenchmarkSet(datasets_root, "B100", 4, lr_source="resize", border="replicate")[0]
    assert np.array_equal(made.lr, item.lr)
    symmetric = BenchmarkSet(datasets_root, "B100", 4, lr_source="resize")[0]
    diff = symmetric.lr.astype(int) != item.lr
    assert diff.any() and not diff[2:-2, 2:-2].any()  # only the 2-pixel LR border differs


def test_set14_gray_bridge_is_replicated(datasets_root):
    bench = BenchmarkSet(datasets_root, "Set14", 2, check_border=False)
    item = bench[bench.names.index("bridge")]
    assert read_image(item.hr_path).shape[2] == 1
    for img in (item.lr, item.hr):
        assert img.shape[2] == 3 and np.array_equal(img[..., 0], img[..., 1]) and np.array_equal(img[..., 0], img[..., 2])


def test_list_sets(datasets_root):
    assert {"Set5", "Set14", "B100"} <= set(list_sets(datasets_root))


# --------------------------------------------------------------------------- synthetic sets


def test_auto_makes_missing_lr_and_crops_hr(tmp_path):
    hrs = _make_set(tmp_path)
    bench = BenchmarkSet(tmp_path, "Tiny", 3)
    item = bench[0]
    assert item.lr_source == "matlab-resize, symmetric" and item.lr_path is None
    assert item.hr.shape == (27, 36, 3) and np.array_equal(item.hr, hrs["im0"][:27, :36])
    assert np.array_equal(item.lr, imresize(hrs["im0"][:27, :36], 1 / 3))
    replicate = BenchmarkSet(tmp_path, "Tiny", 3, border="replicate")[0]
    assert replicate.lr_source == "matlab-resize, replicate"
    assert np.array_equal(replicate.lr, imresize(hrs["im0"][:27, :36], 1 / 3, border="replicate"))
    assert bench.describe_lr(list(bench)) == "matlab-resize, symmetric (2/2)"


def test_files_preferred_and_mixed_sources_recorded(tmp_path):
    _make_set(tmp_path, scales=(2,))
    (tmp_path / "Tiny" / "LR_bicubic" / "X2" / "im1x2.png").unlink()
    bench = BenchmarkSet(tmp_path, "Tiny", 2)
    items = list(bench)
    assert [i.lr_source for i in items] == ["file", "matlab-resize, symmetric"]
    assert items[0].lr_border == "symmetric"
    assert bench.describe_lr(items) == ("file LR_bicubic/X2 (1/2), MATLAB bicubic border rule reproduced byte for byte: symmetric 1; "
                                        "matlab-resize, symmetric (1/2)")


def test_lr_file_that_is_not_matlab_bicubic(tmp_path):
    _make_set(tmp_path, sizes=((20, 20),))
    write_image(tmp_path / "Tiny" / "LR_bicubic" / "X2" / "im0x2.png", np.zeros((10, 10, 3), np.uint8))
    assert BenchmarkSet(tmp_path, "Tiny", 2)[0].lr_border == "neither"
    assert BenchmarkSet(tmp_path, "Tiny", 2, check_border=False)[0].lr_border is None


def test_gray_set(tmp_path):
    _make_set(tmp_path, sizes=((16, 18),), scales=(2,), gray=True)
    item = BenchmarkSet(tmp_path, "Tiny", 2)[0]
    assert item.lr.shape == (8, 9, 3) and item.hr.shape == (16, 18, 3) and item.lr_border == "symmetric"


def test_rgba_alpha_is_dropped(tmp_path):
    rgba = np.random.default_rng(1).integers(0, 256, (12, 14, 4), dtype=np.uint8)
    write_image(tmp_path / "A" / "HR" / "x.png", rgba)
    item = BenchmarkSet(tmp_path, "A", 2)[0]
    assert np.array_equal(item.hr, rgba[..., :3])


def test_lr_files_only(tmp_path):
    _make_set(tmp_path)
    with pytest.raises(DatasetError, match=r"Tiny/LR_bicubic/X2/im0x2.png: missing LR file \(lr_source='auto'"):
        BenchmarkSet(tmp_path, "Tiny", 2, lr_source="files")


def test_mis_sized_lr_file_is_named(tmp_path):
    _make_set(tmp_path, sizes=((20, 24),))
    write_image(tmp_path / "Tiny" / "LR_bicubic" / "X2" / "im0x2.png", np.zeros((10, 11, 3), np.uint8))
    bench = BenchmarkSet(tmp_path, "Tiny", 2)
    with pytest.raises(DatasetError, match=r"im0x2.png: LR is 11x10, expected 12x10 \(HR im0.png / 2\)"):
        bench[0]


def test_degradation_folders(tmp_path):
    _make_set(tmp_path, scales=(2,), folder="LR_BD")
    bench = BenchmarkSet(tmp_path, "Tiny", 2, degradation="BD")
    item = bench[0]
    assert item.lr_path.parent.parent.name == "LR_BD" and item.lr_border is None  # no bicubic check for BD
    assert bench.describe_lr([item]) == "file LR_BD/X2 (1/1)"
    with pytest.raises(DatasetError, match=r"LR_DN/X2/im0x2.png: missing LR file$"):
        BenchmarkSet(tmp_path, "Tiny", 2, degradation="DN")
    with pytest.raises(DatasetError, match="sisr degrade --mode BD"):
        BenchmarkSet(tmp_path, "Tiny", 2, degradation="BD", lr_source="resize")


def test_missing_set_hr_folder_and_images(tmp_path):
    _make_set(tmp_path)
    with pytest.raises(DatasetError, match=r"Set7: no such benchmark set \(found: Tiny\)"):
        BenchmarkSet(tmp_path, "Set7", 2)
    (tmp_path / "NoHR").mkdir()
    with pytest.raises(DatasetError, match=r"NoHR/HR: missing HR folder"):
        BenchmarkSet(tmp_path, "NoHR", 2)
    (tmp_path / "Empty" / "HR").mkdir(parents=True)
    with pytest.raises(DatasetError, match=r"Empty/HR: no images"):
        BenchmarkSet(tmp_path, "Empty", 2)
    with pytest.raises(DatasetError, match=r"Tiny/Set5: no such benchmark set \(no <Set>/HR folders there\)"):
        BenchmarkSet(tmp_path / "Tiny", "Set5", 2)
    with pytest.raises(DatasetError, match=r"nowhere: no such data folder"):
        BenchmarkSet(tmp_path / "nowhere", "Set5", 2)


def test_bad_options_and_images(tmp_path):
    _make_set(tmp_path)
    for kwargs, message in [({"lr_source": "x"}, "lr_source must be"), ({"degradation": "XY"}, "degradation must be"),
                            ({"border": "reflect"}, "border must be")]:
        with pytest.raises(DatasetError, match=message):
            BenchmarkSet(tmp_path, "Tiny", 2, **kwargs)
    write_image(tmp_path / "Deep" / "HR" / "d.png", np.zeros((8, 8, 3), np.uint16))
    with pytest.raises(DatasetError, match=r"d.png: uint16 image; benchmark images must be 8-bit"):
        BenchmarkSet(tmp_path, "Deep", 2)[0]
    with pytest.raises(DatasetError, match="smaller than the scale 4"):
        write_image(tmp_path / "Small" / "HR" / "s.png", np.zeros((3, 8, 3), np.uint8))
        BenchmarkSet(tmp_path, "Small", 4)[0]
