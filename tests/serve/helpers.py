"""Helpers of the sisr serve tests: small and bad images as bytes, `sisr upscale`'s output for comparison,
requests with the standard library, and a live `sisr serve` process."""

from __future__ import annotations

import io
import os
import re
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


URL_LINE = re.compile(r"sisr serve: (http://\S+?/)(#token=\S+)? ")


def png_bytes(height: int = 24, width: int = 32, seed: int = 0, mode: str = "RGB") -> bytes:
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    arr = (rng.random((height, width, channels)) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr[..., 0] if channels == 1 else arr, mode).save(buf, "PNG")
    return buf.getvalue()


def bomb_png(side: int = 6000) -> bytes:
    """A small PNG (tens of kB) that decodes to side x side gray pixels."""
    buf = io.BytesIO()
    Image.new("L", (side, side)).save(buf, "PNG", optimize=True)
    return buf.getvalue()


def reference_upscale(tmp: Path, name: str, data: bytes, *args: str) -> bytes:
    """What ``sisr upscale`` writes for ``data`` (saved as ``name``) with ``args``: the file's bytes."""
    from sisr.cli import main

    src = tmp / "ref-in" / name
    src.parent.mkdir(parents=True, exist_ok=True)
    src.write_bytes(data)
    out = tmp / f"ref-out-{len(list(tmp.glob('ref-out-*')))}"
    assert main(["upscale", str(src), "-o", str(out), *args]) == 0
    (written,) = [p for p in out.iterdir()]
    return written.read_bytes()


def header_only_png(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height (beyond Pillow's decompression-bomb limit) with one tiny IDAT."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def jpeg_bytes() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 30, 60)).save(buf, "JPEG")
    return buf.getvalue()


def fault_cases() -> dict[str, tuple[bytes, str, int]]:
    """Bad uploads: (bytes, file name, the status expected) by what they are (a 2 MiB, 4 MP server)."""
    good = png_bytes(40, 40, seed=9)
    return {
        "truncated png": (good[: len(good) // 2], "a.png", 422),
        "truncated jpeg": (jpeg_bytes()[:300], "a.jpg", 422),
        "oversized": (b"\0" * (3 * 2**20), "big.png", 413),
        "decompression bomb (decodes to 36 MP)": (bomb_png(6000), "bomb.png", 413),
        "decompression bomb (header of 20000 x 20000)": (header_only_png(20000, 20000), "bomb2.png", 413),
        "wrong type": (b"%PDF-1.4\n%binary\n1 0 obj\n<<>>\nendobj\n", "doc.png", 415),
        "empty": (b"", "empty.png", 400),
    }


class LiveServer:
    """``sisr serve`` in a child process on a free loopback port."""

    def __init__(self, *args: str, env: dict | None = None):
        command = [sys.executable, "-m", "sisr", "serve", "--port", "0", *args]
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        self.lines: list[str] = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.lines.append(line)
            match = URL_LINE.search(line)
            if match:
                self.url = match.group(1)
                return
        self.proc.kill()
        raise AssertionError("sisr serve did not start:\n" + "".join(self.lines) + self.proc.stdout.read())

    def rss_kib(self) -> int:
        text = Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(re.search(r"VmRSS:\s+(\d+) kB", text).group(1))

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> tuple[int, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            rest, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rest, _ = self.proc.communicate()
        return self.proc.returncode, "".join(self.lines) + rest


def multipart(fields: dict, filename: str, data: bytes) -> tuple[bytes, str]:
    """A multipart/form-data body with ``data`` in field ``image`` and the text ``fields``."""
    boundary = "sisr-test-boundary-7d1c"
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
             for k, v in fields.items()]
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{filename}"\r\n'
                 f"Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def http(method: str, url: str, body: bytes | None = None, content_type: str | None = None,
         timeout: float = 120) -> tuple[int, dict, bytes]:
    """One request with the standard library: (status, headers, body), 4xx/5xx included."""
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, data=body, method=method,
                                     headers={"Content-Type": content_type} if content_type else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def post_image(url: str, data: bytes, filename: str = "photo.png", **fields) -> tuple[int, dict, bytes]:
    body, content_type = multipart({k: str(v) for k, v in fields.items()}, filename, data)
    return http("POST", url, body, content_type)
