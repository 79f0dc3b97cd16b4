"""Fixtures of the sisr serve tests (helpers in serve/helpers.py)."""

from __future__ import annotations

import importlib.util
import os
import signal

import pytest

from serve.helpers import LiveServer, fault_cases, png_bytes, reference_upscale

MISSING = [m for m in ("starlette", "uvicorn", "python_multipart", "httpx2") if importlib.util.find_spec(m) is None]
if MISSING and os.environ.get("CI") != "true":  # under CI=true the tests run, and fail: .ci/run installs them
    collect_ignore_glob = ["test_*.py"]


@pytest.fixture()
def make_client():
    """``make_client(**settings)``: a TestClient of an app with those settings (default models: defian-s, bicubic)."""
    from starlette.testclient import TestClient

    from sisr.serve.app import create_app
    from sisr.serve.settings import ServeSettings

    clients = []

    def make(base_url: str = "http://127.0.0.1", **settings):
        settings.setdefault("models", ("defian-s", "bicubic"))
        client = TestClient(create_app(ServeSettings(**settings)), base_url=base_url)
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture()
def client(make_client):
    return make_client()


@pytest.fixture()
def live_server():
    servers = []

    def start(*args: str, env: dict | None = None) -> LiveServer:
        server = LiveServer(*args, env=env)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop(signal.SIGKILL if server.proc.poll() is None else signal.SIGTERM, timeout=10)


@pytest.fixture()
def png():
    return png_bytes


@pytest.fixture()
def reference(tmp_path):
    return lambda name, data, *args: reference_upscale(tmp_path, name, data, *args)


@pytest.fixture()
def faults():
    return fault_cases()
