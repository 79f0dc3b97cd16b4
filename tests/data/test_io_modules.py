"""sisr.data.io after its split into io / arrays / imagemeta / png16: every name still importable from io."""

from __future__ import annotations

import sisr
from sisr.data import arrays, imagemeta, io, png16

MOVED = {arrays: ["image_to_tensor", "tensor_to_image", "split_alpha", "merge_alpha", "apply_orientation"],
         imagemeta: ["ImageInfo", "to_srgb"], png16: ["encode_png16"]}


def test_moved_names_are_the_same_objects_in_io():
    for module, names in MOVED.items():
        for name in names:
            assert getattr(io, name) is getattr(module, name), name
            assert name in io.__all__


def test_io_all_is_complete_and_importable():
    own = {n for n, v in vars(io).items() if not n.startswith("_") and getattr(v, "__module__", "") == "sisr.data.io"}
    assert own and own <= set(io.__all__)
    for name in io.__all__:
        assert hasattr(io, name), name
    assert sisr.read_image is io.read_image and sisr.write_image is io.write_image
