"""Image files <-> numpy arrays: reading, writing, finding.

Arrays are ``(H, W, C)``: C = 1 gray, 2 gray + alpha, 3 RGB, 4 RGBA; dtype uint8 or uint16 as
stored, never float and never silently reduced to 8 bit. Beside this module: :mod:`.arrays`
(layout checks, float tensors, alpha, orientation), :mod:`.imagemeta` (:class:`ImageInfo`, sRGB
conversion) and :mod:`.png16` (the 16-bit PNG codec); their public names are importable from here too.

Reading (Pillow decodes everything except 16-bit PNG and 16-bit colour TIFF):

* PNG, JPEG, BMP, TIFF, WebP (and any other still format Pillow opens; the first frame of a
  multi-frame file). EXIF orientation is applied on every path (an Orientation that is not a
  number 1-8, e.g. text, is ignored). Files are opened as file objects, not by path: Pillow
  memory-maps uncompressed files opened by path and then scrambles 8-bit gray/palette TIFF
  with orientation 5-8.
* Pillow modes: ``1`` -> gray 0/255; ``L``/``LA``/``RGB``/``RGBA`` as they are, with a ``tRNS``
  transparency turning gray/RGB into gray+alpha/RGBA; ``P``/``PA`` -> RGB, or RGBA when the palette
  carries transparency; ``I;16``/``I;16L``/``I;16B``/``I;16N`` -> uint16 gray; ``I`` (32-bit
  integer) -> uint16 gray when every value is in 0..65535, else an error; ``CMYK`` with a CMYK
  ICC profile -> sRGB through that profile (ImageCms); ``CMYK`` without one, ``YCbCr``, ``LAB``,
  ``HSV``, ``RGBX`` -> RGB by Pillow's conversion; premultiplied ``La``/``RGBa`` -> LA/RGBA;
  ``F`` (32-bit float) is an error.
* 16-bit PNG (gray, gray + alpha, RGB, RGBA) by :mod:`.png16`, because Pillow reduces 16-bit colour
  PNGs to 8 bit.
* 16-bit colour TIFF (RGB, RGBA with straight or premultiplied alpha, gray + alpha, CMYK without a
  profile; contiguous or planar, strips or tiles) with the optional ``tifffile`` package
  (``pip install 'sisr[tiff]'``); without it such a file is refused with that hint (Pillow would
  reduce it to 8 bit). 8-bit and 16-bit gray TIFF go through Pillow.
* Images over ``MAX_PIXELS`` (2**27 = 134,217,728 pixels, e.g. 16384 x 8192) are refused before
  decoding. The limit sits below Pillow's own refusal threshold (2 x ``Image.MAX_IMAGE_PIXELS``,
  about 179 M) so this check and its message come first; Pillow's warning above 89 M pixels is
  silenced while reading, since this limit replaces it. A header beyond Pillow's limit is an
  ``ImageError`` from :func:`read_image_info` too.
* GIF: the first frame (:func:`read_image_info` reports the frame count, so a caller can say so).

Metadata: :func:`read_image_info` reads an :class:`ImageInfo` without decoding the pixels: only
descriptive EXIF (never a TIFF's layout tags), the DPI only when the file states one, an ICC
profile only when it fits the pixels ``read_image`` returns.

Writing (:func:`write_image`): the extension picks the format (``OUTPUT_FORMATS``): PNG (8 bit by
Pillow, 16 bit by :func:`encode_png16`), JPEG and WebP (8 bit; uint16 is rounded to 8 bit;
``quality``, WebP ``lossless``), TIFF (8 bit by Pillow, 16 bit by ``tifffile``). An
:class:`ImageInfo` passed as ``info`` is written where the format can carry it: ICC everywhere
(only when its colour space fits the written pixels), descriptive EXIF (the Exif pixel dimensions
set to the written size) and XMP everywhere but 16-bit TIFF (its EXIF text tags only), DPI in
PNG/JPEG/TIFF. ``provenance`` (ASCII text) goes to a PNG ``tEXt`` chunk named ``sisr``, or the
EXIF/TIFF ``Software`` tag (``"sisr <text>"``) elsewhere, and comes back as
``ImageInfo.provenance``. :func:`check_output_size` tells before the work whether a format can
hold an output (``MAX_SIDE``: JPEG 65500, WebP 16383 pixels a side; JPEG no alpha). Files are
written atomically, never replacing an existing file unless ``overwrite=True``.

Every problem with a file raises :class:`sisr.errors.ImageError` with one line ``"<path>: <problem>"``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import math
import os
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import ImageError
from ..utils.fs import atomic_path
from .arrays import apply_orientation, as_hwc, image_to_tensor, merge_alpha, split_alpha, tensor_to_image
from .imagemeta import (DESCRIPTIVE_TAGS, EXIF_POINTERS, ORIENTATION_TAG, PROVENANCE_KEY, PROVENANCE_PREFIX,
                        SOFTWARE_TAG, XMP_TAG, ImageInfo, descriptive_exif, exif_orientation, icc_colour_space,
                        profile_fits, to_srgb)
from .png16 import decode_png16, encode_png16, is_png16

__all__ = [  # the names sisr.data.io has always offered; arrays, metadata and the PNG codec live beside it
    "IMAGE_EXTENSIONS", "OUTPUT_FORMATS", "TIFF_HINT", "MAX_PIXELS", "MAX_SIDE", "ImageInfo", "is_image_file",
    "find_images", "scan_folder", "read_image", "read_image_info", "output_format", "check_output_size",
    "write_image", "to_srgb",
    "image_to_tensor", "tensor_to_image", "split_alpha", "merge_alpha", "apply_orientation", "encode_png16",
]

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif"})
OUTPUT_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".tif": "TIFF", ".tiff": "TIFF"}
TIFF_HINT = "install the optional tifffile package: pip install 'sisr[tiff]'"
MAX_PIXELS = 2**27
MAX_SIDE = {"PNG": 2**31 - 1, "JPEG": 65500, "WEBP": 16383, "TIFF": 2**32 - 1}  # pixels per side each format holds

_TO_RGB_MODES = {"CMYK", "YCbCr", "LAB", "HSV", "RGBX"}
_GRAY_MODES = {"1", "L", "LA", "La", "I", "F"}  # and I;16*: what read_image returns as gray (+ alpha)
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, zlib.error, struct.error, IndexError)


def is_image_file(path: str | os.PathLike) -> bool:
    """True if the file name has a supported image extension (case-insensitive)."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def find_images(root: str | os.PathLike, recursive: bool = True) -> list[Path]:
    """Image files under a folder (sorted; hidden files and folders skipped; links to folders not followed)."""
    return scan_folder(root, recursive)[0]


