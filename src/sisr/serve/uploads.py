"""One upload: a multipart request streamed into a private folder (:func:`receive`), checked (:func:`probe`),
and its form fields turned into the library's options (:func:`read_options`).

The image goes in field ``image`` (one per request); the options are fields named like ``sisr upscale``'s
flags (``model``, ``scale``, ``format`` or ``ext``, ``quality``, ``lossless``, ``color``, ``alpha``, ``tile``,
``tile_overlap``, ``self_ensemble``, ``precision``, ``chop``, ...; ``-`` or ``_``). A client names no path: the
file is saved as ``input<suffix>`` in the job's private folder, its own name kept only for messages and the
download's name. The body is refused (413) as soon as it passes the size limit; the rest of a refused body is
read and discarded (bounded, as nginx's lingering close) so that the client, still sending, gets the answer
instead of a connection reset.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path

from ..data.io import IMAGE_EXTENSIONS, read_image_info
from ..errors import ImageError
from ..inference.batch import EXTENSIONS, OutputOptions
from ..inference.options import RunOptions
from .models import Catalogue, Offer
from .problems import ApiError, public_message

__all__ = ["Upload", "UpscaleRequest", "receive", "probe", "read_options", "FIELDS"]

INPUT_STEM = "input"
MAX_FIELD_BYTES = 1024
MAX_FIELDS = 32
FORM_SLACK = 64 * 1024  # bytes of a body besides the image: boundaries, part headers, option fields
DRAIN_BYTES = 256 * 2**20  # at most this much of a refused body is read and discarded ...
DRAIN_SECONDS = 10.0  # ... for at most this long; then the connection is closed unread
BOOLEANS = {"1": True, "true": True, "on": True, "yes": True, "0": False, "false": False, "off": False, "no": False,
            "": False}
FIELDS = ("model", "scale", "format", "quality", "lossless", "color", "alpha", "tile", "tile_overlap", "self_ensemble",
          "precision", "chop", "chop_shave", "chop_min_size", "chop_round_to_scale")
ALIASES = {"ext": "format"}
FLAGS = ("lossless", "self_ensemble", "chop", "chop_round_to_scale")
INTEGERS = ("scale", "quality", "tile_overlap", "chop_shave", "chop_min_size")


@dataclass
class Upload:
    """What a request brought: the saved image (``path``), the client's name for it, the option fields."""

    path: Path | None
    filename: str
    fields: dict[str, str]
    size: int = 0


def display_name(name: str) -> str:
    """A client's file name as shown back to it: the last path part, printable, at most 120 characters."""
    base = re.split(r"[/\\]", name)[-1]
    base = "".join(c for c in base if c.isprintable()).strip()
    return base[-120:] or "image"


