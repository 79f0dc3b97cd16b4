"""Image files <-> numpy arrays and tensors.

Arrays are ``(H, W, C)``: C = 1 gray, 2 gray + alpha, 3 RGB, 4 RGBA; dtype uint8 or uint16 as
stored, never float and never silently reduced to 8 bit. Tensors are float32 ``(C, H, W)`` in [0, 1].

Reading (Pillow decodes everything except 16-bit PNG):

* PNG, JPEG, BMP, TIFF, WebP (and any other still format Pillow opens; the first frame of a
  multi-frame file). EXIF orientation is applied.
* Pillow modes: ``1`` -> gray 0/255; ``L``/``LA``/``RGB``/``RGBA`` as they are, with a ``tRNS``
  transparency turning gray/RGB into gray+alpha/RGBA; ``P``/``PA`` -> RGB, or RGBA when the palette
  carries transparency; ``I;16``/``I;16L``/``I;16B``/``I;16N`` -> uint16 gray; ``I`` (32-bit
  integer) -> uint16 gray when every value is in 0..65535, else an error; ``CMYK``, ``YCbCr``,
  ``LAB``, ``HSV``, ``RGBX`` -> RGB by Pillow's conversion (no ICC colour management; CMYK is
  converted naively); premultiplied ``La``/``RGBa`` -> LA/RGBA; ``F`` (32-bit float) is an error.
* 16-bit PNG (gray, gray + alpha, RGB, RGBA) is decoded here, because Pillow reduces 16-bit colour
  PNGs to 8 bit: zlib + the five PNG filters (vectorised; rows using the Average or Paeth filter
  are undone along anti-diagonals), Adam7 interlacing, ``tRNS`` and ``eXIf`` orientation.
  16-bit colour TIFF is refused with a message (Pillow would reduce it to 8 bit).
* Images over ``MAX_PIXELS`` (2**27 = 134,217,728 pixels, e.g. 16384 x 8192) are refused before
  decoding. The limit sits below Pillow's own refusal threshold (2 x ``Image.MAX_IMAGE_PIXELS``,
  about 179 M) so this check and its message come first; Pillow's warning above 89 M pixels is
  silenced while reading, since this limit replaces it.

* 16-bit colour TIFF is read with the optional ``tifffile`` package (``pip install 'sisr[tiff]'``);
  without it such a file is refused with that hint. 8-bit and 16-bit gray TIFF go through Pillow.
* GIF: the first frame (:func:`read_image_info` reports the frame count, so a caller can say so).

Metadata (:func:`read_image_info`, :class:`ImageInfo`): the ICC profile, EXIF (with the
orientation reset to 1, since the pixels are returned upright), XMP, DPI and the frame count are
read separately from the pixels, so ``read_image`` stays a plain array for evaluation and training
(which use pixels as stored, with no colour management).

Writing (:func:`write_image`): the extension picks the format (``OUTPUT_FORMATS``): PNG (8 bit by
Pillow; 16 bit by a small encoder here: zlib with the None/Sub/Up filter chosen per row), JPEG and
WebP (8 bit; uint16 is rounded to 8 bit; ``quality``, WebP ``lossless``), TIFF (8 bit by Pillow,
16 bit by ``tifffile``). An :class:`ImageInfo` passed as ``info`` is written where the format can
carry it: ICC everywhere, EXIF and XMP everywhere but 16-bit TIFF (EXIF) , DPI in PNG/JPEG/TIFF.
``provenance`` (a string) goes to a PNG ``tEXt`` chunk named ``sisr``, or the EXIF/TIFF
``Software`` tag (``"sisr <text>"``) elsewhere, and comes back as ``ImageInfo.provenance``. Files
are written atomically, never replacing an existing file unless ``overwrite=True``.

Every problem with a file raises :class:`sisr.errors.ImageError` with one line ``"<path>: <problem>"``.
"""

from __future__ import annotations

