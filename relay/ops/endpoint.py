"""The operators' HTTP endpoint: ``/metrics`` for Prometheus and ``/healthz``.

Off unless ``metrics.listen`` is set.  It runs in its own threads
(``relay.core.httpserver`` serving prometheus-client's WSGI app), so a scrape, whose
queue gauges and health checks block on the database and the smarthost, never
touches the event loop that serves SMTP.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from typing import Any

from prometheus_client import make_wsgi_app
from prometheus_client.registry import CollectorRegistry

from relay.core.config import RelayConfig
from relay.core.httpserver import StartResponse, WsgiServer
from relay.core.metrics import QueueCollector
from relay.ops.health import check, queue_stats
from relay.storage.db import Database

log = logging.getLogger("relay.endpoint")


class Endpoint:
    """Serves ``registry`` at /metrics and the health checks at /healthz."""

    def __init__(self, config: RelayConfig, db: Database, registry: CollectorRegistry) -> None:
        assert config.metrics.address is not None
        self.config = config
        self.db = db
        self.registry = registry
        self._queue = QueueCollector(lambda: queue_stats(db))
        self._metrics_app = make_wsgi_app(registry)
        address = config.metrics.address
        self._server = WsgiServer(address[0], address[1], self._app, name="metrics endpoint")
        self._registered = False

    @property
    def port(self) -> int:
        return self._server.port

    def start(self) -> None:
        """Bind and serve in a thread; raises OSError if the address is taken."""
        self._server.start()
        self.registry.register(self._queue)
        self._registered = True
        log.info(
            "metrics and health on http://%s:%d/metrics and /healthz", self._server.host, self.port
        )

    def stop(self) -> None:
        if self._registered:
            self.registry.unregister(self._queue)
            self._registered = False
        self._server.stop()

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
