"""Jobs: one uploaded image through the library, in a worker thread, with progress and cancel.

:class:`Service` owns the bounded queue (``concurrency`` images at once, ``queue`` more waiting; beyond that
``ApiError`` 429), the worker threads, the private temporary folder every upload lives in, and the finished
jobs kept for their results. A :class:`Job` runs :func:`sisr.inference.batch.upscale_files` on its upload with
a view of the cached network (:func:`sisr.serve.models.watched`) that reports each network call and layer:
that is its progress, and where a cancelled job stops. The upload is deleted when the job ends; the result
when it is deleted, expires or the server stops.
"""

from __future__ import annotations

import logging
import secrets
import shutil
import tempfile
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from ..errors import SisrError
from .models import Catalogue, ModelCache, watched
from .problems import ApiError, public_message, status_of
from .settings import ServeSettings
from .uploads import Upload, UpscaleRequest

__all__ = ["Job", "Service", "JobCancelled", "TERMINAL"]

log = logging.getLogger("sisr.serve")
TERMINAL = ("done", "failed", "cancelled")
MEDIA_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp",
               ".tif": "image/tiff", ".tiff": "image/tiff"}
# progress: reading and loading up to NETWORK_START, the network up to NETWORK_END, then writing
NETWORK_START, NETWORK_END = 0.05, 0.95


class JobCancelled(Exception):
    """Raised inside the network (at its next layer) when the job is cancelled."""


class Job:
    """One image: its upload, what was asked, its state (``queued``, ``running``, ``done``, ``failed``,
    ``cancelled``), progress in [0, 1], the one-line error and its HTTP status, the result file."""

    def __init__(self, upload: Upload, request: UpscaleRequest, folder: Path, size: tuple[int, int], kind: str):
        self.id = secrets.token_urlsafe(12)
        self.upload, self.request, self.folder, self.size, self.kind = upload, request, folder, size, kind
        self.status, self.stage, self.progress = "queued", "queued", 0.0
        self.error: str | None = None
        self.error_status = 0
        self.result: Path | None = None
        self.notes: list[str] = []
        self.created, self.finished = time.time(), None
        self.version = 0
        self.steps_per_call = 0  # layers in one network call, once the model's first call told
        self.calls_expected = _expected_calls(request, size)
        self._calls, self._steps = 0, 0
        self._cancel = threading.Event()
        self.ended = threading.Event()

    @property
    def download_name(self) -> str:
        suffix = self.result.suffix if self.result else ""
        return f"{Path(self.upload.filename).stem}_x{self.request.scale}{suffix}"

    def public(self) -> dict:
        out = {"id": self.id, "status": self.status, "stage": self.stage, "progress": round(self.progress, 4),
               "filename": self.upload.filename, "options": self.request.describe(), "error": self.error,
               "notes": list(self.notes), "input": {"width": self.size[0], "height": self.size[1]}}
        if self.status == "done":
            out.update(result=f"/v1/jobs/{self.id}/result", download_name=self.download_name)
        return out

    def set(self, **changes) -> None:
        for key, value in changes.items():
            setattr(self, key, value)
        self.version += 1

    def cancel(self) -> bool:
        """Ask the job to stop (at its next network layer, or before it starts); False once it has ended."""
        if self.status in TERMINAL:
            return False
        self._cancel.set()
        return True

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    # NetworkWatch (sisr.serve.models): called from the worker thread running the network
    def network_call(self, finished: bool) -> None:
        if finished:
            self._calls += 1
            self.steps_per_call = self.steps_per_call or self._steps
            self._steps = 0
        else:
            self._check()
            self.stage = "upscaling"
        self._update()

    def network_step(self) -> None:
        self._check()
        self._steps += 1
        if self._steps % 8 == 0:
            self._update()

    def _check(self) -> None:
        if self._cancel.is_set():
            raise JobCancelled()

    def _update(self) -> None:
        within = min(self._steps / self.steps_per_call, 0.99) if self.steps_per_call else 0.0
        done = (self._calls + within) / max(self.calls_expected, self._calls + (1 if within else 0), 1)
        self.set(progress=NETWORK_START + (NETWORK_END - NETWORK_START) * min(done, 1.0))


def _expected_calls(request: UpscaleRequest, size: tuple[int, int]) -> int:
    """Network calls the job will make (an estimate where the library decides: ``tile=auto``, chop, alpha)."""
    options = request.options
    passes = 8 if options.self_ensemble else 1
    if isinstance(options.tile, int) and all(size):
        from ..inference.tiling import tile_starts

        width, height = size
        return passes * len(tile_starts(height, options.tile, options.tile_overlap)) * len(
            tile_starts(width, options.tile, options.tile_overlap))
    return passes