import io
import os
import struct
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..errors import ImageError
from ..utils.fs import atomic_path

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif"})
OUTPUT_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".tif": "TIFF", ".tiff": "TIFF"}
TIFF_HINT = "install the optional tifffile package: pip install 'sisr[tiff]'"
MAX_PIXELS = 2**27

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_COLOR_CHANNELS = {0: 1, 4: 2, 2: 3, 6: 4}  # colour type -> channels (16-bit depths)
_CHANNELS_COLOR_TYPE = {c: t for t, c in _PNG_COLOR_CHANNELS.items()}
_ADAM7 = ((0, 0, 8, 8), (0, 4, 8, 8), (4, 0, 8, 4), (0, 2, 4, 4), (2, 0, 4, 2), (0, 1, 2, 2), (1, 0, 2, 1))
_IDAT_CHUNK = 1 << 20
_ORIENTATION_TAG = 0x0112
_SOFTWARE_TAG = 0x0131
_XMP_TAG = 700
_EXIF_POINTERS = frozenset({0x8769, 0x8825, 0xA005})  # Exif, GPS, interoperability sub-IFDs (not kept in TIFF)
_PROVENANCE_PREFIX = "sisr "
_PROVENANCE_KEY = "sisr"
_TO_RGB_MODES = {"CMYK", "YCbCr", "LAB", "HSV", "RGBX"}
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, zlib.error, struct.error, IndexError)


def is_image_file(path: str | os.PathLike) -> bool:
    """True if the file name has a supported image extension (case-insensitive)."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def find_images(root: str | os.PathLike, recursive: bool = True) -> list[Path]:
    """Image files under a folder (sorted; hidden files and folders skipped)."""
    root = Path(root)
    if not root.is_dir():
        raise ImageError(f"{root}: not a folder")
    pattern = root.rglob("*") if recursive else root.glob("*")
    return sorted(
        p for p in pattern
        if p.is_file() and is_image_file(p) and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as an ``(H, W, C)`` uint8 or uint16 array (see the module docstring)."""
    path = Path(path)
    _check_readable_file(path)
    try:
        with open(path, "rb") as f:
            head = f.read(32)
        if head.startswith(_PNG_SIGNATURE) and len(head) >= 25 and head[24] == 16:
            arr, orientation = _decode_png16(path.read_bytes(), path)
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


@dataclass(frozen=True)
class ImageInfo:
    """What an image file carries besides its pixels (see :func:`read_image_info`)."""

    icc_profile: bytes | None = None
    exif: bytes | None = None  # EXIF block with the orientation reset to 1 (the pixels are read upright)
    xmp: bytes | None = None
    dpi: tuple[float, float] | None = None
    frames: int = 1
    provenance: str | None = None  # what write_image(provenance=...) recorded


