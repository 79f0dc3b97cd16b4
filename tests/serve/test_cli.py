"""`sisr serve` on the command line: the missing extra, unsafe hosts and a taken port are one line each."""

from __future__ import annotations

import socket
import sys

from sisr.cli import main


def test_without_the_extra_it_says_how_to_install_it(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "starlette", None)  # as if not installed
    assert main(["serve"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == "sisr serve: error: starlette is not installed; install the server with: pip install 'sisr[serve]'"


def test_a_non_loopback_host_needs_a_token(capsys):
    assert main(["serve", "--host", "0.0.0.0"]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--token TOKEN" in err and "--insecure" in err


def test_a_taken_port_is_one_line(capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", "--model", "bicubic", "--port", str(port)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"sisr serve: error: --host 127.0.0.1 --port {port}: cannot listen there") and "\n" not in err
