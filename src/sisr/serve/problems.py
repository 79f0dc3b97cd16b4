"""Errors a client caused, with the HTTP status it expects: :class:`ApiError`, and :func:`status_of` for the
library's errors (``ConfigError`` 400, ``ImageError`` 422, out of memory 503, ...)."""

from __future__ import annotations

from ..errors import ConfigError, ImageError, ModelError, SisrError, WeightsError

__all__ = ["ApiError", "status_of", "public_message"]


class ApiError(SisrError):
    """A request the server refuses: ``status`` (400, 401, 404, 409, 413, 415, 429, ...) and a one-line message."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.headers = headers or {}


def status_of(exc: BaseException) -> int:
    """The HTTP status for an error raised while serving a request."""
    if isinstance(exc, ApiError):
        return exc.status
    if type(exc).__name__ == "InferenceOutOfMemory":
        return 503
    if isinstance(exc, (ConfigError, ModelError, WeightsError)):
        return 400
    if isinstance(exc, (ImageError, SisrError)):
        return 422
    return 500


def public_message(message: str, names: dict[str, str]) -> str:
    """``message`` on one line with the server's paths replaced by what the client knows them as (longest
    first: a file's path before its folder's)."""
    for path in sorted(names, key=len, reverse=True):
        message = message.replace(path, names[path])
    return " ".join(message.split())