def read_image_info(path: str | os.PathLike) -> ImageInfo:
    """ICC profile, EXIF, XMP, DPI, frame count and sisr provenance of an image file (pixels not decoded)."""
    path = Path(path)
    _check_readable_file(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as im:
                info = im.info
                exif = im.getexif()
                software = exif.get(_SOFTWARE_TAG)
                if im.format == "TIFF":
                    software = im.tag_v2.get(305, software)
                provenance = None
                if isinstance(getattr(im, "text", None), dict) and _PROVENANCE_KEY in im.text:
                    provenance = im.text[_PROVENANCE_KEY]
                elif isinstance(software, str) and software.startswith(_PROVENANCE_PREFIX):
                    provenance = software[len(_PROVENANCE_PREFIX):]
                exif_bytes = None
                if len(exif):
                    if _ORIENTATION_TAG in exif:
                        exif[_ORIENTATION_TAG] = 1
                    exif_bytes = exif.tobytes()
                xmp = info.get("xmp") or info.get("XML:com.adobe.xmp")
                if xmp is None and im.format == "TIFF":
                    xmp = im.tag_v2.get(_XMP_TAG)
                if isinstance(xmp, str):
                    xmp = xmp.encode("utf-8")
                dpi = info.get("dpi")
                return ImageInfo(icc_profile=info.get("icc_profile") or None, exif=exif_bytes, xmp=xmp or None,
                                 dpi=(float(dpi[0]), float(dpi[1])) if dpi else None,
                                 frames=int(getattr(im, "n_frames", 1) or 1), provenance=provenance)
    except Image.UnidentifiedImageError:
        raise ImageError(f"{path}: not an image, or a format Pillow cannot read") from None
    except _DECODE_ERRORS as exc:
        raise ImageError(f"{path}: corrupt image metadata ({str(exc).strip() or type(exc).__name__})") from None


def output_format(path: str | os.PathLike) -> str:
    """The format a file name asks for (``PNG``, ``JPEG``, ``WEBP``, ``TIFF``); ``ImageError`` otherwise."""
    path = Path(path)
    fmt = OUTPUT_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ImageError(f"{path}: unknown output extension '{path.suffix}' "
                         f"(use {', '.join(sorted(OUTPUT_FORMATS))})")
    return fmt


def write_image(path: str | os.PathLike, img: np.ndarray, overwrite: bool = False, *, info: ImageInfo | None = None,
                quality: int = 95, lossless: bool = False, provenance: str | None = None) -> Path:
    """Write a ``(H, W)``/``(H, W, C)`` uint8 or uint16 array, atomically, in the format its extension names.

    ``info``: metadata to carry (ICC, EXIF, XMP, DPI) where the format can; ``quality`` (1-100) for
    JPEG and lossy WebP; ``lossless`` for WebP; ``provenance``: a string recorded in the file.
    """
    path = Path(path)
    fmt = output_format(path)
    arr = _as_hwc(img, str(path))
    if not 1 <= int(quality) <= 100:
        raise ImageError(f"{path}: quality must be 1..100, got {quality}")
    info = info or ImageInfo()
    if fmt in ("JPEG", "WEBP") and arr.dtype == np.uint16:
        arr = ((arr.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)  # these formats hold 8 bit
    if fmt == "JPEG" and arr.shape[2] in (2, 4):
        raise ImageError(f"{path}: JPEG cannot hold transparency (use .png, .webp or .tif)")
    if fmt == "WEBP" and arr.shape[2] <= 2:  # WebP holds RGB(A) only
        arr = np.concatenate([arr[..., :1]] * 3 + ([arr[..., 1:]] if arr.shape[2] == 2 else []), axis=2)
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
        exif[_SOFTWARE_TAG] = _PROVENANCE_PREFIX + provenance
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
            text.add_text(_PROVENANCE_KEY, provenance)
        options["pnginfo"] = text
    elif fmt == "JPEG":
        options.update(quality=int(quality), subsampling=0 if quality >= 90 else 2)
    elif fmt == "WEBP":
        options.update(quality=int(quality), lossless=bool(lossless), exact=True)
    elif fmt == "TIFF":
        tags = {k: v for k, v in exif.items() if k not in _EXIF_POINTERS}  # TIFF holds IFD0 tags itself
        options.pop("exif", None)
        if info.xmp:
            tags[_XMP_TAG] = info.xmp
        if provenance is not None:
            tags[305] = _PROVENANCE_PREFIX + provenance
        options.update(compression="tiff_adobe_deflate", tiffinfo=tags)
    im.save(tmp, format=fmt, **options)


def _write_tiff16(tmp: Path, arr: np.ndarray, info: ImageInfo, provenance: str | None) -> None:
    import tifffile

    extratags = []
    if info.xmp:
        extratags.append((_XMP_TAG, "B", len(info.xmp), info.xmp, True))
    if info.exif:
        exif = Image.Exif()
        exif.load(info.exif)
        extratags += [(k, "s", 0, v, True) for k, v in exif.items()
                      if isinstance(v, str) and k not in (_SOFTWARE_TAG, 270)]  # ASCII IFD0 tags (Artist...)
    channels = arr.shape[2]
    options: dict = dict(photometric="rgb" if channels >= 3 else "minisblack", compression="zlib",
                         extrasamples=("unassalpha",) if channels in (2, 4) else None, metadata=None,
                         extratags=extratags)
    if info.icc_profile:
        options["iccprofile"] = info.icc_profile
    if info.dpi:
        options.update(resolution=info.dpi, resolutionunit="INCH")
    if provenance is not None:
        options["software"] = _PROVENANCE_PREFIX + provenance
    tifffile.imwrite(tmp, arr[..., 0] if channels == 1 else arr, **options)


def to_srgb(img: np.ndarray, icc_profile: bytes | None, name: str = "image") -> np.ndarray:
    """Convert 8-bit RGB(A)/gray pixels from their ICC profile to sRGB with Pillow's ImageCms (no profile: as is)."""
    arr = _as_hwc(img, name)
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


def image_to_tensor(img: np.ndarray) -> torch.Tensor:
    """``(H, W[, C])`` uint8/uint16 array -> float32 ``(C, H, W)`` in [0, 1] (divided by 255 or 65535)."""
    arr = _as_hwc(img, "image array")
    scale = 255.0 if arr.dtype == np.uint8 else 65535.0
    t = torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1))).to(torch.float32)
    return t.div_(scale)


