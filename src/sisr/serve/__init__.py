"""``sisr serve``: a local web page and HTTP API for upscaling, with models kept loaded.

The work is the library's: each image goes through :func:`sisr.inference.batch.upscale_files` (the
function behind ``sisr upscale``), so an output is byte-identical to the command's for the same input
and options, provenance record included. This package adds what a server needs around it:

* :mod:`.settings`: :class:`ServeSettings`, the server's limits and safety rules, checked once;
* :mod:`.models`: the models offered (:class:`Catalogue`) and a small LRU of loaded networks;
* :mod:`.uploads`: multipart uploads streamed into a private folder, with size limits, and the form
  fields turned into ``RunOptions`` / ``OutputOptions``;
* :mod:`.jobs`: the bounded queue, the worker threads, jobs with progress and cancel;
* :mod:`.app`: the ASGI application (Starlette): routes, errors as one-line JSON, auth, the page;
* :mod:`.server`: uvicorn on a socket bound here, the URL printed, SIGTERM/Ctrl-C handled;
* :mod:`.problems` (errors with their HTTP status), :mod:`.openapi` (the schema), ``static/`` (the page).

Starlette, uvicorn and python-multipart come with the optional extra ``pip install 'sisr[serve]'``;
:func:`missing_dependency` names what is missing without importing torch.
"""

from __future__ import annotations

import importlib.util

__all__ = ["missing_dependency", "INSTALL_HINT"]

INSTALL_HINT = "pip install 'sisr[serve]'"
REQUIRED = ("starlette", "uvicorn", "python_multipart")


def missing_dependency() -> str | None:
    """The first package of the ``serve`` extra that is not installed, or None."""
    for name in REQUIRED:
        if importlib.util.find_spec(name) is None:
            return name.replace("_", "-")
    return None
