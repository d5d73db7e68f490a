"""A real local HTTP server that takes webhook deliveries, as a marketplace's would.

It answers 200, 500 or not at all (``mode``), keeps every request it got (in
order, with its headers and raw body) and checks nothing: tests check the
signatures themselves, as a receiver must.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Delivery:
    headers: dict[str, str]
    body: bytes
    path: str

    @property
    def event(self) -> dict[str, Any]:
        document: dict[str, Any] = json.loads(self.body)
        return document


class Receiver:
    def __init__(self, port: int = 0) -> None:
        self.mode = "ok"
        """``ok`` (200), ``fail`` (500) or ``hang`` (no answer until released)."""
        self.requests: list[Delivery] = []
        self.answered: list[Delivery] = []
        """The requests answered 2xx: the events the marketplace has taken."""
        self._lock = threading.Lock()
        self._release = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                got = Delivery(
                    {k.lower(): v for k, v in self.headers.items()},
                    self.rfile.read(length),
                    self.path,
                )
                with receiver._lock:
                    receiver.requests.append(got)
                    mode = receiver.mode
                if mode == "hang":
                    receiver._release.wait(30)
                    return
                status = 200 if mode == "ok" else 500
                if status == 200:
                    with receiver._lock:
                        receiver.answered.append(got)
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def events(self) -> list[dict[str, Any]]:
        """The events taken (2xx), in order."""
        with self._lock:
            return [d.event for d in self.answered]

    def ids(self) -> set[str]:
        return {e["id"] for e in self.events()}

    async def wait_for(self, count: int, *, timeout: float = 20) -> list[dict[str, Any]]:
        """Wait until ``count`` distinct events were taken; their first deliveries."""
        deadline = time.monotonic() + timeout
        while len(self.ids()) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(self.ids())} of {count} events: {self.events()}")
            await asyncio.sleep(0.05)
        seen: dict[str, dict[str, Any]] = {}
        for event in self.events():
            seen.setdefault(event["id"], event)
        return list(seen.values())

    async def wait_for_requests(self, count: int, *, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while len(self.requests) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(self.requests)} of {count} requests")
            await asyncio.sleep(0.05)

    def close(self) -> None:
        self._release.set()
        self.server.shutdown()
        self.server.server_close()