def tensor_to_image(t: torch.Tensor, dtype: np.dtype | type = np.uint8) -> np.ndarray:
    """``(C, H, W)`` (or ``(1, C, H, W)``) float tensor -> ``(H, W, C)`` array of ``dtype``.

    Clamp to [0, 1], scale to 255 or 65535, round half to even (``torch.round``): the EDSR
    ``quantize`` convention.
    """
    dtype = np.dtype(dtype)
    if dtype not in (np.uint8, np.uint16):
        raise ImageError(f"image array: cannot convert a tensor to {dtype} (expected uint8 or uint16)")
    if t.ndim == 4 and t.shape[0] == 1:
        t = t[0]
    if t.ndim != 3:
        raise ImageError(f"image array: tensor shape {tuple(t.shape)} is not (C, H, W)")
    peak = 255.0 if dtype == np.uint8 else 65535.0
    q = torch.round(t.detach().to("cpu", torch.float32).clamp(0, 1) * peak)
    return np.ascontiguousarray(q.permute(1, 2, 0).numpy().astype(dtype))


def split_alpha(img: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """``(colour, alpha)``: gray+alpha -> (gray, alpha), RGBA -> (RGB, alpha); alpha None otherwise."""
    arr = _as_hwc(img, "image array")
    if arr.shape[2] in (2, 4):
        return arr[..., :-1], arr[..., -1:]
    return arr, None


def merge_alpha(color: np.ndarray, alpha: np.ndarray | None) -> np.ndarray:
    """Inverse of :func:`split_alpha` (alpha ``(H, W)`` or ``(H, W, 1)``)."""
    color = _as_hwc(color, "image array")
    if alpha is None:
        return color
    alpha = np.asarray(alpha)
    alpha = alpha[..., None] if alpha.ndim == 2 else alpha
    if alpha.shape[:2] != color.shape[:2] or alpha.shape[2] != 1 or alpha.dtype != color.dtype:
        raise ImageError(f"image array: alpha {alpha.shape} {alpha.dtype} does not fit {color.shape} {color.dtype}")
    return np.concatenate([color, alpha], axis=2)


def apply_orientation(arr: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (1-8) to an ``(H, W, C)`` array, as Pillow's ``exif_transpose``."""
    if orientation == 2:
        return arr[:, ::-1]
    if orientation == 3:
        return arr[::-1, ::-1]
    if orientation == 4:
        return arr[::-1]
    if orientation == 5:
        return arr.transpose(1, 0, 2)
    if orientation == 6:
        return np.rot90(arr, -1)
    if orientation == 7:
        return arr[::-1, ::-1].transpose(1, 0, 2)
    if orientation == 8:
        return np.rot90(arr, 1)
    return arr


def encode_png16(img: np.ndarray, *, info: ImageInfo | None = None, provenance: str | None = None) -> bytes:
    """16-bit PNG bytes of a ``(H, W, C)`` uint16 array (C = 1, 2, 3, 4), with iCCP/pHYs/eXIf/XMP from ``info``."""
    arr = _as_hwc(img, "image array")
    if arr.dtype != np.uint16:
        raise ImageError(f"image array: encode_png16 needs uint16, got {arr.dtype}")
    h, w, c = arr.shape
    bpp = 2 * c
    raw = arr.astype(">u2").view(np.uint8).reshape(h, w * bpp)
    candidates = np.empty((3, h, w * bpp), dtype=np.uint8)
    candidates[0] = raw  # None
    candidates[1, :, :bpp] = raw[:, :bpp]  # Sub
    np.subtract(raw[:, bpp:], raw[:, :-bpp], out=candidates[1, :, bpp:])
    candidates[2, 0] = raw[0]  # Up
    np.subtract(raw[1:], raw[:-1], out=candidates[2, 1:])
    # libpng's heuristic: the filter with the smallest sum of |bytes as signed|
    cost = np.abs(candidates.view(np.int8).astype(np.int32)).sum(axis=2)
    choice = cost.argmin(axis=0)
    scanlines = np.empty((h, 1 + w * bpp), dtype=np.uint8)
    scanlines[:, 0] = choice
    scanlines[:, 1:] = candidates[choice, np.arange(h)]
    data = zlib.compress(scanlines.tobytes(), 6)
    out = [_PNG_SIGNATURE, _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, _CHANNELS_COLOR_TYPE[c], 0, 0, 0))]
    if info is not None and info.icc_profile:
        out.append(_chunk(b"iCCP", b"ICC profile\0\0" + zlib.compress(info.icc_profile)))
    if info is not None and info.dpi:
        ppm = [int(round(d / 0.0254)) for d in info.dpi]
        out.append(_chunk(b"pHYs", struct.pack(">IIB", ppm[0], ppm[1], 1)))
    if info is not None and info.exif:
        body = info.exif[6:] if info.exif.startswith(b"Exif\0\0") else info.exif
        out.append(_chunk(b"eXIf", body))
    if info is not None and info.xmp:
        out.append(_chunk(b"iTXt", b"XML:com.adobe.xmp\0\0\0\0\0" + info.xmp))
    if provenance is not None:
        out.append(_chunk(b"tEXt", _PROVENANCE_KEY.encode("latin-1") + b"\0" + provenance.encode("latin-1", "replace")))
    out += [_chunk(b"IDAT", data[i:i + _IDAT_CHUNK]) for i in range(0, max(len(data), 1), _IDAT_CHUNK)]
    out.append(_chunk(b"IEND", b""))
    return b"".join(out)


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


