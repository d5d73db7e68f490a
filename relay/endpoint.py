"""The operators' HTTP endpoint: ``/metrics`` for Prometheus and ``/healthz``.

Off unless ``metrics.listen`` is set.  It runs in its own threads (a threading
WSGI server from the standard library serving prometheus-client's WSGI app), so
a scrape, whose queue gauges and health checks block on the database and the
smarthost, never touches the event loop that serves SMTP.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.registry import CollectorRegistry

from relay.config import RelayConfig
from relay.db import Database
from relay.health import check, queue_stats
from relay.metrics import QueueCollector

log = logging.getLogger("relay.endpoint")

StartResponse = Callable[..., Any]


class _IPv6Server(ThreadingWSGIServer):
    """For ``metrics.listen: "[::1]:9125"`` (the standard server is IPv4 only)."""

    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    """No access log line per scrape on stderr."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


class Endpoint:
    """Serves ``registry`` at /metrics and the health checks at /healthz."""

    def __init__(self, config: RelayConfig, db: Database, registry: CollectorRegistry) -> None:
        assert config.metrics.address is not None
        self.config = config
        self.db = db
        self.registry = registry
        self._queue = QueueCollector(lambda: queue_stats(db))
        self._metrics_app = make_wsgi_app(registry)
        self._server: ThreadingWSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.server_address[1])

    def start(self) -> None:
        """Bind and serve in a thread; raises OSError if the address is taken."""
        address = self.config.metrics.address
        assert address is not None
        host, port = address
        try:
            self._server = make_server(
                host,
                port,
                self._app,
                server_class=_IPv6Server if ":" in host else ThreadingWSGIServer,
                handler_class=_QuietHandler,
            )
        except OSError as exc:
            raise OSError(
                f"metrics endpoint cannot listen on {host}:{port}: {exc.strerror}"
            ) from None
        self.registry.register(self._queue)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="relay-metrics", daemon=True
        )
        self._thread.start()
        log.info("metrics and health on http://%s:%d/metrics and /healthz", host, self.port)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self.registry.unregister(self._queue)
            self._server = None
        if self._thread is not None:
            self._thread.join(5)

    def _app(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        if path == "/healthz":
            health = check(self.config, self.db)
            body = json.dumps(health.as_dict(), indent=1).encode() + b"\n"
            status = "200 OK" if health.ok else "503 Service Unavailable"
            start_response(status, [("Content-Type", "application/json")])
            return [body]
        if path in ("/metrics", "/"):
            result: Iterable[bytes] = self._metrics_app(environ, start_response)
            return result
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found: try /metrics or /healthz\n"]
