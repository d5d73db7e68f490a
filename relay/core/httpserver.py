"""The relay's HTTP server for its WSGI apps (/metrics and /healthz, unsubscribe).

The unsubscribe endpoint must be reachable by every mail client, so every
client is a possible attacker: one that opens hundreds of connections and sends
half a request, or drips a byte a second, must not cost a thread or unbounded
memory each, nor slow down SMTP.  So a listener is:

- one thread with an asyncio event loop of its own (never the loop that serves
  SMTP) that accepts connections and reads and parses requests with ``h11``,
  holding no thread per connection;
- at most ``HttpLimits.max_connections`` open connections; one more is answered
  503 at once and closed;
- deadlines: the request head must be complete ``head_timeout`` seconds after
  the connection opened, the body ``body_timeout`` seconds after the head,
  however the bytes trickle in (408, closed);
- size limits: a head over ``max_head_bytes`` is 431, a body over
  ``max_body_bytes`` 413 (before it is read, when ``Content-Length`` says so);
  a request h11 cannot parse is 400;
- only a complete request reaches the app, in a small pool of
  ``HttpLimits.workers`` threads (a request may wait on the database); when
  ``max_waiting`` requests already wait for one, 503.

One request per connection (``Connection: close``), and no ``Server`` header:
nothing tells a client which software or version answers.  SECURITY.md
("The HTTP endpoints") lists the limits.  IPv6 addresses (``[::1]:9125``)
bind too.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import socket
import sys
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import h11

log = logging.getLogger("relay.http")

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

READ_SIZE = 4096
"""Bytes read from a connection at a time."""
LINGER_SECONDS = 1.0
"""After an answer, how long the client may take to close its side; what it
still sends meanwhile is read and dropped, so that closing does not reset the
connection before the client has read the answer."""
LINGER_BYTES = 65536
BACKLOG = 1024


@dataclass(frozen=True)
class HttpLimits:
    """What one listener allows (SECURITY.md, "The HTTP endpoints")."""

    max_connections: int = 256
    """Open connections; one more gets 503 at once.  Well below the usual 1024
    open files of a process, so that SMTP still has descriptors to accept with."""
    head_timeout: float = 10.0
    """Seconds from the connection's opening to the end of the request head."""
    body_timeout: float = 10.0
    """Seconds from the end of the head to the end of the body."""
    write_timeout: float = 10.0
    """Seconds the client may take to read the answer."""
    max_head_bytes: int = 8192
    """Request line and headers."""
    max_body_bytes: int = 16384
    """Request body (an RFC 8058 one-click POST is 26 bytes)."""
    workers: int = 4
    """Threads that run the app."""
    max_waiting: int = 64
    """Complete requests waiting for a worker thread; one more gets 503."""


DEFAULT_LIMITS = HttpLimits()


