"""The OpenAPI 3.1 description of the API (``GET /openapi.json``)."""

from __future__ import annotations

from .. import __version__

__all__ = ["schema"]

ERROR = {"description": "one-line error",
         "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
IMAGE = {"description": "the upscaled image (PNG, JPEG, WebP or TIFF, as asked)",
         "content": {f"image/{t}": {"schema": {"type": "string", "format": "binary"}}
                     for t in ("png", "jpeg", "webp", "tiff")}}
JOB = {"description": "a job", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Job"}}}}
JOB_ID = [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}]


def _form() -> dict:
    text = {"type": "string"}
    flag = {"type": "boolean", "default": False}
    props = {
        "image": {"type": "string", "format": "binary", "description": "the image file (one per request)"},
        "model": {**text, "description": "a model id of GET /v1/models (default: the server's default)"},
        "scale": {"type": "integer", "description": "upscaling factor (default: the model's first scale)"},
        "format": {"type": "string", "enum": ["png", "jpg", "webp", "tiff", "same"], "default": "png",
                   "description": "output format (alias: ext)"},
        "quality": {"type": "integer", "minimum": 1, "maximum": 100, "default": 95},
        "lossless": flag, "self_ensemble": flag, "chop": flag, "chop_round_to_scale": flag,
        "color": {"type": "string", "enum": ["keep", "srgb"], "default": "keep"},
        "alpha": {"type": "string", "enum": ["bicubic", "model"], "default": "bicubic"},
        "tile": {"type": "string", "description": "LR pixels, 'auto', or empty for the whole image"},
        "tile_overlap": {"type": "integer", "default": 32},
        "precision": {"type": "string", "enum": ["fp32", "bf16", "fp16"], "default": "fp32"},
        "chop_shave": {"type": "integer", "default": 10}, "chop_min_size": {"type": "integer", "default": 160000},
    }
    return {"required": True, "content": {"multipart/form-data": {"schema": {
        "type": "object", "required": ["image"], "properties": props}}}}


def _errors(*codes: int) -> dict:
    return {str(c): ERROR for c in codes}


def schema() -> dict:
    """The schema; every route of :func:`sisr.serve.app.create_app` under ``/v1`` is in it."""
    upload_errors = _errors(400, 401, 403, 413, 415, 422, 429, 503)
    paths = {
        "/v1/health": {"get": {"summary": "server state: queue, loaded models, limits",
                               "responses": {"200": {"description": "state"}, **_errors(401)}}},
        "/v1/models": {"get": {"summary": "the models offered, their scales; formats, limits",
                               "responses": {"200": {"description": "catalogue"}, **_errors(401)}}},
        "/v1/upscale": {"post": {"summary": "upscale one small image and answer with it", "requestBody": _form(),
                                 "responses": {"200": IMAGE, **upload_errors, **_errors(500)}}},
        "/v1/jobs": {"post": {"summary": "queue one image; follow it with /v1/jobs/{id}/events",
                              "requestBody": _form(), "responses": {"202": JOB, **upload_errors}}},
        "/v1/jobs/{id}": {
            "get": {"summary": "a job's state and progress", "parameters": JOB_ID,
                    "responses": {"200": JOB, **_errors(401, 404)}},
            "delete": {"summary": "cancel a job (if it has not ended) and delete it with its files",
                       "parameters": JOB_ID, "responses": {"200": {"description": "cancelled or deleted"},
                                                          **_errors(401, 403, 404)}}},
        "/v1/jobs/{id}/events": {"get": {
            "summary": "server-sent events: 'status' with the job's state on every change, until it ends",
            "parameters": JOB_ID, "responses": {"200": {"description": "event stream",
                                                        "content": {"text/event-stream": {}}}, **_errors(401, 404)}}},
        "/v1/jobs/{id}/result": {"get": {"summary": "a finished job's image", "parameters": JOB_ID,
                                         "responses": {"200": IMAGE, **_errors(401, 404, 409)}}},
        "/v1/archive": {"get": {"summary": "finished results as one zip",
                                "parameters": [{"name": "ids", "in": "query", "required": True,
                                                "schema": {"type": "string"},
                                                "description": "job ids, comma-separated"}],
                                "responses": {"200": {"description": "zip", "content": {"application/zip": {}}},
                                              **_errors(400, 401, 404, 409)}}},
    }
    job = {"type": "object", "properties": {
        "id": {"type": "string"},
        "status": {"type": "string", "enum": ["queued", "running", "done", "failed", "cancelled"]},
        "stage": {"type": "string"}, "progress": {"type": "number", "minimum": 0, "maximum": 1},
        "filename": {"type": "string"}, "error": {"type": ["string", "null"]}, "result": {"type": "string"},
        "download_name": {"type": "string"}, "options": {"type": "object"}, "notes": {"type": "array"}}}
    error = {"type": "object", "required": ["error", "status"],
             "properties": {"error": {"type": "string"}, "status": {"type": "integer"}}}
    return {"openapi": "3.1.0",
            "info": {"title": "sisr serve", "version": __version__,
                     "description": "Single-image super-resolution over HTTP (docs/serve.md)."},
            "paths": paths, "components": {"schemas": {"Job": job, "Error": error},
                                           "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
            "security": [{}, {"bearer": []}]}
