"""``sisr serve`` as a process on a loopback port: a bounded load test (outputs equal to ``sisr upscale``'s,
memory after within a bound of memory before), bad uploads over the socket, and a clean stop on SIGTERM.

The server runs with this process's torch thread count: the references are made here, and float rounding (so
an output's last bit, now and then) depends on the number of threads."""

from __future__ import annotations

import json
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from serve.helpers import http, post_image

pytestmark = [pytest.mark.subprocess, pytest.mark.slow]

REQUESTS, CLIENTS = 200, 16
MEMORY_BOUND_MIB = 64  # RSS after the load may exceed RSS after the warm-up by at most this


def test_load_200_requests_from_16_clients(live_server, png, reference, faults):
    server = live_server("--model", "defian-s", "--model", "bicubic", "--max-upload-mb", "2",
                         "--max-pixels", str(2048 * 2048), "--threads", str(torch.get_num_threads()))
    cases = [(png(32, 32, seed=s), {}, []) for s in range(3)]
    cases += [(png(24, 40, seed=7), {"model": "bicubic", "scale": 3, "format": "jpg"},
               ["--model", "bicubic", "--scale", "3", "--ext", "jpg"])]
    expected = [reference("photo.png", data, *args) for data, _, args in cases]

    def one(i: int) -> bool:
        data, fields, _ = cases[i % len(cases)]
        status, _, body = post_image(server.url + "v1/upscale", data, **fields)
        return status == 200 and body == expected[i % len(cases)]

    with ThreadPoolExecutor(CLIENTS) as pool:
        assert all(pool.map(one, range(2 * CLIENTS)))  # warm-up: every case, the queue full at once
        before = server.rss_kib()
        started = time.perf_counter()
        results = list(pool.map(one, range(REQUESTS)))
        elapsed = time.perf_counter() - started
    after = server.rss_kib()
    assert sum(results) == REQUESTS, f"{REQUESTS - sum(results)} requests failed or differed from sisr upscale"
    growth_mib = (after - before) / 1024
    print(f"\n{REQUESTS} requests, {CLIENTS} clients: {elapsed:.1f} s; RSS {before / 1024:.0f} -> "
          f"{after / 1024:.0f} MiB ({growth_mib:+.1f})")
    assert growth_mib < MEMORY_BOUND_MIB
    for what, (data, name, status) in faults.items():  # bad uploads over the socket: 4xx, the server goes on
        code, _, body = post_image(server.url + "v1/upscale", data, name)
        assert code == status, (what, body[:200])
        assert "\n" not in json.loads(body)["error"]
    assert post_image(server.url + "v1/upscale", cases[0][0])[2] == expected[0]
    code, _, body = http("GET", server.url + "v1/health")
    assert code == 200 and json.loads(body)["running"] == 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_cancels_jobs_and_finishes_requests(live_server, png, reference, tmp_path, sig):
    private = tmp_path / "tmp"
    private.mkdir()
    server = live_server("--model", "defian-s", "--threads", str(torch.get_num_threads()),
                         env={"TMPDIR": str(private)})
    code, _, body = post_image(server.url + "v1/jobs", png(128, 128, seed=2), self_ensemble="true", tile=24,
                               tile_overlap=4)
    assert code == 202
    job_id = json.loads(body)["id"]
    events: list[dict] = []

    def follow() -> None:
        import urllib.request

        with urllib.request.urlopen(server.url + f"v1/jobs/{job_id}/events", timeout=120) as stream:
            for line in stream:
                if line.startswith(b"data:"):
                    events.append(json.loads(line[5:]))

    watcher = threading.Thread(target=follow)
    watcher.start()
    small = png(40, 40, seed=4)
    answer: list = []
    request = threading.Thread(target=lambda: answer.append(post_image(server.url + "v1/upscale", small)))
    request.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        health = json.loads(http("GET", server.url + "v1/health")[2])
        if health["running"] + health["queued"] == 2 and events and events[-1]["stage"] == "upscaling":
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"the job and the request were not both in the queue: {health}")
    status, output = server.stop(sig)
    request.join(30)
    watcher.join(30)
    assert status == 0, output
    assert f"sisr serve: stopped ({sig.name})" in output
    assert events[-1]["status"] == "cancelled"  # the job stopped inside the network
    assert answer and answer[0][0] == 200 and answer[0][2] == reference("photo.png", small)  # the request finished
    assert list(private.iterdir()) == []  # uploads and results removed


def test_a_refused_upload_still_reads_its_answer(live_server):
    """An upload over --max-upload-mb is answered 413 while the client is still sending: the server reads and
    drops the rest of the body (bounded), so the client gets the answer, not a connection reset."""
    server = live_server("--model", "bicubic", "--max-upload-mb", "1")
    for size_mib in (2, 8, 8, 8, 32):
        code, _, body = post_image(server.url + "v1/upscale", b"\0" * (size_mib * 2**20), "big.png")
        assert code == 413, (size_mib, body[:200])
        assert "upload too large" in json.loads(body)["error"]
    code, _, _ = http("GET", server.url + "v1/health")
    assert code == 200
