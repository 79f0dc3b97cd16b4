"""What an image file carries besides its pixels: :class:`ImageInfo`, and ICC conversion to sRGB.

:func:`sisr.data.io.read_image_info` reads an :class:`ImageInfo` (ICC profile, EXIF with the
orientation reset to 1 since the pixels are returned upright, XMP, DPI, frame count, sisr
provenance) separately from the pixels, so ``read_image`` stays a plain array for evaluation and
training (which use pixels as stored, with no colour management); :func:`sisr.data.io.write_image`
writes it back where the format can carry it. :func:`to_srgb` applies a profile with Pillow's ImageCms.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from ..errors import ImageError
from .arrays import as_hwc, merge_alpha, split_alpha

ORIENTATION_TAG = 0x0112
SOFTWARE_TAG = 0x0131
XMP_TAG = 700
EXIF_POINTERS = frozenset({0x8769, 0x8825, 0xA005})  # Exif, GPS, interoperability sub-IFDs (not kept in TIFF)
PROVENANCE_PREFIX = "sisr "  # EXIF/TIFF Software tag: "sisr <provenance>"
PROVENANCE_KEY = "sisr"  # PNG tEXt keyword


@dataclass(frozen=True)
class ImageInfo:
    """What an image file carries besides its pixels (see :func:`sisr.data.io.read_image_info`)."""

    icc_profile: bytes | None = None
    exif: bytes | None = None  # EXIF block with the orientation reset to 1 (the pixels are read upright)
    xmp: bytes | None = None
    dpi: tuple[float, float] | None = None
    frames: int = 1
    provenance: str | None = None  # what write_image(provenance=...) recorded


def to_srgb(img: np.ndarray, icc_profile: bytes | None, name: str = "image") -> np.ndarray:
    """Convert 8-bit RGB(A)/gray pixels from their ICC profile to sRGB with Pillow's ImageCms (no profile: as is)."""
    arr = as_hwc(img, name)
    if not icc_profile:
        return arr
    if arr.dtype != np.uint8:
        raise ImageError(f"{name}: sRGB conversion supports 8-bit images only (keep the profile: --color keep)")
    from PIL import ImageCms

    color, alpha = split_alpha(arr)
    mode = "L" if color.shape[2] == 1 else "RGB"
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc_profile))
        srgb = ImageCms.createProfile("sRGB")
        im = Image.fromarray(color[..., 0] if mode == "L" else color)
        out = ImageCms.profileToProfile(im, source, srgb, outputMode="RGB" if mode == "RGB" else "L")
    except (ImageCms.PyCMSError, OSError, ValueError) as exc:
        raise ImageError(f"{name}: cannot convert to sRGB with its ICC profile ({exc})") from None
    converted = np.asarray(out, dtype=np.uint8)
    return merge_alpha(converted[..., None] if converted.ndim == 2 else converted, alpha)
