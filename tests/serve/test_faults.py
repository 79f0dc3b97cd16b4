"""Bad uploads get a 4xx with one line, and the server goes on serving (in process; the live server test
sends the same files over a socket)."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("route", ["/v1/upscale", "/v1/jobs"])
def test_bad_uploads_are_4xx_and_the_server_goes_on(make_client, png, faults, route):
    client = make_client(max_upload_mb=2, max_pixels=2048 * 2048)
    for what, (data, name, status) in faults.items():
        response = client.post(route, files={"image": (name, data, "application/octet-stream")})
        assert response.status_code == status, (what, response.text)
        message = response.json()["error"]
        assert "\n" not in message and (name in message or what == "oversized"), (what, message)
        assert str(client.app.state.service.root) not in message
    assert client.get("/v1/health").json()["status"] == "ok"
    assert client.post("/v1/upscale", files={"image": ("ok.png", png(), "image/png")}).status_code == 200
    service = client.app.state.service
    assert service.admitted == 0 and list(service.root.iterdir()) == []

