"""A small threading HTTP server for the relay's WSGI apps (metrics, unsubscribe).

Each runs in its own threads (the standard library's WSGI server with
prometheus-client's threading mix-in), so a request, which may wait on the
database, never touches the event loop that serves SMTP.  IPv6 addresses
(``[::1]:9125``) bind too: the standard server is IPv4 only.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client.exposition import ThreadingWSGIServer

StartResponse = Callable[..., Any]
POLL_INTERVAL = 0.05
"""Seconds between the serving thread's checks for ``stop``."""
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class _IPv6Server(ThreadingWSGIServer):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    """No access log line per request on stderr."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


class WsgiServer:
    def __init__(self, host: str, port: int, app: WsgiApp, *, name: str) -> None:
        self.host = host
        self._port = port
        self.app = app
        self.name = name
        self._server: ThreadingWSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port (the real one when asked for port 0)."""
        return int(self._server.server_address[1]) if self._server is not None else self._port

    def start(self) -> None:
        """Bind and serve in a thread; raises OSError naming the address if it cannot."""
        try:
            self._server = make_server(
                self.host,
                self._port,
                self.app,
                server_class=_IPv6Server if ":" in self.host else ThreadingWSGIServer,
                handler_class=_QuietHandler,
            )
        except OSError as exc:
            raise OSError(
                f"{self.name} cannot listen on {self.host}:{self._port}: {exc.strerror}"
            ) from None
        server = self._server
        self._thread = threading.Thread(
            # ``shutdown`` waits for the loop to look up: at the default 0.5 s
            # every relay stop would take half a second.
            target=lambda: server.serve_forever(poll_interval=POLL_INTERVAL),
            name=self.name,
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
