"""16-bit PNG codec (gray, gray + alpha, RGB, RGBA), on bytes.

Pillow reduces 16-bit colour PNGs to 8 bit, so :mod:`sisr.data.io` reads and writes them here.
Decoding: zlib + the five PNG filters (vectorised; rows using the Average or Paeth filter are
undone along anti-diagonals), Adam7 interlacing, ``tRNS`` and the ``eXIf`` orientation. Encoding:
zlib with the None/Sub/Up filter chosen per row (libpng's heuristic), and iCCP/pHYs/eXIf/XMP/
provenance chunks from an :class:`~sisr.data.imagemeta.ImageInfo`. The size limit is the caller's:
``decode_png16`` hands the IHDR width and height to its ``check_size`` before decoding any pixels.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from ..errors import ImageError
from .arrays import as_hwc
from .imagemeta import ORIENTATION_TAG, PROVENANCE_KEY, ImageInfo, exif_orientation

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_COLOR_CHANNELS = {0: 1, 4: 2, 2: 3, 6: 4}  # colour type -> channels (16-bit depths)
_CHANNELS_COLOR_TYPE = {c: t for t, c in _PNG_COLOR_CHANNELS.items()}
_ADAM7 = ((0, 0, 8, 8), (0, 4, 8, 8), (4, 0, 8, 4), (0, 2, 4, 4), (2, 0, 4, 2), (0, 1, 2, 2), (1, 0, 2, 1))
_IDAT_CHUNK = 1 << 20


def is_png16(head: bytes) -> bool:
    """True when the first bytes of a file (at least 25) are those of a 16-bit PNG."""
    return head.startswith(PNG_SIGNATURE) and len(head) >= 25 and head[24] == 16


def encode_png16(img: np.ndarray, *, info: ImageInfo | None = None, provenance: str | None = None) -> bytes:
    """16-bit PNG bytes of a ``(H, W, C)`` uint16 array (C = 1, 2, 3, 4), with iCCP/pHYs/eXIf/XMP from ``info``."""
    arr = as_hwc(img, "image array")
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
    out = [PNG_SIGNATURE, _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, _CHANNELS_COLOR_TYPE[c], 0, 0, 0))]
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
        out.append(_chunk(b"tEXt", PROVENANCE_KEY.encode("latin-1") + b"\0" + provenance.encode("latin-1", "replace")))
    out += [_chunk(b"IDAT", data[i:i + _IDAT_CHUNK]) for i in range(0, max(len(data), 1), _IDAT_CHUNK)]
    out.append(_chunk(b"IEND", b""))
    return b"".join(out)


def decode_png16(data: bytes, path: Path,
                 check_size: Callable[[int, int], None] | None = None) -> tuple[np.ndarray, int]:
    """Decode a 16-bit PNG; returns ``((H, W, C) uint16, EXIF orientation)``. ``check_size(w, h)``
    runs on the IHDR chunk (it raises to refuse the image); errors name ``path``."""
    pos = len(PNG_SIGNATURE)
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
            if check_size is not None:
                check_size(header[0], header[1])
        elif ctype == b"IDAT":
            idat.append(body)
        elif ctype == b"tRNS":
            trns = body
        elif ctype == b"eXIf":
            exif = Image.Exif()
            exif.load(body)
            orientation = exif_orientation(exif.get(ORIENTATION_TAG))
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