class _Receiver:
    """python-multipart callbacks: option fields in memory (small), the image part straight to its file."""

    def __init__(self, folder: Path, max_bytes: int):
        self.folder, self.max_bytes = folder, max_bytes
        self.fields: dict[str, str] = {}
        self.upload: Upload | None = None
        self._file = None
        self._headers: dict[bytes, bytes] = {}
        self._name, self._value, self._data = b"", b"", bytearray()
        self._part: str | None = None

    def callbacks(self) -> dict:
        return {"on_part_begin": self._begin, "on_part_data": self._part_data, "on_part_end": self._end,
                "on_header_field": lambda d, s, e: self._add("_name", d[s:e]),
                "on_header_value": lambda d, s, e: self._add("_value", d[s:e]),
                "on_header_end": self._header_end, "on_headers_finished": self._headers_finished}

    def _add(self, attr: str, data: bytes) -> None:
        setattr(self, attr, getattr(self, attr) + data)
        if len(getattr(self, attr)) > MAX_FIELD_BYTES * 8:
            raise ApiError(400, "a multipart part header is too long")

    def _begin(self) -> None:
        self._headers, self._data, self._part = {}, bytearray(), None

    def _header_end(self) -> None:
        self._headers[self._name.strip().lower()] = self._value.strip()
        self._name, self._value = b"", b""

    def _headers_finished(self) -> None:
        from python_multipart.multipart import parse_options_header

        _, params = parse_options_header(self._headers.get(b"content-disposition", b""))
        name = params.get(b"name", b"").decode("utf-8", "replace")
        if b"filename" not in params:
            if len(self.fields) >= MAX_FIELDS:
                raise ApiError(400, f"too many form fields (at most {MAX_FIELDS})")
            self._part = name
            return
        if name != "image" or self.upload is not None:
            raise ApiError(400, "send one file, in form field 'image'" if name == "image"
                           else f"form field '{name}' holds a file; the image goes in field 'image'")
        filename = display_name(params[b"filename"].decode("utf-8", "replace"))
        suffix = Path(filename).suffix.lower()
        path = self.folder / (INPUT_STEM + (suffix if suffix in IMAGE_EXTENSIONS else ""))
        self.upload = Upload(path, filename, self.fields)
        self._file = open(path, "xb")

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._file is not None:
            self.upload.size += end - start
            if self.upload.size > self.max_bytes:
                raise ApiError(413, f"{self.upload.filename}: upload too large (more than "
                                    f"{self.max_bytes / 2**20:g} MiB; this server's --max-upload-mb)")
            self._file.write(data[start:end])
        else:
            self._data += data[start:end]
            if len(self._data) > MAX_FIELD_BYTES:
                raise ApiError(400, f"form field '{self._part}' is too long (at most {MAX_FIELD_BYTES} bytes)")

    def _end(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        elif self._part is not None:
            try:
                self.fields[self._part] = self._data.decode("utf-8")
            except UnicodeDecodeError:
                raise ApiError(400, f"form field '{self._part}' is not UTF-8 text") from None

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


async def receive(request, folder: Path, max_bytes: int) -> Upload:
    """Stream ``request``'s multipart body into ``folder``; ``ApiError`` 400/413/415 for a body it cannot take."""
    try:
        return await _receive(request, folder, max_bytes)
    except ApiError:
        await _discard(request)
        raise


async def _discard(request) -> None:
    """Read and drop what is left of a refused body (bounded in bytes and time)."""
    import asyncio

    from starlette.requests import ClientDisconnect

    async def drain() -> None:
        left = DRAIN_BYTES
        async for chunk in request.stream():
            left -= len(chunk)
            if left <= 0:
                return

    try:
        await asyncio.wait_for(drain(), DRAIN_SECONDS)
    except (asyncio.TimeoutError, ClientDisconnect, RuntimeError):
        pass  # RuntimeError: the stream was consumed already


async def _receive(request, folder: Path, max_bytes: int) -> Upload:
    import python_multipart
    from python_multipart.exceptions import FormParserError
    from python_multipart.multipart import parse_options_header

    kind, params = parse_options_header(request.headers.get("content-type", ""))
    if kind != b"multipart/form-data":
        raise ApiError(415, "expected a multipart/form-data body with the image in form field 'image'")
    if not params.get(b"boundary"):
        raise ApiError(400, "multipart body without a boundary")
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > max_bytes + FORM_SLACK:
        raise ApiError(413, f"upload too large ({int(length):,} bytes; this server takes at most "
                            f"{max_bytes / 2**20:g} MiB, its --max-upload-mb)")
    receiver = _Receiver(folder, max_bytes)
    parser = python_multipart.MultipartParser(params[b"boundary"], receiver.callbacks())
    try:
        async for chunk in request.stream():
            parser.write(chunk)
        parser.finalize()
    except FormParserError:
        raise ApiError(400, "malformed multipart body") from None
    finally:
        receiver.close()
    if receiver.upload is None:
        raise ApiError(400, "no image: send the file in form field 'image'")
    return receiver.upload


def probe(upload: Upload, max_pixels: int) -> tuple[int, int]:
    """``(width, height)`` of the uploaded image, read from its header; ``ApiError``: 400 empty, 415 not an image,
    413 too many pixels (or a possible decompression bomb), 422 unreadable."""
    path, name = upload.path, upload.filename
    if upload.size == 0:
        raise ApiError(400, f"{name}: empty file (0 bytes)")
    try:
        read_image_info(path)  # the library's checks of the header and metadata
    except ImageError as exc:
        raise ApiError(_refusal_status(path), public_message(str(exc), {str(path): name})) from None
    width, height = _pixel_size(path)
    if width * height > max_pixels:
        raise ApiError(413, f"{name}: image too large ({width}x{height} = {width * height:,} pixels; this server "
                            f"takes at most {max_pixels:,}, its --max-pixels)")
    return width, height


def _refusal_status(path: Path) -> int:
    from PIL import Image

    with warnings.catch_warnings(), open(path, "rb") as f:
        warnings.simplefilter("ignore")
        try:
            Image.open(f).close()
        except Image.DecompressionBombError:
            return 413
        except Image.UnidentifiedImageError:
            f.seek(0)
            return 422 if f.read(4) in (b"II*\0", b"MM\0*") else 415
        except Exception:  # noqa: BLE001 - any other refusal: the file is an image Pillow cannot read
            return 422
    return 422


def _pixel_size(path: Path) -> tuple[int, int]:
    """Width and height from the header (Pillow; tifffile for TIFFs Pillow cannot open); (0, 0) if unknown."""
    from PIL import Image

    try:
        with warnings.catch_warnings(), open(path, "rb") as f:
            warnings.simplefilter("ignore")
            with Image.open(f) as im:
                return im.size
    except Exception:  # noqa: BLE001 - read_image_info accepted it: a TIFF layout only tifffile reads
        try:
            import tifffile

            with tifffile.TiffFile(path) as tif:
                page = tif.pages[0]
                return int(page.imagewidth), int(page.imagelength)
        except Exception:  # noqa: BLE001
            return 0, 0


@dataclass(frozen=True)
class UpscaleRequest:
    """What a request asks for: the model (``offer``, ``scale``) and the library's options."""

    offer: Offer
    scale: int
    options: RunOptions
    files: OutputOptions

    def describe(self) -> dict:
        return {"model": self.offer.id, "scale": self.scale, "format": self.files.ext, **self.options.pixel_options(),
                "quality": self.files.quality, "lossless": self.files.lossless, "color": self.files.color}


def read_options(fields: dict[str, str], catalogue: Catalogue) -> UpscaleRequest:
    """The request's options from its form fields (unknown fields and bad values: ``ApiError`` 400)."""
    values: dict = {}
    for raw, text in fields.items():
        key = raw.strip().lower().replace("-", "_")
        key = ALIASES.get(key, key)
        if key not in FIELDS:
            raise ApiError(400, f"unknown form field '{raw}'; fields: image, {', '.join(FIELDS)}")
        values[key] = _value(key, text.strip())
    offer, scale = catalogue.choose(values.pop("model", None) or None, values.pop("scale", None))
    run = {k: values.pop(k) for k in list(values) if k not in ("format", "quality", "lossless", "color")}
    options = RunOptions(**run)  # ConfigError (400) naming the option
    files = OutputOptions(ext=values.get("format", "png"), quality=values.get("quality", 95),
                          lossless=values.get("lossless", False), color=values.get("color", "keep"))
    return UpscaleRequest(offer, scale, options, files)


def _value(key: str, text: str):
    if key in FLAGS:
        if text.lower() not in BOOLEANS:
            raise ApiError(400, f"{key}: expected true or false, got '{text}'")
        return BOOLEANS[text.lower()]
    if key in INTEGERS or (key == "tile" and text not in ("", "auto")):
        try:
            return int(text)
        except ValueError:
            raise ApiError(400, f"{key}: expected a whole number, got '{text}'") from None
    if key == "tile":
        return None if text == "" else "auto"
    if key == "format" and text not in EXTENSIONS:
        raise ApiError(400, f"format: '{text}' is not one of {', '.join(EXTENSIONS)}")
    return text
