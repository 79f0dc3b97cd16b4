"""The ASGI application (Starlette): the page, the API, errors as one-line JSON.

Routes (``GET /openapi.json`` describes them): ``GET /`` (the page) and ``/static/*``; ``GET /v1/health``,
``GET /v1/models``; ``POST /v1/upscale`` (synchronous: answers with the image); ``POST /v1/jobs``, ``GET
/v1/jobs/{id}``, ``GET /v1/jobs/{id}/events`` (server-sent events), ``GET /v1/jobs/{id}/result``, ``DELETE
/v1/jobs/{id}``; ``GET /v1/archive?ids=a,b`` (finished results as one zip).

:class:`Guard` runs before every route: on a loopback address only loopback ``Host`` headers are served (a
web page elsewhere cannot reach the server by DNS rebinding); the API needs ``Authorization: Bearer TOKEN``
when the server has a token; a POST or DELETE from another origin is refused unless ``--cors-origin`` allows
it (CORS itself is off unless asked).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import shutil
import tempfile
import time
import zipfile
from pathlib import Path

from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from .. import __version__
from ..inference.batch import EXTENSIONS
from ..inference.options import ALPHA_MODES, PRECISION_NAMES
from .jobs import MEDIA_TYPES, TERMINAL, Job, Service
from .models import Catalogue, ModelCache
from .problems import ApiError, status_of
from .settings import ServeSettings, is_loopback
from .uploads import FIELDS, probe, read_options, receive

__all__ = ["create_app", "Guard"]

STATIC = Path(__file__).resolve().parent / "static"
log = logging.getLogger("sisr.serve")
SSE_POLL_S, SSE_HEARTBEAT_S = 0.1, 15.0


def error_response(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    """``{"error": "<one line>", "status": N}`` with that status."""
    return JSONResponse({"error": " ".join(str(message).split()), "status": status}, status, headers=headers)


def endpoint(fn):
    """A route whose errors become one-line JSON with the status a client expects (500: the log has the rest)."""
    async def route(request: Request) -> Response:
        try:
            return await fn(request)
        except Exception as exc:  # noqa: BLE001 - every error is answered as JSON
            status = status_of(exc)
            if status == 500:
                log.exception("%s %s", request.method, request.url.path)
                return error_response(500, f"internal error ({type(exc).__name__})")
            return error_response(status, str(exc), getattr(exc, "headers", None))
    return route


class Guard:
    """Host, token and origin checks in front of every route (module docstring)."""

    def __init__(self, app, settings: ServeSettings):
        self.app, self.settings = app, settings
        self.token = settings.token.encode() if settings.token else None

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            refusal = self.refusal(scope)
            if refusal is not None:
                await refusal(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def refusal(self, scope) -> Response | None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        host = headers.get("host", "")
        if self.settings.loopback and not is_loopback(_hostname(host)):
            return error_response(421, f"this server answers to localhost only, not to Host '{host}'")
        if self.token is not None and scope["path"].startswith("/v1/"):
            given = headers.get("authorization", "")
            if not (given.startswith("Bearer ") and hmac.compare_digest(given[7:].strip().encode(), self.token)):
                return error_response(401, "missing or wrong bearer token (send 'Authorization: Bearer TOKEN')",
                                      {"WWW-Authenticate": "Bearer"})
        origin = headers.get("origin")
        if scope["method"] not in ("GET", "HEAD", "OPTIONS") and origin and origin != "null":
            own = f"{scope.get('scheme', 'http')}://{host}"
            allowed = self.settings.cors_origins
            if origin != own and origin not in allowed and "*" not in allowed:
                return error_response(403, f"cross-origin request from {origin} refused (see --cors-origin)")
        return None


def _hostname(host: str) -> str:
    if host.startswith("["):
        return host[1:].split("]")[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class Api:
    """The route handlers of one server."""

    def __init__(self, service: Service):
        self.service = service
        self.settings = service.settings

    async def health(self, request: Request) -> Response:
        return JSONResponse({**self.service.health(), "version": __version__, "device": self.settings.device})

    async def models(self, request: Request) -> Response:
        catalogue = self.service.catalogue
        return JSONResponse({"default": catalogue.default, "models": catalogue.public(),
                             "formats": list(EXTENSIONS), "precisions": list(PRECISION_NAMES),
                             "alpha": list(ALPHA_MODES), "fields": ["image", *FIELDS],
                             "limits": self.settings.limits()})

    async def _accept(self, request: Request, kind: str) -> tuple[Job, asyncio.Future]:
        """Admit, receive, check and queue one upload (its folder removed at once if any of that fails)."""
        service, settings = self.service, self.settings
        folder = service.admit()
        try:
            upload = await receive(request, folder, settings.max_upload_bytes)
            order = read_options(upload.fields, service.catalogue)
            width, height = await run_in_threadpool(probe, upload, settings.max_pixels)
            if kind == "sync" and width * height > settings.sync_max_pixels:
                raise ApiError(413, f"{upload.filename}: {width}x{height} is more than POST /v1/upscale answers "
                                    f"directly ({settings.sync_max_pixels:,} pixels); use POST /v1/jobs")
        except BaseException:
            service.release(folder)
            raise
        job, future = service.start(upload, order, folder, (width, height), kind)
        return job, asyncio.wrap_future(future)

    async def upscale(self, request: Request) -> Response:
        job, done = await self._accept(request, "sync")
        try:
            await asyncio.shield(done)
        except asyncio.CancelledError:
            job.cancel()
            raise
        if job.status != "done":
            shutil.rmtree(job.folder, ignore_errors=True)
            if job.status == "cancelled":
                raise ApiError(503, f"{job.upload.filename}: cancelled (the server is shutting down)")
            raise ApiError(job.error_status or 500, job.error or "failed")
        return FileResponse(job.result, media_type=MEDIA_TYPES.get(job.result.suffix.lower()),
                            filename=job.download_name, headers={"Cache-Control": "no-store"},
                            background=BackgroundTask(shutil.rmtree, job.folder, True))

    async def create_job(self, request: Request) -> Response:
        job, _ = await self._accept(request, "job")
        return JSONResponse(job.public(), 202, headers={"Location": f"/v1/jobs/{job.id}"})

    async def job(self, request: Request) -> Response:
        return JSONResponse(self.service.get(request.path_params["id"]).public())

    async def delete_job(self, request: Request) -> Response:
        job = self.service.delete(request.path_params["id"])
        return JSONResponse({"id": job.id, "status": "deleted" if job.status in TERMINAL else "cancelled"})

    async def result(self, request: Request) -> Response:
        job = self.service.get(request.path_params["id"])
        if job.status != "done":
            raise ApiError(409, f"job {job.id} is {job.status}" + (f": {job.error}" if job.error else ""))
        return FileResponse(job.result, media_type=MEDIA_TYPES.get(job.result.suffix.lower()),
                            filename=job.download_name, headers={"Cache-Control": "no-store"})

    async def events(self, request: Request) -> Response:
        job = self.service.get(request.path_params["id"])

        async def stream():
            seen, beat = -1, time.monotonic()
            while True:
                if job.version != seen:
                    seen, beat = job.version, time.monotonic()
                    yield f"event: status\ndata: {json.dumps(job.public())}\n\n"
                    if job.status in TERMINAL:
                        return
                elif time.monotonic() - beat > SSE_HEARTBEAT_S:
                    beat = time.monotonic()
                    yield ": keep-alive\n\n"
                await asyncio.sleep(SSE_POLL_S)

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    async def archive(self, request: Request) -> Response:
        ids = [i for i in request.query_params.get("ids", "").split(",") if i]
        if not ids or len(ids) > self.settings.max_jobs:
            raise ApiError(400, f"ids: give 1 to {self.settings.max_jobs} job ids, comma-separated")
        jobs = [self.service.get(i) for i in dict.fromkeys(ids)]
        waiting = [j for j in jobs if j.status != "done"]
        if waiting:
            raise ApiError(409, f"job {waiting[0].id} is {waiting[0].status}; the archive holds finished results")
        fd, name = tempfile.mkstemp(dir=self.service.root, suffix=".zip")
        path = Path(name)
        try:
            await run_in_threadpool(_write_zip, fd, jobs)
        except FileNotFoundError:
            path.unlink(missing_ok=True)
            raise ApiError(409, "a job was deleted while its result was being archived") from None
        return FileResponse(path, media_type="application/zip", filename="sisr-results.zip",
                            background=BackgroundTask(path.unlink, missing_ok=True))


def _write_zip(fd: int, jobs: list[Job]) -> None:
    names: set[str] = set()
    with open(fd, "wb") as f, zipfile.ZipFile(f, "w", zipfile.ZIP_STORED) as archive:
        for job in jobs:
            name, n = job.download_name, 1
            while name in names:
                n += 1
                name = f"{Path(job.download_name).stem}-{n}{Path(job.download_name).suffix}"
            names.add(name)
            archive.write(job.result, name)


async def index(request: Request) -> Response:
    return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})


async def openapi(request: Request) -> Response:
    from .openapi import schema

    return JSONResponse(schema())


async def not_found(request: Request, exc: HTTPException) -> Response:
    return error_response(exc.status_code, exc.detail or "error", getattr(exc, "headers", None))


def create_app(settings: ServeSettings | None = None, catalogue: Catalogue | None = None,
               preload: bool = True) -> Starlette:
    """The application for ``settings`` (``catalogue``: the models offered, default from the settings);
    ``preload`` loads the default model at start-up so the first request finds it warm."""
    import contextlib

    from starlette.middleware.cors import CORSMiddleware

    settings = settings or ServeSettings()
    catalogue = catalogue or Catalogue.build(settings.models, settings.device)
    service = Service(settings, catalogue, ModelCache(settings.device, settings.model_cache))
    api = Api(service)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        if preload:
            offer = catalogue.offers[catalogue.default]
            await run_in_threadpool(service.cache.get, offer, offer.scales[0])
        try:
            yield
        finally:
            await run_in_threadpool(service.close)

    routes = [Route("/", index), Route("/openapi.json", openapi), Mount("/static", StaticFiles(directory=STATIC)),
              Route("/v1/health", endpoint(api.health)), Route("/v1/models", endpoint(api.models)),
              Route("/v1/upscale", endpoint(api.upscale), methods=["POST"]),
              Route("/v1/jobs", endpoint(api.create_job), methods=["POST"]),
              Route("/v1/jobs/{id}", endpoint(api.job), methods=["GET"]),
              Route("/v1/jobs/{id}", endpoint(api.delete_job), methods=["DELETE"]),
              Route("/v1/jobs/{id}/events", endpoint(api.events)),
              Route("/v1/jobs/{id}/result", endpoint(api.result)), Route("/v1/archive", endpoint(api.archive))]
    middleware = []
    if settings.cors_origins:
        middleware.append(Middleware(CORSMiddleware, allow_origins=list(settings.cors_origins),
                                     allow_methods=["GET", "POST", "DELETE"],
                                     allow_headers=["Authorization", "Content-Type"]))
    middleware.append(Middleware(Guard, settings=settings))
    app = Starlette(routes=routes, middleware=middleware, lifespan=lifespan,
                    exception_handlers={HTTPException: not_found})
    app.state.service = service
    return app
