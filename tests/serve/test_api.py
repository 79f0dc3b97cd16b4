"""The HTTP API in process (Starlette's TestClient): routes, options, outputs equal to `sisr upscale`'s, jobs,
progress, cancel, limits and the safety rules."""

from __future__ import annotations

import io
import json
import os
import stat
import time
import zipfile

import pytest

from sisr.errors import ConfigError


def upload(client, path, data, name="photo.png", **fields):
    return client.post(path, files={"image": (name, data, "image/png")}, data={k: str(v) for k, v in fields.items()})


def events(client, job_id):
    with client.stream("GET", f"/v1/jobs/{job_id}/events") as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        return [json.loads(line[5:]) for line in stream.iter_lines() if line.startswith("data:")]


def test_health_models_and_schema(client):
    health = client.get("/v1/health").json()
    assert health["status"] == "ok" and health["models_loaded"] == ["defian-s x2"]  # the default, preloaded
    models = client.get("/v1/models").json()
    assert models["default"] == "defian-s"
    assert {m["id"]: m["scales"] for m in models["models"]} == {"defian-s": [2, 3, 4], "bicubic": [2, 3, 4, 8]}
    schema = client.get("/openapi.json").json()
    routes = {r.path for r in client.app.routes if r.path.startswith("/v1/")}
    assert routes == set(schema["paths"])
    page = client.get("/")
    assert page.status_code == 200 and "/static/app.js" in page.text
    assert client.get("/static/app.js").status_code == 200


@pytest.mark.parametrize("name, fields, args", [
    ("photo.png", {}, []),
    ("photo.png", {"model": "bicubic", "scale": 3, "format": "jpg", "quality": 80},
     ["--model", "bicubic", "--scale", "3", "--ext", "jpg", "--quality", "80"]),
    ("photo.png", {"format": "webp", "tile": 16, "tile-overlap": 4},
     ["--ext", "webp", "--tile", "16", "--tile-overlap", "4"]),
])
def test_outputs_equal_sisr_upscale(client, png, reference, name, fields, args):
    data = png(20, 28, seed=3)
    response = upload(client, "/v1/upscale", data, name, **fields)
    assert response.status_code == 200, response.text
    assert response.content == reference(name, data, *args)  # pixels, metadata and provenance record
    ext = {"jpg": ".jpg", "webp": ".webp"}.get(fields.get("format"), ".png")
    assert f'filename="photo_x{fields.get("scale", 2)}{ext}"' in response.headers["content-disposition"]


def test_alpha_and_gray_images_equal_sisr_upscale(client, png, reference):
    for mode in ("RGBA", "L"):
        data = png(12, 10, seed=5, mode=mode)
        response = upload(client, "/v1/upscale", data, f"{mode}.png", model="bicubic")
        assert response.status_code == 200
        assert response.content == reference(f"{mode}.png", data, "--model", "bicubic")


def test_a_job_reports_progress_and_its_result(client, png, reference, monkeypatch):
    monkeypatch.setattr("sisr.serve.app.SSE_POLL_S", 0.002)  # see (nearly) every change of a short job
    data = png(32, 32, seed=1)
    created = upload(client, "/v1/jobs", data, self_ensemble="true")
    assert created.status_code == 202 and created.headers["location"] == f"/v1/jobs/{created.json()['id']}"
    job_id = created.json()["id"]
    seen = events(client, job_id)
    assert seen[-1]["status"] == "done" and seen[-1]["progress"] == 1.0
    progress = [e["progress"] for e in seen]
    assert progress == sorted(progress) and len({p for p in progress if 0.05 < p < 1}) >= 3  # steps in between
    result = client.get(f"/v1/jobs/{job_id}/result")
    assert result.content == reference("photo.png", data, "--self-ensemble")
    service = client.app.state.service
    job = service.jobs[job_id]
    assert not job.upload.path.exists() and job.result.exists()  # the upload went when the job ended
    archive = client.get(f"/v1/archive?ids={job_id},{job_id}")
    assert zipfile.ZipFile(io.BytesIO(archive.content)).read("photo_x2.png") == result.content
    assert client.delete(f"/v1/jobs/{job_id}").json() == {"id": job_id, "status": "deleted"}
    assert not job.folder.exists()
    assert client.get(f"/v1/jobs/{job_id}").status_code == 404
    assert list(service.root.iterdir()) == []