def _too_large(path: Path, w: int, h: int) -> ImageError:
    return ImageError(f"{path}: image too large ({w}x{h} = {w * h:,} pixels; the limit is {MAX_PIXELS:,})")


def _read_with_pillow(path: Path) -> tuple[np.ndarray, int]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            im = Image.open(path)
        except Image.UnidentifiedImageError:
            raise ImageError(f"{path}: not an image, or a format Pillow cannot read") from None
        except Image.DecompressionBombError:
            raise ImageError(f"{path}: image too large (over Pillow's decompression-bomb limit)") from None
        with im:
            w, h = im.size
            if w * h > MAX_PIXELS:
                raise _too_large(path, w, h)
            im.load()
            orientation = int(im.getexif().get(_ORIENTATION_TAG, 1) or 1)
            return _pillow_to_array(im, path), orientation


def _pillow_to_array(im: Image.Image, path: Path) -> np.ndarray:
    mode = im.mode
    if im.format == "TIFF" and mode in ("RGB", "RGBA", "LA", "CMYK"):
        bits = im.tag_v2.get(258)  # BitsPerSample
        bits = bits if isinstance(bits, tuple) else (bits,)
        if any(b is not None and b > 8 for b in bits):
            return _read_tiff16(path, max(bits))
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


def _read_tiff16(path: Path, bits: int) -> np.ndarray:
    try:
        import tifffile
    except ImportError:
        raise ImageError(f"{path}: {bits}-bit colour TIFF needs tifffile (Pillow reduces it to 8 bit); "
                         f"{TIFF_HINT}") from None
    arr = np.asarray(tifffile.imread(path, key=0))
    if arr.dtype != np.uint16 or arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise ImageError(f"{path}: unsupported TIFF layout {arr.shape} {arr.dtype} (expected 16-bit RGB or RGBA)")
    return arr