class _Reject(Exception):
    """The request gets a short plain-text error answer, then the connection closes."""

    def __init__(self, status: int, reason: str, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.reason = reason
        self.text = text


class _Gone(Exception):
    """The client closed its side before its request was complete."""


def plain_answer(status: int, reason: str, text: str) -> bytes:
    """A whole HTTP/1.1 answer with a short text body, written without h11 (whose
    state may not allow an answer to a request that never was complete)."""
    body = f"{text}\n".encode()
    return (
        f"HTTP/1.1 {status} {reason}\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n"
        "Cache-Control: no-store\r\n\r\n"
    ).encode() + body


BUSY = plain_answer(503, "Service Unavailable", "busy: try again later")
_HOP_BY_HOP = {b"connection", b"content-length", b"transfer-encoding", b"keep-alive", b"server"}


class WsgiServer:
    """Serves ``app`` on ``host:port`` in a thread of its own (see the module's doc)."""

    def __init__(
        self,
        host: str,
        port: int,
        app: WsgiApp,
        *,
        name: str,
        limits: HttpLimits = DEFAULT_LIMITS,
    ) -> None:
        self.host = host
        self._port = port
        self.app = app
        self.name = name
        self.limits = limits
        self.connections = 0
        """Connections open now (those being refused with 503 not counted)."""
        self._refusing = 0
        self._waiting = 0
        self._full_logged = False
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def waiting(self) -> int:
        """Complete requests in the app or waiting for a worker thread."""
        return self._waiting

    @property
    def refusing(self) -> int:
        """Connections over the cap being answered 503 (at most a quarter of the cap)."""
        return self._refusing

    @property
    def port(self) -> int:
        """The bound port (the real one when asked for port 0)."""
        return int(self._sock.getsockname()[1]) if self._sock is not None else self._port

    def start(self) -> None:
        """Bind and serve in a thread; raises OSError naming the address if it cannot."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        try:
            sock = socket.create_server((self.host, self._port), family=family, backlog=BACKLOG)
        except OSError as exc:
            raise OSError(
                f"{self.name} cannot listen on {self.host}:{self._port}: {exc.strerror}"
            ) from None
        self._sock = sock
        self._pool = ThreadPoolExecutor(self.limits.workers, thread_name_prefix=self.name)
        ready = threading.Event()
        failed: list[BaseException] = []
        self._thread = threading.Thread(
            target=self._run, args=(sock, ready, failed), name=self.name, daemon=True
        )
        self._thread.start()
        ready.wait(10)
        if failed or not ready.is_set():
            self.stop()
            raise OSError(f"{self.name} could not start: {failed[0] if failed else 'timeout'}")

    def stop(self) -> None:
        """Stop at once: open connections are closed, requests waiting are dropped."""
        loop, stopping = self._loop, self._stopping
        if loop is not None and stopping is not None:
            with contextlib.suppress(RuntimeError):  # the loop has already ended
                loop.call_soon_threadsafe(stopping.set)
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._loop = self._stopping = None

    # --- the serving thread -------------------------------------------------

    def _run(
        self, sock: socket.socket, ready: threading.Event, failed: list[BaseException]
    ) -> None:
        try:
            asyncio.run(self._serve(sock, ready))
        except BaseException as exc:
            failed.append(exc)
            ready.set()
            log.exception("%s stopped", self.name)

    async def _serve(self, sock: socket.socket, ready: threading.Event) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        server = await asyncio.start_server(self._connected, sock=sock, limit=LINGER_BYTES)
        ready.set()
        try:
            await self._stopping.wait()
        finally:
            server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            if self.connections >= self.limits.max_connections:
                await self._refuse(reader, writer)
            else:
                self.connections += 1
                try:
                    await self._exchange(reader, writer)
                finally:
                    self.connections -= 1
        except (OSError, _Gone):  # OSError: ConnectionError, TimeoutError...
            pass  # the client went away, or would not read its answer
        except Exception:
            log.exception("%s: unexpected error on a connection", self.name)
        finally:
            writer.transport.abort()
            self._tasks.discard(task)

    async def _refuse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """503 at once, without reading the request; past a further bound, not even that."""
        if not self._full_logged:
            self._full_logged = True
            log.warning(
                "%s: %d connections open, the most it takes: answering 503",
                self.name,
                self.connections,
            )
        if self._refusing >= self.limits.max_connections // 4:
            return  # the connection is closed at once
        self._refusing += 1
        try:
            await self._answer(reader, writer, BUSY)
        finally:
            self._refusing -= 1

    async def _exchange(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._full_logged and self.connections < self.limits.max_connections // 2:
            self._full_logged = False
        limits = self.limits
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=limits.max_head_bytes)
        try:
            try:
                async with asyncio.timeout(limits.head_timeout):
                    event = await _read_head(conn, reader, limits.max_head_bytes)
            except TimeoutError:
                raise _Reject(408, "Request Timeout", "request head too slow") from None
            if not isinstance(event, h11.Request):
                return  # closed before sending anything
            request = event
            length = _content_length(request)
            if length is not None and length > limits.max_body_bytes:
                raise _Reject(413, "Content Too Large", "request body too large")
            if conn.they_are_waiting_for_100_continue:
                writer.write(conn.send(h11.InformationalResponse(status_code=100, headers=[])))
            try:
                async with asyncio.timeout(limits.body_timeout):
                    body = await _read_body(conn, reader, limits.max_body_bytes)
            except TimeoutError:
                raise _Reject(408, "Request Timeout", "request body too slow") from None
        except h11.RemoteProtocolError as exc:
            if reader.at_eof():
                return  # it went away: nobody to answer
            status = exc.error_status_hint
            if status == 431:
                answer = plain_answer(431, "Request Header Fields Too Large", "headers too large")
            else:
                answer = plain_answer(400, "Bad Request", "bad request")
            await self._answer(reader, writer, answer)
            return
        except _Reject as reject:
            await self._answer(
                reader, writer, plain_answer(reject.status, reject.reason, reject.text)
            )
            return
        await self._answer(reader, writer, await self._respond(conn, request, body, writer))

    async def _respond(
        self, conn: h11.Connection, request: h11.Request, body: bytes, writer: asyncio.StreamWriter
    ) -> bytes:
        """The app's answer to a complete request, serialized by h11."""
        if self._waiting >= self.limits.workers + self.limits.max_waiting:
            return BUSY
        environ = self._environ(request, body, writer.get_extra_info("peername"))
        assert self._pool is not None
        self._waiting += 1
        try:
            loop = asyncio.get_running_loop()
            status, headers, content = await loop.run_in_executor(
                self._pool, _call, self.app, environ
            )
        except Exception:
            log.exception("%s: the app failed on %s", self.name, environ["PATH_INFO"])
            return plain_answer(500, "Internal Server Error", "internal error")
        finally:
            self._waiting -= 1
        try:
            code_text, _, reason = status.partition(" ")
            kept = [
                (n.encode("latin-1"), v.encode("latin-1"))
                for n, v in headers
                if n.lower().encode("latin-1") not in _HOP_BY_HOP
            ]
            kept += [(b"Content-Length", str(len(content)).encode()), (b"Connection", b"close")]
            out = conn.send(
                h11.Response(status_code=int(code_text), reason=reason.encode(), headers=kept)
            )
            if request.method != b"HEAD" and content:
                out = (out or b"") + (conn.send(h11.Data(data=content)) or b"")
            return (out or b"") + (conn.send(h11.EndOfMessage()) or b"")
        except (ValueError, UnicodeError, h11.LocalProtocolError):
            log.exception("%s: the app's answer is not valid HTTP (%s)", self.name, status)
            return plain_answer(500, "Internal Server Error", "internal error")

    async def _answer(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, data: bytes
    ) -> None:
        """Write ``data``, end our side, and give the client a moment to read it
        and close its side (what it sends meanwhile is dropped)."""
        writer.write(data)
        async with asyncio.timeout(self.limits.write_timeout):
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
        try:
            async with asyncio.timeout(LINGER_SECONDS):
                dropped = 0
                while dropped < LINGER_BYTES:
                    chunk = await reader.read(READ_SIZE)
                    if not chunk:
                        break
                    dropped += len(chunk)
        except TimeoutError:
            pass
        writer.close()
        async with asyncio.timeout(self.limits.write_timeout):
            await writer.wait_closed()

    def _environ(self, request: h11.Request, body: bytes, peer: Any) -> dict[str, Any]:
        """The WSGI environment (PEP 3333) of a complete request."""
        target = request.target.decode("latin-1")
        if not target.startswith("/"):  # absolute form, or "*"
            split = urlsplit(target)
            target = (split.path or "/") + (f"?{split.query}" if split.query else "")
        path, _, query = target.partition("?")
        environ: dict[str, Any] = {
            "REQUEST_METHOD": request.method.decode("ascii"),
            "SCRIPT_NAME": "",
            "PATH_INFO": unquote(path, "latin-1"),
            "QUERY_STRING": query,
            "CONTENT_LENGTH": str(len(body)),
            "SERVER_NAME": self.host,
            "SERVER_PORT": str(self.port),
            "SERVER_PROTOCOL": f"HTTP/{request.http_version.decode('ascii')}",
            "REMOTE_ADDR": peer[0] if isinstance(peer, tuple) else "",
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(body),
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
        }
        for raw_name, raw_value in request.headers:
            name = raw_name.decode("latin-1").upper()
            if "_" in name:
                continue  # X_Foo would pass for X-Foo (the standard library drops them too)
            value = raw_value.decode("latin-1")
            key = name.replace("-", "_")
            if key == "CONTENT_LENGTH":
                continue
            if key != "CONTENT_TYPE":
                key = f"HTTP_{key}"
            environ[key] = f"{environ[key]},{value}" if key in environ else value
        return environ


async def _next_event(conn: h11.Connection, reader: asyncio.StreamReader) -> Any:
    """The next h11 event, reading as much as it needs (bounded by h11's
    ``max_incomplete_event_size``)."""
    while True:
        event = conn.next_event()
        if event is not h11.NEED_DATA:
            return event
        conn.receive_data(await reader.read(READ_SIZE))


async def _read_head(conn: h11.Connection, reader: asyncio.StreamReader, limit: int) -> Any:
    """The first event (a ``Request``, or the end of the connection), from at
    most ``limit`` bytes of head: h11's own bound counts only an incomplete
    head, so one that arrives whole in a read would pass it by up to a read."""
    fed = 0
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            if fed > limit:
                raise _Reject(431, "Request Header Fields Too Large", "headers too large")
            data = await reader.read(min(READ_SIZE, limit + 1 - fed))
            fed += len(data)
            conn.receive_data(data)
            continue
        if isinstance(event, h11.Request) and fed - len(conn.trailing_data[0]) > limit:
            raise _Reject(431, "Request Header Fields Too Large", "headers too large")
        return event


async def _read_body(conn: h11.Connection, reader: asyncio.StreamReader, limit: int) -> bytes:
    parts: list[bytes] = []
    size = 0
    while True:
        event = await _next_event(conn, reader)
        if isinstance(event, h11.Data):
            size += len(event.data)
            if size > limit:
                raise _Reject(413, "Content Too Large", "request body too large")
            parts.append(bytes(event.data))
        elif isinstance(event, h11.EndOfMessage):
            return b"".join(parts)
        else:
            raise _Gone


def _content_length(request: h11.Request) -> int | None:
    for name, value in request.headers:
        if name == b"content-length":
            return int(value)  # h11 has checked it is a number
    return None


def _call(app: WsgiApp, environ: dict[str, Any]) -> tuple[str, list[tuple[str, str]], bytes]:
    """Run the app in a worker thread: (status line, headers, whole body)."""
    started: list[Any] = []
    chunks: list[bytes] = []

    def start_response(
        status: str, headers: list[tuple[str, str]], exc_info: Any = None
    ) -> Callable[[bytes], None]:
        if exc_info is not None and started:
            raise exc_info[1].with_traceback(exc_info[2])
        started[:] = [status, headers]
        return chunks.append

    result = app(environ, start_response)
    try:
        chunks.extend(result)
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    if not started:
        raise RuntimeError("the app did not call start_response")
    return started[0], list(started[1]), b"".join(chunks)
