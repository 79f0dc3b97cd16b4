"""What an image file carries besides its pixels: :class:`ImageInfo`, and ICC conversion to sRGB.

:func:`sisr.data.io.read_image_info` reads an :class:`ImageInfo` (ICC profile, EXIF with the
orientation reset to 1 since the pixels are returned upright, XMP, DPI, frame count, sisr
provenance) separately from the pixels, so ``read_image`` stays a plain array for evaluation and
training (which use pixels as stored, with no colour management); :func:`sisr.data.io.write_image`
writes it back where the format can carry it. :func:`to_srgb` applies a profile with Pillow's ImageCms.

Only descriptive EXIF travels (:func:`descriptive_exif`): a TIFF's own IFD0 holds its layout
(ImageWidth, StripOffsets, Compression...), which must never be written into another file. An ICC
profile travels only with pixels of its colour space (:func:`profile_fits`).
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
EXIF_IFD, GPS_IFD = 0x8769, 0x8825
# IFD0 tags that describe the picture, not the file's layout: DocumentName, ImageDescription, Make,
# Model, Orientation, PageName, Software, DateTime, Artist, HostComputer, Copyright, Rating,
# RatingPercent, the Windows XP title/comment/author/keywords/subject, and the Exif/GPS sub-IFDs.
DESCRIPTIVE_TAGS = frozenset({269, 270, 271, 272, 274, 285, 305, 306, 315, 316, 33432, 18246, 18249,
                              0x9C9B, 0x9C9C, 0x9C9D, 0x9C9E, 0x9C9F, EXIF_IFD, GPS_IFD})
PIXEL_DIMENSIONS = (0xA002, 0xA003)  # Exif IFD: PixelXDimension, PixelYDimension (set to the written size)
LAYOUT_DESCRIPTIONS = ('{"shape":', "ImageJ=")  # ImageDescriptions that tifffile/ImageJ read as array layout
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


def exif_orientation(value) -> int:
    """An EXIF Orientation value as 1-8; anything else (text, out of range, missing) counts as 1 (ignored)."""
    if isinstance(value, tuple) and len(value) == 1:
        value = value[0]
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def descriptive_exif(exif: bytes | Image.Exif | None, size: tuple[int, int] | None = None) -> bytes | None:
    """EXIF bytes keeping only :data:`DESCRIPTIVE_TAGS` of IFD0 (and the Exif/GPS sub-IFDs), with the
    orientation reset to 1; ``size`` ``(width, height)`` updates the Exif pixel dimensions. None if empty."""
    if exif is None or isinstance(exif, bytes):
        source = Image.Exif()
        if exif:
            source.load(exif)
    else:
        source = exif
    out = Image.Exif()
    for tag in DESCRIPTIVE_TAGS & set(source):
        if tag in (EXIF_IFD, GPS_IFD):
            sub = {k: v for k, v in source.get_ifd(tag).items() if k != 0xA005}  # Interop: a pointer, dropped
            if tag == EXIF_IFD and size is not None:
                sub.update({k: v for k, v in zip(PIXEL_DIMENSIONS, size) if k in sub})
            if sub:
                out[tag] = sub
        elif not (tag == 270 and str(source[tag]).startswith(LAYOUT_DESCRIPTIONS)):
            out[tag] = 1 if tag == ORIENTATION_TAG else source[tag]
    return out.tobytes() if len(out) else None


def icc_colour_space(profile: bytes | None) -> str | None:
    """The colour space an ICC profile describes (``"RGB"``, ``"GRAY"``, ``"CMYK"``, ``"Lab"``...), from its header."""
    if not profile or len(profile) < 20:
        return None
    return profile[16:20].decode("latin-1").strip() or None


def profile_fits(profile: bytes | None, channels: int) -> bool:
    """True if an ICC profile may be attached to ``(H, W, channels)`` pixels: GRAY for 1-2, RGB for 3-4."""
    return icc_colour_space(profile) == ("GRAY" if channels <= 2 else "RGB")


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
    if not profile_fits(icc_profile, arr.shape[2]):
        raise ImageError(f"{name}: its ICC profile is for {icc_colour_space(icc_profile) or 'unknown'} pixels, "
                         f"not {'gray' if mode == 'L' else 'RGB'}; cannot convert to sRGB with it")
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc_profile))
        srgb = ImageCms.createProfile("sRGB")
        im = Image.fromarray(color[..., 0] if mode == "L" else color)
        out = ImageCms.profileToProfile(im, source, srgb, outputMode="RGB")
    except (ImageCms.PyCMSError, OSError, ValueError) as exc:
        raise ImageError(f"{name}: cannot convert to sRGB with its ICC profile ({exc})") from None
    converted = np.asarray(out, dtype=np.uint8)
    if mode == "L":  # a neutral gray comes out with (nearly) equal channels: keep gray as gray
        converted = np.round(converted.mean(axis=2, keepdims=True)).astype(np.uint8)
    return merge_alpha(converted, alpha)