def _decode_png16(data: bytes, path: Path) -> tuple[np.ndarray, int]:
    """Decode a 16-bit PNG; returns ``((H, W, C) uint16, EXIF orientation)``."""
    pos = len(_PNG_SIGNATURE)
    header = None
    idat: list[bytes] = []
    trns = None
    orientation = 1
    while pos < len(data):
        if pos + 8 > len(data):
            raise ImageError(f"{path}: corrupt or truncated image (cut inside a chunk header)")
        length, ctype = struct.unpack(">I4s", data[pos:pos + 8])
        end = pos + 12 + length
        if end > len(data):
            raise ImageError(f"{path}: corrupt or truncated image (chunk {ctype.decode('latin-1')!r} is cut short)")
        body = data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[end - 4:end])
        if zlib.crc32(ctype + body) != crc:
            raise ImageError(f"{path}: corrupt image (CRC mismatch in chunk {ctype.decode('latin-1')!r})")
        pos = end
        if ctype == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
            w, h = header[0], header[1]
            if w * h > MAX_PIXELS:
                raise _too_large(path, w, h)
        elif ctype == b"IDAT":
            idat.append(body)
        elif ctype == b"tRNS":
            trns = body
        elif ctype == b"eXIf":
            exif = Image.Exif()
            exif.load(body)
            orientation = int(exif.get(_ORIENTATION_TAG, 1) or 1)
        elif ctype == b"IEND":
            break
    if header is None or not idat:
        raise ImageError(f"{path}: corrupt or truncated image (no {'IHDR' if header is None else 'IDAT'} chunk)")
    w, h, depth, color_type, compression, filter_method, interlace = header
    if (depth != 16 or color_type not in _PNG_COLOR_CHANNELS or compression or filter_method
            or interlace not in (0, 1) or w == 0 or h == 0):
        raise ImageError(f"{path}: corrupt PNG header (depth {depth}, colour type {color_type}, {w}x{h})")
    channels = _PNG_COLOR_CHANNELS[color_type]
    bpp = 2 * channels
    passes = _ADAM7 if interlace else ((0, 0, 1, 1),)
    sizes = [(-(-(h - r0) // rs), -(-(w - c0) // cs)) for r0, c0, rs, cs in passes]
    expected = sum(ph * (1 + pw * bpp) for ph, pw in sizes if ph > 0 and pw > 0)
    decompressor = zlib.decompressobj()
    raw = decompressor.decompress(b"".join(idat), expected)
    if len(raw) < expected:
        raise ImageError(f"{path}: corrupt or truncated image (pixel data {len(raw)} of {expected} bytes)")
    buf = np.frombuffer(raw, dtype=np.uint8)
    out = np.empty((h, w, bpp), dtype=np.uint8)
    offset = 0
    for (r0, c0, rs, cs), (ph, pw) in zip(passes, sizes):
        if ph <= 0 or pw <= 0:
            continue
        rows = buf[offset:offset + ph * (1 + pw * bpp)].reshape(ph, 1 + pw * bpp)
        offset += rows.size
        filters = rows[:, 0]
        if filters.max() > 4:
            raise ImageError(f"{path}: corrupt image (unknown PNG filter type {int(filters.max())})")
        out[r0::rs, c0::cs] = _unfilter(rows[:, 1:], filters, bpp).reshape(ph, pw, bpp)
    arr = out.view(">u2").astype(np.uint16).reshape(h, w, channels)
    if trns is not None and color_type in (0, 2) and len(trns) == 2 * channels:
        key = np.array(struct.unpack(f">{channels}H", trns), dtype=np.uint16)
        alpha = np.where((arr == key).all(axis=2, keepdims=True), 0, 65535).astype(np.uint16)
        arr = np.concatenate([arr, alpha], axis=2)
    return arr, orientation


def _unfilter(filtered: np.ndarray, filters: np.ndarray, bpp: int) -> np.ndarray:
    """Undo PNG filtering of ``(rows, stride)`` bytes (filter type per row)."""
    if np.isin(filters, (3, 4)).any():
        return _unfilter_wavefront(filtered, filters, bpp)
    out = np.empty_like(filtered)
    prev = np.zeros(filtered.shape[1], dtype=np.uint8)
    for r, f in enumerate(filters):
        row = filtered[r]
        if f == 1:  # Sub: running sum per byte lane, modulo 256
            row = row.reshape(-1, bpp).cumsum(axis=0, dtype=np.uint8).reshape(-1)
        elif f == 2:  # Up
            row = row + prev
        out[r] = row
        prev = out[r]
    return out


def _unfilter_wavefront(filtered: np.ndarray, filters: np.ndarray, bpp: int) -> np.ndarray:
    """Undo any mix of PNG filters: pixel (r, p) needs (r, p-1), (r-1, p), (r-1, p-1), so every
    anti-diagonal r + p = d is computed at once from the two before it."""
    h, stride = filtered.shape
    w = stride // bpp
    x = filtered.reshape(h, w, bpp).astype(np.int16)
    out = np.zeros((h + 1, w + 1, bpp), dtype=np.int16)  # a zero row above and a zero column left
    for d in range(h + w - 1):
        r = np.arange(max(0, d - w + 1), min(h - 1, d) + 1)
        p = d - r
        a, b, c = out[r + 1, p], out[r, p + 1], out[r, p]  # left, up, up-left
        f = filters[r][:, None]
        pa, pb, pc = np.abs(b - c), np.abs(a - c), np.abs(a + b - 2 * c)
        paeth = np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))
        pred = np.select([f == 1, f == 2, f == 3, f == 4], [a, b, (a + b) >> 1, paeth], 0)
        out[r + 1, p + 1] = (x[r, p] + pred) & 255
    return out[1:, 1:].astype(np.uint8).reshape(h, stride)


def _chunk(ctype: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + ctype + body + struct.pack(">I", zlib.crc32(ctype + body))


def _as_hwc(img: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(img)
    if arr.dtype not in (np.uint8, np.uint16):
        raise ImageError(f"{name}: unsupported dtype {arr.dtype} (expected uint8 or uint16)")
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 2, 3, 4) or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ImageError(f"{name}: shape {arr.shape} is not (H, W) or (H, W, C) with C in 1..4")
    return arr

