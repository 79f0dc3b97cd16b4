"""The server's settings: where it listens, who may call it, how much it takes (:class:`ServeSettings`).

Safe by default: it listens on 127.0.0.1; a host that is not a loopback address needs a bearer token
(``token``) or an explicit ``insecure=True``. Every limit is checked when the settings are made
(``ConfigError`` with one line naming the option).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from ..errors import ConfigError

__all__ = ["ServeSettings", "is_loopback", "MIN_TOKEN_LENGTH"]

MIN_TOKEN_LENGTH = 16
MIB = 1024 * 1024


def is_loopback(host: str) -> bool:
    """Whether ``host`` names only this machine (``localhost``, 127.0.0.0/8, ::1)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # any other name may resolve to an outside address


@dataclass(frozen=True)
class ServeSettings:
    """``host``/``port``: where to listen (port 0: any free port). ``token``: the bearer token every API call
    must carry; ``insecure``: allow a non-loopback host without one. ``models``: the models offered (registry
    names or weights files; empty: every registry model that runs without a user's weights), the first is the
    default. ``device``: as ``sisr upscale --device``. ``concurrency``: images upscaled at once;
    ``queue``: requests waiting beyond those (then 429). ``max_upload_mb``: the largest upload (413);
    ``max_pixels``: the largest input in pixels (413); ``sync_max_pixels``: the largest input ``POST
    /v1/upscale`` answers itself (larger ones go through ``/v1/jobs``). ``model_cache``: networks kept loaded
    (LRU). ``cors_origins``: origins allowed to call the API from other pages (none by default).
    ``job_ttl_s``/``max_jobs``: finished jobs kept (their results) this long / this many. ``grace_s``: how
    long a shutdown waits for open requests."""

    host: str = "127.0.0.1"
    port: int = 8000
    token: str | None = None
    insecure: bool = False
    models: tuple[str, ...] = ()
    device: str = "auto"
    concurrency: int = 1
    queue: int = 32
    max_upload_mb: float = 50.0
    max_pixels: int = 4096 * 4096
    sync_max_pixels: int = 2048 * 1024
    model_cache: int = 3
    cors_origins: tuple[str, ...] = ()
    job_ttl_s: float = 3600.0
    max_jobs: int = 256
    grace_s: float = 10.0

    def __post_init__(self) -> None:
        for name, low in (("port", 0), ("concurrency", 1), ("queue", 0), ("max_pixels", 1), ("sync_max_pixels", 1),
                          ("model_cache", 1), ("max_jobs", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"--{name.replace('_', '-')} must be a whole number >= {low}, got {value!r}")
        if self.port > 65535:
            raise ConfigError(f"--port must be 0..65535, got {self.port}")
        for name in ("max_upload_mb", "job_ttl_s", "grace_s"):
            if not float(getattr(self, name)) > 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be > 0, got {getattr(self, name)!r}")
        if self.token is not None and (len(self.token) < MIN_TOKEN_LENGTH or not self.token.isprintable()
                                       or " " in self.token):
            raise ConfigError(f"--token must be at least {MIN_TOKEN_LENGTH} printable characters without spaces "
                              f"(e.g. python -c 'import secrets; print(secrets.token_urlsafe())')")
        if not is_loopback(self.host) and self.token is None and not self.insecure:
            raise ConfigError(f"--host {self.host} can be reached from other machines: give --token TOKEN "
                              f"(clients send 'Authorization: Bearer TOKEN') or --insecure to allow anyone")
        for origin in self.cors_origins:
            if origin != "*" and not origin.startswith(("http://", "https://")):
                raise ConfigError(f"--cors-origin '{origin}': expected http(s)://host[:port] or *")

    @property
    def max_upload_bytes(self) -> int:
        return int(float(self.max_upload_mb) * MIB)

    @property
    def loopback(self) -> bool:
        return is_loopback(self.host)

    def limits(self) -> dict:
        """The limits a client may want to know (``GET /v1/models``, ``GET /v1/health``)."""
        return {"max_upload_bytes": self.max_upload_bytes, "max_pixels": self.max_pixels,
                "sync_max_pixels": self.sync_max_pixels, "concurrency": self.concurrency, "queue": self.queue}
