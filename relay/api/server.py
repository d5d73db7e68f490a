"""Serving the API: uvicorn, in a thread of its own with its own event loop.

``relay serve`` starts one beside SMTP (under ``--workers N`` the supervisor
does, once), and ``relay api`` runs one alone for operators who scale the API
apart from the mail.  In its own thread the API's requests never wait for, or
delay, the SMTP event loop; its routes' database work runs in the framework's
thread pool.

The loop is uvloop's when it is installed (``relay.core.loops``) (``pip install
'marketplace-relay[fast]'``): the route's coroutine is woken by the database
writer thread for every request, and uvloop's cross-thread wake-up and its
transports nearly doubled the orders per second (docs/performance.md, "The
HTTP API").  Requests are parsed by h11 whatever is installed: uvicorn would
pick httptools if present, which has no limit on the size of a request's head.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable

import uvicorn
from fastapi import FastAPI

from relay.api.app import create_app
from relay.core import loops
from relay.core.config import RelayConfig
from relay.storage.db import Database

log = logging.getLogger("relay.api")


class ApiServer:
    def __init__(
        self,
        config: RelayConfig,
        db: Database,
        host: str,
        port: int,
        *,
        extend: Callable[[FastAPI], None] | None = None,
        fast_loop: bool = True,
    ) -> None:
        """``extend`` adds to the application what lives above the API (the web
        console, ``relay.console.install``), which this package must not import;
        ``fast_loop=False`` keeps uvloop out of a process that will fork
        (``relay.core.loops``)."""
        self.fast_loop = fast_loop
        app = create_app(config, db)
        if extend is not None:
            extend(app)
        self.db = db
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.create_server((host, port), family=family)
        """Bound at once, so that a taken port is an error of ``start``'s caller."""
        self.host, self.port = self.sock.getsockname()[:2]
        self.server = uvicorn.Server(
            uvicorn.Config(
                app,
                log_config=None,
                access_log=False,
                http="h11",  # its incomplete-event limit bounds a request's head
                lifespan="off",
                timeout_keep_alive=5,
                limit_concurrency=200,
                h11_max_incomplete_event_size=16 * 1024,
            )
        )
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="relay-api", daemon=True)
        self._thread.start()
        log.info("HTTP API on %s/api/v1/", self.base_url)

    def _run(self) -> None:
        loops.run(self.server.serve(sockets=[self.sock]), fast=self.fast_loop)

    def stop(self, timeout: float = 10.0) -> None:
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
        self.sock.close()