def test_cancel_stops_a_running_job(client, png, monkeypatch):
    import threading

    from sisr.serve.jobs import Job

    gate, step = threading.Event(), Job.network_step

    def held_step(self):  # the network waits inside its first layers until the test has asked to cancel
        step(self)
        gate.wait(30)

    monkeypatch.setattr(Job, "network_step", held_step)
    job_id = upload(client, "/v1/jobs", png(96, 96), self_ensemble="true", tile=16, tile_overlap=4).json()["id"]
    service = client.app.state.service
    job = service.jobs[job_id]
    deadline = time.monotonic() + 60
    while job.stage != "upscaling" and time.monotonic() < deadline:
        time.sleep(0.01)
    calls = job.calls_expected
    assert client.get(f"/v1/jobs/{job_id}/result").status_code == 409
    assert client.delete(f"/v1/jobs/{job_id}").json()["status"] == "cancelled"
    gate.set()
    assert job.ended.wait(30) and job.status == "cancelled"
    assert job._calls < calls  # stopped inside the network, not after it
    deadline = time.monotonic() + 10
    while job.folder.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not job.folder.exists() and service.admitted == 0


def test_sync_requests_leave_nothing_behind(client, png):
    service = client.app.state.service
    assert stat.S_IMODE(os.stat(service.root).st_mode) == 0o700  # private to this user
    for _ in range(2):
        assert upload(client, "/v1/upscale", png()).status_code == 200
    assert upload(client, "/v1/upscale", b"not an image").status_code == 415
    assert list(service.root.iterdir()) == [] and service.admitted == 0


@pytest.mark.parametrize("fields, status, words", [
    ({"weights": "/etc/passwd"}, 400, "unknown form field 'weights'"),
    ({"model": "/tmp/x.safetensors"}, 400, "is not offered here"),
    ({"model": "rcan"}, 400, "is not offered here"),
    ({"scale": 5}, 400, "not x5"),
    ({"scale": "two"}, 400, "scale: expected a whole number"),
    ({"format": "gif"}, 400, "format: 'gif'"),
    ({"quality": 0}, 400, "--quality must be 1..100"),
    ({"tile": 8, "tile_overlap": 32}, 400, "--tile 8 must be at least twice"),
    ({"precision": "fp16"}, 400, "fp16 is not supported on the CPU"),
    ({"self_ensemble": "maybe"}, 400, "self_ensemble: expected true or false"),
])
def test_bad_options_are_one_line_400(client, png, fields, status, words):
    response = upload(client, "/v1/upscale", png(), **fields)
    assert response.status_code == status
    body = response.json()
    assert words in body["error"] and "\n" not in body["error"] and body["status"] == status


def test_clients_name_no_server_paths(client, png):
    response = upload(client, "/v1/upscale", png(), name="../../etc/evil name.png")
    assert response.status_code == 200
    assert "filename*=utf-8''evil%20name_x2.png" in response.headers["content-disposition"]
    bad = upload(client, "/v1/upscale", b"\x89PNG\r\n\x1a\n" + b"\0" * 40, name="../x.png")
    assert bad.status_code in (415, 422) and "/" not in bad.json()["error"].split(":")[0]
    assert str(client.app.state.service.root) not in bad.text


def test_request_shape_errors(client, png):
    assert client.post("/v1/upscale", content=b"{}", headers={"content-type": "application/json"}).status_code == 415
    assert client.post("/v1/upscale", data={"model": "bicubic"},
                       files={"other": ("a.png", png(), "image/png")}).status_code == 400
    assert client.post("/v1/upscale", files={"model": (None, "bicubic")}).json()["error"].startswith("no image")
    assert client.get("/v1/jobs/nope").status_code == 404
    assert client.get("/v1/upscale").status_code == 405
    assert client.get("/v1/archive").status_code == 400


