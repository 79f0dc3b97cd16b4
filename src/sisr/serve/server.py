"""Run the application on uvicorn: bind the socket here (so the URL printed is the one listening, port 0
included), announce it once the default model is loaded, and stop cleanly on SIGTERM or Ctrl-C: new requests
are refused, the jobs of /v1/jobs are cancelled (at the network's next layer), open requests get ``grace_s``
seconds to finish, then every upload and result is removed."""

from __future__ import annotations

import socket
import sys
from typing import Callable

from ..errors import ConfigError
from .settings import ServeSettings

__all__ = ["serve", "bind", "url_of"]


def bind(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` (not yet listening); ``ConfigError`` when that is not possible."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
    except (OSError, IndexError) as exc:
        raise ConfigError(f"--host {host}: cannot listen there ({exc})") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"--host {host} --port {port}: cannot listen there ({exc.strerror or exc})") from None
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def serve(settings: ServeSettings, *, open_browser: bool = False, log_level: str = "warning",
          announce: Callable[[str], None] | None = None) -> int:
    """Serve until stopped; 0 after a clean stop, 1 if the server could not start."""
    import uvicorn

    from .app import create_app

    announce = announce or (lambda line: print(line, flush=True))
    app = create_app(settings)  # the models offered are checked (and files loaded) before the port is taken
    sock = bind(settings.host, settings.port)
    url = url_of(sock)

    def ready() -> None:
        shown = f"{url}#token={settings.token}" if settings.token else url
        announce(f"sisr serve: {shown} (models: {', '.join(app.state.service.catalogue.offers)}; Ctrl-C stops)")
        if open_browser:
            import webbrowser

            webbrowser.open(shown)

    config = uvicorn.Config(app, log_level=log_level, access_log=log_level in ("debug", "info", "trace"),
                            timeout_graceful_shutdown=max(1, int(settings.grace_s)), lifespan="on")
    server = _Server(config, app.state.service, ready)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    if not server.started:
        print("sisr serve: error: the server did not start (see above)", file=sys.stderr)
        return 1
    announce(f"sisr serve: stopped{' (' + server.stopped_by + ')' if server.stopped_by else ''}")
    return 0


def _server_class():
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn's server, telling the service when a signal asks it to stop."""

        def __init__(self, config, service, ready: Callable[[], None]):
            super().__init__(config)
            self.service, self.ready, self.stopped_by = service, ready, ""

        async def startup(self, sockets=None) -> None:
            await super().startup(sockets)
            if self.started and not self.should_exit:
                self.ready()

        def handle_exit(self, sig, frame) -> None:
            import signal

            self.stopped_by = signal.Signals(sig).name
            self.service.begin_shutdown()
            super().handle_exit(sig, frame)
            captured = getattr(self, "_captured_signals", None)
            if isinstance(captured, list):
                captured.clear()  # a clean stop is a normal exit, not death by the signal

    return Server


def _Server(config, service, ready):  # noqa: N802 - builds the subclass only once uvicorn is imported
    return _server_class()(config, service, ready)