def scan_folder(root: str | os.PathLike, recursive: bool = True) -> tuple[list[Path], list[Path]]:
    """:func:`find_images` and, from the same walk, the symbolic links to folders met (never followed: they may
    loop or leave the tree), both sorted; hidden files and folders skipped."""
    root = Path(root)
    if not root.is_dir():
        raise ImageError(f"{root}: not a folder")
    images: list[Path] = []
    links: list[Path] = []
    for parent, dirs, files in os.walk(root):  # followlinks=False: a linked folder is listed, not entered
        here = Path(parent)
        visible = [d for d in dirs if not d.startswith(".")]
        links += [here / d for d in visible if (here / d).is_symlink()]
        dirs[:] = visible if recursive else []
        images += [here / f for f in files
                   if not f.startswith(".") and is_image_file(here / f) and (here / f).is_file()]
    return sorted(images), sorted(links)


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as an ``(H, W, C)`` uint8 or uint16 array (see the module docstring)."""
    path = Path(path)
    _check_readable_file(path)
    try:
        with open(path, "rb") as f:
            head = f.read(32)
        if is_png16(head):
            arr, orientation = decode_png16(path.read_bytes(), path, lambda w, h: _check_size(path, w, h))
        else:
            arr, orientation = _read_with_pillow(path)
    except ImageError:
        raise
    except MemoryError:
        raise ImageError(f"{path}: not enough memory to decode the image") from None
    except _DECODE_ERRORS as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ImageError(f"{path}: corrupt or truncated image ({detail})") from None
    out = np.ascontiguousarray(apply_orientation(arr, orientation))
    return out if out.flags.writeable else out.copy()


def read_image_info(path: str | os.PathLike) -> ImageInfo:
    """ICC profile, EXIF, XMP, DPI, frame count and sisr provenance of an image file (pixels not decoded).

    Only descriptive EXIF tags are kept (never a TIFF's layout tags), with the orientation reset to 1;
    an ICC profile is reported only when it fits the pixels :func:`read_image` returns (a CMYK
    profile does not: CMYK is converted to RGB).
    """
    path = Path(path)
    _check_readable_file(path)
    try:
        return _image_info(path)
    except ImageError:
        raise
    except _DECODE_ERRORS as exc:
        raise ImageError(f"{path}: corrupt image metadata ({str(exc).strip() or type(exc).__name__})") from None


def _image_info(path: Path) -> ImageInfo:
    try:
        return _image_info_by_pillow(path)
    except _TiffForTifffile:
        return _tiff_info(path)


def _image_info_by_pillow(path: Path) -> ImageInfo:
    with _open_image(path) as im:
        info = im.info
        exif = im.getexif()
        tiff = im.format == "TIFF"
        software = im.tag_v2.get(305, exif.get(SOFTWARE_TAG)) if tiff else exif.get(SOFTWARE_TAG)
        provenance = None
        if isinstance(getattr(im, "text", None), dict) and PROVENANCE_KEY in im.text:
            provenance = im.text[PROVENANCE_KEY]
        elif isinstance(software, str) and software.startswith(PROVENANCE_PREFIX):
            provenance = software[len(PROVENANCE_PREFIX):]
        xmp = info.get("xmp") or info.get("XML:com.adobe.xmp")
        if xmp is None and tiff:
            xmp = im.tag_v2.get(XMP_TAG)
        if isinstance(xmp, str):
            xmp = xmp.encode("utf-8")
        icc = info.get("icc_profile") or None
        channels = 1 if im.mode in _GRAY_MODES or im.mode.startswith("I;16") else 3
        return ImageInfo(icc_profile=icc if profile_fits(icc, channels) else None,
                         exif=descriptive_exif(exif), xmp=xmp or None, dpi=_dpi(im, exif),
                         frames=int(getattr(im, "n_frames", 1) or 1), provenance=provenance)


def _tiff_tags(path: Path) -> dict:
    """The first page's tags (code -> value) by tifffile, for TIFFs Pillow cannot open."""
    try:
        import tifffile
    except ImportError:
        raise ImageError(f"{path}: a TIFF layout Pillow cannot read (e.g. 16-bit gray + alpha); {TIFF_HINT}") from None
    with tifffile.TiffFile(path) as tif:
        return {tag.code: tag.value for tag in tif.pages[0].tags}


def _tiff_info(path: Path) -> ImageInfo:
    """:class:`ImageInfo` of a TIFF Pillow cannot open (tifffile): ASCII descriptive tags, ICC, XMP, DPI."""
    tags = _tiff_tags(path)
    exif = Image.Exif()
    for code in sorted(DESCRIPTIVE_TAGS & set(tags)):
        if isinstance(tags[code], (str, int)):
            exif[code] = exif_orientation(tags[code]) if code == ORIENTATION_TAG else tags[code]
    software, icc, xmp = tags.get(SOFTWARE_TAG), tags.get(34675), tags.get(XMP_TAG)
    unit, x, y = tags.get(296, 2), tags.get(282), tags.get(283)
    dpi = None
    if isinstance(x, tuple) and isinstance(y, tuple) and x[1] and y[1] and int(unit) in (2, 3):
        dpi = tuple(v[0] / v[1] * (2.54 if int(unit) == 3 else 1) for v in (x, y))
    gray = int(tags.get(262, 1)) in (0, 1)
    return ImageInfo(icc_profile=icc if profile_fits(icc, 1 if gray else 3) else None,
                     exif=descriptive_exif(exif), xmp=bytes(xmp) if xmp else None, dpi=dpi,
                     provenance=software[len(PROVENANCE_PREFIX):] if isinstance(software, str)
                     and software.startswith(PROVENANCE_PREFIX) else None)


def _dpi(im: Image.Image, exif: Image.Exif) -> tuple[float, float] | None:
    """The resolution the file states in dots per inch; None when it states none (Pillow would report a
    TIFF without resolution tags as 1 dpi, a JPEG with EXIF but no resolution as 72)."""
    if im.format == "TIFF":
        tags, unit = im.tag_v2, im.tag_v2.get(296, 2)
        x, y = tags.get(282), tags.get(283, tags.get(282))
        dpi = None if x is None or unit not in (2, 3) else tuple(float(v) * (2.54 if unit == 3 else 1) for v in (x, y))
    elif im.format == "JPEG":
        stated = im.info.get("jfif_unit") in (1, 2) or (exif.get(296) in (2, 3) and 282 in exif)
        dpi = im.info.get("dpi") if stated else None
    else:
        dpi = im.info.get("dpi")
    if not dpi or not all(math.isfinite(float(d)) and float(d) > 0 for d in dpi):
        return None
    return float(dpi[0]), float(dpi[1])


def output_format(path: str | os.PathLike) -> str:
    """The format a file name asks for (``PNG``, ``JPEG``, ``WEBP``, ``TIFF``); ``ImageError`` otherwise."""
    path = Path(path)
    fmt = OUTPUT_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ImageError(f"{path}: unknown output extension '{path.suffix}' "
                         f"(use {', '.join(sorted(OUTPUT_FORMATS))})")
    return fmt


def check_output_size(path: str | os.PathLike, height: int, width: int, channels: int | None = None) -> None:
    """Raise a one-line ``ImageError`` if the format ``path`` names cannot hold an image of this size
    (JPEG: 65500 pixels a side, WebP: 16383, PNG: 2**31 - 1) or, given ``channels``, its transparency
    (JPEG); call it before the work."""
    path = Path(path)
    fmt = output_format(path)
    if height < 1 or width < 1 or max(height, width) > MAX_SIDE[fmt]:
        raise ImageError(f"{path}: {width}x{height} cannot be written as {fmt} "
                         f"(at most {MAX_SIDE[fmt]} pixels a side; choose another format)")
    if fmt == "JPEG" and channels in (2, 4):
        raise ImageError(f"{path}: JPEG cannot hold transparency (use .png, .webp or .tif)")


def write_image(path: str | os.PathLike, img: np.ndarray, overwrite: bool = False, *, info: ImageInfo | None = None,
                quality: int = 95, lossless: bool = False, provenance: str | None = None) -> Path:
    """Write a ``(H, W)``/``(H, W, C)`` uint8 or uint16 array, atomically, in the format its extension names.

    ``info``: metadata to carry (ICC, EXIF, XMP, DPI) where the format can; ``quality`` (1-100) for
    JPEG and lossy WebP; ``lossless`` for WebP; ``provenance``: a string recorded in the file.
    """
    path = Path(path)
    fmt = output_format(path)
    arr = as_hwc(img, str(path))
    if not 1 <= int(quality) <= 100:
        raise ImageError(f"{path}: quality must be 1..100, got {quality}")
    if provenance is not None and not (isinstance(provenance, str) and provenance.isascii() and "\0" not in provenance):
        raise ImageError(f"{path}: provenance must be ASCII text without NUL (what TIFF, EXIF and PNG text hold)")
    info = info or ImageInfo()
    if fmt in ("JPEG", "WEBP") and arr.dtype == np.uint16:
        arr = ((arr.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)  # these formats hold 8 bit
    check_output_size(path, arr.shape[0], arr.shape[1], arr.shape[2])
    if fmt == "WEBP" and arr.shape[2] <= 2:  # WebP holds RGB(A) only
        arr = np.concatenate([arr[..., :1]] * 3 + ([arr[..., 1:]] if arr.shape[2] == 2 else []), axis=2)
    try:  # only descriptive EXIF, and a profile only for pixels of its colour space
        exif = descriptive_exif(info.exif, (arr.shape[1], arr.shape[0]))
    except _DECODE_ERRORS as exc:
        raise ImageError(f"{path}: the EXIF block to write is unreadable ({exc})") from None
    info = dataclasses.replace(info, exif=exif,
                               icc_profile=info.icc_profile if profile_fits(info.icc_profile, arr.shape[2]) else None)
    if fmt == "TIFF" and arr.dtype == np.uint16:
        try:
            import tifffile
        except ImportError:
            raise ImageError(f"{path}: writing 16-bit TIFF needs tifffile ({TIFF_HINT})") from None
    with atomic_path(path, overwrite=overwrite) as tmp:
        if fmt == "PNG" and arr.dtype == np.uint16:
            tmp.write_bytes(encode_png16(arr, info=info, provenance=provenance))
        elif fmt == "TIFF" and arr.dtype == np.uint16:
            _write_tiff16(tmp, arr, info, provenance)
        else:
            _save_with_pillow(tmp, arr, fmt, info, quality, lossless, provenance)
    return path


def _save_with_pillow(tmp: Path, arr: np.ndarray, fmt: str, info: ImageInfo, quality: int, lossless: bool,
                      provenance: str | None) -> None:
    im = Image.fromarray(arr[..., 0] if arr.shape[2] == 1 else arr)
    exif = Image.Exif()
    if info.exif:
        exif.load(info.exif)
    if provenance is not None and fmt != "PNG":
        exif[SOFTWARE_TAG] = PROVENANCE_PREFIX + provenance
    options: dict = {}
    if info.icc_profile:
        options["icc_profile"] = info.icc_profile
    if len(exif):
        options["exif"] = exif.tobytes()
    if info.xmp and fmt not in ("TIFF", "PNG"):
        options["xmp"] = info.xmp
    if info.dpi and fmt != "WEBP":
        options["dpi"] = info.dpi
    if fmt == "PNG":
        from PIL.PngImagePlugin import PngInfo

        text = PngInfo()
        if info.xmp:
            text.add_itxt("XML:com.adobe.xmp", info.xmp.decode("utf-8", "replace"))
        if provenance is not None:
            text.add_text(PROVENANCE_KEY, provenance)
        options["pnginfo"] = text
    elif fmt == "JPEG":
        options.update(quality=int(quality), subsampling=0 if quality >= 90 else 2)
    elif fmt == "WEBP":
        options.update(quality=int(quality), lossless=bool(lossless), exact=True)
    elif fmt == "TIFF":
        tags = {k: v for k, v in exif.items() if k not in EXIF_POINTERS}  # TIFF holds IFD0 tags itself
        options.pop("exif", None)
        if info.xmp:
            tags[XMP_TAG] = info.xmp
        if provenance is not None:
            tags[305] = PROVENANCE_PREFIX + provenance
        options.update(compression="tiff_adobe_deflate", tiffinfo=tags)
    im.save(tmp, format=fmt, **options)


def _write_tiff16(tmp: Path, arr: np.ndarray, info: ImageInfo, provenance: str | None) -> None:
    import tifffile

    extratags = []
    if info.xmp:
        extratags.append((XMP_TAG, "B", len(info.xmp), info.xmp, True))
    if info.exif:
        exif = Image.Exif()
        exif.load(info.exif)
        extratags += [(k, "s", 0, v, True) for k, v in exif.items()
                      if isinstance(v, str) and k not in (SOFTWARE_TAG, 270)]  # ASCII IFD0 tags (Artist...)
    channels = arr.shape[2]
    options: dict = dict(photometric="rgb" if channels >= 3 else "minisblack", compression="zlib",
                         extrasamples=("unassalpha",) if channels in (2, 4) else None, metadata=None,
                         extratags=extratags)
    if info.icc_profile:
        options["iccprofile"] = info.icc_profile
    if info.dpi:
        options.update(resolution=info.dpi, resolutionunit="INCH")
    if provenance is not None:
        options["software"] = PROVENANCE_PREFIX + provenance
    tifffile.imwrite(tmp, arr[..., 0] if channels == 1 else arr, **options)


# --- reading helpers -----------------------------------------------------------------------------

def _check_readable_file(path: Path) -> None:
    if not path.exists():
        raise ImageError(f"{path}: no such file")
    if path.is_dir():
        raise ImageError(f"{path}: is a directory, not an image file")
    if not path.is_file():
        raise ImageError(f"{path}: not a regular file")
    if not os.access(path, os.R_OK):
        raise ImageError(f"{path}: cannot read (permission denied)")
    if path.stat().st_size == 0:
        raise ImageError(f"{path}: empty file (0 bytes)")


def _check_size(path: Path, w: int, h: int) -> None:
    if w * h > MAX_PIXELS:
        raise ImageError(f"{path}: image too large ({w}x{h} = {w * h:,} pixels; the limit is {MAX_PIXELS:,})")


@contextlib.contextmanager
def _open_image(path: Path):
    """``Image.open`` with Pillow's refusals as one-line ``ImageError``s (its size warning silenced)."""
    # A file object, not the path: Pillow memory-maps uncompressed files opened by path, and its TIFF
    # reader then lays out 8-bit gray pixels with orientation 5-8 in the turned size (scrambled).
    with warnings.catch_warnings(), open(path, "rb") as f:
        warnings.simplefilter("ignore")
        try:
            im = Image.open(f)
        except Image.UnidentifiedImageError:
            f.seek(0)
            if f.read(4) in (b"II*\0", b"MM\0*"):
                raise _TiffForTifffile from None  # e.g. 16-bit gray + alpha, which Pillow cannot open
            raise ImageError(f"{path}: not an image, or a format Pillow cannot read") from None
        except Image.DecompressionBombError as exc:
            raise ImageError(f"{path}: image too large ({str(exc).split(',')[0]}; refused as a possible "
                             f"decompression bomb)") from None
        with im:
            yield im


class _TiffForTifffile(Exception):
    """A TIFF that Pillow cannot open: read by tifffile instead."""


def _read_with_pillow(path: Path) -> tuple[np.ndarray, int]:
    try:
        with _open_image(path) as im:
            _check_size(path, *im.size)
            bits = _deep_tiff_bits(im)
            if bits:
                return _read_tiff16(path, bits, im.info.get("icc_profile"))
            return _load_with_pillow(im, path)
    except _TiffForTifffile:
        return _read_tiff16(path, 16, _tiff_tags(path).get(34675))


def _load_with_pillow(im: Image.Image, path: Path) -> tuple[np.ndarray, int]:
    im.load()
    # read after load: Pillow's TIFF decoder applies the orientation itself and then removes the tag
    return _pillow_to_array(im, path), exif_orientation(im.getexif().get(ORIENTATION_TAG))


def _deep_tiff_bits(im: Image.Image) -> int | None:
    """Bits per sample of a TIFF with more than 8 bits in colour or alpha samples (Pillow reduces those)."""
    if im.format != "TIFF" or im.mode not in ("RGB", "RGBA", "LA", "CMYK"):
        return None
    bits = im.tag_v2.get(258)  # BitsPerSample
    bits = bits if isinstance(bits, tuple) else (bits,)
    return max(bits) if any(b is not None and b > 8 for b in bits) else None


def _pillow_to_array(im: Image.Image, path: Path) -> np.ndarray:
    mode = im.mode
    if mode == "CMYK" and icc_colour_space(im.info.get("icc_profile")) == "CMYK":
        im, mode = _cmyk_to_srgb(im, path), "RGB"
    if mode == "1":
        im, mode = im.convert("L"), "L"
    if mode in ("P", "PA"):
        palette_alpha = im.palette is not None and im.palette.mode == "RGBA"
        transparent = mode == "PA" or "transparency" in im.info or palette_alpha
        target = "RGBA" if transparent else "RGB"
        im, mode = im.convert(target), target
    elif mode in ("L", "RGB") and "transparency" in im.info:
        target = "LA" if mode == "L" else "RGBA"
        im, mode = im.convert(target), target
    elif mode in _TO_RGB_MODES:
        im, mode = im.convert("RGB"), "RGB"
    elif mode in ("La", "RGBa"):
        target = mode.upper()[:-1] + "A"
        im, mode = im.convert(target), target
    if mode in ("L", "LA", "RGB", "RGBA"):
        arr = np.asarray(im, dtype=np.uint8)
    elif mode.startswith("I;16"):
        arr = np.asarray(im).astype(np.uint16)
    elif mode == "I":
        values = np.asarray(im)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise ImageError(f"{path}: 32-bit integer pixels outside 0..65535 are not supported")
        arr = values.astype(np.uint16)
    elif mode == "F":
        raise ImageError(f"{path}: 32-bit float images are not supported (convert to 16-bit PNG)")
    else:
        raise ImageError(f"{path}: unsupported pixel format (Pillow mode '{mode}')")
    return arr[..., None] if arr.ndim == 2 else arr


def _cmyk_to_srgb(im: Image.Image, path: Path) -> Image.Image:
    """CMYK pixels through their ICC profile to sRGB (Pillow's ImageCms, perceptual intent)."""
    from PIL import ImageCms

    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(im.info["icc_profile"]))
        return ImageCms.profileToProfile(im, source, ImageCms.createProfile("sRGB"), outputMode="RGB")
    except (ImageCms.PyCMSError, OSError, ValueError) as exc:
        raise ImageError(f"{path}: cannot convert CMYK to RGB with its ICC profile ({exc})") from None


def _read_tiff16(path: Path, bits: int, icc_profile: bytes | None) -> tuple[np.ndarray, int]:
    """A TIFF with 16-bit colour or alpha by tifffile: ``(H, W, C)`` uint16 and its EXIF orientation."""
    try:
        import tifffile
    except ImportError:
        raise ImageError(f"{path}: {bits}-bit colour TIFF needs tifffile (Pillow reduces it to 8 bit); "
                         f"{TIFF_HINT}") from None
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        _check_size(path, page.imagewidth, page.imagelength)
        arr = np.asarray(page.asarray())
        photometric, extra = int(page.photometric), tuple(int(e) for e in page.extrasamples or ())
        orientation = exif_orientation(page.tags[274].value if 274 in page.tags else 1)
    if arr.ndim == 3 and page.planarconfig == 2:  # separate planes: (S, H, W)
        arr = np.moveaxis(arr, 0, -1)
    arr = arr[..., None] if arr.ndim == 2 else arr
    layouts = {(2, 3): "RGB", (2, 4): "RGBA", (1, 2): "LA", (5, 4): "CMYK"}  # (photometric, samples)
    layout = layouts.get((photometric, arr.shape[2])) if arr.dtype == np.uint16 and arr.ndim == 3 else None
    if layout is None:
        raise ImageError(f"{path}: unsupported TIFF layout {arr.shape} {arr.dtype}, photometric {photometric} "
                         f"(expected 16-bit RGB, RGBA, gray + alpha or CMYK)")
    if layout == "CMYK":
        if icc_profile:
            raise ImageError(f"{path}: 16-bit CMYK with an ICC profile is not supported (convert it to RGB first)")
        ink = arr.astype(np.uint64)
        arr = ((65535 - ink[..., :3]) * (65535 - ink[..., 3:]) + 32767) // 65535  # as Pillow's 8-bit CMYK
    elif extra[:1] == (1,):  # associated (premultiplied) alpha: unpremultiply as Pillow does for RGBa
        alpha = arr[..., -1:].astype(np.uint64)
        color = (arr[..., :-1].astype(np.uint64) * 65535 + alpha // 2) // np.maximum(alpha, 1)
        arr = np.concatenate([np.minimum(color, 65535), alpha], axis=2)
    return arr.astype(np.uint16), orientation