def test_queue_full_is_429(make_client, png):
    client = make_client(concurrency=1, queue=0)
    service = client.app.state.service
    folder = service.admit()  # the only place is taken
    try:
        response = upload(client, "/v1/upscale", png())
        assert response.status_code == 429 and response.headers["retry-after"] == "1"
        assert "busy" in response.json()["error"]
    finally:
        service.release(folder)
    assert upload(client, "/v1/upscale", png()).status_code == 200


def test_size_and_pixel_limits_are_413(make_client, png):
    client = make_client(max_upload_mb=0.01, max_pixels=40 * 40, sync_max_pixels=30 * 30)
    big = png(100, 100)  # about 30 kB: over 10 KiB, under the length slack: refused while streaming
    assert len(big) > 0.01 * 2**20
    response = upload(client, "/v1/upscale", big)
    assert response.status_code == 413 and "upload too large" in response.json()["error"]
    huge = b"x" * (200 * 1024)  # refused from its Content-Length, before reading
    assert upload(client, "/v1/upscale", huge).status_code == 413
    assert "takes at most 1,600" in upload(client, "/v1/upscale", png(41, 40)).json()["error"]
    sync = upload(client, "/v1/upscale", png(31, 30))
    assert sync.status_code == 413 and "use POST /v1/jobs" in sync.json()["error"]
    assert upload(client, "/v1/jobs", png(31, 30)).status_code == 202
    assert client.app.state.service.admitted <= 1


def test_token_host_and_origin_rules(make_client, png):
    token = "s3cret-token-0123456789"
    client = make_client(token=token)
    assert client.get("/v1/health").status_code == 401
    assert client.get("/v1/health", headers={"Authorization": "Bearer wrong-token-0123456789"}).status_code == 401
    auth = {"Authorization": f"Bearer {token}"}
    assert client.get("/v1/health", headers=auth).status_code == 200
    assert client.get("/").status_code == 200  # the page itself holds no secret
    other = make_client(base_url="http://evil.example")
    assert other.get("/v1/health").status_code == 421  # DNS rebinding: a loopback server answers localhost only
    cross = client.post("/v1/upscale", headers={**auth, "Origin": "http://evil.example"},
                        files={"image": ("a.png", png(), "image/png")})
    assert cross.status_code == 403
    same = client.post("/v1/upscale", headers={**auth, "Origin": "http://127.0.0.1"},
                       files={"image": ("a.png", png(), "image/png")})
    assert same.status_code == 200
    assert "access-control-allow-origin" not in client.options("/v1/upscale", headers={
        "Origin": "http://app.example", "Access-Control-Request-Method": "POST"}).headers
    cors = make_client(cors_origins=("http://app.example",))
    preflight = cors.options("/v1/upscale", headers={"Origin": "http://app.example",
                                                     "Access-Control-Request-Method": "POST"})
    assert preflight.headers["access-control-allow-origin"] == "http://app.example"


def test_settings_are_safe_by_default():
    from sisr.serve.settings import ServeSettings

    assert ServeSettings().host == "127.0.0.1"
    with pytest.raises(ConfigError, match="--token TOKEN.*--insecure"):
        ServeSettings(host="0.0.0.0")
    assert ServeSettings(host="0.0.0.0", insecure=True).insecure
    assert ServeSettings(host="0.0.0.0", token="t" * 16).token
    with pytest.raises(ConfigError, match="at least 16"):
        ServeSettings(token="short")
    with pytest.raises(ConfigError, match="--queue"):
        ServeSettings(queue=-1)
    assert ServeSettings(host="::1").loopback and ServeSettings(host="localhost").loopback


def test_model_cache_is_a_small_lru():
    from sisr.serve.models import Catalogue, ModelCache

    catalogue = Catalogue.build(("bicubic", "defian-s"))
    cache = ModelCache("cpu", capacity=2)
    first = cache.get(*catalogue.choose("bicubic", 2))
    assert cache.get(*catalogue.choose("bicubic", 2)) is first
    cache.get(*catalogue.choose("defian-s", 2))
    cache.get(*catalogue.choose("bicubic", 3))
    assert cache.loaded() == ["defian-s x2", "bicubic x3"]
    with pytest.raises(ConfigError, match="no shipped weights"):
        Catalogue.build(("rcan",))