class Service:
    """The queue, the workers, the jobs and the private folder of one server."""

    def __init__(self, settings: ServeSettings, catalogue: Catalogue, cache: ModelCache):
        self.settings, self.catalogue, self.cache = settings, catalogue, cache
        self.root = Path(tempfile.mkdtemp(prefix="sisr-serve-"))  # mode 0700: this user's only
        self.pool = ThreadPoolExecutor(settings.concurrency, thread_name_prefix="sisr-serve")
        self.jobs: dict[str, Job] = {}  # jobs of /v1/jobs, kept after they end until deleted or expired
        self.running: set[Job] = set()  # every admitted job not yet ended (/v1/upscale too)
        self.admitted = 0
        self.closing = False
        self.started = time.time()
        self._lock = threading.Lock()

    # --- admission: the bounded queue
    def admit(self) -> Path:
        """A place in the queue and a private folder for one request; ``ApiError`` 429 when the queue is full,
        503 while the server stops. Give it back with :meth:`release` unless a job was started with it."""
        with self._lock:
            if self.closing:
                raise ApiError(503, "the server is shutting down")
            limit = self.settings.concurrency + self.settings.queue
            if self.admitted >= limit:
                raise ApiError(429, f"busy: {self.admitted} images queued or running (the limit is {limit}); "
                                    f"retry later", {"Retry-After": "1"})
            self.admitted += 1
        return Path(tempfile.mkdtemp(dir=self.root))

    def release(self, folder: Path | None) -> None:
        with self._lock:
            self.admitted -= 1
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)

    def start(self, upload: Upload, request: UpscaleRequest, folder: Path, size: tuple[int, int],
              kind: str) -> tuple[Job, Future]:
        """Queue a job for an admitted request (its place in the queue is given back when the job ends)."""
        job = Job(upload, request, folder, size, kind)
        with self._lock:
            self.running.add(job)
            if kind == "job":
                self.jobs[job.id] = job
        self.sweep()
        return job, self.pool.submit(self._run, job)

    def _run(self, job: Job) -> None:
        try:
            if job.cancelled:
                raise JobCancelled()
            job.set(status="running", stage="loading the model", progress=0.01)
            self._upscale(job)
        except JobCancelled:
            job.set(status="cancelled", stage="cancelled")
        except SisrError as exc:
            self._fail(job, str(exc), status_of(exc))
        except Exception as exc:  # noqa: BLE001 - one line for the client, the traceback in the log
            log.exception("job %s failed", job.id)
            self._fail(job, f"internal error ({type(exc).__name__}: {exc})", 500)
        finally:
            if job.upload.path is not None:
                job.upload.path.unlink(missing_ok=True)  # the upload lives as long as its job
            if job.status == "running":  # cancelled after the network: the result is not wanted
                job.set(status="cancelled", stage="cancelled")
            if job.status != "done":
                shutil.rmtree(job.folder / "out", ignore_errors=True)
            job.finished = time.time()
            with self._lock:
                self.running.discard(job)
                self.admitted -= 1
            job.ended.set()
            job.set()

    def _upscale(self, job: Job) -> None:
        from ..inference.batch import upscale_files

        request = job.request
        loaded = self.cache.get(request.offer, request.scale)
        job.set(stage="reading", progress=0.02)
        result = upscale_files([job.upload.path], job.folder / "out", watched(loaded, job), options=request.options,
                               output_options=request.files, workers=1, notify=job.notes.append)
        if result.failed:
            message = result.failed[0][1]
            self._fail(job, message, 503 if "out of memory" in message else 422)
        elif job.cancelled:
            raise JobCancelled()
        else:
            job.set(status="done", stage="done", progress=1.0, result=result.done[0].output)

    def _fail(self, job: Job, message: str, status: int) -> None:
        names = {str(job.upload.path): job.upload.filename, str(job.folder / "out"): "output",
                 str(job.folder): "upload", str(self.root): "server"}
        job.set(status="failed", stage="failed", error=public_message(message, names), error_status=status)

    # --- jobs of /v1/jobs
    def get(self, job_id: str) -> Job:
        job = self.jobs.get(job_id)
        if job is None:
            raise ApiError(404, f"no job '{job_id}' (finished jobs are kept {self.settings.job_ttl_s:g} s)")
        return job

    def delete(self, job_id: str) -> Job:
        """Cancel a job that has not ended; forget it and remove its files (at once, or when it ends)."""
        job = self.get(job_id)
        job.cancel()
        with self._lock:
            self.jobs.pop(job_id, None)
        if job.status in TERMINAL and job not in self.running:
            shutil.rmtree(job.folder, ignore_errors=True)
        else:
            threading.Thread(target=_remove_when_ended, args=(job,), daemon=True).start()
        return job

    def sweep(self) -> None:
        """Forget finished jobs past ``job_ttl_s``, and the oldest beyond ``max_jobs``."""
        now = time.time()
        with self._lock:
            ended = sorted((j for j in self.jobs.values() if j.finished is not None), key=lambda j: j.finished)
            excess = max(0, len(self.jobs) - self.settings.max_jobs)
            old = [j for i, j in enumerate(ended) if i < excess or now - j.finished > self.settings.job_ttl_s]
            for job in old:
                self.jobs.pop(job.id, None)
        for job in old:
            shutil.rmtree(job.folder, ignore_errors=True)

    # --- stopping
    def begin_shutdown(self) -> None:
        """Refuse new requests and cancel the queued and running jobs of /v1/jobs (SIGTERM, Ctrl-C)."""
        with self._lock:
            self.closing = True
            jobs = [j for j in self.running if j.kind == "job"]
        for job in jobs:
            job.cancel()

    def close(self) -> None:
        """Stop: cancel whatever still runs, wait for the workers, remove every upload and result."""
        self.begin_shutdown()
        with self._lock:
            left = list(self.running)
        for job in left:
            job.cancel()
        self.pool.shutdown(wait=True, cancel_futures=False)
        shutil.rmtree(self.root, ignore_errors=True)

    def health(self) -> dict:
        with self._lock:
            running = sum(1 for j in self.running if j.status == "running")
            queued = len(self.running) - running
        return {"status": "stopping" if self.closing else "ok", "running": running, "queued": queued,
                "jobs_kept": len(self.jobs), "models_loaded": self.cache.loaded(),
                "uptime_s": round(time.time() - self.started, 1), "limits": self.settings.limits()}


def _remove_when_ended(job: Job) -> None:
    job.ended.wait()
    shutil.rmtree(job.folder, ignore_errors=True)
